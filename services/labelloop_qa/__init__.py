"""qa-scorer: agreement, consensus labels and annotator quality for every labeling round.

Consumes ``BatchCompleted``: a labeling batch carries its tasks (gold answers, the model's
predictions) and its annotations, and is scored in the order of its round, with the annotators'
history after the round before as the prior; a review batch settles the items its round held back.
Consumes ``AnnotationsSubmitted``: a change of a round's answers after it was scored re-scores it.

Produces ``QAReport`` (agreement coefficients and annotator scores, cumulative over the project,
flagged annotators), ``QualityAlertRaised`` (alpha under the project's ``quality.min_alpha``),
``ReviewRequested`` (low confidence, strong disagreement, a confident prediction the consensus
contradicts, earlier labels that rest on an annotator flagged since) and, once per round,
``LabelsReady`` (the round's consensus labels, the experts' answers, corrections of earlier
labels), and one more per distinct later change of the round's answers (``revision`` 1, 2, ...).
"""
