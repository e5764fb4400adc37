"""labelloop sampler: decides what gets labeled next.

Consumes ``ItemsIngested`` (grows the project's pool), ``BatchCompleted`` and
``AnnotationsSubmitted`` (open work shrinks: backpressure), ``ModelTrained`` (new pool scores for
the uncertainty strategies), ``ReviewRequested`` (items for an expert) and ``LabelingConverged``
(stop). Produces ``BatchCreated`` (labeling batches with overlap and gold, and ``review`` batches)
and ``BudgetExhausted`` (once, when the project's budget is spent).

State lives in NATS only: the ledger in KV (compare-and-swap), pool chunks and committed batches
in the object store, so any replica can rebuild the pool after a restart and two replicas never
hand out the same item.
"""
