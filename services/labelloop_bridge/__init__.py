"""The annotation bridge: labelloop's link to the people (or the simulated crew) who label.

Consumes ``BatchCreated`` (labeling and expert-review batches): imports the tasks, with model
predictions as pre-annotations, into one Label Studio project per labelloop project (and a second
one for expert review), or hands them to the simulated crew
(``LABELLOOP_BRIDGE_BACKEND=simulated``).

Produces ``AnnotationsSubmitted`` (from Label Studio's webhooks, a reconciliation loop over Label
Studio's API, or the simulated crew; deduplicated, updates superseding, deletions and skips marked)
and ``BatchCompleted`` exactly once per batch, when every task has its required answers.
"""
