"""One NER training round: a linear-chain CRF on token features, judged by entity-level F1.

The same round as :func:`labelloop_trainer.domain.training.train_round`, for texts whose labels
are entity spans: ``LabeledData.x`` holds the texts, ``LabeledData.y`` each text's span regions
(Label Studio's ``labels`` results, character offsets). Spans become BIO tags over tokens and
back (:mod:`~labelloop_trainer.domain.spans`); the model is a CRF (``sklearn_crfsuite.CRF``,
L-BFGS with elastic-net penalties, every transition allowed) on the classic word-shape features
of the token and its neighbours (:func:`token_features`); it trains on a few hundred texts in
about a second on one core.

**Judged by entity-level F1, out of sample.** Every labeled text gets its tags from a model that
did not see it (shuffled K-fold); an entity is right when its type and both boundaries match a
true one (CoNLL's exact match: :func:`evaluate_entities`, which also reports per-type scores,
token accuracy, and SemEval-2013's partial-match F1, where an overlapping entity counts half).

**Promotion metric: exact entity F1**, with the rule every task type follows
(:func:`~labelloop_trainer.domain.promotion.should_promote`): the candidate is promoted unless
its entity F1 on the fresh texts (labeled since the serving model was trained) is lower than the
serving model's by more than ``training.promotion_tolerance`` *and* the drop is significant in a
paired sign test over those texts (texts where the serving model makes fewer entity errors, false
positives plus misses, than the candidate, more often than chance).

**Uncertainty of the pool** (:func:`sequence_uncertainty`, Settles and Craven 2008, "An Analysis
of Active Learning Strategies for Sequence Labeling Tasks", EMNLP), per text, from the CRF's
token marginals and the probability of its best tag sequence: ``least_confidence`` is one minus
the probability of the Viterbi sequence; ``margin`` one minus the smallest gap between a token's
two likeliest tags (the token-level form: the CRF gives no N-best list); ``entropy`` the total
token entropy, the sum of the tokens' marginal entropies (it grows with the text's length, which
Settles and Craven found helps on long-sentence corpora).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import KFold

from labelloop_trainer.domain.evaluation import Evaluation
from labelloop_trainer.domain.promotion import should_promote
from labelloop_trainer.domain.spans import (
    OUTSIDE,
    Entity,
    Token,
    bio_to_entities,
    bio_to_spans,
    spans_to_bio,
    tokenize,
)
from labelloop_trainer.domain.training import LabeledData, NotEnoughClasses, RoundResult

Array = npt.NDArray[Any]

__all__ = [
    "SEQUENCE_MEASURES",
    "CrfTagger",
    "PoolScores",
    "evaluate_entities",
    "parse_spans",
    "predict_spans",
    "row_errors",
    "score_pool",
    "sequence_uncertainty",
    "token_features",
    "train_ner_round",
]

_FOLDS = 5
SEQUENCE_MEASURES = ("least_confidence", "margin", "entropy")
"""The columns of a sequence model's pool scores, in this order (``labelloop.catalog``)."""

Features = dict[str, str | float | bool]


def _shape(word: str) -> str:
    """``Xxxx`` -> ``Xx``, ``2010`` -> ``d``: character classes with repeats collapsed."""
    out: list[str] = []
    for ch in word:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)


def _word(token: Token, gap: bool) -> Features:
    w = token.text
    return {
        "lower": w.lower(),
        "suffix3": w[-3:].lower(),
        "prefix3": w[:3].lower(),
        "shape": _shape(w),
        "title": w.istitle(),
        "upper": w.isupper(),
        "digit": w.isdigit(),
        "after_space": gap,
    }


def token_features(tokens: Sequence[Token]) -> list[Features]:
    """Each token's features: its own word shape, and the words beside it (two either side),
    whether whitespace precedes it (a URL or ``@name`` is several tokens with no gap)."""
    words = [_word(t, k == 0 or tokens[k - 1].end < t.start) for k, t in enumerate(tokens)]
    out: list[Features] = []
    for k, own in enumerate(words):
        f: Features = {"bias": 1.0, **own}
        for offset in (-2, -1, 1, 2):
            j = k + offset
            if 0 <= j < len(tokens):
                f[f"{offset:+d}:lower"] = words[j]["lower"]
                if abs(offset) == 1:
                    f[f"{offset:+d}:shape"] = words[j]["shape"]
                    f[f"{offset:+d}:title"] = words[j]["title"]
            elif abs(offset) == 1:
                f["BOS" if offset < 0 else "EOS"] = True
        out.append(f)
    return out


