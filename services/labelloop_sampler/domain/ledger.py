"""The sampler's ledger of one project: its numbered labeling rounds, what each round taught, the
review batches, budget use and stop flags.

The ledger is one small JSON document in KV, changed only by compare-and-swap, so replicas that
race for the same project serialise on it: batch *n* exists once the ledger names it. Item ids of
batches live in the batch artefacts (the ledger keeps a nonce to find the committed one).

It stays small however many rounds a project runs: rounds that can no longer change anything (the
labeling batch and its review completed and announced, the round's model and QA report known, and
no batch still to be cut on it) leave it in segments of :data:`SEGMENT_ROUNDS`
(:meth:`Ledger.compacted`). The ledger keeps what they add up to (:class:`Closed`: how many,
their lead times, a convergence verdict); each segment's entries go to an archive object
(:class:`Segment`) written before the ledger that drops them is committed. When no batch waits
for models (random picks, no rechecks), a round leaves without its model: a trainer far behind
the crew would otherwise hold every round since in the ledger (1,000 rounds behind, 390 kB; past
2,600, more than NATS carries in a message). The ledger then keeps only which compacted rounds
still await their model (:attr:`Closed.awaiting_models`), for the convergence verdict it may
bring.

What round *j* taught (:class:`Outcome`) arrives from two services: the serving model after the
round (``ModelTrained``, trainer) and the annotators QA flagged after it (``QAReport``, qa-scorer).
The sampler joins them here; batch *n* needs the outcome of round *n - 1 - max_model_lag*
(:mod:`labelloop_sampler.domain.rounds`).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from labelloop.events import SuspectLabel

__all__ = ["SEGMENT_ROUNDS", "Closed", "Ledger", "Outcome", "ReviewBatch", "Round", "Segment"]

SEGMENT_ROUNDS = 50
"""Rounds compacted together into one archived segment."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Round(_Model):
    """One labeling batch."""

    batch_id: str
    nonce: str
    """Names the committed artefact (a replica that lost the race wrote another nonce)."""
    tasks: int
    labels: int
    """Non-gold tasks (the label budget counts these)."""
    annotations: int
    done: int = 0
    """Tasks that already have all their annotations (progress, for backpressure only)."""
    completed: bool = False
    announced: bool = False
    """``BatchCreated`` was published (a crash between commit and publish is repaired)."""
    rechecks: list[str] = Field(default_factory=list)
    """Items whose earlier label this batch sent back to an expert (``BatchCreated.rechecks``)."""


class ReviewBatch(_Model):
    """The expert review of one labeling round's items."""

    batch_id: str
    nonce: str
    tasks: int
    completed: bool = False
    announced: bool = False


class Outcome(_Model):
    """What the sampler knows of a finished labeling round."""

    model_known: bool = False
    """``ModelTrained`` of the round arrived (its serving model may still be ``None``)."""
    model_version: str | None = None
    scores_ref: str | None = None
    converged: str | None = None
    suspects: list[SuspectLabel] = Field(default_factory=list)
    """The round's model's doubts about released labels, until the batch built on it is cut."""
    qa_known: bool = False
    """``QAReport`` of the round arrived."""
    flagged: list[str] = Field(default_factory=list)
    """Annotators QA flagged after the round (cumulative)."""
    lead_seconds: float = 0.0
    lead_count: int = 0
    """Lead times of the round's annotations (for the money budget)."""
    review_due: bool | None = None
    """QA held items of the round for an expert (a ``ReviewRequested`` of the round exists);
    ``None``: the report came before the ledger kept this (then a review is due only if one
    was cut)."""


