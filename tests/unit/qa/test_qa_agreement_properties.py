"""Properties every agreement coefficient must have, checked on generated ratings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.ratings import AgreementUndefined, Ratings

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LEVELS: list[ag.Level] = ["nominal", "ordinal", "interval", "ratio"]


@st.composite
def ratings_tables(draw: st.DrawFn, max_items: int = 12, max_raters: int = 5) -> np.ndarray:
    """A raters x items matrix of labels in 1..k, -1 for missing."""
    n_raters = draw(st.integers(2, max_raters))
    n_items = draw(st.integers(1, max_items))
    k = draw(st.integers(2, 4))
    cells = draw(
        st.lists(st.integers(0, k), min_size=n_raters * n_items, max_size=n_raters * n_items)
    )
    m = np.asarray(cells).reshape(n_raters, n_items)
    m[m == 0] = -1  # 0 codes "missing"
    return m


def _ratings(m: np.ndarray, relabel: dict[int, str] | None = None) -> Ratings:
    raters, items = np.nonzero(m >= 0)
    labels: list[object] = m[raters, items].tolist()
    if relabel is not None:
        labels = [relabel[v] for v in labels]
    return Ratings.from_records(items, raters, labels)


def _all(r: Ratings, level: ag.Level = "nominal") -> dict[str, float | None]:
    s = ag.summarize(r, level, n_boot=0)
    return {
        "percent": s.percent_agreement,
        "cohen": s.cohen_kappa_mean,
        "fleiss": s.fleiss_kappa,
        "alpha": s.krippendorff_alpha,
        "ac1": s.gwet_ac1,
    }


@FAST
@given(ratings_tables())
def test_coefficients_are_finite_or_explicitly_undefined(m: np.ndarray) -> None:
    if not (m >= 0).any():
        return
    r = _ratings(m)
    for level in LEVELS:
        s = ag.summarize(r, level, n_boot=20)
        for name in ("percent_agreement", "cohen_kappa_mean", "fleiss_kappa", "gwet_ac1"):
            value = getattr(s, name)
            assert value is None or math.isfinite(value)
        alpha = s.krippendorff_alpha
        assert (alpha is None) == ("alpha" in s.notes)
        assert alpha is None or (math.isfinite(alpha) and alpha <= 1.0 + 1e-12)
        if s.percent_agreement is not None:
            assert 0.0 <= s.percent_agreement <= 1.0


@FAST
@given(st.integers(1, 10), st.integers(2, 5), st.integers(2, 5), st.integers(0, 10_000))
def test_perfect_agreement_gives_one(n_items: int, n_raters: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, k + 1, size=n_items)
    truth[:2] = [1, 2][: min(2, n_items)]  # at least two classes when there are two items
    m = np.tile(truth, (n_raters, 1))
    r = _ratings(m)
    assert ag.percent_agreement(r) == 1.0
    if n_items < 2:
        with pytest.raises(AgreementUndefined):
            ag.krippendorff_alpha(r)
        return
    for level in LEVELS:
        assert ag.krippendorff_alpha(r, level) == pytest.approx(1.0)
    assert ag.fleiss_kappa(r) == pytest.approx(1.0)
    assert ag.gwet_ac1(r) == pytest.approx(1.0)
    assert ag.cohen_kappa_pairs(r, min_common=1).mean == pytest.approx(1.0)


@FAST
@given(ratings_tables(), st.randoms(use_true_random=False))
def test_symmetric_in_annotators(m: np.ndarray, rnd: object) -> None:
    if not (m >= 0).any():
        return
    perm = np.arange(m.shape[0])
    rnd.shuffle(perm)  # type: ignore[attr-defined]
    a, b = _all(_ratings(m)), _all(_ratings(m[perm]))
    for name in a:
        assert (a[name] is None) == (b[name] is None)
        if a[name] is not None:
            assert a[name] == pytest.approx(b[name], abs=1e-12)


@FAST
@given(ratings_tables())
def test_nominal_invariant_to_renaming_labels(m: np.ndarray) -> None:
    if not (m >= 0).any():
        return
    names = {1: "zebra", 2: "apple", 3: "mango", 4: "kiwi"}
    a, b = _all(_ratings(m)), _all(_ratings(m, names))
    for name in a:
        assert (a[name] is None) == (b[name] is None)
        if a[name] is not None:
            assert a[name] == pytest.approx(b[name], abs=1e-12)


@FAST
@given(ratings_tables())
def test_missing_values_match_the_dense_pairable_subset(m: np.ndarray) -> None:
    # alpha ignores items with fewer than two ratings: dropping them changes nothing
    r = _ratings(m)
    keep = (m >= 0).sum(axis=0) >= 2
    if not keep.any():
        with pytest.raises(AgreementUndefined):
            ag.krippendorff_alpha(r)
        return
    try:
        full = ag.krippendorff_alpha(r)
    except AgreementUndefined:
        return
    assert ag.krippendorff_alpha(_ratings(m[:, keep])) == pytest.approx(full, abs=1e-12)


def test_fleiss_with_varying_raters_reduces_to_fleiss_when_constant() -> None:
    table = np.array([[3, 0], [2, 1], [0, 3], [1, 2]], dtype=float)
    # Fleiss (1971) with n = 3 raters per subject, written out
    n = 3
    p_i = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    p_j = table.sum(axis=0) / table.sum()
    textbook = (p_i.mean() - (p_j**2).sum()) / (1 - (p_j**2).sum())
    assert ag.fleiss_kappa(table) == pytest.approx(textbook, abs=1e-12)
    varying = np.array([[3, 0], [2, 1], [0, 2], [1, 1], [1, 0]])
    # items with one rating add to the class shares only (irrCAC's definition)
    pairable = varying[:4].astype(float)
    m = pairable.sum(axis=1)
    p_a = (((pairable * (pairable - 1)).sum(axis=1)) / (m * (m - 1))).mean()
    shares = (varying / varying.sum(axis=1, keepdims=True)).mean(axis=0)
    p_e = (shares**2).sum()
    assert ag.fleiss_kappa(varying) == pytest.approx((p_a - p_e) / (1 - p_e), abs=1e-12)


# --------------------------------------------------------------------------- degenerate inputs


def test_one_annotator_is_undefined_not_nan() -> None:
    r = Ratings.from_records(["a", "b", "c"], ["x", "x", "x"], ["p", "q", "p"])
    s = ag.summarize(r)
    assert s.percent_agreement is None
    assert s.krippendorff_alpha is None
    assert s.cohen_kappa_mean is None
    assert "two or more ratings" in s.notes["alpha"]


def test_one_class_is_undefined_with_a_reason() -> None:
    r = Ratings.from_records(["a", "a", "b", "b"], ["x", "y", "x", "y"], ["p"] * 4)
    s = ag.summarize(r)
    assert s.percent_agreement == 1.0
    assert s.krippendorff_alpha is None
    assert s.fleiss_kappa is None
    assert s.gwet_ac1 is None  # a one-class scale
    with pytest.raises(AgreementUndefined, match="chance agreement is 1"):
        ag.fleiss_kappa(r)
    # with a declared two-class scale AC1 is defined
    r2 = Ratings.from_records(
        ["a", "a", "b", "b"], ["x", "y", "x", "y"], ["p"] * 4, classes=["p", "q"]
    )
    assert ag.gwet_ac1(r2) == pytest.approx(1.0)


def test_one_item_gives_an_answer_or_a_clear_error() -> None:
    r = Ratings.from_records(["a", "a", "a"], ["x", "y", "z"], ["p", "q", "p"])
    assert ag.percent_agreement(r) == pytest.approx(1 / 3)
    with pytest.raises(AgreementUndefined):
        ag.krippendorff_alpha(Ratings.from_records(["a", "a"], ["x", "y"], ["p", "p"]))
    assert ag.krippendorff_alpha(r) == pytest.approx(1 - 2 * (2 * 2 / 2) / (9 - 5))


def test_empty_ratings() -> None:
    r = Ratings.from_records(np.array([], dtype=object), np.array([], dtype=object), np.array([]))
    s = ag.summarize(r)
    assert s.n_annotations == 0
    assert s.krippendorff_alpha is None
    assert s.percent_agreement is None


def test_interval_needs_numbers() -> None:
    r = Ratings.from_records(["a", "a"], ["x", "y"], ["p", "q"])
    with pytest.raises(ValueError, match="numeric labels"):
        ag.krippendorff_alpha(r, "interval")


def test_per_class_agreement() -> None:
    # item 1: p p ; item 2: p q ; item 3: q q
    r = Ratings.from_records(
        [1, 1, 2, 2, 3, 3], list("xyxyxy"), [*list("ppppqq"[:2]), "p", "q", "q", "q"]
    )
    spec = ag.per_class_agreement(r)
    assert spec.tolist() == pytest.approx([2 / 3, 2 / 3])


def test_unknown_label_against_declared_classes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="outside the declared categories"):
        Ratings.from_records(["a"], ["x"], ["nope"], classes=["p", "q"])


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=60
    ),
    st.sampled_from([None, "linear", "quadratic"]),
)
def test_pairwise_kappa_tables_match_a_plain_count_of_the_pairs(
    rows: list[tuple[int, int, int]], weights: ag.Weights
) -> None:
    # rows in any order, an annotator may rate an item twice (no pair with themself); both the
    # dense table and the path for thousands of annotators against a loop over rating pairs
    items, who, labels = (list(c) for c in zip(*rows, strict=True))
    r = Ratings.from_records(items, who, labels, classes=[0, 1, 2, 3])
    counted: dict[tuple[int, int], np.ndarray] = {}
    for x in range(len(rows)):
        for y in range(len(rows)):
            a, b = int(r.annotator[x]), int(r.annotator[y])
            if a < b and r.item[x] == r.item[y]:
                counted.setdefault((a, b), np.zeros((4, 4)))[r.label[x], r.label[y]] += 1
    dense = ag.cohen_kappa_pairs(r, weights, min_common=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ag, "_GRAM_CELLS", 0)
        sparse = ag.cohen_kappa_pairs(r, weights, min_common=1)
    for got in (dense, sparse):
        assert list(zip(got.first.tolist(), got.second.tolist(), strict=True)) == sorted(counted)
        assert got.n_common.tolist() == [int(counted[p].sum()) for p in sorted(counted)]
        for a, b, kappa in zip(got.first, got.second, got.kappa, strict=True):
            t = counted[(int(a), int(b))]
            want = ag._kappa_from_tables(t[None], ag._kappa_weights(4, weights))[0]
            assert kappa == pytest.approx(want, nan_ok=True)