class CrfTagger:
    """A linear-chain CRF tagger (scikit-learn's estimator contract; learned state ends in
    ``_``). ``model_`` is crfsuite's own binary model file: what the trainer stores, never a
    pickle (``labelloop_trainer.crf_format``)."""

    def __init__(
        self,
        labels: Sequence[str],
        *,
        c1: float = 0.1,
        c2: float = 0.05,
        max_iterations: int = 100,
    ) -> None:
        self.labels = labels
        self.c1 = c1
        self.c2 = c2
        self.max_iterations = max_iterations

    def fit(self, tokens: Sequence[Sequence[Token]], tags: Sequence[Sequence[str]]) -> CrfTagger:
        import sklearn_crfsuite  # type: ignore[import-untyped]

        crf = sklearn_crfsuite.CRF(
            algorithm="lbfgs",
            c1=self.c1,
            c2=self.c2,
            max_iterations=self.max_iterations,
            all_possible_transitions=True,
        )
        kept = [k for k, t in enumerate(tokens) if len(t)]
        crf.fit([token_features(tokens[k]) for k in kept], [list(tags[k]) for k in kept])
        with open(crf.modelfile.name, "rb") as f:
            self.model_ = f.read()
        crf.modelfile.cleanup()  # the temporary file crfsuite trained into
        self._tagger: Any = None
        return self

    @classmethod
    def from_model(cls, labels: Sequence[str], model: bytes) -> CrfTagger:
        """A fitted tagger from crfsuite model bytes (opened in memory, never run as code)."""
        tagger = cls(labels)
        tagger.model_ = model
        tagger._tagger = None
        tagger._open()
        return tagger

    def _open(self) -> Any:
        if getattr(self, "_tagger", None) is None:
            import pycrfsuite  # type: ignore[import-untyped]

            tagger = pycrfsuite.Tagger()
            tagger.open_inmemory(self.model_)
            self._tagger = tagger
        return self._tagger

    @property
    def tags_(self) -> list[str]:
        """The tags the model knows (``O`` and ``B-``/``I-`` of the types it has seen)."""
        return [str(t) for t in self._open().labels()]

    def tag(self, tokens: Sequence[Token]) -> tuple[list[str], float, Array]:
        """The best tag sequence, its probability, and the token marginals (one row per token,
        one column per tag of :attr:`tags_`)."""
        names = self.tags_
        if not tokens:
            return [], 1.0, np.zeros((0, len(names)))
        tagger = self._open()
        tagger.set(token_features(tokens))
        best = [str(t) for t in tagger.tag()]
        probability = float(tagger.probability(best))
        marginals = np.asarray(
            [[tagger.marginal(name, k) for name in names] for k in range(len(tokens))],
            dtype=np.float64,
        )
        return best, probability, marginals

    def predict(self, tokens: Sequence[Token]) -> list[str]:
        if not tokens:
            return []
        tagger = self._open()
        tagger.set(token_features(tokens))
        return [str(t) for t in tagger.tag()]


def parse_spans(cell: object) -> list[dict[str, Any]]:
    """A NER row's spans from its label cell (the exporter writes them as JSON text)."""
    value: object = cell
    if isinstance(cell, str | bytes):
        try:
            value = json.loads(cell) if cell else []
        except ValueError:
            return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list | tuple):
        return []
    return [dict(v) for v in value if isinstance(v, dict)]


def sequence_uncertainty(probability: float, marginals: Array) -> tuple[float, float, float]:
    """``(least_confidence, margin, entropy)`` of one text (the module docstring); a text
    without tokens is certain."""
    m = np.asarray(marginals, dtype=np.float64)
    if m.size == 0:
        return 0.0, 0.0, 0.0
    least = min(max(1.0 - probability, 0.0), 1.0)
    if m.shape[1] >= 2:
        top = np.sort(m, axis=1)
        margin = float(1.0 - np.min(top[:, -1] - top[:, -2]))
    else:
        margin = 0.0
    p = np.clip(m, 1e-12, 1.0)
    entropy = float(-(m * np.log(p)).sum())
    return least, min(max(margin, 0.0), 1.0), max(entropy, 0.0)


