"""The sampler at scale: choose 1,000 items from a 1M-item pool with the hybrid strategy.

    .venv/bin/python bench/bench_sampler.py [--quick]

A pool of 1M items with 64-dimensional float32 features (the ingester's text feature size) and
5-class model probabilities; ``select(HYBRID, 1000, ...)`` from
``labelloop_sampler.domain.selection``: the margin over the probabilities a chunk at a time, the
10,000 most uncertain (``prefilter_factor`` 10 times the batch), then k-means weighted by
uncertainty on those 10,000 feature rows only (1,000 clusters: the nested k-means), the item
nearest each centroid.

Checked first, in the same run: the picks equal, one for one, those of the plain whole-pool
computation (``tests/unit/sampler/selection_reference.py``: the candidates' feature and
probability rows copied, the margin by a float64 sort per row), and no ratio is printed
otherwise; the 1,000 picks are distinct and lie in the top 10,000 of a full ``np.argsort`` by
margin. The anchor is numpy's plain margin top-1,000 by full sort (uncertainty without
diversity) over the same pool; the two are timed in turns (median of 5; 1 in ``--quick``), so
a busy machine slows both alike. The sampler as it was (the same plain computation with
scikit-learn's MiniBatchKMeans for the clustering) is timed once beside them.

Diversity, in the same run: how well the picks cover the 10,000 prefiltered candidates, as the
mean squared distance from a candidate to its nearest pick (lower covers better), for the
picks, the sampler's earlier picks, numpy's margin top-1,000 and 1,000 random candidates. Peak
memory is tracemalloc's (numpy buffers included).
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness import Measurement, measure, peak_memory_mb, row, speed, standalone
from labelloop.project import SamplingStrategy
from labelloop_sampler.domain.selection import select

# the plain whole-pool selection the unit tests hold as their oracle
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "sampler"))
from selection_reference import reference_select

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


def _in_turns(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, Measurement]:
    """Median wall time of each function, run in turns; then each one's peak memory."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {
        name: Measurement(statistics.median(runs[name]), runs[name], peak_memory_mb(fn))
        for name, fn in fns.items()
    }


def _coverage(features: np.ndarray, picks: np.ndarray) -> float:
    """Mean squared distance from each row of ``features`` to its nearest pick."""
    data = features.astype(np.float64)
    chosen = data[picks]
    nearest = np.full(len(data), np.inf)
    for start in range(0, len(data), 2_000):
        block = data[start : start + 2_000]
        d = (block**2).sum(1)[:, None] - 2.0 * block @ chosen.T + (chosen**2).sum(1)[None, :]
        nearest[start : start + 2_000] = np.maximum(d.min(axis=1), 0.0)
    return float(nearest.mean())


def run(quick: bool) -> dict[str, Any]:
    n = 100_000 if quick else 1_000_000
    X, proba = pool(n)
    kwargs: dict[str, Any] = {
        "n_candidates": n,
        "X": X,
        "proba": proba,
        "prefilter_factor": PREFILTER,
        "random_state": 0,
    }
    hybrid = SamplingStrategy.HYBRID
    chosen = select(hybrid, N_PICK, **kwargs)
    identical = bool(np.array_equal(chosen.indices, reference_select(hybrid, N_PICK, **kwargs)))
    t = _in_turns(
        {
            "hybrid": lambda: select(hybrid, N_PICK, **kwargs),
            "numpy_margin_top_k": lambda: _margin_top(proba, N_PICK),
        },
        repeat=1 if quick else 5,
    )
    t_hybrid, t_anchor = t["hybrid"], t["numpy_margin_top_k"]
    earlier, t_earlier = measure(
        lambda: reference_select(hybrid, N_PICK, **kwargs, nested=False), repeat=1
    )
    top_order = _margin_top(proba, PREFILTER * N_PICK)
    top = set(top_order.tolist())
    picks = chosen.indices.tolist()
    in_top = sum(p in top for p in picks)
    overlap = len(set(picks) & set(_margin_top(proba, N_PICK).tolist()))
    ok = (
        identical and in_top == N_PICK and len(set(picks)) == N_PICK and chosen.strategy == "hybrid"
    )

    # coverage of the prefiltered candidates: the rows the clustering sees
    position = {row: i for i, row in enumerate(top_order.tolist())}
    candidates = X[top_order]

    def cover(rows: np.ndarray) -> float:
        return round(_coverage(candidates, np.array([position[r] for r in rows])), 3)

    rng = np.random.default_rng(1)
    coverage = {
        "hybrid": cover(chosen.indices),
        "earlier_hybrid_minibatchkmeans": cover(earlier) if set(earlier) <= top else None,
        "numpy_margin_top_k": cover(top_order[:N_PICK]),
        "random_in_prefilter": cover(rng.choice(top_order, N_PICK, replace=False)),
    }
    out = {
        "pool": n,
        "features": DIM,
        "classes": CLASSES,
        "pick": N_PICK,
        "prefilter": PREFILTER * N_PICK,
        "pool_bytes_mb": round((X.nbytes + proba.nbytes) / 2**20, 1),
        "hybrid": t_hybrid,
        "numpy_margin_top_k": t_anchor,
        "earlier_hybrid": t_earlier,
        "strategy_ran": chosen.strategy,
        "picks_equal_plain_reference": identical,
        "picks_distinct": len(set(picks)) == N_PICK,
        "picks_in_margin_prefilter": in_top,
        "overlap_with_pure_margin_top_k": overlap,
        "overlap_with_earlier_hybrid": len(set(picks) & set(earlier.tolist())),
        "coverage_of_prefilter": coverage,
    }
    ratio = (
        f"{speed(t_hybrid.seconds, t_anchor.seconds)} (adds diversity)"
        if identical
        else "picks differ from the plain reference: no ratio"
    )
    out["rows"] = [
        row(
            f"sampler: hybrid {N_PICK:,} of {n:,}",
            f"{t_hybrid.seconds:.2f} s, {t_hybrid.peak_mb:.0f} MB",
            f"numpy margin top-k {t_anchor.seconds:.2f} s, {t_anchor.peak_mb:.0f} MB",
            ratio,
            ok,
        ),
        row(
            "sampler: the earlier hybrid (MiniBatchKMeans)",
            f"{t_earlier.seconds:.2f} s, {t_earlier.peak_mb:.0f} MB",
            "",
            f"now {speed(t_hybrid.seconds, t_earlier.seconds)}",
        ),
        row(
            "sampler: coverage of the prefilter",
            f"{coverage['hybrid']:.2f}",
            f"earlier {coverage['earlier_hybrid_minibatchkmeans']}, "
            f"margin top-k {coverage['numpy_margin_top_k']:.2f}",
            f"random {coverage['random_in_prefilter']:.2f} (lower covers better)",
            coverage["hybrid"]
            < min(coverage["numpy_margin_top_k"], coverage["random_in_prefilter"]),
        ),
    ]
    return out


if __name__ == "__main__":
    standalone(NAME, run)
