"""NER in the trainer: spans <-> BIO tags, entity-level F1, the CRF's uncertainty, one round."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from ner_support import TYPES, corpus

from labelloop.catalog import SEQUENCE_MEASURES as CATALOG_MEASURES
from labelloop_trainer.domain.ner import (
    SEQUENCE_MEASURES,
    CrfTagger,
    evaluate_entities,
    parse_spans,
    row_errors,
    score_pool,
    sequence_uncertainty,
    train_ner_round,
)
from labelloop_trainer.domain.spans import (
    Entity,
    bio_to_entities,
    bio_to_spans,
    spans_to_bio,
    tokenize,
)
from labelloop_trainer.domain.training import LabeledData, NotEnoughClasses

# ---------------------------------------------------------------------- spans <-> BIO


def _span(start: int, end: int, label: str) -> dict[str, Any]:
    return {"start": start, "end": end, "label": label}


def test_spans_become_bio_tags_and_come_back() -> None:
    text = "Emma Stone flew to New York today"
    tagged = spans_to_bio(text, [_span(19, 27, "place"), _span(0, 10, "person")])
    words = ["Emma", "Stone", "flew", "to", "New", "York", "today"]
    assert [t.text for t in tagged.tokens] == words
    assert tagged.tags == ["B-person", "I-person", "O", "O", "B-place", "I-place", "O"]
    assert tagged.dropped == 0
    back = bio_to_spans(text, tagged.tokens, tagged.tags)
    assert back == [
        {"start": 0, "end": 10, "text": "Emma Stone", "label": "person"},
        {"start": 19, "end": 27, "text": "New York", "label": "place"},
    ]


def test_whitespace_around_a_selection_is_not_part_of_the_entity() -> None:
    text = "we met  Carla  there"
    tagged = spans_to_bio(text, [_span(6, 15, "person")])  # " Carla  " with its spaces
    assert tagged.tags == ["O", "O", "B-person", "O"]
    (span,) = bio_to_spans(text, tagged.tokens, tagged.tags)
    assert (span["start"], span["end"], span["text"]) == (8, 13, "Carla")
    # a span of whitespace only covers no token: dropped
    only_space = spans_to_bio(text, [_span(13, 15, "person")])
    assert only_space.tags == ["O"] * 4
    assert only_space.dropped == 1


def test_a_selection_that_splits_a_token_takes_the_whole_token() -> None:
    text = "Parisians love Rio de Janeiro"
    # "Paris" of "Parisians", and "Rio de Jan" ending inside "Janeiro"
    tagged = spans_to_bio(text, [_span(0, 5, "place"), _span(15, 25, "place")])
    assert tagged.tags == ["B-place", "O", "B-place", "I-place", "I-place"]
    spans = bio_to_spans(text, tagged.tokens, tagged.tags)
    assert [s["text"] for s in spans] == ["Parisians", "Rio de Janeiro"]


def test_punctuation_and_handles_are_their_own_tokens() -> None:
    text = "@paulwalk: ESB (Empire State Building)!"
    assert [t.text for t in tokenize(text)] == [
        "@", "paulwalk", ":", "ESB", "(", "Empire", "State", "Building", ")", "!",
    ]  # fmt: skip
    tagged = spans_to_bio(text, [_span(16, 37, "facility"), _span(11, 14, "facility")])
    assert tagged.tags[3:9] == ["B-facility", "O", "B-facility", "I-facility", "I-facility", "O"]


def test_overlapping_spans_keep_the_first_then_the_longest() -> None:
    text = "New York City is big"
    spans = [
        _span(0, 8, "place"),  # "New York"
        _span(0, 13, "place"),  # "New York City": starts together, longer: kept
        _span(4, 13, "person"),  # "York City": overlaps the kept one: dropped
        _span(17, 20, "place"),  # "big": kept
    ]
    tagged = spans_to_bio(text, spans)
    assert tagged.tags == ["B-place", "I-place", "I-place", "O", "B-place"]
    assert tagged.dropped == 2
    # a span starting earlier wins over a longer one that starts later
    tagged = spans_to_bio(text, [_span(4, 20, "place"), _span(0, 8, "person")])
    assert tagged.tags == ["B-person", "I-person", "O", "O", "O"]
    assert tagged.dropped == 1


def test_labels_outside_the_project_and_malformed_spans_are_left_out() -> None:
    text = "Oslo and Kyoto"
    spans: list[dict[str, Any]] = [
        _span(0, 4, "city"),
        {"start": 9, "end": 14, "labels": ["place"]},  # Label Studio's own list form
        {"start": 5, "end": 3, "label": "place"},  # end before start
        {"start": "0", "end": 4, "label": "place"},  # not an offset
    ]
    tagged = spans_to_bio(text, spans, TYPES)
    assert tagged.tags == ["O", "O", "B-place"]


def test_ill_formed_bio_is_read_as_conlleval_does() -> None:
    tags = ["I-person", "I-person", "B-person", "I-place", "O", "I-place"]
    assert bio_to_entities(tags) == [
        Entity(0, 2, "person"),  # I- without B- starts an entity
        Entity(2, 3, "person"),  # B- starts a new one even after the same type
        Entity(3, 4, "place"),  # I- of another type starts a new one
        Entity(5, 6, "place"),
    ]
    with pytest.raises(ValueError, match="tags for"):
        bio_to_spans("a b", tokenize("a b"), ["O"])


def test_label_cells_are_read_from_the_exporters_json() -> None:
    cell = '[{"end":4,"label":"place","start":0,"text":"Oslo"}]'
    assert parse_spans(cell) == [{"end": 4, "label": "place", "start": 0, "text": "Oslo"}]
    assert parse_spans("[]") == []
    assert parse_spans("") == []
    assert parse_spans("not json") == []
    assert parse_spans([{"start": 0, "end": 1, "label": "x"}]) == [
        {"start": 0, "end": 1, "label": "x"}
    ]


# ---------------------------------------------------------------------- entity F1


def test_entity_f1_exact_and_partial_against_a_hand_computed_case() -> None:
    truth = [
        ["B-PER", "I-PER", "O", "B-LOC"],  # PER(0,2) LOC(3,4)
        ["O", "B-ORG", "I-ORG", "O"],  # ORG(1,3)
    ]
    predicted = [
        ["B-PER", "O", "O", "B-LOC"],  # PER(0,1): boundary off; LOC exact
        ["O", "B-LOC", "I-LOC", "B-PER"],  # LOC(1,3): right boundaries, wrong type; PER spurious
    ]
    ev = evaluate_entities(truth, predicted, ["PER", "LOC", "ORG"])
    # exact: 1 of 4 predicted right, 1 of 3 true found: F1 = 2 * 1 / (4 + 3)
    assert ev.entity_precision == pytest.approx(1 / 4)
    assert ev.entity_recall == pytest.approx(1 / 3)
    assert ev.entity_f1 == pytest.approx(2 / 7)
    # partial (SemEval 2013, type ignored): LOC and the ORG/LOC span correct, PER(0,1) partial:
    # (2 + 0.5) over 4 predicted and over 3 true: F1 = 2 * 2.5 / 7
    assert ev.partial_f1 == pytest.approx(5 / 7)
    # per type: PER 0, LOC 2/3 (1 of 2 predicted, 1 of 1 true), ORG 0
    assert ev.per_class["LOC"]["f1"] == pytest.approx(2 / 3)
    assert ev.per_class["PER"]["f1"] == 0.0
    assert ev.per_class["ORG"]["support"] == 1.0
    assert ev.macro_f1 == pytest.approx(2 / 9)
    assert ev.accuracy == pytest.approx(4 / 8)  # tokens tagged right
    assert ev.promotion_metric == "entity_f1"
    assert ev.promotion_score == ev.entity_f1
    metrics = ev.metrics()
    assert metrics["entity_f1"] == pytest.approx(2 / 7)
    assert metrics["entity_f1_partial"] == pytest.approx(5 / 7)
    assert ev.to_dict()["entity_f1_partial"] == pytest.approx(5 / 7)
    assert row_errors(truth[0], predicted[0]) == 2  # PER(0,1) false, PER(0,2) missed
    assert row_errors(truth[1], predicted[1]) == 3


def test_entity_f1_of_perfect_and_of_empty_predictions() -> None:
    truth = [["B-PER", "O"], ["O", "O"]]
    perfect = evaluate_entities(truth, truth, ["PER"])
    assert perfect.entity_f1 == 1.0
    assert perfect.partial_f1 == 1.0
    nothing = evaluate_entities(truth, [["O", "O"], ["O", "O"]], ["PER"])
    assert nothing.entity_f1 == 0.0
    assert nothing.accuracy == 0.75
    with pytest.raises(ValueError, match="tags for"):
        evaluate_entities(truth, [["O"], ["O", "O"]], ["PER"])


# ---------------------------------------------------------------------- uncertainty


def test_sequence_uncertainty_by_hand() -> None:
    marginals = np.array([[0.9, 0.1], [0.6, 0.4]])
    least, margin, entropy = sequence_uncertainty(0.5, marginals)
    assert least == pytest.approx(0.5)
    assert margin == pytest.approx(1 - 0.2)  # the smaller gap, 0.6 - 0.4
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1) + 0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert entropy == pytest.approx(h)
    assert sequence_uncertainty(1.0, np.zeros((0, 3))) == (0.0, 0.0, 0.0)
    assert SEQUENCE_MEASURES == CATALOG_MEASURES  # the table's columns, in the kernel's order


def _tagger(n: int = 120) -> CrfTagger:
    texts, spans = corpus(n)
    tagged = [spans_to_bio(t, s, TYPES) for t, s in zip(texts, spans, strict=True)]
    return CrfTagger(TYPES).fit([t.tokens for t in tagged], [t.tags for t in tagged])


def test_the_crf_is_surer_of_text_like_what_it_learned_than_of_strange_text() -> None:
    model = _tagger()
    familiar = "Alice flew to Paris today"
    strange = "Zorbulon Quix flew to Vexmoor Prime today"
    scores = score_pool(model, [familiar, strange, ""])
    assert scores.uncertainty.shape == (3, 3)
    assert scores.spans[0] == [
        {"start": 0, "end": 5, "text": "Alice", "label": "person"},
        {"start": 14, "end": 19, "text": "Paris", "label": "place"},
    ]
    assert (scores.uncertainty[1] > scores.uncertainty[0]).all()  # every measure
    assert scores.uncertainty[2].tolist() == [0.0, 0.0, 0.0]  # no tokens: nothing to doubt
    best, probability, marginals = model.tag(tokenize(familiar))
    assert best == ["B-person", "O", "O", "B-place", "O"]
    assert marginals.shape == (5, len(model.tags_))
    assert np.allclose(marginals.sum(axis=1), 1.0)
    assert 0.0 < probability <= 1.0


# ---------------------------------------------------------------------- the round


def _data(texts: list[str], spans: list[list[dict[str, Any]]]) -> LabeledData:
    n = len(texts)
    y = np.empty(n, dtype=object)
    y[:] = spans
    return LabeledData(
        item_ids=np.asarray([f"i{k}" for k in range(n)]),
        x=np.asarray(texts, dtype=object),
        y=y,
        split=np.asarray(["train"] * n),
        weight=np.ones(n),
    )


def test_a_round_learns_entities_and_is_judged_out_of_sample() -> None:
    texts, spans = corpus(100)
    result = train_ner_round(
        _data(texts, spans), TYPES, current_model=None, fresh=None, tolerance=0.01, random_state=0
    )
    assert result.promoted
    assert result.evaluated_on == "out_of_sample"
    ev = result.evaluation
    assert ev.entity_f1 is not None
    assert ev.partial_f1 is not None
    assert 0.8 < ev.entity_f1 <= ev.partial_f1
    assert isinstance(result.model, CrfTagger)
    held_out, held_spans = corpus(30, seed=1)
    tagged = [spans_to_bio(t, s, TYPES) for t, s in zip(held_out, held_spans, strict=True)]
    predicted = [result.model.predict(t.tokens) for t in tagged]
    assert evaluate_entities([t.tags for t in tagged], predicted, TYPES).entity_f1 > 0.9


def test_labels_without_entities_train_nothing() -> None:
    texts, _ = corpus(20)
    with pytest.raises(NotEnoughClasses, match="no entity"):
        train_ner_round(
            _data(texts, [[] for _ in texts]),
            TYPES,
            current_model=None,
            fresh=None,
            tolerance=0.01,
            random_state=0,
        )


class _Oracle:
    """A serving model that tags the fresh texts exactly as labeled (by their tokens)."""

    def __init__(self, texts: list[str], spans: list[list[dict[str, Any]]]) -> None:
        self.tags = {}
        for text, found in zip(texts, spans, strict=True):
            tagged = spans_to_bio(text, found, TYPES)
            self.tags[tuple(t.text for t in tagged.tokens)] = tagged.tags

    def predict(self, tokens: list[Any]) -> list[str]:
        return self.tags[tuple(t.text for t in tokens)]


def _unguessable(n: int) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """Texts whose one entity is a name never seen twice, its type a coin flip: nothing a
    model trained on the other texts can get right, except by luck."""
    rng = np.random.default_rng(4)
    texts, spans = [], []
    for k in range(n):
        name = f"Q{k}x{int(rng.integers(1000))}"
        kind = TYPES[int(rng.integers(2))]
        texts.append(f"{name} was there")
        spans.append([{"start": 0, "end": len(name), "text": name, "label": kind}])
    return texts, spans


def test_a_significantly_worse_candidate_is_not_promoted() -> None:
    texts, spans = _unguessable(24)
    oracle = _Oracle(texts, spans)
    fresh = np.ones(24, bool)
    result = train_ner_round(
        _data(texts, spans), TYPES, current_model=oracle, fresh=fresh, tolerance=0.01,  # type: ignore[arg-type]
        random_state=0,
    )  # fmt: skip
    assert result.current_evaluation is not None
    assert result.current_evaluation.entity_f1 == 1.0
    assert result.evaluation.entity_f1 is not None
    assert result.evaluation.entity_f1 < 0.8
    assert not result.promoted
    # two fresh texts are too few for a drop to be significant: promoted
    few = np.zeros(24, bool)
    few[:2] = True
    result = train_ner_round(
        _data(texts, spans), TYPES, current_model=oracle, fresh=few, tolerance=0.01,  # type: ignore[arg-type]
        random_state=0,
    )  # fmt: skip
    assert result.promoted


def test_without_fresh_texts_the_candidate_is_promoted() -> None:
    texts, spans = corpus(30)
    result = train_ner_round(
        _data(texts, spans),
        TYPES,
        current_model=_tagger(),
        fresh=np.zeros(30, bool),
        tolerance=0.01,
        random_state=0,
    )
    assert result.current_evaluation is None
    assert result.promoted
