"""The runtime on FastStream's in-memory broker: what handler unit tests rely on."""

from __future__ import annotations

from labelloop.events import DeadLetter, RequestExport, RequestTraining, deterministic_id
from labelloop.runtime import PoisonMessage, Service, ServiceSettings
from labelloop.testing import in_memory


def _service() -> Service:
    service = Service("memo", ServiceSettings())

    @service.handler(RequestExport)
    async def on_request(event: RequestExport) -> None:
        if event.reason == "poison":
            raise PoisonMessage("never")
        if event.reason == "bug":
            raise KeyError("oops")
        await service.publish(
            RequestTraining(
                event_id=deterministic_id("memo", event.event_id), project=event.project
            )
        )

    return service


async def test_event_in_event_out_and_duplicates_dropped() -> None:
    service = _service()
    async with in_memory(service) as bus:
        event = RequestExport(project="p")
        await bus.publish(event)
        await bus.publish(event)  # a redelivery: same output id, dropped like NATS would
        assert len(bus.published(RequestTraining)) == 1


async def test_invalid_payload_and_poison_become_dead_letters() -> None:
    service = _service()
    async with in_memory(service) as bus:
        await bus.publish_raw(b'{"project": 3}', RequestExport)
        await bus.publish(RequestExport(project="p", reason="poison"))
        await bus.publish(RequestExport(project="p", reason="bug"))
        letters = bus.published(DeadLetter)
    assert [d.kind for d in letters] == ["invalid", "failed", "failed"]
    assert "project" in letters[0].reason
    assert letters[1].reason == "never"
    assert letters[2].reason.startswith("KeyError")
    assert bus.published(RequestTraining) == []
    assert (
        service.registry.get_sample_value(
            "labelloop_runtime_dead_letters_total", {"event": "RequestExport", "kind": "invalid"}
        )
        == 1
    )


async def test_a_dead_letter_that_cannot_be_published_keeps_the_message_for_later() -> None:
    """Publishing the dead letter fails (the bus is in trouble): the message is not settled as
    dead-lettered but retried, and counted so; nothing is lost."""
    from labelloop.delivery import Verdict
    from labelloop.transport import MemoryTransport

    settled: list[Verdict] = []

    class Flaky(MemoryTransport):
        async def publish(self, event, subject, stream, body, headers):  # type: ignore[no-untyped-def]
            if isinstance(event, DeadLetter):
                raise TimeoutError("nats: timeout")
            return await super().publish(event, subject, stream, body, headers)

        async def settle(self, msg, verdict):  # type: ignore[no-untyped-def]
            settled.append(verdict)

    service = _service()
    service.transport = Flaky()
    async with in_memory(service) as bus:
        await bus.publish(RequestExport(project="p", reason="poison"))
        assert bus.published(DeadLetter) == []
    assert [v.action for v in settled] == ["retry"]
    assert "dead letter" in settled[0].reason
    retried = service.registry.get_sample_value(
        "labelloop_runtime_messages_total", {"event": "RequestExport", "outcome": "retried"}
    )
    assert retried == 1


def test_counters_of_a_consumed_event_start_at_zero() -> None:
    """Prometheus's ``increase()`` sees a first dead letter only against an earlier sample of
    the same series, so every series a consumer will count exists at 0 before any message
    (infra/prometheus/alerts_test.yml: a first dead letter fires LabelloopDeadLettered)."""
    service = _service()
    sample = service.registry.get_sample_value
    for kind in ("invalid", "failed", "max_deliveries"):
        labels = {"event": "RequestExport", "kind": kind}
        assert sample("labelloop_runtime_dead_letters_total", labels) == 0, kind
    for outcome in ("ok", "retried", "dead_lettered"):
        labels = {"event": "RequestExport", "outcome": outcome}
        assert sample("labelloop_runtime_messages_total", labels) == 0, outcome
    assert sample("labelloop_runtime_redeliveries_total", {"event": "RequestExport"}) == 0
    dead = {"event": "DeadLetter", "duplicate": "false"}
    assert sample("labelloop_runtime_published_total", dead) == 0
    service.metrics.declare_published([RequestTraining])
    fresh = {"event": "RequestTraining", "duplicate": "false"}
    assert sample("labelloop_runtime_published_total", fresh) == 0


async def test_trouble_on_the_bus_is_retried_in_place_and_spends_no_delivery() -> None:
    """2026-12-07, the 3-node cluster test on a busy machine: a NATS timeout while the stream's
    leader was being elected failed the same handler five times within seconds, and three
    messages went to the dead letters. A failure of the bus says nothing about the message:
    the handler runs again in place (its message held), and a real bug still dead-letters."""
    import nats.errors

    service = Service("memo", ServiceSettings(retry_backoff_seconds=0, bus_retry_seconds=60))
    failures = {"timeout": 3, "bug": 1}

    @service.handler(RequestExport)
    async def on_request(event: RequestExport) -> None:
        if failures[event.reason] > 0:
            failures[event.reason] -= 1
            if event.reason == "timeout":
                raise nats.errors.TimeoutError
            raise KeyError("a bug, not the bus")
        await service.publish(RequestTraining(project=event.project))

    async with in_memory(service) as bus:
        await bus.publish(RequestExport(project="p", reason="timeout"))
        await bus.publish(RequestExport(project="p", reason="bug"))
        letters = bus.published(DeadLetter)
    assert len(bus.published(RequestTraining)) == 1  # the timeouts' message went through
    assert [d.reason for d in letters] == ["KeyError: 'a bug, not the bus'"]
    retried = service.registry.get_sample_value(
        "labelloop_runtime_bus_retries_total", {"event": "RequestExport"}
    )
    assert retried == 3
    ok = service.registry.get_sample_value(
        "labelloop_runtime_messages_total", {"event": "RequestExport", "outcome": "ok"}
    )
    assert ok == 1


async def test_trouble_on_the_bus_that_lasts_counts_as_a_failed_delivery() -> None:
    import nats.errors

    service = Service("memo", ServiceSettings(retry_backoff_seconds=0, bus_retry_seconds=0))

    @service.handler(RequestExport)
    async def on_request(event: RequestExport) -> None:
        raise nats.errors.NoRespondersError

    async with in_memory(service) as bus:
        await bus.publish(RequestExport(project="p"))
        (letter,) = bus.published(DeadLetter)  # the memory transport does not redeliver
    assert letter.reason.startswith("NoRespondersError")
