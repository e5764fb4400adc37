"""Annotator quality: mergeable tallies per annotator, and the scores derived from them.

A ``Tally`` holds sufficient statistics (counts and soft confusion counts), so a batch's tally
adds to the cumulative one and every score can be computed per batch or over all history with the
same function. Only *informative* ratings feed the agreement and confusion statistics: ratings on
items somebody else also rated, or on gold items. A rating alone on its item would only be compared
with a consensus it made itself.

Scores:

* ``gold_accuracy``: share right on gold items.
* ``agreement_with_consensus``: share equal to the consensus label.
* ``estimated_accuracy``: trace of the soft confusion matrix (consensus posterior, or the gold
  answer, as the truth) over its total.
* ``spammer_score`` (after Raykar & Yu, 2011): a spammer's labels do not depend on the truth, so
  the rows of their confusion matrix are all alike. Score = 1 - mean total-variation distance
  between confusion rows, pairs weighted by how much evidence each row holds. 0 = perfectly
  discriminating, 1 = labels independent of the truth. For an annotator right with probability
  ``p`` and errors spread evenly over ``K`` classes it is ``1 - (K p - 1)/(K - 1)``; for binary
  tasks it is ``1 - Youden's J``. An adversary (systematically swapping classes) is *not* a
  spammer by this score but shows an accuracy below chance, which flags them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelloop.events import AnnotatorScore, Confusion
from labelloop_qa.domain.aggregation import Consensus
from labelloop_qa.domain.ratings import FloatArray, IntArray, Ratings

__all__ = ["Tally", "score_annotators", "spammer_score", "tally_batch", "top_confusions"]

MIN_EVIDENCE = 10
"""Informative ratings needed before an annotator gets a spammer score or can be flagged."""


@dataclass
class Tally:
    """Sufficient statistics of one annotator (one batch, or cumulative)."""

    n_annotations: int = 0
    n_informative: int = 0
    n_agree: int = 0
    gold_n: int = 0
    gold_correct: int = 0
    lead_time_sum: float = 0.0
    lead_time_n: int = 0
    confusion: dict[str, dict[str, float]] = field(default_factory=dict)
    """Soft counts: truth class -> given class -> weight (sparse; classes by name)."""

    def merged(self, other: Tally) -> Tally:
        conf = {t: dict(row) for t, row in self.confusion.items()}
        for t, row in other.confusion.items():
            mine = conf.setdefault(t, {})
            for g, w in row.items():
                mine[g] = mine.get(g, 0.0) + w
        return Tally(
            self.n_annotations + other.n_annotations,
            self.n_informative + other.n_informative,
            self.n_agree + other.n_agree,
            self.gold_n + other.gold_n,
            self.gold_correct + other.gold_correct,
            self.lead_time_sum + other.lead_time_sum,
            self.lead_time_n + other.lead_time_n,
            conf,
        )

    def minus(self, other: Tally) -> Tally:
        """This tally without ``other``'s contribution (a re-scored batch replaces its old one)."""
        negated = Tally(
            -other.n_annotations,
            -other.n_informative,
            -other.n_agree,
            -other.gold_n,
            -other.gold_correct,
            -other.lead_time_sum,
            -other.lead_time_n,
            {t: {g: -w for g, w in row.items()} for t, row in other.confusion.items()},
        )
        out = self.merged(negated)
        # float sums do not cancel exactly: a residue under 1e-9 is a zero
        out.lead_time_sum = round(out.lead_time_sum, 9)
        out.confusion = {
            t: kept
            for t, row in out.confusion.items()
            if (kept := {g: round(w, 9) for g, w in row.items() if abs(w) > 1e-9})
        }
        return out

    def is_empty(self) -> bool:
        return self.n_annotations == 0 and self.gold_n == 0 and not self.confusion

    def confusion_matrix(self, classes: list[str]) -> FloatArray:
        """Dense truth x given soft counts over ``classes`` (unknown class names are ignored)."""
        index = {c: i for i, c in enumerate(classes)}
        m = np.zeros((len(classes), len(classes)))
        for t, row in self.confusion.items():
            for g, w in row.items():
                if t in index and g in index:
                    m[index[t], index[g]] += w
        return m

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n_annotations,
            "ni": self.n_informative,
            "agree": self.n_agree,
            "gn": self.gold_n,
            "gc": self.gold_correct,
            "lts": self.lead_time_sum,
            "ltn": self.lead_time_n,
            "conf": self.confusion,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Tally:
        conf = raw.get("conf") or {}
        return cls(
            int(raw.get("n", 0)),
            int(raw.get("ni", 0)),
            int(raw.get("agree", 0)),
            int(raw.get("gn", 0)),
            int(raw.get("gc", 0)),
            float(raw.get("lts", 0.0)),
            int(raw.get("ltn", 0)),
            {str(t): {str(g): float(w) for g, w in row.items()} for t, row in conf.items()},
        )


