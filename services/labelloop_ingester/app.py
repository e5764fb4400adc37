"""The ingester's composition root."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

from labelloop.catalog import Catalog
from labelloop.events import ItemsIngested, ItemsRejected, SubmissionAnswered
from labelloop.runtime import Service
from labelloop.services import ServiceSpec
from labelloop.stores import MemoryStores

from .domain.answer import ANSWER_BYTES
from .domain.featurize import MediaOptions, warm_up
from .domain.validation import Limits
from .handlers import register_handlers
from .metrics import IngesterMetrics
from .service import Ingest, load_media
from .settings import IngesterSettings
from .store import ItemClaims

__all__ = ["SPEC", "build_app"]

_GC_THRESHOLDS = (20_000, 50, 100)
"""Allocations between young collections (Python's default: 700), and how many of each
generation's collections before the next one's (default: 10 and 10)."""


def build_app(
    settings: IngesterSettings | None = None,
    *,
    stores: MemoryStores | None = None,
    read_media: Callable[[str], bytes | None] | None = None,
) -> Service:
    settings = settings or IngesterSettings()
    service = Service(SPEC.name, settings, area=SPEC.artifacts, stores=stores)
    metrics = IngesterMetrics(service.registry)
    limits = Limits(settings.max_item_bytes, settings.text_max_length, settings.max_feature_dim)
    loader = read_media or load_media(settings.media_root, settings.media_max_bytes)
    media = MediaOptions(
        sample_rate=settings.audio_sample_rate,
        audio_max_seconds=settings.audio_max_seconds,
        video_frames=settings.video_frames,
        video_max_seconds=settings.video_max_seconds,
        image_side=settings.image_side,
    )

    built: dict[int, Ingest] = {}

    def ingest() -> Ingest:
        # the service's stores are valid only once it has started: wire them on first use, once
        # per set of stores (one ItemClaims: the claim indexes it has read serve every message)
        key = id(service.stores)
        if key not in built:
            built.clear()
            built[key] = Ingest(
                claims=ItemClaims(
                    service.state, read_ahead=settings.claim_concurrency, metrics=metrics
                ),
                catalog=Catalog(service.state, service.artifacts),
                publish=service.publish,
                metrics=metrics,
                limits=limits,
                max_message_bytes=settings.max_message_bytes,
                text_dim=settings.text_dim,
                image_side=settings.image_side,
                load_media=loader,
                media=media,
                # an answer travels inline, whatever the deployment's inline limit
                answer_bytes=min(ANSWER_BYTES, settings.max_inline_payload_bytes // 2),
            )
        return built[key]

    @service.on_startup
    async def prepare() -> None:
        # the featurisers' libraries loaded before the first message, not in its handler; then
        # the garbage collector out of the way: every object alive now (modules, classes: a few
        # hundred thousand) frozen, which full collections would otherwise walk again and again,
        # and young collections made rarer: each message makes and drops thousands of objects
        # (pydantic models of its items), few of them in cycles. Measured at 20k items/s: a
        # third of the CPU time went to collections before, a few percent after
        await asyncio.to_thread(warm_up, settings.text_dim)
        gc.freeze()
        gc.set_threshold(*_GC_THRESHOLDS)

    register_handlers(service, ingest)
    return service


SPEC = ServiceSpec(
    name="ingester",
    settings=IngesterSettings,
    build=build_app,
    publishes=(
        ItemsIngested,
        ItemsRejected,
        SubmissionAnswered,
    ),
    state_keys=("ingester", "catalog"),
    artifacts="catalog",
)
