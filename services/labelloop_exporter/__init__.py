"""labelloop exporter: every settled labeling round exported for training, and immutable dataset
versions of the labels so far.

Consumes ``LabelsReady`` (one per round: its labels, the experts' answers, corrections; applied in
round order), ``BudgetExhausted`` and ``LabelingConverged`` (the campaign's last rounds get a full
version) and ``RequestExport`` (write the latest round's version if it has none, and announce
it). Reads the items' data from the item catalog. Produces ``RoundExported`` for every round (the
rows as of the round: the last version's and a delta per round since) and ``DatasetExported``
after writing ``<export_dir>/<project>/v<round>/`` (JSONL, CSV, Parquet, and COCO/YOLO or CoNLL
where the task needs them, plus ``manifest.json``) atomically, every ``export.every_n_labels``
labels. Version *n* holds rounds 1 to *n*; its files depend on those rounds only (each at the
revision its manifest lists). A revision of a round the latest version holds writes that version
again as a new one, ``v<n>-r<k>``.
"""
