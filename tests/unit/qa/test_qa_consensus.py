"""Consensus methods and annotator quality on a seeded simulated crew, and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop_qa.domain.aggregation import (
    TOLERANCE,
    aggregate,
    choose_method,
    dawid_skene,
    majority_vote,
    one_coin_dawid_skene,
)
from labelloop_qa.domain.annotators import Tally, score_annotators, spammer_score, tally_batch
from labelloop_qa.domain.crowd import simulate_crew
from labelloop_qa.domain.ratings import Ratings

SPAMMY = ["good"] * 14 + ["spammer"] * 6  # 30% uniform spammers


@pytest.fixture(scope="module", params=[0, 1])
def crew(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return simulate_crew(
        n_items=1500,
        n_classes=5,
        behaviours=SPAMMY,
        accuracies=[0.8] * 20,
        labels_per_item=3,
        random_state=request.param,
    )


def _accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    return float((labels == truth).mean())


def test_dawid_skene_family_beats_majority_vote_with_30pct_spammers(crew) -> None:  # type: ignore[no-untyped-def]
    r, truth = crew.ratings, crew.truth
    mv = _accuracy(majority_vote(r).label, truth)
    ds = _accuracy(dawid_skene(r, smoothing=0.01).label, truth)
    oc = _accuracy(one_coin_dawid_skene(r).label, truth)
    assert mv < 0.76  # STACK_NOTES: ~0.70
    assert ds > mv + 0.04
    assert oc > mv + 0.04
    gold = np.where(np.arange(r.n_items) < 100, truth, -1)
    gd = aggregate(r, "gold-dawid-skene", known=gold)
    assert gd.method == "gold-dawid-skene"
    assert _accuracy(gd.label[100:], truth[100:]) > mv + 0.04
    assert (gd.label[:100] == truth[:100]).all()


def test_spammers_rank_at_the_bottom(crew) -> None:  # type: ignore[no-untyped-def]
    r = crew.ratings
    consensus = aggregate(r, "auto")
    scores = score_annotators(
        tally_batch(r, consensus), [str(c) for c in r.classes], spammer_threshold=0.5
    )
    by_spam = sorted(scores, key=lambda s: s.spammer_score or 0.0)
    spammers = {str(r.annotator_ids[i]) for i, b in enumerate(crew.behaviours) if b == "spammer"}
    assert {s.annotator_id for s in by_spam[-len(spammers) :]} == spammers
    by_acc = sorted(scores, key=lambda s: s.estimated_accuracy or 0.0)
    assert {s.annotator_id for s in by_acc[: len(spammers)]} == spammers
    flagged = {s.annotator_id for s in scores if s.flagged}
    assert flagged == spammers
    # Dawid-Skene's own accuracy estimates put them last too
    ds = dawid_skene(r, smoothing=0.01)
    assert ds.accuracy is not None
    worst = {str(r.annotator_ids[i]) for i in np.argsort(ds.accuracy)[: len(spammers)]}
    assert worst == spammers


def test_adversaries_are_recovered_by_dawid_skene_and_flagged() -> None:
    crew = simulate_crew(
        n_items=1000,
        n_classes=2,
        behaviours=["good"] * 7 + ["adversary"] * 3,
        accuracies=[0.85] * 10,
        labels_per_item=5,
        random_state=3,
    )
    r, truth = crew.ratings, crew.truth
    assert _accuracy(dawid_skene(r).label, truth) > _accuracy(majority_vote(r).label, truth)
    c = dawid_skene(r)
    # binary 85% annotators have a spammer score of 1 - J = 0.3: use a looser threshold here
    scores = score_annotators(tally_batch(r, c), ["c0", "c1"], spammer_threshold=0.5)
    adversaries = [s for s in scores if s.annotator_id in {"ann-007", "ann-008", "ann-009"}]
    assert all((s.estimated_accuracy or 1.0) < 0.5 for s in adversaries)
    assert all((s.spammer_score or 1.0) < 0.5 for s in adversaries)  # informative, not spam
    flagged = {s.annotator_id for s in scores if s.flagged}
    assert flagged == {f"ann-{i:03d}" for i in (7, 8, 9)}


def test_spammer_score_values() -> None:
    assert spammer_score(np.eye(3) * 50, smoothing=0.0) == pytest.approx(0.0)
    assert spammer_score(np.full((3, 3), 10.0), smoothing=0.0) == pytest.approx(1.0)
    constant = np.zeros((3, 3))
    constant[:, 0] = 20
    assert spammer_score(constant, smoothing=0.0) == pytest.approx(1.0)
    p, k = 0.8, 5
    one_coin = np.full((k, k), (1 - p) / (k - 1)) * 100 + np.eye(k) * (p - (1 - p) / (k - 1)) * 100
    assert spammer_score(one_coin, smoothing=0.0) == pytest.approx(1 - (k * p - 1) / (k - 1))
    assert spammer_score(np.array([[5.0, 0.0], [0.0, 0.0]])) is None


def _tally(confusion: np.ndarray, classes: list[str]) -> Tally:
    n = int(confusion.sum())
    cells = {
        classes[t]: {classes[g]: float(confusion[t, g]) for g in np.flatnonzero(confusion[t])}
        for t in range(len(classes))
        if confusion[t].sum()
    }
    return Tally(n_annotations=n, n_informative=n, confusion=cells)


def test_a_spammer_is_caught_on_little_evidence_and_an_unlucky_start_is_not() -> None:
    """The digits demo of 2026-12-02: the uniform spammer's spammer score stayed under 0.3 for
    four batches (sparse confusion rows differ by chance). On 20 ratings over 10 classes, 2
    right, it is flagged by its accuracy bound; a good annotator with 6 of 10 right is not."""
    classes = [str(k) for k in range(10)]
    rng = np.random.default_rng(0)
    spam = np.zeros((10, 10))
    for k in range(20):
        truth = k % 10
        spam[truth, truth if k < 2 else (truth + 1 + rng.integers(9)) % 10] += 1
    unlucky = np.zeros((10, 10))
    for k in range(10):
        unlucky[k, k if k < 6 else (k + 1) % 10] += 1
    tallies = {"spammer": _tally(spam, classes), "unlucky": _tally(unlucky, classes)}
    assert (spammer_score(tallies["spammer"].confusion_matrix(classes)) or 0.0) < 0.3
    scores = {s.annotator_id: s for s in score_annotators(tallies, classes, spammer_threshold=0.3)}
    assert scores["spammer"].estimated_accuracy == pytest.approx(0.1)  # chance, not below it
    assert scores["spammer"].flagged
    assert not scores["unlucky"].flagged
    # the bound stands for the threshold: a lenient project (0.9) flags neither
    lenient = score_annotators(tallies, classes, spammer_threshold=0.9)
    assert not any(s.flagged for s in lenient)


@pytest.mark.parametrize("fit", [dawid_skene, one_coin_dawid_skene])
def test_em_stops_once_the_log_likelihood_changes_by_less_than_tol(crew, fit) -> None:  # type: ignore[no-untyped-def]
    r = crew.ratings
    done = fit(r)
    assert done.converged
    m = done.n_iter
    assert 2 < m < 100
    # the same EM run for m - 1 and m - 2 iterations (a negative tol never stops early)
    before = fit(r, tol=-1.0, max_iter=m - 1)
    earlier = fit(r, tol=-1.0, max_iter=m - 2)
    assert not before.converged
    tol = TOLERANCE["likelihood"]
    assert abs(done.log_likelihood - before.log_likelihood) <= tol * abs(done.log_likelihood)
    assert abs(before.log_likelihood - earlier.log_likelihood) > tol * abs(before.log_likelihood)
    # a looser tolerance stops no later, a tighter one no earlier
    assert fit(r, tol=1e-4).n_iter <= m <= fit(r, tol=1e-9).n_iter


@pytest.mark.parametrize("fit", [dawid_skene, one_coin_dawid_skene])
def test_both_stopping_rules_give_the_same_labels_on_a_crew_that_converges(crew, fit) -> None:  # type: ignore[no-untyped-def]
    r = crew.ratings
    likelihood = fit(r, smoothing=0.01)
    parameters = fit(r, smoothing=0.01, stop="parameters")
    assert likelihood.n_iter < parameters.n_iter
    assert np.array_equal(likelihood.label, parameters.label)
    assert np.abs(likelihood.posterior - parameters.posterior).max() < 0.05


def test_posteriors_of_ratings_the_model_finds_all_but_impossible() -> None:
    from scipy.special import logsumexp, softmax

    from labelloop_qa.domain.aggregation import _softmax_rows

    logp = np.array([[-1.0, -2.0, -3.0], [-900.0, -905.0, -2000.0], [-1e4, -1e4, -1e4 - 1]])
    post, norm = _softmax_rows(logp.copy())
    assert post == pytest.approx(softmax(logp, axis=1), rel=1e-12)
    assert norm == pytest.approx(logsumexp(logp, axis=1), rel=1e-12)


def test_a_negative_tol_runs_every_iteration_and_bad_settings_are_refused(crew) -> None:  # type: ignore[no-untyped-def]
    r = crew.ratings
    for stop in ("likelihood", "parameters"):
        c = dawid_skene(r, tol=-1.0, max_iter=7, stop=stop)  # type: ignore[arg-type]
        assert (c.n_iter, c.converged) == (7, False)
    with pytest.raises(ValueError, match="stopping rule"):
        aggregate(r, "dawid-skene", stop="elbo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_iter"):
        dawid_skene(r, max_iter=0)


def test_majority_vote_tie_rule_is_documented_and_deterministic() -> None:
    # item A: 1 x "b", 1 x "a" -> tie; "b" has more votes overall -> "b"
    r = Ratings.from_records(
        ["A", "A", "B", "B", "C", "C"],
        list("xyxyxy"),
        ["a", "b", "b", "b", "c", "a"],
        classes=["a", "b", "c"],
    )
    mv = majority_vote(r)
    assert r.classes[mv.label].tolist() == ["b", "b", "a"]  # C: a/c tie, a more frequent
    assert mv.confidence.tolist() == [0.5, 1.0, 0.5]
    # equal prevalence: the class listed first wins
    r2 = Ratings.from_records(["A", "A"], ["x", "y"], ["q", "p"], classes=["q", "p"])
    assert r2.classes[majority_vote(r2).label[0]] == "q"
    # order of the input rows does not matter
    r3 = Ratings.from_records(
        ["C", "C", "B", "B", "A", "A"],
        list("yxyxyx"),
        ["a", "c", "b", "b", "b", "a"],
        classes=["a", "b", "c"],
    )
    assert r3.classes[majority_vote(r3).label].tolist() == ["b", "b", "a"]


def test_items_without_ratings_have_no_label() -> None:
    r = Ratings.from_records(
        ["A", "A"], ["x", "y"], ["p", "p"], items=["A", "B"], classes=["p", "q"]
    )
    for method in ("majority", "dawid-skene", "one-coin"):
        c = aggregate(r, method)
        assert c.label.tolist() == [0, -1]
        assert np.isnan(c.confidence[1])
        assert c.confidence[0] == pytest.approx(1.0, abs=1e-2)


def test_single_annotator_and_single_class_do_not_crash() -> None:
    one = Ratings.from_records(["A", "B"], ["x", "x"], ["p", "q"])
    for method in ("auto", "majority", "dawid-skene", "one-coin"):
        c = aggregate(one, method)
        assert c.label.tolist() == [0, 1]
        assert np.isfinite(c.confidence).all()
    mono = Ratings.from_records(["A", "A"], ["x", "y"], ["p", "p"])
    for method in ("auto", "majority", "dawid-skene", "one-coin"):
        c = aggregate(mono, method)
        assert c.label.tolist() == [0]
        assert c.confidence[0] == pytest.approx(1.0)


def test_auto_choice() -> None:
    single = Ratings.from_records(["A", "B"], ["x", "y"], ["p", "q"])
    assert choose_method(single)[0] == "majority"
    small = simulate_crew(n_items=20, n_classes=3, behaviours=["good"] * 5, random_state=0)
    assert choose_method(small.ratings)[0] == "shrunk-dawid-skene"  # too few to compare on
    # uniform spammers: one annotator accuracy explains the data best
    spam = simulate_crew(
        n_items=600,
        n_classes=5,
        behaviours=["good"] * 7 + ["spammer"] * 3,
        accuracies=[0.7] * 10,
        random_state=0,
    )
    method, reason = choose_method(spam.ratings)
    assert method == "one-coin", reason
    assert "held-out log-likelihood" in reason
    # systematic confusions: the full (shrunk) matrices
    confused = simulate_crew(
        n_items=600,
        n_classes=5,
        behaviours=["good"] * 7 + ["confuser"] * 3,
        accuracies=[0.7] * 7 + [0.6] * 3,
        random_state=0,
    )
    assert choose_method(confused.ratings)[0] == "shrunk-dawid-skene"
    with pytest.raises(ValueError, match="unknown consensus method"):
        aggregate(small.ratings, "wisdom")


def test_a_few_gold_items_do_not_turn_a_unanimous_crew_around() -> None:
    # 5 annotators agree on everything; on the 2 gold items the known answer differs from theirs
    items = [f"i{k}" for k in range(8)]
    ratings = Ratings.from_records(
        [i for i in items for _ in range(5)],
        [f"a{n}" for _ in items for n in range(5)],
        ["b" if k != 5 else "c" for k in range(8) for _ in range(5)],
        classes=["a", "b", "c"],
    )
    known = np.array([0, 0, -1, -1, -1, -1, -1, -1])  # gold: "a", where everyone said "b"
    full = aggregate(ratings, "dawid-skene", known=known)
    shrunk = aggregate(ratings, "shrunk-dawid-skene", known=known)
    unanimous = [2, 3, 4, 6, 7]
    # full matrices learn "they say b when it is a" from two items, and overrule 5 of 5
    assert (full.label[unanimous] == 0).all()
    assert (shrunk.label[unanimous] == 1).all()  # shrunk: the crew's "b" stands
    assert shrunk.label[5] == 2
    assert (shrunk.confidence[unanimous] < 1.0).all()
    assert aggregate(ratings, "auto", known=known).label[unanimous].tolist() == [1] * 5


def test_history_prior_identifies_a_spammer_in_a_tiny_batch() -> None:
    crew = simulate_crew(
        n_items=12,
        n_classes=3,
        behaviours=["good", "good", "spammer"],
        accuracies=[0.9] * 3,
        labels_per_item=3,
        random_state=5,
    )
    r = crew.ratings
    history = np.zeros((3, 3, 3))
    history[0] = history[1] = np.eye(3) * 60 + 3
    history[2] = 20.0  # the spammer's rows are all alike
    c = dawid_skene(r, prior_counts=history, smoothing=0.01)
    assert c.accuracy is not None
    assert int(np.argmin(c.accuracy)) == 2


def test_tally_merge_and_json_roundtrip() -> None:
    a = Tally(3, 2, 1, 1, 1, 10.0, 2, {"p": {"p": 1.0, "q": 0.5}})
    b = Tally(2, 2, 2, 0, 0, 5.0, 1, {"p": {"q": 0.5}, "q": {"q": 1.0}})
    merged = a.merged(b)
    assert merged.n_annotations == 5
    assert merged.n_agree == 3
    assert merged.confusion == {"p": {"p": 1.0, "q": 1.0}, "q": {"q": 1.0}}
    assert Tally.from_json(merged.to_json()) == merged
    assert merged.confusion_matrix(["p", "q"]).tolist() == [[1.0, 1.0], [0.0, 1.0]]


# --------------------------------------------------------------------------- properties


@st.composite
def long_ratings(draw: st.DrawFn) -> tuple[list[int], list[int], list[int]]:
    n = draw(st.integers(1, 40))
    items = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
    who = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    return items, who, labels


@settings(max_examples=40, deadline=None)
@given(long_ratings(), st.sampled_from(["majority", "dawid-skene", "one-coin", "auto"]))
def test_consensus_is_a_distribution_and_names_do_not_matter(
    data: tuple[list[int], list[int], list[int]], method: str
) -> None:
    items, who, labels = data
    r = Ratings.from_records(items, who, labels)
    c = aggregate(r, method)
    rated = r.item_totals() > 0
    assert rated.all()  # every item in the domain was rated
    assert np.allclose(c.posterior.sum(axis=1), 1.0)
    assert ((c.label >= 0) & (c.label < r.n_classes)).all()
    assert ((c.confidence > 0) & (c.confidence <= 1 + 1e-12)).all()
    # renaming annotators (a permutation of their ids) changes nothing
    renamed = Ratings.from_records(items, [f"w{(4 - w)}" for w in who], labels)
    c2 = aggregate(renamed, method)
    assert np.array_equal(c.label, c2.label)
    assert np.allclose(c.confidence, c2.confidence, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=15), st.integers(2, 5))
def test_unanimous_items_get_their_label_from_every_method(truth: list[int], raters: int) -> None:
    items = np.repeat(np.arange(len(truth)), raters)
    who = np.tile(np.arange(raters), len(truth))
    labels = np.repeat(truth, raters)
    r = Ratings.from_records(items, who, labels)
    for method in ("majority", "dawid-skene", "one-coin"):
        c = aggregate(r, method)
        assert r.classes[c.label].tolist() == truth
