"""A labeling round's rows as the exporter shares them, for the trainer's handler tests: a full
version's labels, or a round's delta (:mod:`labelloop.rows`), in the object store, and the
``RoundExported`` that names them with their sha256."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import pandas as pd
import pyarrow as pa

from labelloop.events import RoundDelta, RoundExported
from labelloop.rows import delta_bytes
from labelloop.stores import Blobs


def version_ref(project: str, number: int) -> str:
    """Where the exporter puts version ``number``'s labels."""
    return f"exporter/{project}/datasets/v{number:04d}/labels.parquet"


def delta_ref(project: str, number: int) -> str:
    """Where the exporter puts round ``number``'s delta."""
    return f"exporter/{project}/deltas/{number:06d}.parquet"


async def exported(blobs: Blobs, project: str, number: int, frame: pd.DataFrame) -> RoundExported:
    """``frame`` put in the object store as the labels of full version ``number`` (written by
    round ``number``), and the round's event naming it (the only rows: no deltas)."""
    version = f"v{number:04d}"
    raw = frame.to_parquet(index=False)
    ref = version_ref(project, number)
    await blobs.put(ref, raw)
    return RoundExported(
        project=project,
        event_id=f"exported-{version}",
        round=number,
        n_rows=len(frame),
        version=version,
        base_version=version,
        base_ref=ref,
        base_sha256=hashlib.sha256(raw).hexdigest(),
    )


async def delta(
    blobs: Blobs, project: str, number: int, rows: pd.DataFrame, removed: Iterable[str] = ()
) -> RoundDelta:
    """Round ``number``'s delta put in the object store: its touched items' ``rows`` and those
    of its touched items that have no row any more (``removed``)."""
    raw = delta_bytes(pa.Table.from_pandas(rows, preserve_index=False), removed)
    ref = delta_ref(project, number)
    await blobs.put(ref, raw)
    return RoundDelta(
        round=number, ref=ref, sha256=hashlib.sha256(raw).hexdigest(), n_labels=len(rows)
    )


def after(
    base: RoundExported, number: int, deltas: Sequence[RoundDelta], n_rows: int
) -> RoundExported:
    """Round ``number``: the rows of ``base``'s version with ``deltas`` applied (no version of
    its own: its name is ``<base version>+r<number>``)."""
    return RoundExported(
        project=base.project,
        event_id=f"exported-r{number:04d}",
        round=number,
        n_rows=n_rows,
        base_version=base.base_version,
        base_ref=base.base_ref,
        base_sha256=base.base_sha256,
        deltas=list(deltas),
    )
