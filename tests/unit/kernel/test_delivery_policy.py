"""The delivery policy as a pure function: ack, retry with backoff, or dead letter, and why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from labelloop.delivery import PoisonMessage, build_dead_letter, decide
from labelloop.events import RequestExport
from labelloop.payloads import PayloadMissing


def _invalid() -> ValidationError:
    try:
        RequestExport.model_validate({"project": 3})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


def test_a_handler_that_returned_is_acknowledged() -> None:
    assert decide(None, deliveries=3, max_deliver=3, backoff_seconds=1).action == "ack"


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (_invalid(), "invalid", "invalid payload: project"),
        (PayloadMissing("body 'x' is not in the object store"), "invalid", "body 'x'"),
        (PoisonMessage("unknown project 'p'"), "failed", "unknown project 'p'"),
    ],
)
def test_what_can_never_succeed_is_dead_lettered_at_once(
    error: BaseException, kind: str, reason: str
) -> None:
    verdict = decide(error, deliveries=1, max_deliver=5, backoff_seconds=1)
    assert (verdict.action, verdict.kind) == ("dead_letter", kind)
    assert verdict.reason.startswith(reason)


def test_a_failure_is_retried_with_doubling_backoff_until_the_last_delivery() -> None:
    error = KeyError("oops")
    delays = [decide(error, deliveries=d, max_deliver=5, backoff_seconds=0.5) for d in (1, 2, 3, 4)]
    assert [v.action for v in delays] == ["retry"] * 4
    assert [v.delay for v in delays] == [0.5, 1.0, 2.0, 4.0]
    assert decide(error, deliveries=20, max_deliver=99, backoff_seconds=0.5).delay == 60.0  # cap
    last = decide(error, deliveries=5, max_deliver=5, backoff_seconds=0.5)
    assert (last.action, last.kind) == ("dead_letter", "failed")
    assert last.reason == "KeyError: 'oops'"


def test_a_transport_that_cannot_redeliver_dead_letters_the_first_failure() -> None:
    verdict = decide(
        KeyError("x"), deliveries=1, max_deliver=5, backoff_seconds=1, redelivers=False
    )
    assert verdict.action == "dead_letter"


def test_a_dead_letter_keeps_a_valid_project_only_and_a_stable_id() -> None:
    def letter(body: bytes, seq: int | None = 7) -> object:
        return build_dead_letter(
            body,
            subject="ns.commands.export.p",
            stream="NS_CONTROL" if seq else None,
            sequence=seq,
            consumer="ns_exporter_commands_export",
            kind="failed",
            reason="r",
            deliveries=1,
            headers={"Authorization": "secret", "Nats-Msg-Id": "m"},
        )

    good = letter(b'{"project": "digits"}')
    assert good.project == "digits"  # type: ignore[attr-defined]
    assert good.headers == {"Nats-Msg-Id": "m"}  # type: ignore[attr-defined]
    assert letter(b'{"project": "a.b c"}').project == "-"  # type: ignore[attr-defined]
    assert letter(b"not json").project == "-"  # type: ignore[attr-defined]
    assert letter(b"x").event_id == letter(b"y").event_id  # type: ignore[attr-defined]  # same seq
    assert letter(b"x", None).event_id != letter(b"y", None).event_id  # type: ignore[attr-defined]
