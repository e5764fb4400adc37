"""Train/validation/test assignment that never moves an item between dataset versions.

How it works
------------
Each item gets a bucket ``u`` in ``[0, 1)`` from ``sha256(salt, item_id)``; the configured
fractions cut ``[0, 1)`` into consecutive intervals (train, then validation, then test) and the item
goes to the interval its bucket falls in. The bucket depends only on the item id and the project
salt, never on the other items, the label or the order of arrival, so an item keeps its split in
every version (no leakage from train into test when the dataset grows or a label is corrected).

How stratification is approximated
----------------------------------
Per-class rank quantiles ("the first 70 % of class A by hash go to train") would be exactly
stratified within one version but are *not* stable: a new item of class A shifts every rank and
moves items across the boundaries. Per-item thresholds are stable, and because the hash is
independent of the class, every class is split in the configured proportions *in expectation*:
the share of class ``c`` that lands in split ``s`` is a binomial proportion with mean
``fraction[s]`` and standard error ``sqrt(f (1 - f) / n_c)``. Large classes are thus stratified
closely; very small classes can miss a split by chance. The manifest reports the realised per-class
split counts and the largest deviation (:func:`stratification_deviation`), so this is visible.

Gold items
----------
Gold (honeypot) items, whose answer was known before labeling, always go to **test**: their labels
are the most trustworthy we have, which is what an evaluation set needs, and keeping them out of
training stops the model from memorising the honeypots that QA uses to score annotators. The
decision depends only on whether the item is gold, which the exporter keeps sticky per item, so
gold items never move either.

Changing the fractions or the salt is a new split definition: items near the cut points move. The
manifest records both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "GOLD_SPLIT",
    "SPLIT_ORDER",
    "assign_split",
    "assign_splits",
    "split_bucket",
    "split_salt",
    "stratification_deviation",
]

SPLIT_ORDER: tuple[str, ...] = ("train", "validation", "test")
GOLD_SPLIT = "test"
_SCALE = float(2**64)


def split_salt(project: str) -> str:
    """The default salt of a project: its name (stable for the project's lifetime)."""
    return f"labelloop-split:{project}"


def split_bucket(item_id: str, salt: str) -> float:
    """A uniform, reproducible number in ``[0, 1)`` for an item."""
    digest = hashlib.sha256(f"{salt}\x1f{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def _thresholds(fractions: Mapping[str, float]) -> list[tuple[str, float]]:
    unknown = set(fractions) - set(SPLIT_ORDER)
    if unknown:
        raise ValueError(f"unknown split names: {sorted(unknown)}")
    if any(f < 0 for f in fractions.values()):
        raise ValueError("split fractions must not be negative")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must add up to 1, they add up to {total:g}")
    cuts: list[tuple[str, float]] = []
    upper = 0.0
    for name in SPLIT_ORDER:
        share = fractions.get(name, 0.0)
        if share <= 0:
            continue
        upper += share
        cuts.append((name, upper))
    return cuts


def assign_split(
    item_id: str, salt: str, fractions: Mapping[str, float], *, is_gold: bool = False
) -> str:
    """The split of one item: a pure function of its id, the salt and the fractions."""
    if is_gold:
        return GOLD_SPLIT
    return _pick(split_bucket(item_id, salt), _thresholds(fractions))


def _pick(bucket: float, cuts: list[tuple[str, float]]) -> str:
    for name, upper in cuts:
        if bucket < upper:
            return name
    return cuts[-1][0]  # rounding: fractions summing to 0.9999999 still cover [0, 1)


def assign_splits(
    item_ids: Sequence[str],
    salt: str,
    fractions: Mapping[str, float],
    gold: Sequence[bool] | None = None,
) -> list[str]:
    """Splits of many items (same result as :func:`assign_split` item by item)."""
    cuts = _thresholds(fractions)
    flags = gold if gold is not None else [False] * len(item_ids)
    if len(flags) != len(item_ids):
        raise ValueError("gold flags and item ids differ in length")
    return [
        GOLD_SPLIT if g else _pick(split_bucket(i, salt), cuts)
        for i, g in zip(item_ids, flags, strict=True)
    ]


def stratification_deviation(
    splits: Iterable[str], classes: Iterable[str], fractions: Mapping[str, float]
) -> dict[str, float]:
    """Per class, the largest absolute gap between realised and configured split shares."""
    counts: dict[str, dict[str, int]] = {}
    for split, cls in zip(splits, classes, strict=True):
        counts.setdefault(cls, {}).setdefault(split, 0)
        counts[cls][split] += 1
    out: dict[str, float] = {}
    for cls, per_split in sorted(counts.items()):
        n = sum(per_split.values())
        out[cls] = max(abs(per_split.get(s, 0) / n - fractions.get(s, 0.0)) for s in SPLIT_ORDER)
    return out
