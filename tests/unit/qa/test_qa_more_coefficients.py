"""Brennan-Prediger, Conger's kappa and Gwet's AC2 against irrCAC, published values and Cohen.

The anchor is ``irrCAC`` (Gwet's formulas, Python port), compared case for case when it is
installed: it declares ``pandas<3`` and ``scipy==1.12``, so it cannot be a dev dependency of a
project on pandas 3; install it beside with ``pip install --no-deps irrCAC==0.4.4``. Its values
on its own bundled data sets are also frozen below, so the comparison never silently vanishes.

irrCAC is always given the category list: under pandas 3 its default (``stack().unique()``)
counts NaN as a category, which shifts AC1 and Brennan-Prediger whenever a rating is missing.
It is asked for 20 digits (it rounds to 5 by default).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.ratings import AgreementUndefined, Ratings

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "agreement_reference.json"
TOL = 1e-9
WEIGHTS: list[ag.Weights] = [None, "linear", "quadratic"]

# irrCAC 0.4.4's bundled raw data sets (irrCAC/datasets.py, from Gwet 2014), as reliability data:
# one row per rater, one column per unit, None for a missing rating.
DATASETS: dict[str, tuple[list[list[Any]], list[Any]]] = {
    "raw_4raters": (
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, None],
            [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 3],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
        ],
        [1, 2, 3, 4, 5],
    ),
    "raw_5observers": (
        [
            [1, 1, 2, None, 0, 0, 1, 1, 2, 2, None, 0, 1, 3, 1],
            [1, 1, 3, 0, 0, 0, 0, None, 2, 1, 1, 0, 2, 3, 1],
            [2, 0, 3, 0, 0, 0, 2, 2, 2, 1, 0, 0, 2, 2, 1],
            [None, 1, 3, None, None, None, None, 0, None, 1, 0, 0, 2, 2, None],
            [2, None, None, 0, 0, 0, 1, None, 2, None, None, None, None, 3, 1],
        ],
        [0, 1, 2, 3],
    ),
    "raw_ben_gerry": (
        [
            ["a", "a", "b", "b", "d", "c", "c", "c", "e", "d", "d", "a"],
            ["b", "a", "b", "b", "b", "c", "c", "c", "e", None, "d", "d"],
        ],
        ["a", "b", "c", "d", "e"],
    ),
    "raw_g1g2": (
        [
            ["a", "b", "c", "c", "b", "a", "d", "a", "b", None, None, None, "b", "b"],
            ["a", "b", "c", "c", "b", "b", "d", "a", "b", "e", None, None, "b", "a"],
            [None, "c", "c", "c", "b", "c", "d", "b", "b", "e", "a", "c", "c", "c"],
            ["a", "b", "c", "c", "b", "d", "d", "a", "b", "e", "a", None, "b", "b"],
        ],
        ["a", "b", "c", "d", "e"],
    ),
    "raw_gender": (
        [
            ["a", "a", "a", "a", "a", "b", "b", "b", "c", "a", "a", "a", "a", "a", "b"],
            ["a", "a", "a", "a", "b", "a", "b", "c", "c", "a", "a", "a", "a", "b", "a"],
            ["a", "b", "b", "c", "a", "a", "b", "b", "c", "a", "b", "b", "c", "a", "a"],
            ["c", "c", "c", "c", "a", "a", "b", "b", "c", "c", "c", "c", "c", "a", "a"],
        ],
        ["a", "b", "c"],
    ),
}

# irrCAC 0.4.4 (CAC(..., categories=..., digits=20)) on the data sets above:
# (Brennan-Prediger, Conger, Gwet AC1/AC2) for identity, linear and quadratic weights.
FROZEN: dict[tuple[str, ag.Weights], tuple[float, float, float]] = {
    ("raw_4raters", None): (0.7727272727272727, 0.7628174413033062, 0.775444068126995),
    ("raw_4raters", "linear"): (0.8484848484848484, 0.813776319966141, 0.8587391364326111),
    ("raw_4raters", "quadratic"): (0.9015151515151519, 0.8577106562225335, 0.9140007235516051),
    ("raw_5observers", None): (0.48740740740740734, 0.4692742785926565, 0.4966220548726144),
    ("raw_5observers", "linear"): (0.6657777777777781, 0.6240524157689556, 0.6896394228858524),
    ("raw_5observers", "quadratic"): (0.8062222222222225, 0.7617880605091111, 0.8304335726545763),
    ("raw_ben_gerry", None): (0.6590909090909092, 0.6571428571428573, 0.6614420062695925),
    ("raw_ben_gerry", "linear"): (0.6590909090909092, 0.6022099447513813, 0.6727272727272728),
    ("raw_ben_gerry", "quadratic"): (0.6818181818181817, 0.5658914728682171, 0.7062937062937061),
    ("raw_g1g2", None): (0.6794871794871793, 0.6585889936731525, 0.6846038187477684),
    ("raw_g1g2", "linear"): (0.7996794871794871, 0.737576157968142, 0.8174485642702134),
    ("raw_g1g2", "quadratic"): (0.8814102564102564, 0.8093207359044743, 0.9007347028166459),
    ("raw_gender", None): (0.18333333333333332, 0.1657207718501702, 0.20808080808080806),
    ("raw_gender", "linear"): (0.1125000000000001, 0.14595028067361682, 0.17681159420289863),
    ("raw_gender", "quadratic"): (0.041666666666666845, 0.1283476503284486, 0.14814814814814822),
}


def _ours(r: Ratings, weights: ag.Weights) -> tuple[float, float, float]:
    return (
        ag.brennan_prediger(r, weights),
        ag.conger_kappa(r, weights),
        ag.gwet_ac2(r, weights),
    )


def _dataset(name: str) -> Ratings:
    matrix, classes = DATASETS[name]
    return Ratings.from_matrix(matrix, classes=classes)


@pytest.fixture(scope="module")
def ref() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    return data


@pytest.fixture(scope="module")
def irrcac() -> Any:
    return pytest.importorskip(
        "irrCAC.raw", reason="the anchor irrCAC is not installed (pip install --no-deps irrCAC)"
    )


def _theirs(irrcac: Any, frame: Any, categories: list[Any], weights: ag.Weights) -> np.ndarray:
    with warnings.catch_warnings():
        # irrCAC 0.4.4 is written for pandas 2: under pandas 3 it raises Pandas4Warnings
        warnings.simplefilter("ignore")
        values = []
        for method in ("bp", "conger", "gwet"):
            cac = irrcac.CAC(frame, weights=weights or "identity", categories=categories, digits=20)
            values.append(float(getattr(cac, method)()["est"]["coefficient_value"]))
    return np.asarray(values)


# --------------------------------------------------------------------------- irrCAC's data sets


@pytest.mark.parametrize(("name", "weights"), list(FROZEN))
def test_bundled_data_sets_match_irrcac_frozen(name: str, weights: ag.Weights) -> None:
    assert _ours(_dataset(name), weights) == pytest.approx(FROZEN[name, weights], abs=TOL)


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("weights", WEIGHTS)
def test_bundled_data_sets_match_irrcac(irrcac: Any, name: str, weights: ag.Weights) -> None:
    datasets = pytest.importorskip("irrCAC.datasets")
    frame = getattr(datasets, name)()
    matrix, classes = DATASETS[name]
    # the copy above is irrCAC's data set, value for value
    theirs = [[None if v != v else v for v in frame[col].tolist()] for col in frame.columns]
    assert theirs == matrix
    expected = _theirs(irrcac, frame, classes, weights)
    assert np.abs(np.asarray(_ours(_dataset(name), weights)) - expected).max() < TOL
    assert expected == pytest.approx(FROZEN[name, weights], abs=TOL)


def test_raw_4raters_is_krippendorff_c_and_matches_irrcac_docs(ref: dict[str, Any]) -> None:
    # the same counts per unit as Krippendorff's example C; only unit 12's lone rating is
    # another rater's (so count-based coefficients agree, Conger's would not)
    kripp_c = Ratings.from_matrix(
        ref["krippendorff_alpha"]["krippendorff_C_4x12"]["reliability_data"], classes=range(1, 6)
    )
    r = _dataset("raw_4raters")
    assert np.array_equal(kripp_c.item_counts(), r.item_counts())
    # irrCAC's docstring (raw.py): AC1 = 0.77544, p_a = 0.81818, p_e = 0.19032
    assert ag.gwet_ac2(r, None) == pytest.approx(0.77544, abs=5e-6)
    assert ag.gwet_ac2(r, None) == pytest.approx(ag.gwet_ac1(r), abs=1e-15)
    assert ag.percent_agreement(r) == pytest.approx(0.81818, abs=5e-6)
    assert ag.krippendorff_alpha(r) == pytest.approx(ag.krippendorff_alpha(kripp_c), abs=1e-15)


# --------------------------------------------------------------------------- random crews


def _crew(seed: int) -> tuple[Ratings, np.ndarray, int]:
    """Raters of mixed skill, a varying number of ratings per item, sometimes an unused class."""
    rng = np.random.default_rng(seed)
    n_raters, q, n_items = (
        int(rng.integers(2, 7)),
        int(rng.integers(2, 7)),
        int(rng.integers(8, 60)),
    )
    used = q - 1 if seed % 3 == 0 and q > 2 else q  # the last declared class nobody chose
    truth = rng.integers(0, used, n_items)
    noise = rng.random((n_raters, n_items)) < rng.uniform(0.1, 0.9, (n_raters, 1))
    labels = np.where(noise, rng.integers(0, used, (n_raters, n_items)), truth)
    present = rng.random((n_raters, n_items)) >= rng.uniform(0.0, 0.6)
    present[np.arange(n_raters), rng.integers(0, n_items, n_raters)] = True
    present[:, 0] = True
    raters, items = np.nonzero(present)
    r = Ratings.from_records(
        items,
        raters,
        labels[raters, items],
        classes=list(range(q)),
        items=list(range(n_items)),
        annotators=list(range(n_raters)),
    )
    matrix = np.where(present, labels, np.nan).T.astype(np.float64)  # items x raters
    return r, matrix, q


SEEDS = list(range(24))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weights", WEIGHTS)
def test_random_crews_match_irrcac(irrcac: Any, seed: int, weights: ag.Weights) -> None:
    import pandas as pd

    r, matrix, q = _crew(seed)
    frame = pd.DataFrame(matrix, columns=[f"r{j}" for j in range(matrix.shape[1])])
    expected = _theirs(irrcac, frame, list(range(q)), weights)
    assert np.abs(np.asarray(_ours(r, weights)) - expected).max() < TOL


def test_random_crews_have_what_the_comparison_needs() -> None:
    # the crews above exercise missing ratings, single ratings and an unused class
    crews = [_crew(seed) for seed in SEEDS]
    totals = [r.item_totals() for r, _, _ in crews]
    assert any((t == 1).any() for t in totals)
    assert any((t == 0).any() for t in totals)
    assert any(len(set(t.tolist())) > 2 for t in totals)
    assert any(np.unique(r.label).size < q for r, _, q in crews)
    assert any(r.n_annotators == 2 for r, _, _ in crews)


# --------------------------------------------------------------------------- published values


def test_brennan_prediger_is_randolphs_free_marginal_kappa(ref: dict[str, Any]) -> None:
    case = ref["fleiss_kappa"]["wikipedia_10x14"]
    expected = case["computed"]["randolph_free_marginal"]
    assert ag.brennan_prediger(case["table"]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "table", ["[[7, 1], [3, 5]]", "[[6, 1, 0], [0, 7, 0]]", "[[6.99, 0.01], [6.99, 0.01]]"]
)
def test_brennan_prediger_randolph_calculator(ref: dict[str, Any], table: str) -> None:
    case = ref["fleiss_kappa"]["randolph_online_calculator"]["cases"][table]
    expected = case["expected_randolph"]
    assert ag.brennan_prediger(json.loads(table)) == pytest.approx(expected, abs=1e-6)


def _two_raters(table: list[list[int]], classes: list[Any]) -> Ratings:
    t = np.asarray(table)
    a, b = np.nonzero(t)
    reps = t[a, b]
    la, lb = np.repeat(a, reps), np.repeat(b, reps)
    n = len(la)
    return Ratings.from_records(
        np.tile(np.arange(n), 2),
        np.repeat([0, 1], n),
        np.concatenate([la, lb]),
        classes=classes,
    )


def test_conger_is_cohen_on_the_published_two_rater_tables(ref: dict[str, Any]) -> None:
    wiki = ref["cohens_kappa"]["wikipedia_yes_no_50"]
    r = _two_raters(wiki["table"], [0, 1])
    assert ag.conger_kappa(r) == pytest.approx(wiki["expected"]["kappa"], abs=1e-12)
    sas = ref["cohens_kappa"]["sas_table10"]
    r = _two_raters(sas["table"], [0, 1, 2])
    assert ag.conger_kappa(r) == pytest.approx(sas["expected"]["kappa"], abs=5e-5)
    linear = sas["expected"]["linear_weighted_kappa_weights_0_1_2"]
    assert ag.conger_kappa(r, "linear") == pytest.approx(linear, abs=5e-5)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_conger_is_cohen_on_irr_anxiety(ref: dict[str, Any], weights: ag.Weights) -> None:
    case = ref["cohens_kappa"]["irr_anxiety_raters_2_3"]
    a, b = case["rater_a"], case["rater_b"]
    expected = case["expected"]["unweighted" if weights is None else weights]
    # irr's weights rank the categories used (1, 2, 3, 4, 6): declare exactly those
    r = Ratings.from_records(
        list(range(20)) * 2, [0] * 20 + [1] * 20, a + b, classes=sorted(set(a + b))
    )
    assert ag.conger_kappa(r, weights) == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("seed", range(8))
def test_ac2_unweighted_is_ac1_and_weights_matter(seed: int) -> None:
    r, _, q = _crew(seed)
    assert ag.gwet_ac2(r, None) == pytest.approx(ag.gwet_ac1(r, q), abs=1e-12)
    if q > 2:  # with two classes linear and quadratic weights are the identity
        assert ag.gwet_ac2(r, "quadratic") != pytest.approx(ag.gwet_ac1(r, q), abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("weights", WEIGHTS)
def test_conger_is_cohen_for_two_complete_raters(seed: int, weights: ag.Weights) -> None:
    rng = np.random.default_rng(100 + seed)
    n, q = 40, 5
    a = rng.integers(0, q - 1, n)  # class 4 declared, unused: the declared scale counts
    b = np.where(rng.random(n) < 0.6, a, rng.integers(0, q - 1, n))
    r = Ratings.from_records(
        np.tile(np.arange(n), 2), np.repeat([0, 1], n), np.concatenate([a, b]), classes=range(q)
    )
    cohen = ag.cohen_kappa_pairs(r, weights).mean
    assert cohen is not None
    assert ag.conger_kappa(r, weights) == pytest.approx(cohen, abs=1e-12)


def test_an_unused_declared_class_counts_for_brennan_prediger_not_for_conger() -> None:
    matrix = [[0, 1, 1, 0, 1], [0, 1, 0, 0, 1], [1, 1, 0, 0, None]]
    two = Ratings.from_matrix(matrix, classes=[0, 1])
    three = Ratings.from_matrix(matrix, classes=[0, 1, 2])
    p_a = ag.percent_agreement(two)
    assert ag.brennan_prediger(two) == pytest.approx((p_a - 1 / 2) / (1 - 1 / 2), abs=1e-12)
    assert ag.brennan_prediger(three) == pytest.approx((p_a - 1 / 3) / (1 - 1 / 3), abs=1e-12)
    assert ag.conger_kappa(three) == pytest.approx(ag.conger_kappa(two), abs=1e-12)
    assert ag.gwet_ac2(three, None) != pytest.approx(ag.gwet_ac2(two, None), abs=1e-6)


def test_perfect_agreement_with_missing_ratings_is_one() -> None:
    r = Ratings.from_matrix([[1, 2, 3, None], [1, 2, None, 4], [None, 2, 3, 4]], classes=range(5))
    for weights in WEIGHTS:
        assert _ours(r, weights) == pytest.approx((1.0, 1.0, 1.0), abs=1e-12)


def test_undefined_cases_say_why() -> None:
    one_class = Ratings.from_matrix([[1, 1], [1, 1]])
    for fn in (ag.brennan_prediger, lambda r: ag.gwet_ac2(r, "linear")):
        with pytest.raises(AgreementUndefined, match="at least two classes"):
            fn(one_class)
    with pytest.raises(AgreementUndefined, match="chance agreement is 1"):
        ag.conger_kappa(Ratings.from_matrix([[1, 1], [1, 1]], classes=[1, 2]))
    with pytest.raises(AgreementUndefined, match="two or more annotators"):
        ag.conger_kappa(Ratings.from_records([0, 0, 1], [0, 0, 0], ["a", "b", "a"]))
    never_twice = Ratings.from_matrix([[1, None], [None, 2]])
    for fn in (ag.brennan_prediger, ag.conger_kappa, lambda r: ag.gwet_ac2(r, None)):
        with pytest.raises(AgreementUndefined, match="two or more ratings"):
            fn(never_twice)


@pytest.mark.parametrize(
    ("level", "weights"),
    [("nominal", None), ("ordinal", "linear"), ("interval", "quadratic"), ("ratio", "quadratic")],
)
def test_summarize_reports_them_with_the_levels_weights(
    level: ag.Level, weights: ag.Weights
) -> None:
    r = _dataset("raw_4raters")
    s = ag.summarize(r, level, n_boot=0)
    assert s.weights == weights
    assert s.brennan_prediger == pytest.approx(ag.brennan_prediger(r, weights), abs=1e-15)
    assert s.conger_kappa == pytest.approx(ag.conger_kappa(r, weights), abs=1e-15)
    assert s.gwet_ac2 == pytest.approx(ag.gwet_ac2(r, weights), abs=1e-15)
    assert s.gwet_ac1 == pytest.approx(ag.gwet_ac1(r), abs=1e-15)
    assert (s.gwet_ac2 == pytest.approx(s.gwet_ac1, abs=1e-12)) is (weights is None)


def test_summarize_says_why_they_are_undefined() -> None:
    s = ag.summarize(Ratings.from_records([0, 0, 1, 1], [0, 0, 0, 0], ["a", "b", "a", "a"]))
    assert s.conger_kappa is None
    assert "two or more annotators" in s.notes["conger_kappa"]
    assert s.brennan_prediger is not None
    s = ag.summarize(Ratings.from_records([0, 1], [0, 1], ["a", "b"]))
    assert s.brennan_prediger is None
    assert s.gwet_ac2 is None
    assert {"brennan_prediger", "gwet_ac2", "conger_kappa"} <= set(s.notes)
