"""Audio classification with the ingester's features, the trainer's model and the sampler's
selection; and how fast the ingester's audio featuriser runs.

    .venv/bin/python bench/bench_audio.py [--quick]

Data: the telephone prompts of ``examples/phone-prompts`` (3,326 real recordings in five
languages by six professional voices, 8 kHz WAV, from Debian's ``asterisk-core-sounds-*-wav``
and ``asterisk-prompt-it-menardi-wav`` packages; English and Spanish by the same speaker). The
task: which language. Features: the ingester's own, computed here through the ingester's path
(``media_features``: files read, decoded, resampled to 16 kHz, cut at 30 s, then the spectral
summary of 90 numbers), timed: items per second and seconds of sound per second.

Per seed: a stratified 70/30 split, 20 random seed labels, then batches of 20 chosen by each
strategy up to 240 labels. After every batch the trainer's round runs on the labels so far
(``train_round``: standard scaling and a logistic regression, ``C`` chosen by 5-fold
cross-validation, as the example project's trainer does), scored on the held-out 30% (accuracy,
macro-F1). The labels are the truth (no crew noise). Strategies, from
``labelloop_sampler.domain.selection.select``: ``random``, and ``hybrid`` (labelloop's default:
the margin's most uncertain items clustered on the same features).

Reported: labels to 0.85, 0.90 and 0.95 held-out accuracy on the mean curve over seeds (and per
seed), the area under the learning curve, and the anchors measured in the same run: random
sampling, and the offline anchor, the same model trained on every label of the pool (2,328).
"""

from __future__ import annotations

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
NAME = "audio"
STRATEGIES = ("random", "hybrid")
SEED_LABELS = 20
BATCH = 20
TARGETS = (0.85, 0.90, 0.95)
ESTIMATOR: Final = "logistic_regression"


class _Data:
    """The prompts, their languages and the ingester's features, computed once (and timed)."""

    def __init__(self, limit: int | None = None) -> None:
        prompts = example_module("phone-prompts", "prompts", "phone_prompts").load_prompts()
        index = np.arange(len(prompts.paths))
        if limit is not None:
            index = prompts.subset(index, limit // len(prompts.classes), seed=0)
        self.prompts = prompts
        self.index = index
        self.y: Array = prompts.labels[index]
        self.classes: list[str] = list(prompts.classes)
        project = parse_project(
            {
                "name": "phone-prompts",
                "task_type": "audio_classification",
                "labels": {"classes": self.classes},
                "data_fields": [{"name": "audio", "kind": "audio"}],
            }
        )
        items = [ItemIn(data={"audio": str(prompts.paths[i])}) for i in index]
        options = MediaOptions()
        started = time.perf_counter()
        media_features(items[:2], project, _read, options)  # librosa's import, not timed
        self.import_seconds = time.perf_counter() - started
        started = time.perf_counter()
        found = media_features(items, project, _read, options)
        self.featurize_seconds = time.perf_counter() - started
        assert found.block is not None
        assert not found.unreadable, found.unreadable
        assert found.block.rows == list(range(len(items)))
        self.X = found.block.X
        self.sound_seconds = float(
            sum(min(_seconds(prompts.paths[i]), options.audio_max_seconds) for i in index)
        )

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


def _seconds(path: Path) -> float:
    import soundfile  # type: ignore[import-untyped]  # no type information

    return float(soundfile.info(str(path)).duration)


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
    strategies = STRATEGIES
    data = _Data(limit=600 if quick else None)
    n = len(data.y)
    results: dict[str, Any] = {
        "data": {
            "source": "examples/phone-prompts (Asterisk prompts, Debian packages)",
            "items": n,
            "classes": data.classes,
            "class_shares": {c: round(float(np.mean(data.y == c)), 3) for c in data.classes},
            "feature_dim": int(data.X.shape[1]),
        },
        "featurizer": {
            "items": n,
            "sound_seconds": round(data.sound_seconds, 1),
            "seconds": round(data.featurize_seconds, 2),
            "items_per_second": round(n / data.featurize_seconds, 1),
            "sound_seconds_per_second": round(data.sound_seconds / data.featurize_seconds, 1),
            "first_audio_import_seconds": round(data.import_seconds, 2),
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
    for strategy in strategies:
        per_seed = [curve(data, strategy, s, budget) for s in seeds]
        found[strategy] = summary(
            per_seed, "accuracy", also=["macro_f1"], targets=TARGETS, offline=offline
        )
    results["strategies"] = found

    speed = results["featurizer"]
    rows = [
        row(
            "audio featurizer: items/s (sound s/s)",
            f"{speed['items_per_second']:.0f} ({speed['sound_seconds_per_second']:.0f})",
            f"{n} files, {speed['sound_seconds']:.0f} s of sound",
            f"first audio item: +{speed['first_audio_import_seconds']:.1f} s (librosa import)",
        ),
        row(
            "audio offline anchor: accuracy",
            f"{offline:.3f} ({len(data.split(seeds[0])[0])} labels)",
        ),
    ]
    rows += strategy_rows(
        found, task="audio", measure="accuracy", name="accuracy", targets=TARGETS, budget=budget
    )
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
