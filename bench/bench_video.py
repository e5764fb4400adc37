"""Video classification with the ingester's features, the trainer's model and the sampler's
selection; and how fast the clips render and the ingester's video featuriser runs.

    .venv/bin/python bench/bench_video.py [--quick]

Data: the clips of ``examples/digit-clips``: scikit-learn's 1,797 real handwritten scans (ten
digits), each **rendered** (not filmed) as a three-second clip, 64 x 64, 30 frames, H.264 in
MP4, the digit drifting, zooming and turning a little, with noise in every frame; the task:
which digit. Rendered here into a temporary folder (timed). Features: the ingester's own,
computed through the ingester's path (``media_features``: files read, 8 frames spread over the
clip decoded with PyAV, each a 16 x 16 grey thumbnail, their mean and deviation: 512 numbers),
timed: clips per second.

Per seed: a stratified 70/30 split, 20 random seed labels, then batches of 20 chosen by each
strategy up to 240 labels. After every batch the trainer's round runs on the labels so far
(``train_round``: the example project's kernel logistic regression, RBF features of the labeled
clips, ``C`` chosen by 5-fold cross-validation), scored on the held-out 30% (accuracy,
macro-F1). The labels are the truth (no crew noise). Strategies, from
``labelloop_sampler.domain.selection.select``: ``random``, and ``hybrid`` (labelloop's default:
the margin's most uncertain items clustered on the same features).

Reported: labels to 0.80, 0.85 and 0.90 held-out accuracy on the mean curve over seeds (and per
seed), the area under the learning curve, and the anchors measured in the same run: random
sampling, and the offline anchor, the same model trained on every label of the pool (1,258).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from curves import strategy_rows, vector_strategies
from harness import example_module, row, standalone
from labelloop.events import ItemIn
from labelloop.project import parse_project
from labelloop_ingester.domain.featurize import MediaOptions, media_features

Array = npt.NDArray[Any]
NAME = "video"
STRATEGIES = ("random", "hybrid")
SEED_LABELS = 20
BATCH = 20
TARGETS = (0.80, 0.85, 0.90)
ESTIMATOR: Final = "kernel_logistic_regression"


class _Data:
    """The clips, rendered once (timed), their digits and the ingester's features (timed)."""

    def __init__(self, limit: int | None = None) -> None:
        clips = example_module("digit-clips", "clips", "digit_clips")
        scans = clips.load_scans()
        index = np.arange(len(scans.labels))
        if limit is not None:
            index = scans.subset(index, limit // len(scans.classes), seed=0)
        self.y: Array = scans.labels[index]
        self.classes: list[str] = list(scans.classes)
        self.seconds_per_clip = clips.FRAMES / clips.FPS
        project = parse_project(
            {
                "name": "digit-clips",
                "task_type": "video_classification",
                "labels": {"classes": self.classes},
                "data_fields": [{"name": "video", "kind": "video"}],
            }
        )
        options = MediaOptions()
        with tempfile.TemporaryDirectory(prefix="bench-video-") as folder:
            root = Path(folder)
            started = time.perf_counter()
            paths = scans.render(root, index)
            self.render_seconds = time.perf_counter() - started
            self.mean_bytes = float(np.mean([p.stat().st_size for p in paths]))
            items = [ItemIn(data={"video": str(p)}) for p in paths]
            started = time.perf_counter()
            found = media_features(items, project, _read, options)
            self.featurize_seconds = time.perf_counter() - started
        assert found.block is not None
        assert not found.unreadable, found.unreadable
        assert found.block.rows == list(range(len(items)))
        self.X = found.block.X


def _read(ref: str) -> bytes | None:
    return Path(ref).read_bytes()


def run(quick: bool) -> dict[str, Any]:
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    budget = 120 if quick else 240
    data = _Data(limit=600 if quick else None)
    n = len(data.y)
    results: dict[str, Any] = {
        "data": {
            "source": "examples/digit-clips (scikit-learn's digit scans, rendered as clips)",
            "items": n,
            "classes": data.classes,
            "class_shares": {c: round(float(np.mean(data.y == c)), 3) for c in data.classes},
            "feature_dim": int(data.X.shape[1]),
        },
        "rendering": {
            "clips": n,
            "seconds": round(data.render_seconds, 2),
            "clips_per_second": round(n / data.render_seconds, 1),
            "mean_bytes": round(data.mean_bytes),
        },
        "featurizer": {
            "items": n,
            "video_seconds": round(n * data.seconds_per_clip, 1),
            "seconds": round(data.featurize_seconds, 2),
            "items_per_second": round(n / data.featurize_seconds, 1),
        },
        "seeds": seeds,
        "budget": budget,
        "seed_labels": SEED_LABELS,
        "batch": BATCH,
        "estimator": ESTIMATOR,
    }
    results["offline_anchor"], found = vector_strategies(
        data,
        STRATEGIES,
        seeds=seeds,
        budget=budget,
        targets=TARGETS,
        seed_size=SEED_LABELS,
        batch=BATCH,
        estimator=ESTIMATOR,
    )
    offline = results["offline_anchor"]["accuracy_mean"]
    results["strategies"] = found

    render, speed = results["rendering"], results["featurizer"]
    rows = [
        row(
            "video clips rendered: clips/s",
            f"{render['clips_per_second']:.0f}",
            f"{n} clips, {render['mean_bytes'] / 1000:.0f} kB each",
            "H.264, 64 x 64, 30 frames, one thread",
        ),
        row(
            "video featurizer: items/s",
            f"{speed['items_per_second']:.0f}",
            f"{n} clips, {speed['video_seconds']:.0f} s of video",
            "8 frames decoded a clip, PyAV",
        ),
        row(
            "video offline anchor: accuracy",
            f"{offline:.3f} ({results['offline_anchor']['per_seed'][0]['labels']} labels)",
        ),
    ]
    rows += strategy_rows(
        found, task="video", measure="accuracy", name="accuracy", targets=TARGETS, budget=budget
    )
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
