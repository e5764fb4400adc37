"""Active learning on scikit-learn's digits with the sampler's pure selection code.

    .venv/bin/python bench/bench_active_learning.py [--quick]

Per seed: a stratified 70/30 split of the 1,797 digits, 20 random seed labels, then batches of 20
chosen by each strategy up to 400 labels; logistic regression on pixel values / 16 after every
batch, accuracy on the held-out 30%. Strategies: ``random``, ``margin``, ``entropy`` and
``hybrid`` (labelloop's default) from ``labelloop_sampler.domain.selection.select``.

Reported: labels needed to reach 90% and 95% test accuracy on the mean curve over seeds (and
per seed), and the area under the learning curve (mean accuracy over the budget). The anchor is
random sampling in the same run; the uncertainty strategies' picks are also checked against a
plain numpy top-k of the same scores (``np.argsort``) every round.
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from harness import row, standalone
from labelloop.project import SamplingStrategy
from labelloop_sampler.domain.selection import select

NAME = "active_learning"
STRATEGIES = ("random", "margin", "entropy", "hybrid")
SEED_LABELS = 20
BATCH = 20
THRESHOLDS = (0.90, 0.95)


def _naive_top(proba: np.ndarray, strategy: str, n: int) -> set[int]:
    """The reference: the n most uncertain rows by a full sort (Settles 2009 definitions)."""
    if strategy == "margin":
        s = np.sort(proba, axis=1)
        score = -(s[:, -1] - s[:, -2])
    else:
        p = np.clip(proba, 1e-300, 1.0)
        score = -(proba * np.log(p)).sum(axis=1)
    return set(np.argsort(-score, kind="stable")[:n].tolist())


def curve(strategy: str, seed: int, budget: int) -> tuple[list[int], list[float], int, float]:
    """Labels used and test accuracy after each batch; rounds whose picks differ from the
    naive top-k (uncertainty strategies only); seconds spent in ``select``."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_pool, X_test, y_pool, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    rng = np.random.default_rng(seed)
    labeled = np.zeros(len(X_pool), dtype=bool)
    labeled[rng.choice(len(X_pool), size=SEED_LABELS, replace=False)] = True
    sizes: list[int] = []
    accs: list[float] = []
    mismatched = 0
    select_seconds = 0.0
    round_no = 0
    while True:
        model = LogisticRegression(max_iter=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_pool[labeled], y_pool[labeled])
        sizes.append(int(labeled.sum()))
        accs.append(float(model.score(X_test, y_test)))
        if labeled.sum() >= budget:
            break
        candidates = np.flatnonzero(~labeled)
        proba = model.predict_proba(X_pool[candidates])
        start = time.perf_counter()
        chosen = select(
            SamplingStrategy(strategy),
            min(BATCH, budget - int(labeled.sum())),
            n_candidates=len(candidates),
            X=X_pool[candidates],
            proba=proba,
            random_state=seed * 1000 + round_no,
        )
        select_seconds += time.perf_counter() - start
        if strategy in ("margin", "entropy"):
            mismatched += int(set(chosen.indices.tolist()) != _naive_top(proba, strategy, BATCH))
        labeled[candidates[chosen.indices]] = True
        round_no += 1
    return sizes, accs, mismatched, select_seconds


def _labels_to(sizes: list[int], accs: np.ndarray, threshold: float) -> int | None:
    hit = np.flatnonzero(accs >= threshold)
    return int(sizes[hit[0]]) if len(hit) else None


def run(quick: bool) -> dict[str, Any]:
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    budget = 200 if quick else 400
    results: dict[str, Any] = {"seeds": seeds, "budget": budget, "seed_labels": SEED_LABELS}
    strategies: dict[str, Any] = {}
    for strategy in STRATEGIES:
        per_seed = [curve(strategy, s, budget) for s in seeds]
        sizes = per_seed[0][0]
        acc = np.array([p[1] for p in per_seed])
        mean = acc.mean(axis=0)
        strategies[strategy] = {
            "labels": sizes,
            "mean_accuracy": mean.round(4).tolist(),
            "labels_to": {f"{t:.2f}": _labels_to(sizes, mean, t) for t in THRESHOLDS},
            "labels_to_per_seed": {
                f"{t:.2f}": [_labels_to(sizes, a, t) for a in acc] for t in THRESHOLDS
            },
            # area under the learning curve, normalised by the label range: mean accuracy
            "aulc": float(np.trapezoid(mean, sizes) / (sizes[-1] - sizes[0])),
            "final_accuracy": float(mean[-1]),
            "rounds_differing_from_numpy_top_k": sum(p[2] for p in per_seed),
            "select_seconds_total": round(sum(p[3] for p in per_seed), 3),
        }
    results["strategies"] = strategies
    base = strategies["random"]
    rows = []
    for name in STRATEGIES:
        s = strategies[name]
        to90, to95 = s["labels_to"]["0.90"], s["labels_to"]["0.95"]
        ours = f"90%: {to90 or '>' + str(budget)}, 95%: {to95 or '>' + str(budget)}"
        anchor = (
            f"random 90%: {base['labels_to']['0.90'] or '>' + str(budget)}, "
            f"95%: {base['labels_to']['0.95'] or '>' + str(budget)}"
        )
        check = None
        if name in ("margin", "entropy"):
            check = s["rounds_differing_from_numpy_top_k"] == 0
        rows.append(
            row(
                f"AL {name}: labels to acc (AULC)",
                f"{ours} ({s['aulc']:.3f})",
                f"{anchor} ({base['aulc']:.3f})" if name != "random" else "",
                f"AULC {s['aulc'] - base['aulc']:+.3f} vs random" if name != "random" else "",
                check,
            )
        )
    results["rows"] = rows
    return results


if __name__ == "__main__":
    standalone(NAME, run)