class Closed(_Model):
    """What the ledger keeps of its compacted rounds: no entry per round, only their sums."""

    rounds: int = 0
    """Rounds 1 to ``rounds`` (labeling batch, review, outcome) are compacted."""
    converged: str | None = None
    """The first convergence verdict among them, and its round."""
    converged_round: int = 0
    lead_seconds: float = 0.0
    lead_count: int = 0
    """Lead times of their annotations (the money budget of every later batch counts them)."""
    awaiting_models: list[tuple[int, int]] = Field(default_factory=list)
    """Compacted rounds whose ``ModelTrained`` had not come, as ranges ``(first, last)``: rounds
    compacted while no batch waited for models. Their models come in round order, so this is
    one range or none."""

    def awaits_model(self, number: int) -> bool:
        return any(first <= number <= last for first, last in self.awaiting_models)

    def with_model(self, number: int, converged: str | None) -> Closed:
        """The model of compacted round ``number`` came: it awaits it no more, and its
        convergence verdict counts if it is the first."""
        ranges: list[tuple[int, int]] = []
        for first, last in self.awaiting_models:
            if first <= number <= last:
                ranges += [(a, b) for a, b in ((first, number - 1), (number + 1, last)) if a <= b]
            else:
                ranges.append((first, last))
        verdict, at = self.converged, self.converged_round
        if converged and (not verdict or number < at):
            verdict, at = converged, number
        return self.model_copy(
            update={"awaiting_models": ranges, "converged": verdict, "converged_round": at}
        )


class Segment(_Model):
    """The archived entries of compacted rounds ``first`` to ``last``: what the ledger held of
    them when they closed (facts that no longer change)."""

    first: int
    last: int
    rounds: dict[int, Round]
    reviews: dict[int, ReviewBatch] = Field(default_factory=dict)
    outcomes: dict[int, Outcome] = Field(default_factory=dict)
    taken: list[str] = Field(default_factory=list)
    """Non-gold items of the segment's labeling batches (filled in from the batch artefacts by
    the store: a new reader learns them from one object instead of one per batch)."""
    rechecked: list[str] = Field(default_factory=list)
    """Items the segment's batches sent back to an expert."""


