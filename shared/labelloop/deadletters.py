"""Reading and re-driving the dead-letter stream (``labelloop dlq list|replay``)."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from labelloop.events import DeadLetter, deterministic_id
from labelloop.streams import Namespace

__all__ = ["ReplayRefused", "StoredDeadLetter", "list_dead_letters", "replay_dead_letter"]


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    sequence: int
    """Sequence in the dead-letter stream: the handle ``dlq replay`` takes."""
    letter: DeadLetter


def _dlq_stream(ns: Namespace) -> str:
    return ns.stream_name(ns.stream_for(DeadLetter))


async def list_dead_letters(
    js: JetStreamContext, ns: Namespace, *, limit: int = 100, project: str | None = None
) -> list[StoredDeadLetter]:
    """Dead letters still pending (replayed ones are removed), oldest first."""
    stream = _dlq_stream(ns)
    info = await js.stream_info(stream)
    found: list[StoredDeadLetter] = []
    if not info.state.messages:
        return found
    first, last = max(info.state.first_seq, 1), info.state.last_seq
    for seq in range(first, last + 1):
        if len(found) >= limit:
            break
        try:
            raw = await js.get_msg(stream, seq)
        except NotFoundError:  # deleted after a replay
            continue
        letter = DeadLetter.model_validate_json(raw.data or b"{}")
        if project is None or letter.project == project:
            found.append(StoredDeadLetter(seq, letter))
    return found


class ReplayRefused(ValueError):
    """A dead letter that ``dlq replay`` will not re-drive, with the reason."""


async def replay_dead_letter(js: JetStreamContext, ns: Namespace, sequence: int) -> DeadLetter:
    """Publish a dead letter's original message to its original subject, then remove it.

    Only what really was on the bus is re-driven: the letter must name an event subject of this
    namespace (not a dead letter, not some other subject), and the message it names must still
    be in that event's stream, on that subject, with the payload the letter holds. A forged
    dead letter (any service may publish dead letters) therefore cannot make an operator's
    replay publish an event its author may not publish; it raises :class:`ReplayRefused` and
    stays in the stream for a person to look at.

    The replay gets a fresh ``Nats-Msg-Id`` (the original id is still in the duplicate window
    and would be dropped); consumers are idempotent, so a replay of something that did get
    processed changes nothing.
    """
    stream = _dlq_stream(ns)
    raw = await js.get_msg(stream, sequence)
    letter = DeadLetter.model_validate_json(raw.data or b"{}")
    original = await _original_of(js, ns, sequence, letter)
    headers = {k: v for k, v in letter.headers.items() if not k.lower().startswith("nats-")}
    headers["Nats-Msg-Id"] = deterministic_id("replay", letter.event_id, sequence)
    headers["Labelloop-Replay-Of"] = letter.event_id
    await js.publish(letter.original_subject, original, headers=headers)
    await js.delete_msg(stream, sequence)
    return letter


async def _original_of(
    js: JetStreamContext, ns: Namespace, sequence: int, letter: DeadLetter
) -> bytes:
    """The bytes to re-drive, once the letter is shown to describe a real message."""

    def refuse(why: str) -> ReplayRefused:
        return ReplayRefused(f"dead letter {sequence} not replayed: {why}")

    event, _ = ns.parse(letter.original_subject)
    if (
        event is None
        or event is DeadLetter
        or not letter.original_subject.startswith(f"{ns.prefix}.")
    ):
        raise refuse(f"{letter.original_subject!r} is not an event subject of {ns.prefix!r}")
    expected_stream = ns.stream_name(ns.stream_for(event))
    if letter.original_stream != expected_stream or letter.original_sequence is None:
        raise refuse(f"it names no message of {expected_stream}, where {event.__name__} lives")
    try:
        original = await js.get_msg(expected_stream, letter.original_sequence)
    except NotFoundError:
        raise refuse(
            f"message {letter.original_sequence} of {expected_stream} is gone (past the stream's"
            " max age, or never there): submit the data again"
        ) from None
    data = original.data or b""
    payload = letter.payload()
    whole = len(payload) == letter.payload_size
    if original.subject != letter.original_subject or (whole and data != payload):
        raise refuse(
            f"message {letter.original_sequence} of {expected_stream} is not the one the letter"
            " describes (a forged dead letter?)"
        )
    return data
