"""The ``labelloop`` sub-commands that work on one service's subject: ingesting files, agreement
and consensus on annotation files, dataset versions, training, Label Studio."""
