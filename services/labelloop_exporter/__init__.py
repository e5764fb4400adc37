"""labelloop exporter: turns accumulated consensus labels into immutable dataset versions.

Consumes ``LabelsReady`` (labels, kept idempotently by item id), ``ItemsIngested`` (the items' data,
joined into the dataset), ``QAReport`` (batch agreement, for the manifest) and ``RequestExport``.
Produces ``DatasetExported`` after writing ``<export_dir>/<project>/<version>/`` (JSONL, CSV,
Parquet, and COCO/YOLO or CoNLL where the task needs them, plus ``manifest.json``) atomically.
"""
