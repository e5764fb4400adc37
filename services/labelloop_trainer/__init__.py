"""labelloop trainer: one training round per labeling round, and the pool scored for sampling.

Consumes ``RoundExported`` (the rows as of round *n*: a full dataset version and the rounds'
deltas after it; trained in round order, judged against the model that served after round
*n - 1*) and ``RequestTraining`` (announce a version's outcome again). Reads
features and texts from the item catalog. Produces ``ModelTrained`` once per round (metrics, the
promotion decision, the model that serves after the round and its pool scores in the object
store; also when no model could be trained) and, once, ``LabelingConverged`` when consecutive
models stop changing their predictions.
"""
