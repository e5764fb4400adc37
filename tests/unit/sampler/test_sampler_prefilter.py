"""The sampler prefilters before it reads features: a batch reads the catalog rows the selection
asks for (the prefiltered candidates, a cold start's subsample) and picks what stacking the
whole pool's rows picked (``ProjectItems.matrix`` and ``pool.proba_rows``, as the service did)."""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from selection_reference import reference_select

from labelloop.catalog import (
    Catalog,
    Chunk,
    ProbabilityTable,
    ProjectItems,
    decode_table,
    encode_table,
)
from labelloop.events import BatchCreated, Event, IngestedItem, ModelTrained, QAReport
from labelloop.project import ProjectConfig
from labelloop.project import SamplingStrategy as S
from labelloop.stores import MemoryStores
from labelloop_sampler.domain.pool import CandidateFeatures, PoolIndex, candidates, proba_rows
from labelloop_sampler.domain.selection import select
from labelloop_sampler.metrics import SamplerMetrics
from labelloop_sampler.service import Sampler, batch_seed
from labelloop_sampler.store import LedgerStore

PROJECT = "wide"
SEED = 5
CONFIG: dict[str, Any] = {
    "name": PROJECT,
    "task_type": "image_classification",
    "labels": {"classes": ["a", "b", "c"]},
    "data_fields": [{"name": "image", "kind": "image"}],
    "sampling": {
        "strategy": "hybrid",
        "batch_size": 10,
        "max_open_tasks": 100,
        "max_model_lag": 1,
        "start": "on_command",
        "seed": SEED,
    },
    "quality": {"gold_fraction": 0.1, "overlap_fraction": 0.0},
    "budget": {"max_labels": 1_000},
}


class _CountedRows(dict[str, NDArray[np.float32]]):
    """A feature space's rows that remember which were read."""

    read: list[str]

    def __getitem__(self, key: str) -> NDArray[np.float32]:
        self.read.append(key)
        return super().__getitem__(key)


class _SpyCatalog(Catalog):
    """The catalog, its feature rows counted as the sampler reads them."""

    spaces: list[_CountedRows]

    async def load(self, project: str) -> ProjectItems:
        items = await super().load(project)
        for space in items.spaces.values():
            if not isinstance(space.rows, _CountedRows):
                counted = _CountedRows(space.rows)
                counted.read = []
                space.rows = counted
                self.spaces.append(counted)
        return items

    def rows_read(self) -> list[str]:
        return [i for space in self.spaces for i in space.read]

    def forget_reads(self) -> None:
        for space in self.spaces:
            space.read.clear()


async def _published(sent: list[Event], event: Event) -> None:
    sent.append(event)


async def _campaign(n: int, *, with_features: int) -> tuple[MemoryStores, list[Event], list[str]]:
    """Cut batches 1 and 2 (no model: diversity), then batch 3 with round 1's model (hybrid);
    the first ``with_features`` items have a feature row, the others none. Returns the stores,
    what was published, and the ids of the feature rows batch 3 read."""
    stores = MemoryStores()
    rng = np.random.default_rng(3)
    # ids in an order unlike ingestion's, as content hashes are
    items = [
        IngestedItem(
            item_id=f"{(k * 7919) % 100_003:06d}-{k}",
            data={"image": f"img-{k}"},
            known_label="a" if k < 6 else None,
        )
        for k in range(n)
    ]
    catalog = _SpyCatalog(stores.state, stores.artifacts, keep_data=False)
    catalog.spaces = []
    X = rng.standard_normal((with_features, 8)).astype(np.float32)
    await catalog.write(PROJECT, "c1", Chunk(items[:with_features], "producer-8", X))
    if with_features < n:
        await catalog.write(PROJECT, "c2", Chunk(items[with_features:]))
    config = ProjectConfig.model_validate(CONFIG)
    sent: list[Event] = []
    sampler = Sampler(
        ledgers=LedgerStore(lambda: stores.state, lambda: stores.artifacts),
        catalog=catalog,
        artifacts=lambda: stores.artifacts,
        publish=lambda event: _published(sent, event),
        metrics=SamplerMetrics(CollectorRegistry()),
    )
    await sampler.sampling_requested(config, "start")
    assert [b.strategy for b in _batches(sent)] == ["diversity", "diversity"]
    catalog.forget_reads()
    # round 1's model scores the items of no batch but every seventh, and a few it never saw
    taken = {t.item_id for b in _batches(sent) for t in b.tasks}
    scored = [i.item_id for k, i in enumerate(items) if i.item_id not in taken and k % 7]
    scored = sorted([*scored, "zz-gone-1", "zz-gone-2"])
    proba = rng.dirichlet([1.0, 1.0, 1.0], size=len(scored))
    ref = f"trainer/{PROJECT}/scores/m0001.npz"
    await stores.artifacts.put(ref, encode_table(ProbabilityTable(scored, proba, ["a", "b", "c"])))
    await sampler.model_trained(
        config,
        ModelTrained(
            project=PROJECT,
            model_version="m0001",
            dataset_version="v0001",
            round=1,
            promoted=True,
            metrics={},
            n_train=9,
            scores_ref=ref,
            serving_model_version="m0001",
            serving_scores_ref=ref,
        ),
    )
    await sampler.qa_reported(
        config,
        QAReport(
            project=PROJECT,
            batch_id=_batches(sent)[0].batch_id,
            round=1,
            n_items=10,
            n_annotations=10,
            consensus_method="majority",
        ),
    )
    return stores, sent, catalog.rows_read()


