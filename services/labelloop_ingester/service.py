"""One submitted message end to end: validate, decode media, claim ids, featurise, store
features, publish, answer.

Per message, not per item: one claim (``store.ItemClaims``), one feature matrix per feature
space, one catalog object and one ``ItemsIngested`` per chunk. Audio and video files are decoded
(and featurised) before the claim: a file that cannot be decoded rejects its item, which must
then claim nothing. The price: a sound sent again is decoded again before it is found a
duplicate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from labelloop.catalog import Catalog, Chunk, encode_chunk
from labelloop.events import (
    Event,
    IngestedItem,
    ItemsIngested,
    ItemsRejected,
    ItemsSubmitted,
    deterministic_id,
)
from labelloop.project import ProjectConfig

from .domain.answer import ANSWER_BYTES, answer
from .domain.featurize import (
    FeatureBlock,
    MediaOptions,
    decode_data_uri,
    featurize,
    media_features,
)
from .domain.intake import Accepted, Intake, chunk_by_size, set_aside, take_in
from .domain.validation import Limits, RejectReason
from .metrics import IngesterMetrics
from .store import ItemClaims

__all__ = ["Ingest", "chunk_id", "load_media"]

_ENVELOPE_BYTES = 4_096
"""Room left in a message for everything but its items."""


def chunk_id(submission_id: str, chunk: int) -> str:
    """The catalog chunk of part ``chunk`` of a submission: the same on every delivery."""
    return f"{submission_id}-{chunk:04d}"


def load_media(
    media_root: str | None, max_bytes: int | None = None
) -> Callable[[str], bytes | None]:
    """A media loader (images, audio, video): data URIs always; file paths only inside
    ``media_root``, and only files of at most ``max_bytes``."""
    root = Path(media_root).resolve() if media_root else None

    def load(ref: str) -> bytes | None:
        raw = decode_data_uri(ref)
        if raw is not None or root is None:
            return raw
        path = Path(ref.removeprefix("file://")).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        try:
            if max_bytes is not None and path.stat().st_size > max_bytes:
                return None
            return path.read_bytes()
        except OSError:
            return None

    return load


@dataclass(frozen=True, slots=True)
class Ingest:
    claims: ItemClaims
    catalog: Catalog
    publish: Callable[[Event], Awaitable[object]]
    metrics: IngesterMetrics
    limits: Limits
    max_message_bytes: int
    text_dim: int
    image_side: int
    load_media: Callable[[str], bytes | None]
    media: MediaOptions = field(default_factory=MediaOptions)
    answer_bytes: int = ANSWER_BYTES

    async def __call__(self, event: ItemsSubmitted, project: ProjectConfig) -> None:
        started = time.perf_counter()
        # parsing, hashing, decoding, featurising and encoding are CPU work: off the event loop,
        # so that heartbeats, other messages and /healthz keep being served meanwhile
        intake, media = await asyncio.to_thread(self._take_in, event, project)
        ids = [a.item_id for a in intake.accepted]
        owned = await self.claims.claim(event.project, ids, owner=event.event_id)
        fresh = [a for a, mine in zip(intake.accepted, owned, strict=True) if mine]
        claimed_before = [
            a.index for a, mine in zip(intake.accepted, owned, strict=True) if not mine
        ]
        duplicates = intake.duplicates + len(claimed_before)
        chunks = await asyncio.to_thread(self._chunks, fresh, project, media)
        for number, (chunk, raw) in enumerate(chunks):
            # the catalog holds the chunk before the bus hears of it: whoever learns of these
            # items from a message finds them there
            ref = await self.catalog.write_encoded(
                event.project,
                chunk_id(event.event_id, number),
                raw,
                n=len(chunk.items),
                space=chunk.space,
            )
            await self.publish(self._ingested(event, number, chunk.items, ref, duplicates))
        if not chunks:
            # nothing new: say so, so that a producer sees its re-ingest counted as duplicates
            await self.publish(self._ingested(event, 0, [], None, duplicates))
        if intake.rejections:
            await self.publish(
                ItemsRejected(
                    event_id=deterministic_id("items-rejected", event.event_id),
                    project=event.project,
                    submission_id=event.event_id,
                    rejections=intake.rejections,
                    request_id=event.request_id,
                )
            )
        # last: whoever hears the answer finds the items announced and in the catalog
        for reply in answer(event, intake, claimed_before, max_bytes=self.answer_bytes):
            await self.publish(reply)
        self.metrics.ingested.inc(len(fresh))
        self.metrics.duplicates.inc(duplicates)
        for reason, n in intake.reasons.items():
            self.metrics.rejected.labels(reason=reason.value).inc(n)
        self.metrics.duration.observe(time.perf_counter() - started)

    def _take_in(
        self, event: ItemsSubmitted, project: ProjectConfig
    ) -> tuple[Intake, FeatureBlock | None]:
        """The message's intake, its audio or video files decoded and featurised (those that
        cannot be decoded set aside as rejected); the media vectors, their rows the items'
        positions in the message."""
        intake = take_in(event.items, project, self.limits, event.origins)
        found = media_features(
            [a.raw for a in intake.accepted], project, self.load_media, self.media
        )
        if found.kind is None:
            return intake, None
        kind = found.kind.value
        self.metrics.media.labels(kind=kind, outcome="unreadable").inc(len(found.unreadable))
        self.metrics.media.labels(kind=kind, outcome="unread").inc(len(found.unread))
        media = None
        if found.block is not None:
            self.metrics.media.labels(kind=kind, outcome="featurized").inc(len(found.block.rows))
            at = [intake.accepted[position].index for position in found.block.rows]
            media = FeatureBlock(found.block.space, at, found.block.X)
        set_aside(intake, found.unreadable, RejectReason.UNREADABLE_MEDIA, event.origins)
        return intake, media

    def _chunks(
        self, fresh: list[Accepted], project: ProjectConfig, media: FeatureBlock | None
    ) -> list[tuple[Chunk, bytes]]:
        """The new items as catalog chunks, encoded: one per feature space (one matrix
        computed for the whole message per space), cut to stay under the message size.
        Deterministic: a redelivered message cuts the same chunks."""
        chunks = []
        for block, members in self._feature_groups(fresh, project, media):
            items = [a.item() for a in members]
            sizes = [a.size + 1 for a in members]
            for part in chunk_by_size(sizes, self.max_message_bytes - _ENVELOPE_BYTES):
                chunk = Chunk(
                    items[part.start : part.stop],
                    block.space if block is not None else None,
                    block.X[part.start : part.stop] if block is not None else None,
                )
                chunks.append((chunk, encode_chunk(chunk)))
        return chunks

    def _feature_groups(
        self, fresh: list[Accepted], project: ProjectConfig, media: FeatureBlock | None
    ) -> list[tuple[FeatureBlock | None, list[Accepted]]]:
        """Items grouped by feature space (one matrix per group); featureless items last.
        ``media``: the vectors of audio and video items, computed before the claim."""
        blocks = featurize(
            [a.raw for a in fresh],
            project,
            load_image=self.load_media,
            text_dim=self.text_dim,
            image_side=self.image_side,
        )
        if media is not None:
            where = {index: row for row, index in enumerate(media.rows)}
            rows = [i for i, a in enumerate(fresh) if a.index in where]
            if rows:
                picked = [where[fresh[i].index] for i in rows]
                blocks.append(FeatureBlock(media.space, rows, media.X[picked]))
        covered = {row for b in blocks for row in b.rows}
        groups: list[tuple[FeatureBlock | None, list[Accepted]]] = [
            (b, [fresh[r] for r in b.rows]) for b in blocks
        ]
        rest = [a for i, a in enumerate(fresh) if i not in covered]
        if rest:
            groups.append((None, rest))
        return groups

    @staticmethod
    def _ingested(
        event: ItemsSubmitted,
        chunk: int,
        items: list[IngestedItem],
        ref: str | None,
        duplicates: int,
    ) -> ItemsIngested:
        return ItemsIngested(
            event_id=deterministic_id("items-ingested", event.event_id, chunk),
            project=event.project,
            items=items,
            chunk_ref=ref,
            submission_id=event.event_id,
            duplicates=duplicates if chunk == 0 else 0,
            request_id=event.request_id,
        )
