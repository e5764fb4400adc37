"""labelloop exporter: turns each settled labeling round into an immutable dataset version.

Consumes ``LabelsReady`` (one per round: its labels, the experts' answers, corrections; applied in
round order) and ``RequestExport`` (announce the latest version again). Reads the items' data from
the item catalog. Produces ``DatasetExported`` after writing ``<export_dir>/<project>/v<round>/``
(JSONL, CSV, Parquet, and COCO/YOLO or CoNLL where the task needs them, plus ``manifest.json``)
atomically. Version *n* holds rounds 1 to *n*; its files depend on those rounds only (each at the
revision its manifest lists). A revision of a round the latest version holds writes that version
again as a new one, ``v<n>-r<k>``.
"""
