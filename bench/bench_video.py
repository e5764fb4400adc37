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

from curves import accuracy_of, fit_classifier, seed_labels, strategy_rows, summary
from harness import example_module, row, standalone
from labelloop.events import ItemIn
from labelloop.project import SamplingStrategy, parse_project
from labelloop_ingester.domain.featurize import MediaOptions, media_features
from labelloop_sampler.domain.selection import select
from labelloop_trainer.domain.estimators import aligned_proba

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

    def split(self, seed: int) -> tuple[Array, Array]:
        """Stratified 70/30 positions into ``self.X``."""
        rng = np.random.default_rng(seed)
        pool, test = [], []
        for name in self.classes:
            members = rng.permutation(np.flatnonzero(self.y == name))
            n_test = round(len(members) * 0.3)
            test.extend(members[:n_test].tolist())
            pool.extend(members[n_test:].tolist())
        return np.sort(np.asarray(pool)), np.sort(np.asarray(test))


def _read(ref: str) -> bytes | None:
    return Path(ref).read_bytes()


def _fit(data: _Data, rows: Array) -> tuple[Any, float]:
    """The trainer's round on ``rows``; its model and the seconds it took."""
    return fit_classifier(
        rows, data.X[rows], data.y[rows], data.classes, kind="vectors", estimator=ESTIMATOR
    )


def _score(data: _Data, model: Any, test: Array) -> tuple[float, float]:
    return accuracy_of(model, data.X[test], data.y[test], data.classes)


def curve(data: _Data, strategy: str, seed: int, budget: int) -> dict[str, Any]:
    """Labels used and held-out scores after each batch, and the seconds spent."""
    pool, test = data.split(seed)
    labeled = seed_labels(len(pool), SEED_LABELS, seed)
    sizes: list[int] = []
    accuracy: list[float] = []
    macro: list[float] = []
    train_seconds = select_seconds = 0.0
    round_no = 0
    while True:
        model, seconds = _fit(data, pool[labeled])
        train_seconds += seconds
        sizes.append(int(labeled.sum()))
        acc, f1 = _score(data, model, test)
        accuracy.append(acc)
        macro.append(f1)
        if labeled.sum() >= budget:
            break
        candidates = np.flatnonzero(~labeled)
        proba = aligned_proba(model, data.X[pool[candidates]], data.classes)
        started = time.perf_counter()
        chosen = select(
            SamplingStrategy(strategy),
            min(BATCH, budget - int(labeled.sum())),
            n_candidates=len(candidates),
            X=data.X[pool[candidates]],
            proba=proba,
            random_state=seed * 1000 + round_no,
        )
        select_seconds += time.perf_counter() - started
        labeled[candidates[chosen.indices]] = True
        round_no += 1
    return {
        "labels": sizes,
        "accuracy": accuracy,
        "macro_f1": macro,
        "train_seconds": train_seconds,
        "select_seconds": select_seconds,
    }


def offline_anchor(data: _Data, seed: int) -> dict[str, Any]:
    """The same model trained on every label of the pool."""
    pool, test = data.split(seed)
    model, seconds = _fit(data, pool)
    acc, f1 = _score(data, model, test)
    return {"labels": len(pool), "accuracy": acc, "macro_f1": f1, "train_seconds": seconds}


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
    anchors = [offline_anchor(data, s) for s in seeds]
    offline = float(np.mean([a["accuracy"] for a in anchors]))
    results["offline_anchor"] = {
        "accuracy_mean": offline,
        "macro_f1_mean": float(np.mean([a["macro_f1"] for a in anchors])),
        "per_seed": anchors,
    }
    found: dict[str, Any] = {}
    for strategy in STRATEGIES:
        per_seed = [curve(data, strategy, s, budget) for s in seeds]
        found[strategy] = summary(
            per_seed,
            "accuracy",
            also=["macro_f1"],
            targets=TARGETS,
            offline=offline,
        )
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
            f"{offline:.3f} ({len(data.split(seeds[0])[0])} labels)",
        ),
    ]
    rows += strategy_rows(
        found, task="video", measure="accuracy", name="accuracy", targets=TARGETS, budget=budget
    )
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
