"""Benchmark the qa-scorer's maths against the anchor libraries, equality first, then time.

    .venv/bin/python bench/bench_qa.py [--items 250000] [--annotators 50] [--classes 5]

Simulates a crew (30% uniform spammers, 4 labels per item, so statsmodels' Fleiss applies),
checks that labelloop's numbers equal crowd-kit's (majority vote on non-tied items, Dawid-Skene
labels), ``krippendorff.alpha``, statsmodels' ``fleiss_kappa`` and scikit-learn's
``cohen_kappa_score`` (looped over annotator pairs), then times each side in the same run and
writes ``bench/results/qa.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelloop_qa.domain import agreement
from labelloop_qa.domain.aggregation import dawid_skene, majority_vote
from labelloop_qa.domain.crowd import simulate_crew


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=250_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--labels-per-item", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "qa.json")
    args = parser.parse_args()

    n_spam = round(0.3 * args.annotators)
    crew = simulate_crew(
        n_items=args.items,
        n_classes=args.classes,
        behaviours=["good"] * (args.annotators - n_spam) + ["spammer"] * n_spam,
        accuracies=[0.8] * args.annotators,
        labels_per_item=args.labels_per_item,
        random_state=0,
    )
    r = crew.ratings
    print(f"{r.n_ratings:,} annotations, {r.n_items:,} items, {r.n_annotators} annotators")
    results: dict[str, Any] = {
        "n_annotations": r.n_ratings,
        "n_items": r.n_items,
        "n_annotators": r.n_annotators,
        "n_classes": r.n_classes,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "timings_seconds": {},
        "checks": {},
    }
    t, checks = results["timings_seconds"], results["checks"]

    # ---------------------------------------------------------------- consensus
    from crowdkit.aggregation import DawidSkene, MajorityVote

    frame = pd.DataFrame({"task": r.item, "worker": r.annotator, "label": r.label})
    ours_mv, t["labelloop_majority_vote"] = timed(lambda: majority_vote(r), repeat=3)
    ck_mv, t["crowdkit_majority_vote"] = timed(lambda: MajorityVote().fit_predict(frame))
    counts = r.item_counts()
    untied = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) == 1
    ck_mv_labels = ck_mv.sort_index().to_numpy()
    checks["majority_vote_equal_on_untied_items"] = bool(
        (ck_mv_labels[untied] == ours_mv.label[untied]).all()
    )
    ours_ds, t["labelloop_dawid_skene"] = timed(lambda: dawid_skene(r, tol=1e-5))
    ck_ds, t["crowdkit_dawid_skene"] = timed(
        lambda: DawidSkene(n_iter=100, tol=1e-5).fit_predict(frame)
    )
    same = float((ck_ds.sort_index().to_numpy() == ours_ds.label).mean())
    checks["dawid_skene_label_agreement_with_crowdkit"] = same
    results["accuracy"] = {
        "majority_vote": float((ours_mv.label == crew.truth).mean()),
        "dawid_skene": float((ours_ds.label == crew.truth).mean()),
        "crowdkit_dawid_skene": float((ck_ds.sort_index().to_numpy() == crew.truth).mean()),
    }

    # ---------------------------------------------------------------- agreement
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import fleiss_kappa

    ours_alpha, t["labelloop_krippendorff_alpha"] = timed(
        lambda: agreement.krippendorff_alpha(r), repeat=3
    )
    matrix = np.full((r.n_annotators, r.n_items), np.nan)
    matrix[r.annotator, r.item] = r.label
    kr_alpha, t["krippendorff_alpha"] = timed(
        lambda: krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    )
    checks["krippendorff_alpha_abs_diff"] = abs(ours_alpha - kr_alpha)
    ours_fleiss, t["labelloop_fleiss_kappa"] = timed(lambda: agreement.fleiss_kappa(r), repeat=3)
    sm_fleiss, t["statsmodels_fleiss_kappa"] = timed(lambda: fleiss_kappa(counts))
    checks["fleiss_kappa_abs_diff"] = abs(ours_fleiss - sm_fleiss)
    ours_cohen, t["labelloop_cohen_kappa_pairs"] = timed(
        lambda: agreement.cohen_kappa_pairs(r, min_common=2), repeat=3
    )

    def sklearn_loop() -> float:
        a1, l1, a2, l2 = agreement.rating_pairs(r)
        code = a1 * r.n_annotators + a2
        order = np.argsort(code, kind="stable")
        bounds = np.flatnonzero(np.diff(code[order])) + 1
        values = []
        for idx in np.split(order, bounds):
            if len(idx) >= 2:
                k = cohen_kappa_score(l1[idx], l2[idx], labels=list(range(r.n_classes)))
                if np.isfinite(k):
                    values.append(k)
        return float(np.mean(values))

    sk_cohen, t["sklearn_cohen_kappa_loop"] = timed(sklearn_loop)
    checks["cohen_kappa_mean_abs_diff"] = abs((ours_cohen.mean or 0.0) - sk_cohen)
    _, t["labelloop_summary_with_200_bootstrap"] = timed(lambda: agreement.summarize(r))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    width = max(len(k) for k in t)
    for name, seconds in t.items():
        print(f"{name:<{width}}  {seconds:8.3f} s")
    print(json.dumps(checks, indent=2))
    print(json.dumps(results["accuracy"], indent=2))


if __name__ == "__main__":
    main()