@dataclass(frozen=True, slots=True)
class PoolScores:
    uncertainty: Array
    """One row per text, columns :data:`SEQUENCE_MEASURES`."""
    spans: list[list[dict[str, Any]]]
    """Each text's predicted spans (Label Studio regions, with their text)."""


def score_pool(model: CrfTagger, texts: Sequence[str]) -> PoolScores:
    """The model's uncertainty and predicted spans for each text."""
    rows = np.zeros((len(texts), len(SEQUENCE_MEASURES)), dtype=np.float64)
    spans: list[list[dict[str, Any]]] = []
    for i, text in enumerate(texts):
        tokens = tokenize(text)
        best, probability, marginals = model.tag(tokens)
        rows[i] = sequence_uncertainty(probability, marginals)
        spans.append(bio_to_spans(text, tokens, best))
    return PoolScores(rows, spans)


def predict_spans(model: CrfTagger, texts: Sequence[str]) -> list[list[dict[str, Any]]]:
    out = []
    for text in texts:
        tokens = tokenize(text)
        out.append(bio_to_spans(text, tokens, model.predict(tokens)))
    return out


# ---------------------------------------------------------------------- evaluation


def _partial_counts(truth: list[Entity], predicted: list[Entity]) -> tuple[int, int]:
    """SemEval-2013's ``partial`` scheme, type ignored: ``(correct, partial)``, a predicted
    entity with both boundaries of a true one correct, one that overlaps a true one (not yet
    matched) partial; each true entity matches once."""
    left = list(truth)
    correct = partial = 0
    for p in predicted:
        exact = next((t for t in left if (t.start, t.end) == (p.start, p.end)), None)
        if exact is not None:
            correct += 1
            left.remove(exact)
            continue
        near = next((t for t in left if t.start < p.end and p.start < t.end), None)
        if near is not None:
            partial += 1
            left.remove(near)
    return correct, partial


def row_errors(truth: Sequence[str], predicted: Sequence[str]) -> int:
    """Entity errors in one text: predicted entities that are not true (exact match) plus
    true ones not predicted."""
    t, p = set(bio_to_entities(truth)), set(bio_to_entities(predicted))
    return len(p - t) + len(t - p)


def _f1(tp: float, n_predicted: float, n_true: float) -> tuple[float, float, float]:
    precision = tp / n_predicted if n_predicted else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * tp / (n_predicted + n_true) if n_predicted + n_true else 0.0
    return precision, recall, f1


