"""Pure learning logic of the trainer: estimators, evaluation, promotion, retraining, stopping."""
