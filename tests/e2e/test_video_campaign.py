"""A video campaign through the six services: clips featurised by the ingester itself, learned
from, and sampled by the model's uncertainty.

The data: ``examples/digit-clips`` (handwritten digits on short clips, rendered from
scikit-learn's real scans, not filmed). The items carry paths, no vectors: the ingester reads
each clip under its media root, decodes 8 of its frames and pools their pixels, or rejects the
file when it cannot (one corrupt file is sent among them). The campaign is the demo's (the
services as processes, the simulated crew, the pool ingested before sampling starts), driven
with the demo's helpers; the model is judged on held-out clips featurised by the same ingester
code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from campaign_support import (
    Campaign,
    Plan,
    Waits,
    blob,
    check_media_campaign,
    example_config,
    example_module,
    held_out_accuracy,
    last_round,
    run_campaign,
)

from labelloop.events import ItemIn, ItemsRejected, ModelTrained
from labelloop.model_format import load_model
from labelloop.testing import EventCollector
from labelloop_ingester.domain.featurize import MediaOptions

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digit-clips"
SEED = 20
BUDGET = 160
PER_DIGIT = 30
"""Pool clips per digit (300 in all) and held-out ones (20 per digit)."""
VIDEO_DIM = 2 * MediaOptions().image_side ** 2
"""The ingester's video vector: mean and deviation of its frames' thumbnails, pixel by pixel."""


PLAN = Plan(
    source="digit-clips",
    ingest=Waits(timeout=300, stall=120),
    settle=Waits(timeout=600, stall=180),
    ingested="every clip is ingested or rejected",
    rejects=True,
)


async def _found(run: Campaign, nats_url: str, namespace: str) -> dict[str, Any]:
    _, serving = last_round(run.view)
    async with EventCollector(nats_url, namespace, ItemsRejected) as rejected:
        events = await rejected.wait_for(1, timeout=30)
    return {
        "serving": serving,
        "model": load_model(await blob(run.bus, serving.model_ref), digest=serving.model_digest),
        "rejected": run.rejected,
        "reasons": [r.reason for e in events for r in e.rejections],
    }


def test_a_video_campaign_learns_from_ingester_features_and_samples_by_uncertainty(
    tmp_path: Path, nats_url: str, namespace: str
) -> None:
    module = example_module(EXAMPLE / "clips.py", "digit_clips")
    scans = module.load_scans(SEED)
    pool_all, test_all = scans.split(SEED)
    pool = scans.subset(pool_all, PER_DIGIT, SEED)
    test = scans.subset(test_all, 20, SEED)
    config = example_config(EXAMPLE, budget=BUDGET, seed=SEED)
    # the pool's clips under the ingester's media root, and one file that is not a video
    media = tmp_path / "media"
    scans.render(media, pool)
    items = scans.items(media, pool, n_gold=15, seed=SEED)
    corrupt = media / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    items.append(ItemIn(data={"video": str(corrupt)}, metadata={"simulation_truth": "0"}))
    media_root = {"LABELLOOP_INGESTER_MEDIA_ROOT": str(media)}
    view, batches, found = run_campaign(
        tmp_path,
        nats_url,
        namespace,
        config,
        items,
        PLAN,
        lambda run: _found(run, nats_url, namespace),
        env=media_root,
    )

    assert found["rejected"] == 1  # the corrupt file, and nothing else
    (reason,) = found["reasons"]
    assert reason.startswith("unreadable_media: not a video"), reason
    check_media_campaign(view, batches, config, pool=len(pool))

    serving: ModelTrained = found["serving"]
    model = found["model"]
    assert model.n_features_in_ == VIDEO_DIM  # trained on the ingester's video features
    assert serving.metrics["accuracy"] > 0.6  # out of sample, on the crew's labels

    # held out: the same featuriser on clips the campaign never saw, rendered outside the
    # ingester's media root; ten digits, so guessing gives 0.1. The seed's campaign gave 0.87
    # and 0.895 on 200 clips in two runs (its cross-validated accuracy on the crew's labels,
    # spammer included, 0.74 and 0.76), and 160 clean labels chosen by the hybrid strategy
    # give 0.90 (bench/README.md: video)
    held_out = tmp_path / "held-out"
    scans.render(held_out, test)
    paths = [scans.path(held_out, i) for i in test]
    accuracy, features = held_out_accuracy(model, config, "video", paths, scans.labels[test])
    assert features.shape == (len(test), VIDEO_DIM)
    print(  # the figures of the run, for whoever reads a failure or a -s run
        f"video campaign: {view.items_ingested} ingested, {found['rejected']} rejected, "
        f"serving {serving.model_version} cv accuracy {serving.metrics['accuracy']:.3f}, "
        f"held-out accuracy {accuracy:.3f} on {len(test)} clips"
    )
    assert accuracy >= 0.7, accuracy