def _batches(sent: list[Event]) -> list[BatchCreated]:
    found = [e for e in sent if isinstance(e, BatchCreated) and e.kind == "labeling"]
    return sorted(found, key=lambda b: b.round)


async def _full_matrix_picks(stores: MemoryStores, sent: list[Event]) -> dict[str, float]:
    """Batch 3's picks as the service chose them before: the pool's features and probability
    rows stacked whole (``ProjectItems.matrix``, ``proba_rows``), then ``select``."""
    items = await Catalog(stores.state, stores.artifacts).load(PROJECT)
    first, second, third = _batches(sent)
    taken = {t.item_id for b in (first, second) for t in b.tasks}
    ids = items.item_ids()
    pool = candidates(ids, [items.records[i].known_label is not None for i in ids], taken=taken)
    raw = await stores.artifacts.get(f"trainer/{PROJECT}/scores/m0001.npz")
    assert raw is not None
    table = decode_table(raw)
    stacked = items.matrix(pool.item_ids)
    assert stacked is not None
    kwargs: dict[str, Any] = {
        "n_candidates": len(pool.item_ids),
        "X": stacked[0],
        "proba": proba_rows(pool.item_ids, table.rows(), table.proba),
        "prefilter_factor": 10,
        "random_state": batch_seed(SEED, 3),
    }
    n_items = sum(not t.is_gold for t in third.tasks)
    chosen = select(S.HYBRID, n_items, **kwargs)
    assert np.array_equal(chosen.indices, reference_select(S.HYBRID, n_items, **kwargs))
    return {
        pool.item_ids[i]: round(float(s), 6)
        for i, s in zip(chosen.indices.tolist(), chosen.scores.tolist(), strict=True)
    }


async def test_a_hybrid_batch_reads_only_its_prefiltered_rows_and_picks_as_the_whole_pool() -> None:
    stores, sent, read = await _campaign(3_000, with_features=3_000)
    third = _batches(sent)[2]
    assert third.strategy == "hybrid"
    picked = {t.item_id: t.score for t in third.tasks if not t.is_gold}
    assert picked == await _full_matrix_picks(stores, sent)
    # 9 items: the 90 most uncertain candidates' rows are all it read, each once
    assert len(read) == 90
    assert len(set(read)) == len(read)
    assert set(picked) <= set(read)


async def test_items_without_a_feature_row_get_the_pools_mean_row_as_before() -> None:
    stores, sent, _ = await _campaign(1_500, with_features=1_000)
    third = _batches(sent)[2]
    assert third.strategy == "hybrid"
    picked = {t.item_id: t.score for t in third.tasks if not t.is_gold}
    assert picked == await _full_matrix_picks(stores, sent)


