"""The retrain policy: train again once enough labels arrived since the last model."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetrainDecision", "decide_retrain"]


@dataclass(frozen=True, slots=True)
class RetrainDecision:
    train: bool
    reason: str


def decide_retrain(
    n_rows: int, rows_at_last_model: int | None, *, min_new_labels: int, min_growth: float
) -> RetrainDecision:
    """Train when ``min_new_labels`` new rows arrived or rows grew by ``min_growth`` (a share)."""
    if rows_at_last_model is None:
        return RetrainDecision(n_rows > 0, "first model" if n_rows > 0 else "no rows")
    new = n_rows - rows_at_last_model
    if new <= 0:
        return RetrainDecision(False, "no new labels since the last model")
    if new >= min_new_labels:
        return RetrainDecision(True, f"{new} new labels >= {min_new_labels}")
    growth = new / rows_at_last_model if rows_at_last_model else float("inf")
    if growth >= min_growth:
        return RetrainDecision(True, f"labels grew by {growth:.1%} >= {min_growth:.1%}")
    return RetrainDecision(
        False, f"{new} new labels (growth {growth:.1%}) under min_new_labels and min_growth"
    )
