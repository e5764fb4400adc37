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

The service path, in the same run (:func:`service_path`): the same pool as a catalog in memory
stores (1M items with 32-hex content-hash ids, 1,000 of them gold, in chunks of 2,000 with
their feature rows), the model's scores as the trainer writes them (a table over the items no
batch holds, ids sorted), and the sampler service's cut of one hybrid batch of 1,000: its choice
(``Sampler._plan``: candidates, the model's rows, the prefiltered feature rows, ``select``, the
tasks planned) and the whole cut (``Sampler._compose``: the choice, then the tasks' data read
from the catalog's chunks). Both are timed in turns with the same numpy anchor (median of 5),
with the catalog loaded, the pool indexed and the table read (what a process holds between
batches); the tasks' data read alone, the table's decoding and matching (once per model), the
first cut after an ingest (the pool indexed again) and the cold start of round 1 are timed once,
and so is the service's earlier choice (the whole pool's features and probability rows stacked,
then ``select``), whose picks the cut's must equal, as must the plain reference's on those
stacked rows. The machine's load average is recorded beside the figures.
"""

# ruff: noqa: N803, N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from harness import Measurement, measure, peak_memory_mb, row, speed, standalone
from labelloop.catalog import Catalog, Chunk, ProbabilityTable, decode_table, encode_table
from labelloop.events import Event, IngestedItem
from labelloop.project import ProjectConfig, SamplingStrategy
from labelloop.stores import MemoryStores
from labelloop_sampler.domain.pool import candidates, proba_rows
from labelloop_sampler.domain.rounds import next_batch
from labelloop_sampler.domain.selection import select
from labelloop_sampler.metrics import SamplerMetrics
from labelloop_sampler.service import Sampler, batch_seed
from labelloop_sampler.store import LedgerStore

# the plain whole-pool selection the unit tests hold as their oracle
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "sampler"))
from selection_reference import reference_select

NAME = "sampler"
N_PICK = 1_000
PREFILTER = 10
DIM, CLASSES = 64, 5
CHUNK_ITEMS = 2_000
N_GOLD = 1_000
SEED = 11


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
    out["service"] = service_path(X, proba, repeat=1 if quick else 5)
    out["rows"] = [
        *out["service"].pop("rows"),
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


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def service_path(X: np.ndarray, proba: np.ndarray, *, repeat: int) -> dict[str, Any]:
    """The sampler service's cut of one hybrid batch from the pool as a catalog (module doc)."""
    n = len(X)
    loop = asyncio.new_event_loop()
    try:
        return _service_path(loop, X, proba, n, repeat)
    finally:
        loop.close()


