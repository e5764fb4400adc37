"""Score one batch: consensus labels, agreement, annotator quality, review flags, the alpha gate.

``score_batch`` is the whole QA decision for a batch as one pure function: the service hands it
the batch's live annotations, its tasks, the project config and the annotators' history, and
publishes what comes back. Replaying it on the same inputs gives the same outcome.

Task kinds:

* single-label classification: crowd ratings -> ``aggregate`` (history as Dirichlet prior);
* multi-label: each class scored as its own present/absent question; a class is in the item's
  label when its posterior exceeds 0.5; confidence is the least certain class decision;
  agreement coefficients are averaged over classes (per-class values in ``details``);
* regions (NER spans, boxes): matching (``regions``); percent agreement is the mean pairwise F1.

Expert annotations (``is_expert``) never enter agreement or annotator statistics; they override
the consensus (label kept, confidence 1, ``reviewed``). Gold items release their known answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelloop.events import AnnotatorScore, ConsensusLabel, LabelValue, ReviewItem
from labelloop.project import ProjectConfig, QualityConfig
from labelloop_qa.domain import agreement, regions
from labelloop_qa.domain.aggregation import Consensus, aggregate, choose_method
from labelloop_qa.domain.annotators import Tally, score_annotators, tally_batch
from labelloop_qa.domain.ratings import FloatArray, Ratings
from labelloop_qa.domain.review import flag_items

__all__ = ["BatchOutcome", "Rating", "TaskInfo", "project_scores", "score_batch"]

HISTORY_PRIOR_CAP = 200.0
"""At most this many pseudo-ratings of history weigh on an annotator's confusion matrix, so an
annotator whose quality changes is still recognised from recent batches."""


@dataclass(frozen=True)
class Rating:
    """One live annotation (superseded, deleted and cancelled ones already removed)."""

    item_id: str
    annotator_id: str
    value: LabelValue
    lead_time_seconds: float | None = None
    is_expert: bool = False


@dataclass(frozen=True)
class TaskInfo:
    item_id: str
    is_gold: bool = False
    gold_label: LabelValue | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    """Everything the service publishes or stores for one scored batch."""

    labels: list[ConsensusLabel]
    review: list[ReviewItem]
    report: dict[str, Any]
    """Fields of ``QAReport`` (without the envelope: project, batch_id, event_id)."""
    tallies: dict[str, Tally]
    """This batch's contribution to each annotator's cumulative tally."""
    alert: dict[str, Any] | None = None
    """Fields of ``QualityAlertRaised`` when the batch fails the alpha gate."""


def _single(value: LabelValue | None) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    return None


def _multi(value: LabelValue | None) -> frozenset[str] | None:
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(str(v) for v in value)
    return None


def _history_prior(r: Ratings, history: dict[str, Tally], classes: list[str]) -> FloatArray | None:
    if not history:
        return None
    k = len(classes)
    prior = np.zeros((r.n_annotators, k, k))
    for i, annotator in enumerate(r.annotator_ids.tolist()):
        t = history.get(str(annotator))
        if t is None:
            continue
        m = t.confusion_matrix(classes)
        total = m.sum()
        if total > 0:
            prior[i] = m * min(1.0, HISTORY_PRIOR_CAP / total)
    return prior if prior.any() else None


def _cumulative(history: dict[str, Tally], batch: dict[str, Tally]) -> dict[str, Tally]:
    return {a: history.get(a, Tally()).merged(t) for a, t in batch.items()}


def _expert_labels(ratings: Sequence[Rating], parse: Any) -> dict[str, Any]:
    """Expert answer per item: the most common expert value; ties go to the latest given."""
    by_item: dict[str, list[Any]] = {}
    for rating in ratings:
        if rating.is_expert:
            v = parse(rating.value)
            if v is not None:
                by_item.setdefault(rating.item_id, []).append(v)
    out = {}
    for item, values in by_item.items():
        counts = Counter(values)
        best = max(counts.values())
        out[item] = next(v for v in reversed(values) if counts[v] == best)
    return out


def project_scores(
    config: ProjectConfig | None, tallies: dict[str, Tally], flagged: set[str] | None = None
) -> list[AnnotatorScore]:
    """Every annotator's score over their whole history in the project.

    Spammer scores and flags exist for single-label classification (per-class binary tallies of
    multi-label and region tallies carry no confusion between classes to judge). ``flagged``
    overrides the flag: once flagged, an annotator stays flagged until re-admitted.
    """
    single = config is None or (
        config.task_type.is_classification and not config.task_type.is_multilabel
    )
    classes = list(config.labels.classes) if config and single else []
    threshold = config.quality.spammer_threshold if config and single else 1.0
    scores = score_annotators(tallies, classes, spammer_threshold=threshold)
    if not single:
        scores = [s.model_copy(update={"spammer_score": None, "flagged": False}) for s in scores]
    if flagged is not None:
        scores = [s.model_copy(update={"flagged": s.annotator_id in flagged}) for s in scores]
    return scores


def _fnum(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def score_batch(
    batch_id: str,
    ratings: Sequence[Rating],
    tasks: Sequence[TaskInfo],
    config: ProjectConfig | None,
    history: dict[str, Tally] | None = None,
    *,
    n_boot: int = 200,
    random_state: int = 0,
) -> BatchOutcome:
    """The QA outcome of one batch (see module docstring)."""
    history = history or {}
    quality = config.quality if config else QualityConfig()
    task_type = config.task_type if config else None
    if task_type is not None and not task_type.is_classification:
        outcome = _score_regions(batch_id, ratings, tasks, quality, history)
    elif task_type is not None and task_type.is_multilabel:
        outcome = _score_multilabel(batch_id, ratings, tasks, config, quality, history, n_boot)
    else:
        outcome = _score_single(
            batch_id, ratings, tasks, config, quality, history, n_boot, random_state
        )
    outcome.review.extend(_unanswered(tasks, outcome))
    return outcome


def _unanswered(tasks: Sequence[TaskInfo], outcome: BatchOutcome) -> list[ReviewItem]:
    """Tasks that got no usable answer (all skipped, or answers outside the label schema).

    The sampler took these items out of the pool when it sent them; without a label or a review
    request they would silently drop out of the loop. They go to an expert instead.
    """
    settled = {label.item_id for label in outcome.labels} | {r.item_id for r in outcome.review}
    return [
        ReviewItem(item_id=t.item_id, reason="no_usable_answer", data=t.data)
        for t in tasks
        if not t.is_gold and t.item_id not in settled
    ]


# --------------------------------------------------------------------------- single label


def _score_single(
    batch_id: str,
    ratings: Sequence[Rating],
    tasks: Sequence[TaskInfo],
    config: ProjectConfig | None,
    quality: QualityConfig,
    history: dict[str, Tally],
    n_boot: int,
    random_state: int,
) -> BatchOutcome:
    task_by_item = {t.item_id: t for t in tasks}
    crowd = [x for x in ratings if not x.is_expert]
    values = [_single(x.value) for x in crowd]
    declared = list(config.labels.classes) if config else None
    allowed = set(declared) if declared else None
    usable = [
        (x, v)
        for x, v in zip(crowd, values, strict=True)
        if v is not None and (allowed is None or v in allowed)
    ]
    invalid = len(crowd) - len(usable)
    experts = _expert_labels(ratings, _single)
    if allowed is not None:
        experts = {item: v for item, v in experts.items() if v in allowed}
    gold_labels = {g for t in tasks if (g := _single(t.gold_label)) is not None}
    classes = declared or sorted({v for _, v in usable} | gold_labels | set(experts.values()))
    items = sorted({t.item_id for t in tasks} | {x.item_id for x, _ in usable} | set(experts))
    r = Ratings.from_records(
        np.array([x.item_id for x, _ in usable], dtype=object),
        np.array([x.annotator_id for x, _ in usable], dtype=object),
        np.array([v for _, v in usable], dtype=object),
        classes=classes,
        items=items,
        annotators=sorted({x.annotator_id for x, _ in usable}),
    )
    known = np.full(r.n_items, -1, dtype=np.int64)
    class_index = {c: i for i, c in enumerate(classes)}
    for i, item in enumerate(items):
        t = task_by_item.get(item)
        gold = _single(t.gold_label) if t and t.is_gold else None
        if gold in class_index:
            known[i] = class_index[gold]
    method: str = quality.consensus
    reason = "configured"
    prior = _history_prior(r, history, classes) if r.n_ratings else None
    if method == "auto":
        method, reason = choose_method(r, known, prior_counts=prior, random_state=random_state)
    consensus = aggregate(r, method, known=known, prior_counts=prior)
    level: agreement.Level = "ordinal" if config and config.labels.ordinal else "nominal"
    summary = agreement.summarize(r, level, n_boot=n_boot, random_state=random_state)
    counts = r.item_counts()
    exempt = (known >= 0) | np.isin(np.asarray(items, dtype=object), list(experts))
    flags = flag_items(
        counts,
        consensus.label,
        consensus.confidence,
        min_confidence=quality.min_confidence,
        exempt=exempt,
    )
    flagged = {f.index: f.reason for f in flags}
    lead = np.array(
        [np.nan if x.lead_time_seconds is None else x.lead_time_seconds for x, _ in usable]
    )
    batch_tallies = tally_batch(r, consensus, known=known, lead_times=lead)
    scores = score_annotators(
        _cumulative(history, batch_tallies), classes, spammer_threshold=quality.spammer_threshold
    )
    annotators_of = _annotators_by_item(r)
    labels: list[ConsensusLabel] = []
    review: list[ReviewItem] = []
    for i, item in enumerate(items):
        n_ann = int(counts[i].sum())
        task = task_by_item.get(item)
        if item in experts:
            labels.append(
                _label(
                    batch_id,
                    item,
                    experts[item],
                    1.0,
                    "expert-review",
                    n_ann,
                    task,
                    annotators_of.get(i, []),
                    reviewed=True,
                )
            )
        elif known[i] >= 0:
            labels.append(
                _label(
                    batch_id,
                    item,
                    classes[known[i]],
                    1.0,
                    "gold",
                    n_ann,
                    task,
                    annotators_of.get(i, []),
                )
            )
        elif consensus.label[i] < 0:
            continue  # nobody gave a usable answer: score_batch sends it to review
        elif i in flagged:
            review.append(
                ReviewItem(
                    item_id=item,
                    reason=flagged[i],
                    data=task.data if task else {},
                    candidate_label=classes[consensus.label[i]],
                    confidence=float(consensus.confidence[i]),
                )
            )
        else:
            labels.append(
                _label(
                    batch_id,
                    item,
                    classes[consensus.label[i]],
                    float(consensus.confidence[i]),
                    consensus.method,
                    n_ann,
                    task,
                    annotators_of.get(i, []),
                )
            )
    batch_accuracy: dict[str, float] = {}
    if consensus.accuracy is not None:
        batch_accuracy = {
            str(a): round(float(v), 6)
            for a, v in zip(r.annotator_ids.tolist(), consensus.accuracy.tolist(), strict=True)
        }
    gold_n = sum(t.gold_n for t in batch_tallies.values())
    gold_c = sum(t.gold_correct for t in batch_tallies.values())
    details: dict[str, Any] = {
        "task": "single_label",
        "level": level,
        "method_reason": reason,
        "unanimous_share": _fnum(summary.unanimous_share),
        "per_class_agreement": summary.per_class_agreement,
        "n_items_multiply_rated": summary.n_items_multiply_rated,
        "invalid_annotations": invalid,
        "expert_annotations": sum(1 for x in ratings if x.is_expert),
        "undefined": summary.notes,
        "annotators_batch": {
            a: {
                "n": t.n_annotations,
                "agree": t.n_agree,
                "informative": t.n_informative,
                "estimated_accuracy": batch_accuracy.get(a),
            }
            for a, t in sorted(batch_tallies.items())
        },
        "n_iter": consensus.n_iter,
    }
    return _finish(
        batch_id,
        summary,
        consensus,
        labels,
        review,
        scores,
        batch_tallies,
        quality,
        n_items=len({x.item_id for x, _ in usable} | set(experts)),
        n_annotations=len(ratings),
        gold=(gold_n, gold_c),
        details=details,
    )


def _annotators_by_item(r: Ratings) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for item, ann in zip(r.item.tolist(), r.annotator.tolist(), strict=True):
        out.setdefault(item, []).append(str(r.annotator_ids[ann]))
    return {i: sorted(set(a)) for i, a in out.items()}


def _label(
    batch_id: str,
    item: str,
    label: LabelValue,
    confidence: float,
    method: str,
    n_ann: int,
    task: TaskInfo | None,
    annotators: list[str],
    *,
    reviewed: bool = False,
) -> ConsensusLabel:
    return ConsensusLabel(
        item_id=item,
        label=label,
        confidence=min(1.0, max(0.0, confidence)),
        method=method,
        n_annotations=n_ann,
        is_gold=bool(task and task.is_gold),
        reviewed=reviewed,
        annotators=annotators,
        batch_id=batch_id,
    )


def _finish(
    batch_id: str,
    summary: agreement.AgreementSummary | None,
    consensus: Consensus | None,
    labels: list[ConsensusLabel],
    review: list[ReviewItem],
    scores: list[AnnotatorScore],
    tallies: dict[str, Tally],
    quality: QualityConfig,
    *,
    n_items: int,
    n_annotations: int,
    gold: tuple[int, int],
    details: dict[str, Any],
    method: str | None = None,
    percent: float | None = None,
) -> BatchOutcome:
    alpha = summary.krippendorff_alpha if summary else None
    passed = alpha is None or alpha >= quality.min_alpha
    alert = None
    if not passed:
        alert = {
            "metric": "krippendorff_alpha",
            "value": alpha,
            "threshold": quality.min_alpha,
            "message": (
                f"batch {batch_id}: Krippendorff's alpha {alpha:.3f} is under the project's "
                f"minimum {quality.min_alpha:.3f}"
            ),
        }
    report = {
        "n_items": n_items,
        "n_annotations": n_annotations,
        "percent_agreement": percent if summary is None else _fnum(summary.percent_agreement),
        "cohen_kappa_mean": _fnum(summary.cohen_kappa_mean) if summary else None,
        "fleiss_kappa": _fnum(summary.fleiss_kappa) if summary else None,
        "krippendorff_alpha": _fnum(alpha),
        "krippendorff_alpha_ci": summary.krippendorff_alpha_ci if summary else None,
        "gwet_ac1": _fnum(summary.gwet_ac1) if summary else None,
        "consensus_method": method or (consensus.method if consensus else "majority"),
        "annotators": scores,
        "items_flagged": len(review),
        "gold_accuracy": gold[1] / gold[0] if gold[0] else None,
        "passed": passed,
        "details": details,
    }
    return BatchOutcome(labels, review, report, tallies, alert)


# --------------------------------------------------------------------------- multi-label


def _score_multilabel(
    batch_id: str,
    ratings: Sequence[Rating],
    tasks: Sequence[TaskInfo],
    config: ProjectConfig | None,
    quality: QualityConfig,
    history: dict[str, Tally],
    n_boot: int,
) -> BatchOutcome:
    classes = list(config.labels.classes) if config else []
    crowd = [(x, v) for x in ratings if not x.is_expert and (v := _multi(x.value)) is not None]
    task_by_item = {t.item_id: t for t in tasks}
    items = sorted({x.item_id for x, _ in crowd})
    annotators = sorted({x.annotator_id for x, _ in crowd})
    item_arr = np.array([x.item_id for x, _ in crowd], dtype=object)
    ann_arr = np.array([x.annotator_id for x, _ in crowd], dtype=object)
    n_items = len(items)
    present = np.zeros((n_items, len(classes)))
    conf = np.ones(n_items)
    per_label: dict[str, Any] = {}
    alphas: list[float] = []
    kappas: list[float] = []
    fleiss: list[float] = []
    percents: list[float] = []
    ac1s: list[float] = []
    batch_tallies: dict[str, Tally] = {}
    for j, cls in enumerate(classes):
        answer = np.array(["yes" if cls in v else "no" for _, v in crowd], dtype=object)
        r = Ratings.from_records(
            item_arr, ann_arr, answer, classes=["no", "yes"], items=items, annotators=annotators
        )
        known = np.full(n_items, -1, dtype=np.int64)
        for i, item in enumerate(items):
            t = task_by_item.get(item)
            gold = _multi(t.gold_label) if t and t.is_gold else None
            if gold is not None:
                known[i] = int(cls in gold)
        method = quality.consensus if quality.consensus != "auto" else choose_method(r, known)[0]
        c = aggregate(r, method, known=known)
        p_yes = np.nan_to_num(c.posterior[:, 1], nan=0.0)
        present[:, j] = p_yes > 0.5
        conf = np.minimum(conf, np.maximum(p_yes, 1 - p_yes))
        s = agreement.summarize(r, "nominal", n_boot=0)
        per_label[cls] = {
            "krippendorff_alpha": _fnum(s.krippendorff_alpha),
            "percent_agreement": _fnum(s.percent_agreement),
        }
        for bucket, value in (
            (alphas, s.krippendorff_alpha),
            (kappas, s.cohen_kappa_mean),
            (fleiss, s.fleiss_kappa),
            (percents, s.percent_agreement),
            (ac1s, s.gwet_ac1),
        ):
            if value is not None:
                bucket.append(value)
        for a, tb in tally_batch(r, c, known=known).items():
            mine = batch_tallies.get(a)
            # per-class binary tallies: keep counts once (from the first class), sum the rest
            renamed = Tally(
                0 if mine else tb.n_annotations,
                tb.n_informative,
                tb.n_agree,
                tb.gold_n,
                tb.gold_correct,
                0.0,
                0,
                {f"{cls}={k}": row for k, row in tb.confusion.items()},
            )
            batch_tallies[a] = mine.merged(renamed) if mine else renamed
    experts = _expert_labels(ratings, _multi)
    labels, review = [], []
    for i, item in enumerate(items):
        task = task_by_item.get(item)
        chosen = [cls for j, cls in enumerate(classes) if present[i, j]]
        n_ann = int((item_arr == item).sum())
        if item in experts:
            labels.append(
                _label(
                    batch_id,
                    item,
                    sorted(experts[item]),
                    1.0,
                    "expert-review",
                    n_ann,
                    task,
                    [],
                    reviewed=True,
                )
            )
        elif task and task.is_gold and _multi(task.gold_label) is not None:
            labels.append(
                _label(
                    batch_id,
                    item,
                    sorted(_multi(task.gold_label) or []),
                    1.0,
                    "gold",
                    n_ann,
                    task,
                    [],
                )
            )
        elif conf[i] < quality.min_confidence:
            review.append(
                ReviewItem(
                    item_id=item,
                    reason="low_confidence",
                    data=task.data if task else {},
                    candidate_label=chosen,
                    confidence=float(conf[i]),
                )
            )
        else:
            labels.append(
                _label(batch_id, item, chosen, float(conf[i]), "per-label", n_ann, task, [])
            )

    def mean(xs: list[float]) -> float | None:
        return float(np.mean(xs)) if xs else None

    summary = agreement.AgreementSummary(
        n_items,
        len(annotators),
        len(crowd),
        0,
        mean(percents),
        None,
        mean(kappas),
        mean(fleiss),
        mean(alphas),
        None,
        mean(ac1s),
        {},
        "nominal",
    )
    scores = [
        s.model_copy(update={"spammer_score": None, "flagged": False})
        for s in score_annotators(_cumulative(history, batch_tallies), [], spammer_threshold=1.0)
    ]
    details = {"task": "multi_label", "per_label": per_label}
    return _finish(
        batch_id,
        summary,
        None,
        labels,
        review,
        scores,
        batch_tallies,
        quality,
        n_items=n_items,
        n_annotations=len(ratings),
        gold=(0, 0),
        details=details,
        method="per-label",
    )


# --------------------------------------------------------------------------- regions


def _score_regions(
    batch_id: str,
    ratings: Sequence[Rating],
    tasks: Sequence[TaskInfo],
    quality: QualityConfig,
    history: dict[str, Tally],
) -> BatchOutcome:
    task_by_item = {t.item_id: t for t in tasks}
    by_item: dict[str, list[tuple[str, list[regions.Region]]]] = {}
    invalid = 0
    for x in ratings:
        if x.is_expert or not isinstance(x.value, list):
            invalid += not x.is_expert
            continue
        try:
            parsed = regions.parse_regions(x.value)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            invalid += 1
            continue
        by_item.setdefault(x.item_id, []).append((x.annotator_id, parsed))
    experts = {x.item_id: x.value for x in ratings if x.is_expert and isinstance(x.value, list)}
    labels, review, agreements = [], [], []
    tallies: dict[str, Tally] = {}
    for item in sorted(set(by_item) | set(experts)):
        entries = by_item.get(item, [])
        task = task_by_item.get(item)
        sets = [regs for _, regs in entries]
        ag = regions.item_agreement(sets)
        if ag is not None:
            agreements.append(ag)
        kept, confidence = regions.consensus_regions(sets)
        for annotator, regs in entries:
            t = tallies.setdefault(annotator, Tally())
            t.n_annotations += 1
            if len(sets) >= 2:
                t.n_informative += 1
                t.n_agree += int(regions.pair_f1(regs, kept) == 1.0)
        names = sorted({a for a, _ in entries})
        if item in experts:
            labels.append(
                _label(
                    batch_id,
                    item,
                    experts[item],
                    1.0,
                    "expert-review",
                    len(entries),
                    task,
                    names,
                    reviewed=True,
                )
            )
        elif confidence < quality.min_confidence:
            review.append(
                ReviewItem(
                    item_id=item,
                    reason="low_confidence",
                    data=task.data if task else {},
                    candidate_label=[r.to_json() for r in kept],
                    confidence=confidence,
                )
            )
        else:
            labels.append(
                _label(
                    batch_id,
                    item,
                    [r.to_json() for r in kept],
                    confidence,
                    "region-majority",
                    len(entries),
                    task,
                    names,
                )
            )
    scores = score_annotators(_cumulative(history, tallies), [], spammer_threshold=1.0)
    percent = float(np.mean(agreements)) if agreements else None
    details = {
        "task": "regions",
        "agreement": "mean pairwise F1 (spans exact, boxes IoU>=0.5)",
        "invalid_annotations": invalid,
    }
    return _finish(
        batch_id,
        None,
        None,
        labels,
        review,
        scores,
        tallies,
        quality,
        n_items=len(by_item),
        n_annotations=len(ratings),
        gold=(0, 0),
        details=details,
        method="region-majority",
        percent=percent,
    )
