"""labelloop trainer: retrains a model as the dataset grows and scores the unlabeled pool.

Consumes ``DatasetExported`` (retrain policy), ``RequestTraining`` (forced retrain) and
``ItemsIngested`` (indexes each project's items, texts and feature chunks). Produces
``ModelTrained`` (metrics, promotion decision, model/pool-score/out-of-sample references in the
object store) and, once, ``LabelingConverged`` when consecutive models stop changing their
predictions.
"""