def _service_path(
    loop: asyncio.AbstractEventLoop, X: np.ndarray, proba: np.ndarray, n: int, repeat: int
) -> dict[str, Any]:
    run = loop.run_until_complete
    project = "bench"
    started = time.perf_counter()
    ids = [hashlib.sha256(str(k).encode()).hexdigest()[:32] for k in range(n)]
    items = [
        IngestedItem.model_construct(
            item_id=i,
            data={"image": f"s3://bench/{k}.png"},
            metadata={},
            known_label="a" if k < N_GOLD else None,
            prediction=None,
            external_id=None,
        )
        for k, i in enumerate(ids)
    ]
    stores = MemoryStores()
    catalog = Catalog(stores.state, stores.artifacts, keep_data=False, chunk_cache=4)
    for c, start in enumerate(range(0, n, CHUNK_ITEMS)):
        stop = start + CHUNK_ITEMS
        run(
            catalog.write(
                project, f"c{c:05d}", Chunk(items[start:stop], "text-hash-64", X[start:stop])
            )
        )
    del items
    config = ProjectConfig.model_validate(
        {
            "name": project,
            "task_type": "image_classification",
            "labels": {"classes": [f"k{j}" for j in range(CLASSES)]},
            "data_fields": [{"name": "image", "kind": "image"}],
            "sampling": {
                "strategy": "hybrid",
                "batch_size": N_PICK,
                "max_open_tasks": 4 * N_PICK,
                "max_model_lag": 0,
                "start": "on_command",
                "seed": SEED,
            },
            "quality": {"gold_fraction": 0.0, "overlap_fraction": 0.0},
        }
    )
    sent: list[Event] = []

    async def publish(event: Event) -> None:
        sent.append(event)

    sampler = Sampler(
        ledgers=LedgerStore(lambda: stores.state, lambda: stores.artifacts),
        catalog=catalog,
        artifacts=lambda: stores.artifacts,
        publish=publish,
        metrics=SamplerMetrics(CollectorRegistry()),
        prefilter_factor=PREFILTER,
    )
    loaded = run(catalog.load(project))
    setup_seconds = time.perf_counter() - started
    # round 1: a cold start (no model), diversity over a subsample of the pool
    t0 = time.perf_counter()
    run(sampler.sampling_requested(config, "start"))
    cold_start = time.perf_counter() - t0
    first = sent[-1]
    taken = {t.item_id for t in first.tasks}
    # round 1's model scores every item no batch holds, in id order, as the trainer writes it
    position = {i: k for k, i in enumerate(ids)}
    scored = sorted(i for i in ids if i not in taken and i not in loaded.gold)
    table = ProbabilityTable(scored, proba[[position[i] for i in scored]], config.labels.classes)
    ref = f"trainer/{project}/scores/m0001.npz"
    run(stores.artifacts.put(ref, encode_table(table)))
    del table, position
    run(
        sampler.ledgers.change(
            project,
            lambda ledger: ledger.with_model(
                1, model_version="m0001", scores_ref=ref, converged=None
            ).with_qa(1, flagged=[], lead_seconds=1.0, lead_count=1),
        )
    )
    ledger, _ = run(sampler.ledgers.read(project))
    verdict = next_batch(ledger, config.sampling, uses_model=True)
    assert verdict.cut, verdict
    assert verdict.basis == 1, verdict

    def cut() -> Any:
        return run(sampler._compose(config, ledger, verdict, None, None))

    def choose() -> Any:
        return run(sampler._plan(config, ledger, verdict, None, None))

    # the first cut after an ingest: the pool is indexed, the model's table read and matched
    sampler._pools.clear()
    sampler._scores.clear()
    t0 = time.perf_counter()
    batch = cut()
    first_cut = time.perf_counter() - t0
    raw = run(stores.artifacts.get(ref))
    assert raw is not None
    _, t_decode = measure(lambda: decode_table(raw), repeat=1, memory=False)
    index = sampler._pools[project][1]
    t0 = time.perf_counter()
    index._tables.clear()
    index.table_rows(ref, sampler._scores[ref].item_ids)
    t_match = time.perf_counter() - t0
    t = _in_turns(
        {
            "choose": choose,
            "cut": cut,
            "numpy_margin_top_k": lambda: _margin_top(proba, N_PICK),
        },
        repeat=repeat,
    )
    t_choose, t_cut, t_anchor = t["choose"], t["cut"], t["numpy_margin_top_k"]
    picked = {task.item_id for task in batch.tasks}
    touched = len({loaded.chunk_of[i] for i in picked})
    _, t_data = measure(lambda: run(catalog.data_of(project, loaded, sorted(picked))), repeat=1)

    # the service's earlier path: the pool's rows stacked whole, then select (and the oracle)
    def earlier() -> tuple[list[str], list[str], dict[str, Any]]:
        pool_ids = loaded.item_ids()
        pool = candidates(
            pool_ids,
            [i in loaded.gold for i in pool_ids],
            taken=taken,
        )
        table = sampler._scores[ref]
        stacked = loaded.matrix(pool.item_ids)
        assert stacked is not None
        kwargs = {
            "n_candidates": len(pool.item_ids),
            "X": stacked[0],
            "proba": proba_rows(pool.item_ids, table.rows(), table.proba),
            "prefilter_factor": PREFILTER,
            "random_state": batch_seed(SEED, verdict.round),
        }
        chosen = select(SamplingStrategy.HYBRID, N_PICK, **kwargs)
        return [pool.item_ids[i] for i in chosen.indices.tolist()], pool.item_ids, kwargs

    (before, pool_ids, kwargs), t_earlier = measure(earlier, repeat=1)
    oracle = reference_select(SamplingStrategy.HYBRID, N_PICK, **kwargs)
    del kwargs
    equal_earlier = picked == set(before)
    equal_oracle = picked == {pool_ids[i] for i in oracle.tolist()}
    ok = equal_earlier and equal_oracle and batch.strategy == "hybrid" and len(picked) == N_PICK
    ratio = (
        f"{speed(t_choose.seconds, t_anchor.seconds)} (adds diversity)"
        if ok
        else "picks differ from the stacked path: no ratio"
    )
    out: dict[str, Any] = {
        "pool": n,
        "chunk_items": CHUNK_ITEMS,
        "gold": N_GOLD,
        "setup_seconds": round(setup_seconds, 1),
        "choose": t_choose,
        "cut": t_cut,
        "numpy_margin_top_k": t_anchor,
        "chunks_read_for_tasks_data": touched,
        "first_cut_after_ingest_seconds": round(first_cut, 3),
        "cold_start_diversity_seconds": round(cold_start, 3),
        "table_decode": t_decode,
        "table_match_seconds": round(t_match, 3),
        "tasks_data_read": t_data,
        "earlier_service_path": t_earlier,
        "picks_equal_earlier_service_path": equal_earlier,
        "picks_equal_plain_reference": equal_oracle,
        "load_average": _load(),
    }
    out["rows"] = [
        row(
            f"sampler service: hybrid {N_PICK:,} of {n:,} chosen",
            f"{t_choose.seconds:.2f} s, {t_choose.peak_mb:.0f} MB",
            f"numpy margin top-k {t_anchor.seconds:.2f} s, {t_anchor.peak_mb:.0f} MB",
            ratio,
            ok,
        ),
        row(
            "sampler service: the whole cut (+ tasks' data)",
            f"{t_cut.seconds:.2f} s, {t_cut.peak_mb:.0f} MB",
            f"data alone {t_data.seconds:.2f} s ({touched} chunks)",
            f"{speed(t_cut.seconds, t_anchor.seconds)}",
        ),
        row(
            "sampler service: the earlier choice (stacked)",
            f"{t_earlier.seconds:.2f} s, {t_earlier.peak_mb:.0f} MB",
            "",
            f"now {speed(t_choose.seconds, t_earlier.seconds)}",
        ),
        row(
            "sampler service: once per model / ingest",
            f"table read {t_decode.seconds:.2f} s + matched {t_match:.2f} s",
            f"first cut after ingest {first_cut:.2f} s",
            f"cold start (diversity) {cold_start:.2f} s",
        ),
    ]
    return out


if __name__ == "__main__":
    standalone(NAME, run)