def tally_batch(
    r: Ratings,
    consensus: Consensus,
    *,
    known: IntArray | None = None,
    lead_times: FloatArray | None = None,
) -> dict[str, Tally]:
    """Each annotator's tally for these ratings, keyed by annotator id (vectorised per column)."""
    a, k = r.n_annotators, r.n_classes
    known_arr = np.full(r.n_items, -1) if known is None else np.asarray(known)
    totals = r.item_totals()
    gold_item = known_arr >= 0
    informative = (totals[r.item] >= 2) | gold_item[r.item]
    has_label = consensus.label[r.item] >= 0
    truth = np.nan_to_num(consensus.posterior[r.item], nan=0.0)
    gold_rows = gold_item[r.item]
    truth[gold_rows] = np.eye(k)[known_arr[r.item][gold_rows]]
    use = informative & has_label
    w = truth[use]
    cells = np.zeros((a, k, k))
    for t in range(k):  # loop over classes, not ratings
        flat = np.bincount(r.annotator[use] * k + r.label[use], weights=w[:, t], minlength=a * k)
        cells[:, t, :] = flat.reshape(a, k)
    n = np.bincount(r.annotator, minlength=a)
    ni = np.bincount(r.annotator[use], minlength=a)
    agree = np.bincount(
        r.annotator[use], weights=(r.label == consensus.label[r.item])[use], minlength=a
    )
    gn = np.bincount(r.annotator[gold_rows], minlength=a)
    gc = np.bincount(
        r.annotator[gold_rows], weights=(r.label == known_arr[r.item])[gold_rows], minlength=a
    )
    lt = np.zeros(r.n_ratings) if lead_times is None else np.asarray(lead_times, dtype=float)
    lt_ok = ~np.isnan(lt) if lead_times is not None else np.zeros(r.n_ratings, dtype=bool)
    lts = np.bincount(r.annotator[lt_ok], weights=lt[lt_ok], minlength=a)
    ltn = np.bincount(r.annotator[lt_ok], minlength=a)
    classes = [str(c) for c in r.classes.tolist()]
    out: dict[str, Tally] = {}
    for i in np.nonzero(n)[0]:
        # posterior dust (< 1e-6 of a rating) is dropped: it only bloats the stored history
        t_idx, g_idx = np.nonzero(cells[i] >= 1e-6)
        conf: dict[str, dict[str, float]] = {}
        for t, g in zip(t_idx.tolist(), g_idx.tolist(), strict=True):
            conf.setdefault(classes[t], {})[classes[g]] = round(float(cells[i, t, g]), 6)
        out[str(r.annotator_ids[i])] = Tally(
            int(n[i]),
            int(ni[i]),
            round(float(agree[i])),
            int(gn[i]),
            round(float(gc[i])),
            float(lts[i]),
            int(ltn[i]),
            conf,
        )
    return out


