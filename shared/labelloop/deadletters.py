"""Reading and re-driving the dead-letter stream (``labelloop dlq list|replay``)."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from labelloop.events import DeadLetter, deterministic_id
from labelloop.streams import Namespace

__all__ = ["StoredDeadLetter", "list_dead_letters", "replay_dead_letter"]


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


async def replay_dead_letter(js: JetStreamContext, ns: Namespace, sequence: int) -> DeadLetter:
    """Publish a dead letter's original payload to its original subject, then remove it.

    The replay gets a fresh ``Nats-Msg-Id`` (the original id is still in the duplicate window
    and would be dropped); consumers are idempotent, so a replay of something that did get
    processed changes nothing.
    """
    stream = _dlq_stream(ns)
    raw = await js.get_msg(stream, sequence)
    letter = DeadLetter.model_validate_json(raw.data or b"{}")
    payload = letter.payload()
    if len(payload) < letter.payload_size:  # kept truncated: the original stream has it whole
        if letter.original_stream is None or letter.original_sequence is None:
            raise ValueError(f"dead letter {sequence} holds a truncated payload and no original")
        original = await js.get_msg(letter.original_stream, letter.original_sequence)
        payload = original.data or b""
    headers = {k: v for k, v in letter.headers.items() if not k.lower().startswith("nats-")}
    headers["Nats-Msg-Id"] = deterministic_id("replay", letter.event_id, sequence)
    headers["Labelloop-Replay-Of"] = letter.event_id
    await js.publish(letter.original_subject, payload, headers=headers)
    await js.delete_msg(stream, sequence)
    return letter
