"""A dataset version as the exporter writes it, for the trainer's handler tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from labelloop.events import DatasetExported


def exported(root: Path, project: str, number: int, frame: pd.DataFrame) -> DatasetExported:
    """``frame`` written as version ``number`` under ``root``, and the event announcing it
    (only the fields the trainer reads are meaningful)."""
    version = f"v{number:04d}"
    path = root / version
    path.mkdir(parents=True)
    frame.to_parquet(path / "dataset.parquet", index=False)
    return DatasetExported(
        project=project,
        event_id=f"exported-{version}",
        version=version,
        round=number,
        path=str(path),
        n_rows=len(frame),
        n_new_rows=len(frame),
        split_sizes={},
        class_counts={},
        formats=["parquet"],
        manifest_sha256="0" * 64,
    )