@pytest.mark.parametrize("strategy", [S.HYBRID, S.DIVERSITY, S.MARGIN, S.ENTROPY])
def test_rows_read_on_demand_pick_as_the_stacked_pool(strategy: S) -> None:
    """A pool of 25,000: diversity (and a cold start) clusters a seeded subsample of 20,000,
    hybrid the prefiltered 200; the feature rows read are those and no others, and the model's
    whole table read through ``proba_index`` gives the candidates' stacked rows' picks."""
    rng = np.random.default_rng(8)
    n = 25_000
    ids = [f"i{k:05d}" for k in range(n)]
    gold = {ids[k] for k in range(0, n, 1_000)}
    rows = {i: rng.standard_normal(4).astype(np.float32) for i in ids[: n - 300]}
    index = PoolIndex(reversed(ids), gold)
    pool = index.candidates(taken=set(ids[100:400]), recent_gold={ids[0]})
    plain = candidates(ids, [i in gold for i in ids], taken=set(ids[100:400]), recent_gold={ids[0]})
    assert (list(pool.item_ids), list(pool.gold_ids)) == (plain.item_ids, plain.gold_ids)
    assert pool.item_ids[3] == plain.item_ids[3]
    assert list(pool.item_ids[5:9]) == plain.item_ids[5:9]
    table_ids = sorted([*ids[::3], "elsewhere"], reverse=True)
    table = rng.dirichlet([1.0, 1.0, 1.0, 1.0], size=len(table_ids))
    stacked = np.zeros((len(pool.item_ids), 4), dtype=np.float32)
    has = np.asarray([i in rows for i in pool.item_ids])
    stacked[has] = np.asarray([rows[i] for i in pool.item_ids if i in rows])
    stacked[~has] = stacked[has].mean(axis=0)
    whole: dict[str, Any] = {
        "n_candidates": len(pool.item_ids),
        "X": stacked,
        "proba": proba_rows(pool.item_ids, {i: r for r, i in enumerate(table_ids)}, table),
        "random_state": 4,
    }
    asked: list[int] = []
    features = CandidateFeatures(pool.item_ids, rows, 4)

    def reader(at: NDArray[np.intp]) -> NDArray[np.float32]:
        asked.extend(at.tolist())
        return features(at)

    assert pool.positions is not None
    on_demand: dict[str, Any] = {
        **whole,
        "X": reader,
        "proba": table,
        "proba_index": index.table_rows("m1", table_ids)[pool.positions],
    }
    expected = select(strategy, 20, **whole)
    got = select(strategy, 20, **on_demand)
    assert np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.scores, expected.scores, equal_nan=True)
    assert len(set(asked)) == len(asked)
    if strategy is S.HYBRID:
        assert len(asked) == 200
    elif strategy is S.DIVERSITY:
        assert len(asked) == 20_000 < len(pool.item_ids)
    else:
        assert asked == []


def test_pool_index_positions_and_the_space_covering_most() -> None:
    index = PoolIndex(["c", "a", "b", "d"], gold={"d"})
    assert index.ids == ["a", "b", "c", "d"]
    assert index.positions(["d", "zz", "a", ""]).tolist() == [3, -1, 0, -1]
    spaces = {"text-hash-2": {"a", "b"}, "producer-2": {"c", "d"}, "pixels": {"a"}}
    assert index.best_space(np.array([0, 1, 2, 3]), spaces) == "producer-2"  # ties: producer
    assert index.best_space(np.array([0, 1, 2]), spaces) == "text-hash-2"
    assert index.best_space(np.array([0, 1]), {"x": {"c"}}) is None
    assert index.table_rows("t", ["d", "b", "q"]).tolist() == [-1, 1, -1, 0]


@pytest.mark.parametrize("strategy", [S.HYBRID, S.LEAST_CONFIDENCE, S.ENTROPY])
def test_a_table_scoring_every_candidate_picks_as_its_stacked_rows(strategy: S) -> None:
    rng = np.random.default_rng(2)
    ids = [f"j{k:04d}" for k in range(3_000)]
    index = PoolIndex(ids, gold=set())
    pool = index.candidates(taken=set(ids[:50]))
    assert pool.positions is not None
    table_ids = ids[::-1]
    table = rng.dirichlet([1.0, 1.0, 1.0], size=len(table_ids)).astype(np.float32)
    X = rng.standard_normal((len(pool.item_ids), 3)).astype(np.float32)
    stacked = proba_rows(pool.item_ids, {i: r for r, i in enumerate(table_ids)}, table)
    common: dict[str, Any] = {"n_candidates": len(pool.item_ids), "X": X, "random_state": 1}
    expected = select(strategy, 30, proba=stacked, **common)
    got = select(
        strategy,
        30,
        proba=table,
        proba_index=index.table_rows("all", table_ids)[pool.positions],
        **common,
    )
    assert np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.scores, expected.scores)