class Ledger(_Model):
    started: bool = False
    paused: bool = False
    closed: Closed = Field(default_factory=Closed)
    rounds: dict[int, Round] = Field(default_factory=dict)
    outcomes: dict[int, Outcome] = Field(default_factory=dict)
    reviews: dict[int, ReviewBatch] = Field(default_factory=dict)
    """Labeling round -> its review batch."""
    labels_used: int = 0
    annotations_used: int = 0
    exhausted: str | None = None

    @classmethod
    def decode(cls, raw: bytes | None) -> Ledger:
        return cls() if raw is None else cls.model_validate_json(raw)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    # ------------------------------------------------------------------ reading

    @property
    def next_round(self) -> int:
        return max(self.rounds, default=self.closed.rounds) + 1

    def is_compacted(self, number: int) -> bool:
        """Round ``number`` left the ledger for an archived segment."""
        return 1 <= number <= self.closed.rounds

    def round_of(self, batch_id: str) -> int | None:
        for number, r in self.rounds.items():
            if r.batch_id == batch_id:
                return number
        return None

    def review_round_of(self, batch_id: str) -> int | None:
        for number, r in self.reviews.items():
            if r.batch_id == batch_id:
                return number
        return None

    def open_tasks(self) -> int:
        return sum(r.tasks - r.done for r in self.rounds.values() if not r.completed)

    def open_batches(self) -> int:
        return sum(1 for r in self.rounds.values() if not r.completed)

    def converged(self, up_to: int) -> str | None:
        """The convergence verdict of a round up to ``up_to``, if any said so."""
        if self.closed.converged and self.closed.converged_round <= up_to:
            return self.closed.converged
        for number in sorted(self.outcomes):
            if number <= up_to and self.outcomes[number].converged:
                return self.outcomes[number].converged
        return None

    def mean_lead_seconds(self, up_to: int) -> float | None:
        """Mean annotation lead time over the rounds up to ``up_to`` whose QA is known (the
        compacted ones always count: ``up_to`` is never below the rounds still needed)."""
        seconds, count = self.closed.lead_seconds, float(self.closed.lead_count)
        for number, outcome in self.outcomes.items():
            if number <= up_to and outcome.qa_known:
                seconds += outcome.lead_seconds
                count += outcome.lead_count
        return seconds / count if count else None

    def rechecked(self) -> set[str]:
        """Items some batch not compacted yet sent back to an expert (the compacted ones' are in
        their segments)."""
        return {item for r in self.rounds.values() for item in r.rechecks}

    def unannounced(self) -> list[tuple[Literal["labeling", "review"], int, str, str]]:
        """Committed batches whose ``BatchCreated`` may not have gone out: (kind, round, id,
        nonce)."""
        found: list[tuple[Literal["labeling", "review"], int, str, str]] = [
            ("labeling", n, r.batch_id, r.nonce)
            for n, r in sorted(self.rounds.items())
            if not r.announced
        ]
        found += [
            ("review", n, r.batch_id, r.nonce)
            for n, r in sorted(self.reviews.items())
            if not r.announced
        ]
        return found

    # ------------------------------------------------------------------ changes (new ledgers)

    def with_round(self, number: int, batch: Round) -> Self:
        if number != self.next_round:
            raise ValueError(f"round {number} is not the next one ({self.next_round})")
        return self.model_copy(
            update={
                "rounds": {**self.rounds, number: batch},
                "labels_used": self.labels_used + batch.labels,
                "annotations_used": self.annotations_used + batch.annotations,
            }
        )

    def with_suspects_used(self, basis: int) -> Self:
        """Forget the suspects of round ``basis``: the batch built on it took what it could."""
        old = self.outcomes.get(basis)
        if old is None or not old.suspects:
            return self
        new = old.model_copy(update={"suspects": []})
        return self.model_copy(update={"outcomes": {**self.outcomes, basis: new}})

    def with_review(self, number: int, batch: ReviewBatch) -> Self:
        return self.model_copy(update={"reviews": {**self.reviews, number: batch}})

    def with_announced(self, kind: Literal["labeling", "review"], number: int) -> Self:
        if kind == "labeling" and number in self.rounds:
            changed = self.rounds[number].model_copy(update={"announced": True})
            return self.model_copy(update={"rounds": {**self.rounds, number: changed}})
        if kind == "review" and number in self.reviews:
            review = self.reviews[number].model_copy(update={"announced": True})
            return self.model_copy(update={"reviews": {**self.reviews, number: review}})
        return self

    def with_completed(self, batch_id: str) -> Self:
        number = self.round_of(batch_id)
        if number is not None:
            r = self.rounds[number]
            changed = r.model_copy(update={"completed": True, "done": r.tasks})
            return self.model_copy(update={"rounds": {**self.rounds, number: changed}})
        number = self.review_round_of(batch_id)
        if number is not None:
            review = self.reviews[number].model_copy(update={"completed": True})
            return self.model_copy(update={"reviews": {**self.reviews, number: review}})
        return self

    def with_progress(self, batch_id: str, done: int) -> Self:
        number = self.round_of(batch_id)
        if number is None:
            return self
        r = self.rounds[number]
        if r.completed or done <= r.done:
            return self  # progress only grows: an older snapshot must not roll it back
        changed = r.model_copy(update={"done": min(done, r.tasks)})
        return self.model_copy(update={"rounds": {**self.rounds, number: changed}})

    def with_model(
        self,
        number: int,
        *,
        model_version: str | None,
        scores_ref: str | None,
        converged: str | None,
        suspects: list[SuspectLabel] | None = None,
    ) -> Self:
        if self.closed.awaits_model(number):  # compacted without it: only its verdict counts
            return self.model_copy(update={"closed": self.closed.with_model(number, converged)})
        old = self.outcomes.get(number, Outcome())
        if old.model_known or self.is_compacted(number):
            return self  # the round's first word stands: a retrained copy changes nothing
        new = old.model_copy(
            update={
                "model_known": True,
                "model_version": model_version,
                "scores_ref": scores_ref,
                "converged": converged,
                "suspects": list(suspects or []),
            }
        )
        return self.model_copy(update={"outcomes": {**self.outcomes, number: new}})

    def with_qa(
        self,
        number: int,
        *,
        flagged: list[str],
        lead_seconds: float,
        lead_count: int,
        review_due: bool | None = None,
    ) -> Self:
        old = self.outcomes.get(number, Outcome())
        if old.qa_known or self.is_compacted(number):
            return self
        new = old.model_copy(
            update={
                "qa_known": True,
                "flagged": sorted(set(flagged)),
                "lead_seconds": lead_seconds,
                "lead_count": lead_count,
                "review_due": review_due,
            }
        )
        return self.model_copy(update={"outcomes": {**self.outcomes, number: new}})

    def with_started(self) -> Self:
        return self.model_copy(update={"started": True, "paused": False})

    def with_paused(self) -> Self:
        return self.model_copy(update={"paused": True})

    def with_exhausted(self, reason: str | None) -> Self:
        return self.model_copy(update={"exhausted": reason})

    # ------------------------------------------------------------------ compaction

    def closable(self, number: int, keep_from: int, *, needs_model: bool = True) -> bool:
        """Whether round ``number`` can change nothing any more: its labeling batch completed
        and announced, its model (unless ``needs_model`` is false: no batch waits for models)
        and QA report known, its review (if QA asked for one) cut, completed and announced, and
        it is older than ``keep_from`` (the basis of the next batch: its outcome and the gold of
        the rounds from it on are still read)."""
        r = self.rounds.get(number)
        outcome = self.outcomes.get(number)
        if number >= keep_from or r is None or outcome is None:
            return False
        if not (r.completed and r.announced and outcome.qa_known):
            return False
        if needs_model and not outcome.model_known:
            return False
        review = self.reviews.get(number)
        if review is None:
            # a report from before ``review_due`` was kept: its review, if any, was requested
            # with it long ago; only a known due review still to come holds the round open
            return outcome.review_due is not True
        return review.completed and review.announced

    def compacted(
        self, keep_from: int, size: int = SEGMENT_ROUNDS, *, needs_model: bool = True
    ) -> tuple[Self, Segment] | None:
        """The next ``size`` rounds moved out into a :class:`Segment`, if all are closable
        (:meth:`closable`; without their models when ``needs_model`` is false).

        The segment holds only what no longer changes, so two replicas compacting the same
        ledger write the same segment (whichever commits, the archive agrees with it). A round
        compacted without its model is archived as it stood: its model's version and scores are
        no use to anyone once no batch can be built on it."""
        first = self.closed.rounds + 1
        last = first + size - 1
        numbers = range(first, last + 1)
        if not all(self.closable(n, keep_from, needs_model=needs_model) for n in numbers):
            return None
        outcomes = {n: self.outcomes[n].model_copy(update={"suspects": []}) for n in numbers}
        segment = Segment(
            first=first,
            last=last,
            rounds={n: self.rounds[n] for n in numbers},
            reviews={n: self.reviews[n] for n in numbers if n in self.reviews},
            outcomes=outcomes,
            rechecked=sorted({item for n in numbers for item in self.rounds[n].rechecks}),
        )
        converged = self.closed.converged, self.closed.converged_round
        if not converged[0]:
            converged = next(
                ((o.converged, n) for n, o in sorted(outcomes.items()) if o.converged),
                (None, 0),
            )
        awaiting = list(self.closed.awaiting_models)
        for n in numbers:
            if outcomes[n].model_known:
                continue
            if awaiting and awaiting[-1][1] == n - 1:
                awaiting[-1] = (awaiting[-1][0], n)
            else:
                awaiting.append((n, n))
        closed = Closed(
            rounds=last,
            converged=converged[0],
            converged_round=converged[1],
            lead_seconds=self.closed.lead_seconds + sum(o.lead_seconds for o in outcomes.values()),
            lead_count=self.closed.lead_count + sum(o.lead_count for o in outcomes.values()),
            awaiting_models=awaiting,
        )
        kept = self.model_copy(
            update={
                "closed": closed,
                "rounds": {n: r for n, r in self.rounds.items() if n > last},
                "reviews": {n: r for n, r in self.reviews.items() if n > last},
                "outcomes": {n: o for n, o in self.outcomes.items() if n > last},
            }
        )
        return kept, segment
