"""Whether a new model replaces the current one."""

from __future__ import annotations

__all__ = ["should_promote"]


def should_promote(new_macro_f1: float, current_macro_f1: float | None, tolerance: float) -> bool:
    """Promote unless the new model is worse than the current one by more than ``tolerance``.

    Both scores must come from the same evaluation rows (the trainer re-scores the current model on
    the new test split), otherwise a harder test set would look like a worse model. A small drop is
    tolerated so that a model trained on more labels is not held back by noise.
    """
    if current_macro_f1 is None:
        return True
    return new_macro_f1 >= current_macro_f1 - tolerance - 1e-12
