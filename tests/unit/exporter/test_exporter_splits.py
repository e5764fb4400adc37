"""Splits are a pure function of item id and salt: stable across versions, roughly stratified."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_exporter.domain.splits import (
    assign_split,
    assign_splits,
    split_bucket,
    stratification_deviation,
)

FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)


@settings(max_examples=200, deadline=None)
@given(
    first=st.lists(ids, min_size=1, max_size=60, unique=True),
    later=st.lists(ids, max_size=60, unique=True),
    salt=st.text(min_size=1, max_size=10),
)
def test_no_item_moves_between_versions(first: list[str], later: list[str], salt: str) -> None:
    v1 = dict(zip(first, assign_splits(first, salt, FRACTIONS), strict=True))
    grown = list(dict.fromkeys([*later, *first]))  # new items, in another order
    v2 = dict(zip(grown, assign_splits(grown, salt, FRACTIONS), strict=True))
    assert all(v2[i] == v1[i] for i in first)


@settings(max_examples=100, deadline=None)
@given(item=ids, salt=st.text(min_size=1, max_size=10))
def test_batch_and_single_assignment_agree(item: str, salt: str) -> None:
    assert assign_splits([item], salt, FRACTIONS) == [assign_split(item, salt, FRACTIONS)]
    assert 0.0 <= split_bucket(item, salt) < 1.0


def test_gold_items_always_go_to_test() -> None:
    items = [f"item-{i}" for i in range(200)]
    splits = assign_splits(items, "s", FRACTIONS, gold=[True] * len(items))
    assert set(splits) == {"test"}
    assert assign_split("x", "s", FRACTIONS, is_gold=True) == "test"


def test_shares_approach_fractions_within_each_class() -> None:
    items = [f"item-{i}" for i in range(30_000)]
    classes = [("a", "b", "c")[i % 3] for i in range(len(items))]
    splits = assign_splits(items, "proj", FRACTIONS)
    deviation = stratification_deviation(splits, classes, FRACTIONS)
    assert set(deviation) == {"a", "b", "c"}
    # binomial standard error at n=10k, p=0.7 is ~0.0046: 4 sigma
    assert max(deviation.values()) < 0.02


def test_salt_changes_the_assignment() -> None:
    items = [f"item-{i}" for i in range(500)]
    assert assign_splits(items, "one", FRACTIONS) != assign_splits(items, "two", FRACTIONS)


def test_zero_share_split_never_used() -> None:
    items = [f"item-{i}" for i in range(1000)]
    splits = assign_splits(items, "s", {"train": 0.8, "test": 0.2})
    assert set(splits) == {"train", "test"}


@pytest.mark.parametrize(
    "fractions", [{"train": 0.5, "test": 0.4}, {"train": 1.2, "test": -0.2}, {"dev": 1.0}]
)
def test_bad_fractions_are_refused(fractions: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="split"):
        assign_splits(["a"], "s", fractions)
