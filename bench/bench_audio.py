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

from curves import strategy_rows, vector_strategies
from harness import example_module, row, standalone
from labelloop.events import ItemIn
from labelloop.project import parse_project
from labelloop_ingester.domain.featurize import MediaOptions, media_features

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


def _read(ref: str) -> bytes | None:
    return Path(ref).read_bytes()


def _seconds(path: Path) -> float:
    import soundfile  # type: ignore[import-untyped]  # no type information

    return float(soundfile.info(str(path)).duration)


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
    results["offline_anchor"], found = vector_strategies(
        data,
        strategies,
        seeds=seeds,
        budget=budget,
        targets=TARGETS,
        seed_size=SEED_LABELS,
        batch=BATCH,
        estimator=ESTIMATOR,
    )
    offline = results["offline_anchor"]["accuracy_mean"]
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
            f"{offline:.3f} ({results['offline_anchor']['per_seed'][0]['labels']} labels)",
        ),
    ]
    rows += strategy_rows(
        found, task="audio", measure="accuracy", name="accuracy", targets=TARGETS, budget=budget
    )
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