def test_pool_index_candidates_follow_what_is_taken_as_it_grows_and_shrinks() -> None:
    """The index remembers what earlier cuts took and looks up only the new ids: whatever the
    sequence, its candidates are the reference split's."""
    rng = np.random.default_rng(5)
    ids = [f"{k * 7919 % 10_007:05d}" for k in range(3_000)]
    gold = [k % 97 == 0 for k in range(3_000)]
    index = PoolIndex(ids, {i for i, g in zip(ids, gold, strict=True) if g})
    taken: set[str] = set()
    sequence = [rng.choice(ids, size=40, replace=False).tolist() for _ in range(6)]
    for step, new in enumerate(sequence):
        taken |= set(new)
        if step == 3:  # a batch given back
            taken -= set(sequence[1])
        found = index.candidates(taken=taken | {"not-an-item"}, recent_gold=set(ids[:97]))
        expected = candidates(ids, gold, taken=taken, recent_gold=set(ids[:97]))
        assert list(found.item_ids) == expected.item_ids
        assert list(found.gold_ids) == expected.gold_ids


def test_candidates_found_by_rank_are_the_listed_ones_across_blocks() -> None:
    """A cut finds the positions it picks by rank, from counts per block of the pool: over a
    pool of several blocks, with taken items and gold clustered at block edges, every rank gives
    the position a full listing gives, and a cut's candidates do not change under later cuts."""
    rng = np.random.default_rng(8)
    n = 3 * 65_536 + 123
    ids = [f"{k:07d}" for k in range(n)]
    gold = {ids[k] for k in range(65_530, 65_545)} | {ids[-1], ids[0]}
    index = PoolIndex(ids, gold)
    first_taken = set(rng.choice(ids, size=5_000, replace=False).tolist())
    first_taken |= set(ids[131_000:131_100])  # a run across the second block's end
    first = index.candidates(taken=first_taken)
    listed = [i for i in ids if i not in gold and i not in first_taken]
    assert len(first.item_ids) == len(listed)
    ranks = np.r_[0, 1, rng.integers(0, len(listed), size=300), len(listed) - 1]
    assert [first.item_ids[int(k)] for k in ranks] == [listed[k] for k in ranks]
    assert first.ids_at(ranks) == [listed[k] for k in ranks]
    assert first.ids_at(np.empty(0, dtype=np.intp)) == []
    assert first.item_ids[-1] == listed[-1]
    with pytest.raises(IndexError):
        first.item_ids[len(listed)]

    later = index.candidates(taken=first_taken | set(listed[:70_000]))
    assert len(later.item_ids) == len(listed) - 70_000
    assert later.item_ids[0] == listed[70_000]
    assert [first.item_ids[int(k)] for k in ranks] == [listed[k] for k in ranks]
    assert first.positions is not None
    assert [ids[p] for p in first.positions.tolist()] == listed
    assert first.item_ids[5] == listed[5]  # by the listing, once it was made
    assert first.ids_at(ranks) == [listed[k] for k in ranks]


def test_a_random_cut_picks_what_the_general_path_picks() -> None:
    """Random selection without a control slice draws from the candidates' count alone: the
    positions are the ones drawing through the index of every candidate gave."""
    for seed in range(20):
        n_candidates = int(np.random.default_rng(seed).integers(1, 5_000))
        got = select(S.RANDOM, 9, n_candidates=n_candidates, random_state=seed)
        # the general path: draw among the candidates' positions, as stratified does without strata
        expected = select(S.STRATIFIED, 9, n_candidates=n_candidates, random_state=seed)
        assert np.array_equal(got.indices, expected.indices)
        assert got.strategy == "random"
