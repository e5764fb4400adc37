"""The annotation bridge: labelloop's link to the people (or the simulated crew) who label.

Consumes ``BatchCreated`` (labeling and expert-review batches): imports the tasks, with model
predictions as pre-annotations, into Label Studio (a labeling project of each annotator's own
when the project names its annotators, each task in the projects of the annotators it was
assigned to; otherwise one labeling project everyone shares; and one for expert review), or
hands them to the simulated crew (``LABELLOOP_BRIDGE_BACKEND=simulated``). A task its assignee
leaves unanswered past the project's ``quality.assignment_timeout_seconds`` is reassigned.

Produces ``AnnotationsSubmitted`` (from Label Studio's webhooks, a reconciliation loop over Label
Studio's API, or the simulated crew; deduplicated, updates superseding, deletions and skips marked)
and ``BatchCompleted`` exactly once per batch, when every task has its required answers.
"""
