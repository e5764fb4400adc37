"""What an expert sees above a review task: why it is in review and what the crowd answered.

Two lines of task data, shown by the review interface's panel
(:func:`~labelloop_bridge.domain.label_config.build_label_config` with ``review=True``). The
crowd's current label is written out there and never imported as a prediction: a prediction is
pre-selected in Label Studio, and an expert confirming a pre-selected wrong answer with one key
is what the review exists to prevent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labelloop.events import LabelValue

__all__ = ["REASONS", "CrowdVote", "reason_line", "votes_line"]

REASONS = {
    "low_confidence": "the crowd's consensus is uncertain",
    "disagreement": "the crowd's annotators disagree",
    "model_contradiction": "the model confidently predicts another label than the crowd's",
    "flagged_annotator": "the label rests only on annotators QA has since flagged",
    "model_recheck": "a retrained model contradicts the label given earlier",
    "no_usable_answer": "no annotator gave a usable answer",
}
"""QA's review reasons (``ReviewItem.reason``) as an expert reads them."""


@dataclass(frozen=True, slots=True)
class CrowdVote:
    """One crowd annotation of an item: who (labelloop's annotator id) and what."""

    annotator_id: str
    value: LabelValue | None
    """The label; ``None`` for a skip."""


def reason_line(reason: str | None, confidence: float | None) -> str:
    """Why the item is in review, e.g. ``Why review: the crowd's annotators disagree.``"""
    if reason is None:
        text = "QA held this label back"
    else:
        text = REASONS.get(reason, f"QA held this label back ({reason})")
    if confidence is not None:
        text += f" (confidence {confidence:.2f})"
    return f"Why review: {text}."


def votes_line(votes: Sequence[CrowdVote], current: LabelValue | None) -> str:
    """Every crowd vote (annotator -> label) and the current label, said to be unselected."""
    if votes:
        shown = " · ".join(
            f"{v.annotator_id} → {_label(v.value)}"
            for v in sorted(votes, key=lambda v: (v.annotator_id, _label(v.value)))
        )
        line = f"Crowd votes: {shown}."
    else:
        line = "Crowd votes: none recorded."
    if current is not None:
        line += f" Current label: {_label(current)} (not pre-selected: choose for yourself)."
    return line


def _label(value: LabelValue | None) -> str:
    if value is None:
        return "skipped"
    if isinstance(value, str):
        return value
    if all(isinstance(v, str) for v in value):  # several classes
        return " + ".join(str(v) for v in value) if value else "nothing"
    return f"{len(value)} region{'s' if len(value) != 1 else ''}"  # spans or boxes
