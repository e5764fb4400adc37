"""The sampler at scale: choose 1,000 items from a 1M-item pool with the hybrid strategy.

    .venv/bin/python bench/bench_sampler.py [--quick]

A pool of 1M items with 64-dimensional float32 features (the ingester's text feature size) and
5-class model probabilities; ``select(HYBRID, 1000, ...)`` from
``labelloop_sampler.domain.selection``: the 10,000 most uncertain by margin, then KMeans
(MiniBatchKMeans above 4,000 points) weighted by uncertainty, the item nearest each centroid.
Time (median of 3) and peak traced memory (tracemalloc, numpy buffers included).

Checked against a plain numpy reference in the same run: every pick lies in the top 10,000 of a
full ``np.argsort`` by margin, the 1,000 picks are distinct; the reference's own cost (margin
top-1,000 by full sort, i.e. uncertainty without diversity) is timed beside it.
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

from typing import Any

import numpy as np

from harness import measure, row, speed, standalone
from labelloop.project import SamplingStrategy
from labelloop_sampler.domain.selection import select

NAME = "sampler"
N_PICK = 1_000
PREFILTER = 10
DIM, CLASSES = 64, 5


def pool(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, DIM), dtype=np.float32)
    logits = rng.standard_normal((n, CLASSES)) * 2.0
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    return X, proba


def _margin_top(proba: np.ndarray, k: int) -> np.ndarray:
    s = np.sort(proba, axis=1)
    return np.argsort(s[:, -1] - s[:, -2], kind="stable")[:k]


def run(quick: bool) -> dict[str, Any]:
    n = 100_000 if quick else 1_000_000
    X, proba = pool(n)
    repeat = 1 if quick else 3
    chosen, t_hybrid = measure(
        lambda: select(
            SamplingStrategy.HYBRID,
            N_PICK,
            n_candidates=n,
            X=X,
            proba=proba,
            prefilter_factor=PREFILTER,
            random_state=0,
        ),
        repeat=repeat,
    )
    reference, t_ref = measure(lambda: _margin_top(proba, N_PICK), repeat=repeat)
    top = set(_margin_top(proba, PREFILTER * N_PICK).tolist())
    picks = chosen.indices.tolist()
    in_top = sum(p in top for p in picks)
    overlap = len(set(picks) & set(reference.tolist()))
    out = {
        "pool": n,
        "features": DIM,
        "classes": CLASSES,
        "pick": N_PICK,
        "prefilter": PREFILTER * N_PICK,
        "pool_bytes_mb": round((X.nbytes + proba.nbytes) / 2**20, 1),
        "hybrid": t_hybrid,
        "numpy_margin_top_k": t_ref,
        "strategy_ran": chosen.strategy,
        "picks_distinct": len(set(picks)) == N_PICK,
        "picks_in_margin_prefilter": in_top,
        "overlap_with_pure_margin_top_k": overlap,
    }
    out["rows"] = [
        row(
            f"sampler: hybrid {N_PICK:,} of {n:,}",
            f"{t_hybrid.seconds:.2f} s, {t_hybrid.peak_mb:.0f} MB",
            f"numpy margin top-k {t_ref.seconds:.2f} s, {t_ref.peak_mb:.0f} MB",
            f"{speed(t_hybrid.seconds, t_ref.seconds)} (adds diversity)",
            in_top == N_PICK and out["picks_distinct"] and chosen.strategy == "hybrid",
        )
    ]
    return out


if __name__ == "__main__":
    standalone(NAME, run)
