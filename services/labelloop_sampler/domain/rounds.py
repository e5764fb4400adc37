"""When labeling batch *n* may be cut, and what it is cut from.

Batch *n* is chosen by what the loop learned up to round *j = n - 1 - max_model_lag*: the model
trained on batches 1..j and the annotators QA flagged after batch *j*. It is cut only once both
are known, so its content does not depend on how fast models train or annotators answer: the
same inputs give the same batches, and ``max_model_lag`` bounds how stale the choosing model is.
``max_model_lag = 0`` makes rounds synchronous; 1 lets the crew label batch *n* while the model
learns from batch *n - 1*.

Backpressure decides only *when*: at most ``max_open_tasks`` open tasks, and with a
``low_watermark`` the next batch waits until open tasks fall to it. The batch size never depends
on open work (a batch is always full, the last one trimmed by the budget), so timing never
changes what a batch holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from labelloop.project import SamplingConfig

from .ledger import Ledger

__all__ = ["Verdict", "batch_size", "next_batch"]


@dataclass(frozen=True, slots=True)
class Verdict:
    cut: bool
    reason: str
    """``ok`` or why not: ``not_started``, ``paused``, ``converged``, ``full``,
    ``above_watermark``, ``waiting_for_model``, ``waiting_for_qa`` (a small fixed set)."""
    round: int
    """The number the next labeling batch gets."""
    basis: int
    """The round whose outcome chooses it (0: none, a cold start)."""
    converged: str | None = None


def batch_size(sampling: SamplingConfig) -> int:
    """Tasks per labeling batch (gold included): never more than may be open at once."""
    return min(sampling.batch_size, sampling.max_open_tasks)


def next_batch(ledger: Ledger, sampling: SamplingConfig, *, uses_model: bool) -> Verdict:
    """Whether the next labeling batch may be cut now."""
    n = ledger.next_round
    basis = max(0, n - 1 - sampling.max_model_lag)

    def verdict(reason: str, converged: str | None = None) -> Verdict:
        return Verdict(reason == "ok", reason, n, basis, converged)

    if not ledger.started:
        return verdict("not_started")
    if ledger.paused:
        return verdict("paused")
    converged = ledger.converged(basis)
    if converged:
        return verdict("converged", converged)
    open_tasks = ledger.open_tasks()
    if open_tasks + batch_size(sampling) > sampling.max_open_tasks:
        return verdict("full")
    if sampling.low_watermark and ledger.open_batches() and open_tasks > sampling.low_watermark:
        return verdict("above_watermark")
    if basis >= 1:
        outcome = ledger.outcomes.get(basis)
        if uses_model and (outcome is None or not outcome.model_known):
            return verdict("waiting_for_model")
        if outcome is None or not outcome.qa_known:
            return verdict("waiting_for_qa")
    return verdict("ok")
