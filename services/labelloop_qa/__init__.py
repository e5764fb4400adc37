"""qa-scorer: agreement, consensus labels and annotator quality for every labeling batch.

Consumes ``BatchCreated`` (which items are gold, and their known labels), ``AnnotationsSubmitted``
(stored durably per batch; updates supersede, deletions and cancellations remove),
``BatchCompleted`` (score the batch) and ``ModelTrained`` (out-of-sample probabilities for the
label-error check).

Produces ``LabelsReady`` (consensus labels with a posterior confidence; items held for review are
left out until an expert answers), ``QAReport`` (agreement coefficients and annotator scores per
batch, annotator quality cumulative over the project), ``ReviewRequested`` (low confidence, strong
disagreement, confident model contradiction) and ``QualityAlertRaised`` (alpha under the project's
``quality.min_alpha``).
"""