def evaluate_entities(
    truth: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], labels: Sequence[str]
) -> Evaluation:
    """Entity-level scores of predicted BIO sequences against true ones.

    ``entity_f1`` (micro, exact: type and both boundaries), per type precision/recall/F1,
    ``macro_f1`` over the types present in truth or predictions, ``partial_f1`` (SemEval-2013
    partial match: ``(correct + partial / 2)`` over predicted and over true entities), and
    ``accuracy``: the share of tokens whose tag is right."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted sequences for {len(truth)} true ones")
    if len(truth) == 0:
        raise ValueError("nothing to evaluate on")
    kinds = list(labels)
    tp = dict.fromkeys(kinds, 0)
    n_pred = dict.fromkeys(kinds, 0)
    n_true = dict.fromkeys(kinds, 0)
    correct = partial = tokens = right = 0
    all_true = all_pred = 0
    for t_tags, p_tags in zip(truth, predicted, strict=True):
        if len(t_tags) != len(p_tags):
            raise ValueError(f"{len(p_tags)} predicted tags for {len(t_tags)} tokens")
        tokens += len(t_tags)
        right += sum(a == b for a, b in zip(t_tags, p_tags, strict=True))
        t_ents, p_ents = bio_to_entities(t_tags), bio_to_entities(p_tags)
        all_true += len(t_ents)
        all_pred += len(p_ents)
        for e in t_ents:
            n_true[e.label] = n_true.get(e.label, 0) + 1
        for e in p_ents:
            n_pred[e.label] = n_pred.get(e.label, 0) + 1
        for e in set(t_ents) & set(p_ents):
            tp[e.label] = tp.get(e.label, 0) + 1
        c, p = _partial_counts(t_ents, p_ents)
        correct += c
        partial += p
    per_class: dict[str, dict[str, float]] = {}
    for kind in kinds:
        precision, recall, f1 = _f1(tp[kind], n_pred[kind], n_true[kind])
        per_class[kind] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": float(n_true[kind]),
        }
    seen = [k for k in kinds if n_pred[k] + n_true[k] > 0]
    exact_p, exact_r, exact_f1 = _f1(sum(tp.values()), all_pred, all_true)
    _, _, partial_f1 = _f1(correct + 0.5 * partial, all_pred, all_true)
    return Evaluation(
        n=len(truth),
        accuracy=right / tokens if tokens else 1.0,
        macro_f1=float(np.mean([per_class[k]["f1"] for k in seen])) if seen else 0.0,
        per_class=per_class,
        entity_f1=exact_f1,
        entity_precision=exact_p,
        entity_recall=exact_r,
        partial_f1=partial_f1,
    )


# ---------------------------------------------------------------------- the round


def _tagged(data: LabeledData, labels: Sequence[str]) -> tuple[list[list[Token]], list[list[str]]]:
    tokens, tags = [], []
    for text, cell in zip(data.x.tolist(), data.y.tolist(), strict=True):
        t = spans_to_bio(str(text), parse_spans(cell), labels)
        tokens.append(t.tokens)
        tags.append(t.tags)
    return tokens, tags


def _fit(
    tokens: Sequence[Sequence[Token]], tags: Sequence[Sequence[str]], labels: Sequence[str]
) -> CrfTagger:
    return CrfTagger(labels).fit(tokens, tags)


def train_ner_round(
    data: LabeledData,
    labels: Sequence[str],
    *,
    current_model: CrfTagger | None,
    fresh: Array | None,
    tolerance: float,
    random_state: int,
    folds: int = _FOLDS,
) -> RoundResult:
    """Fit on every labeled text, judge by K-fold entity F1, decide promotion on the fresh
    texts (the module docstring says how)."""
    tokens, tags = _tagged(data, labels)
    n = len(tags)
    if n < 2 or not any(t != OUTSIDE for seq in tags for t in seq):
        raise NotEnoughClasses(
            "the labeled texts hold no entity of the project's types: nothing to learn"
        )
    oos: list[list[str]] = [[OUTSIDE] * len(t) for t in tokens]
    splitter = KFold(n_splits=min(folds, n), shuffle=True, random_state=random_state)
    for train_idx, test_idx in splitter.split(np.arange(n)):
        train_tags = [tags[k] for k in train_idx]
        if not any(t != OUTSIDE for seq in train_tags for t in seq):
            continue  # a fold without entities learns nothing: it predicts none
        model = _fit([tokens[k] for k in train_idx], train_tags, labels)
        for k in test_idx:
            oos[k] = model.predict(tokens[k])
    model = _fit(tokens, tags, labels)
    evaluation = evaluate_entities(tags, oos, labels)
    current_eval: Evaluation | None = None
    promoted = True
    mask = np.zeros(n, dtype=bool) if fresh is None else np.asarray(fresh, dtype=bool)
    if current_model is not None and mask.any():
        rows = np.flatnonzero(mask).tolist()
        truth = [tags[k] for k in rows]
        current = [current_model.predict(tokens[k]) for k in rows]
        candidate = [oos[k] for k in rows]
        current_eval = evaluate_entities(truth, current, labels)
        candidate_eval = evaluate_entities(truth, candidate, labels)
        new_errors = np.asarray([row_errors(t, p) for t, p in zip(truth, candidate, strict=True)])
        old_errors = np.asarray([row_errors(t, p) for t, p in zip(truth, current, strict=True)])
        promoted = should_promote(
            candidate_eval.promotion_score,
            current_eval.promotion_score,
            tolerance,
            # the paired sign test: texts where one model makes fewer entity errors
            new_correct=new_errors < old_errors,
            current_correct=old_errors < new_errors,
        )
    return RoundResult(
        model=model,
        evaluation=evaluation,
        evaluated_on="out_of_sample",
        current_evaluation=current_eval,
        promoted=promoted,
        oos_proba=np.zeros((n, 0)),
        n_train=n,
        params={},
    )