def spammer_score(confusion: FloatArray, smoothing: float = 0.1) -> float | None:
    """1 - evidence-weighted mean total-variation distance between confusion rows.

    ``confusion`` holds truth x given counts. ``None`` when fewer than two truth classes have
    evidence (nothing to compare).
    """
    c = np.asarray(confusion, dtype=np.float64)
    mass = c.sum(axis=1)
    rows = mass > 0
    if rows.sum() < 2:
        return None
    k = c.shape[1]
    p = (c[rows] + smoothing / k) / (mass[rows] + smoothing)[:, None]
    m = mass[rows]
    tv = 0.5 * np.abs(p[:, None, :] - p[None, :, :]).sum(axis=2)
    w = np.outer(m, m)
    np.fill_diagonal(w, 0.0)
    return float(1.0 - (tv * w).sum() / w.sum())


def top_confusions(tally: Tally, n: int = 3, min_weight: float = 0.5) -> list[Confusion]:
    """The ``n`` heaviest off-diagonal cells of an annotator's soft confusion counts."""
    cells = [
        (w, truth, given)
        for truth, row in tally.confusion.items()
        for given, w in row.items()
        if given != truth and w >= min_weight
    ]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [Confusion(truth=t, given=g, weight=round(w, 3)) for w, t, g in cells[:n]]


ACCURACY_Z = 2.326
"""One-sided 99% bound: an annotator is flagged on accuracy only when it is this sure."""


def spammer_accuracy(threshold: float, n_classes: int) -> float:
    """The accuracy at which an annotator with evenly spread errors has the spammer score
    ``threshold`` (``1 - (K p - 1) / (K - 1)``, solved for ``p``): 0.73 for 10 classes at the
    default 0.3, 0.85 for two. 0 (nobody below it) without two classes or with threshold 1."""
    if n_classes < 2 or threshold >= 1.0:
        return 0.0
    return (1.0 + (1.0 - threshold) * (n_classes - 1)) / n_classes


def accuracy_upper_bound(accuracy: float, n: int, z: float = ACCURACY_Z) -> float:
    """Wilson's upper confidence bound of an accuracy measured on ``n`` ratings."""
    if n <= 0:
        return 1.0
    p = min(max(accuracy, 0.0), 1.0)
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / denominator
    return min(1.0, centre + half)


def score_annotators(
    tallies: dict[str, Tally],
    classes: list[str],
    *,
    spammer_threshold: float,
    min_evidence: int = MIN_EVIDENCE,
) -> list[AnnotatorScore]:
    """One ``AnnotatorScore`` per annotator, sorted by id.

    Flagged, once ``min_evidence`` informative ratings are in: a spammer score over
    ``spammer_threshold``; an estimated accuracy below chance; or an accuracy that is, with 99%
    confidence, below the accuracy the threshold stands for (:func:`spammer_accuracy`). The
    spammer score alone is biased low on little evidence (a uniform spammer's sparse confusion
    rows differ by chance: 0.21 on 20 ratings over 10 classes, against 0.3 to be flagged), so
    the digits' spammer answered four batches before it was caught; the bound catches them after
    about 20 ratings and leaves a good annotator's unlucky start alone (0.6 on 10 ratings: upper
    bound 0.86)."""
    chance = 1.0 / max(len(classes), 1)
    scores = []
    for annotator_id in sorted(tallies):
        t = tallies[annotator_id]
        conf = t.confusion_matrix(classes)
        total = conf.sum()
        estimated = float(np.trace(conf) / total) if total > 0 else None
        enough = t.n_informative >= min_evidence
        spam = spammer_score(conf) if enough else None
        flagged = enough and (
            (spam is not None and spam > spammer_threshold)
            or (estimated is not None and estimated < chance)
            or (
                estimated is not None
                and accuracy_upper_bound(estimated, t.n_informative)
                < spammer_accuracy(spammer_threshold, len(classes))
            )
        )
        scores.append(
            AnnotatorScore(
                annotator_id=annotator_id,
                n_annotations=t.n_annotations,
                agreement_with_consensus=t.n_agree / t.n_informative if t.n_informative else None,
                gold_accuracy=t.gold_correct / t.gold_n if t.gold_n else None,
                gold_n=t.gold_n,
                confusions=top_confusions(t),
                estimated_accuracy=estimated,
                spammer_score=spam,
                mean_lead_time_seconds=t.lead_time_sum / t.lead_time_n if t.lead_time_n else None,
                flagged=flagged,
            )
        )
    return scores
