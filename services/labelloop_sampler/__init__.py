"""labelloop sampler: decides what gets labeled next.

Consumes ``ItemsIngested`` (the pool grew; starts sampling unless it waits for a command),
``RequestSampling`` (start, pause), ``ModelTrained`` and ``QAReport`` (what a finished round
taught: the serving model's pool scores, the annotators QA flagged), ``BatchCompleted`` and
``AnnotationsSubmitted`` (open work shrinks: backpressure), ``ReviewRequested`` (a round's items
for an expert) and ``ProjectConfigured``. Produces ``BatchCreated`` (numbered labeling batches
with overlap and gold, and one ``review`` batch per round that needs it) and ``BudgetExhausted``.

Labeling batch *n* is chosen by the model of round *n - 1 - max_model_lag* and waits for it, so
a campaign's batches do not depend on timing. State lives in NATS only: the ledger in KV
(compare-and-swap; closed rounds leave it in archived segments, so it stays small), committed
batches in the object store, items in the catalog (their data read for a batch's tasks only).
"""
