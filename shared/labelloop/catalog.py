"""The item catalog: every ingested item and its features, written once, read by every service.

The ingester writes each accepted chunk of items as one object (``catalog/<project>/<chunk>.npz``:
the items' records as one UTF-8 JSON list, their feature matrix and its space, deflated at the
fastest level) and indexes it in KV
(``catalog.<project>.chunk.<chunk>``) *before* it announces the chunk with ``ItemsIngested``. So
anyone who learned of an item from the bus (a batch naming it, a label for it) finds it here: no
service keeps a copy, and no service waits for another's message to know an item.

A reader that needs the items' data for a few of them only (the sampler: the data of a batch's
tasks) builds its catalog with ``keep_data=False``: it keeps every item's record without its data
(which may be a data URI of kilobytes) and reads the data of the items it asks for
(:meth:`Catalog.data_of`) from their chunks: of a chunk it inflates the records alone (not the
features) and parses only the records asked for, found by the offsets the chunk carries; the
last few chunks read are kept as read.

This module is also the one place that encodes arrays for the object store: feature chunks
(:func:`encode_chunk`) and probability tables (:func:`encode_table`, the trainer's pool scores).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import JsonValue, TypeAdapter

from labelloop.events import IngestedItem
from labelloop.stores import Blobs, KeyValue

__all__ = [
    "SEQUENCE_MEASURES",
    "Catalog",
    "Chunk",
    "FeatureSpace",
    "ProbabilityTable",
    "ProjectItems",
    "chunk_name",
    "decode_chunk",
    "decode_table",
    "encode_chunk",
    "encode_table",
]


# ----------------------------------------------------------------------------- encodings


@dataclass(frozen=True)
class Chunk:
    """Items ingested together, with the features of those that have some (one space)."""

    items: list[IngestedItem]
    space: str | None = None
    """Feature space (``producer-64``, ``text-hash-64``, ``image-px-16``); ``None``: no features."""
    X: NDArray[np.float32] | None = None
    """One row per item, in ``items`` order."""


def encode_chunk(chunk: Chunk) -> bytes:
    """The chunk as an ``.npz``: ``items`` (the records, one UTF-8 JSON list, as bytes),
    ``offsets`` (where each record starts in it, and where the last ends) and ``ids`` (the item
    ids, in order), so that one item's record is read without parsing the others; and with
    features ``X`` and ``space``."""
    records = [_record().dump_json(item) for item in chunk.items]
    starts = np.cumsum([1] + [len(r) + 1 for r in records], dtype=np.uint64)
    arrays: dict[str, NDArray[Any]] = {
        "items": np.frombuffer(b"[" + b",".join(records) + b"]", dtype=np.uint8),
        "offsets": starts,
        "ids": np.asarray([item.item_id.encode() for item in chunk.items], dtype=np.bytes_),
    }
    if chunk.X is not None and chunk.space is not None:
        if len(chunk.X) != len(chunk.items):
            raise ValueError(f"{len(chunk.X)} feature rows for {len(chunk.items)} items")
        arrays["X"] = np.asarray(chunk.X, dtype=np.float32)
        arrays["space"] = np.asarray(chunk.space)
    return _npz(arrays)


def _npz(arrays: dict[str, NDArray[Any]]) -> bytes:
    """Arrays as an ``.npz`` that ``np.load`` reads, deflated at level 1: five times faster to
    write than numpy's ``savez_compressed`` (level 6), for a few percent more bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as npz:
        for name, array in arrays.items():
            with npz.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(  # type: ignore[no-untyped-call]
                    member, array, allow_pickle=False
                )
    return buf.getvalue()


def decode_chunk(raw: bytes) -> Chunk:
    """A chunk :func:`encode_chunk` wrote, or one of the first format (its records as one
    newline-separated string), which older catalogs hold."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        items = _chunk_items(npz)
        if "X" in npz.files:
            return Chunk(items, str(npz["space"]), np.asarray(npz["X"], dtype=np.float32))
    return Chunk(items)


def _chunk_items(npz: np.lib.npyio.NpzFile) -> list[IngestedItem]:
    if "items" in npz.files:
        return _records().validate_json(npz["items"].tobytes())
    text = str(npz["records"])
    return [IngestedItem.model_validate_json(line) for line in text.split("\n") if line]


@cache
def _records() -> TypeAdapter[list[IngestedItem]]:
    """Items from one JSON list in one call (not one per item)."""
    return TypeAdapter(list[IngestedItem])


@cache
def _record() -> TypeAdapter[IngestedItem]:
    return TypeAdapter(IngestedItem)


@dataclass(frozen=True, slots=True)
class _Records:
    """A chunk's records, kept as read: the JSON list's bytes and where each record is in it.
    A record is parsed when asked for (the sampler wants one or two of a chunk's thousands)."""

    raw: bytes
    offsets: NDArray[np.uint64]
    rows: dict[str, int]

    @classmethod
    def read(cls, raw: bytes) -> _Records | dict[str, IngestedItem]:
        """A chunk's records without its features; a chunk written before records had offsets
        is parsed whole."""
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            if "offsets" not in npz.files:
                records: dict[str, IngestedItem] = {}
                for item in _chunk_items(npz):
                    records.setdefault(item.item_id, item)
                return records
            ids: list[bytes] = npz["ids"].tolist()
            rows: dict[str, int] = {}
            for row, item_id in enumerate(ids):
                rows.setdefault(item_id.decode(), row)
            return cls(npz["items"].tobytes(), np.asarray(npz["offsets"]), rows)

    def get(self, item_id: str) -> IngestedItem:
        row = self.rows[item_id]
        start, end = int(self.offsets[row]), int(self.offsets[row + 1]) - 1
        return _record().validate_json(self.raw[start:end])


_CLASSES = "classes"
_LABELS = "labels"
_SEQUENCES = "sequences"
"""What a probability table's columns are (its ``kind``): classes of one distribution, labels
each with its own probability, or a sequence model's uncertainties (:data:`SEQUENCE_MEASURES`)."""

SEQUENCE_MEASURES = ("least_confidence", "margin", "entropy")
"""The columns of a sequence (NER) model's table, in this order: one minus the probability of
its best tag sequence, one minus the smallest gap between a token's two likeliest tags, and
the total token entropy (``labelloop_trainer.domain.ner``)."""


@dataclass(frozen=True)
class ProbabilityTable:
    """Class probabilities per item: one row per item id, one column per class.

    ``multilabel``: the columns are labels, each the probability that the item has that label
    (a multi-label model's scores: a row need not sum to 1); else a distribution over classes.
    The encoded table says which (``kind``); a table written before it did holds classes.

    ``predictions`` (a sequence model's table, ``sequences``): each item's predicted spans as
    JSON text, and the columns are that model's uncertainties, :data:`SEQUENCE_MEASURES`."""

    item_ids: list[str]
    proba: NDArray[np.float64]
    classes: list[str]
    multilabel: bool = False
    predictions: list[str] | None = None

    @property
    def sequences(self) -> bool:
        return self.predictions is not None

    def rows(self) -> dict[str, int]:
        return {item: row for row, item in enumerate(self.item_ids)}


def encode_table(table: ProbabilityTable) -> bytes:
    if table.proba.shape != (len(table.item_ids), len(table.classes)):
        raise ValueError(
            f"probabilities of shape {table.proba.shape} for {len(table.item_ids)} items and "
            f"{len(table.classes)} classes"
        )
    extra: dict[str, NDArray[Any]] = {}
    kind = _LABELS if table.multilabel else _CLASSES
    if table.predictions is not None:
        if len(table.predictions) != len(table.item_ids) or (
            tuple(table.classes) != SEQUENCE_MEASURES
        ):
            raise ValueError("a sequence table has one prediction per item and its measures")
        kind = _SEQUENCES
        # one UTF-8 JSON list, as the catalog's records: a fixed-width string array would
        # take four bytes a character times the longest prediction for every item
        extra["predictions"] = np.frombuffer(_json_list(table.predictions), dtype=np.uint8)
    arrays: dict[str, NDArray[Any]] = {
        # one UTF-8 JSON list: a fixed-width string array took four bytes a character (128 MB
        # for 1M ids) and six seconds to deflate
        "ids": np.frombuffer(_json_list(table.item_ids), dtype=np.uint8),
        "proba": np.asarray(table.proba, dtype=np.float32),
        "classes": np.asarray(table.classes, dtype=np.str_),
        "kind": np.asarray(kind),
        **extra,
    }
    return _npz(arrays)


def _json_list(values: Sequence[str]) -> bytes:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":")).encode()


def decode_table(raw: bytes) -> ProbabilityTable:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        kind = str(npz["kind"]) if "kind" in npz.files else _CLASSES
        if kind not in (_CLASSES, _LABELS, _SEQUENCES):
            raise ValueError(f"a probability table of unknown kind {kind!r}")
        predictions = None
        if kind == _SEQUENCES:
            predictions = [str(p) for p in json.loads(npz["predictions"].tobytes())]
        if "ids" in npz.files:
            item_ids = [str(i) for i in json.loads(npz["ids"].tobytes())]
        else:  # a table written before the ids were one JSON list
            item_ids = [str(i) for i in npz["item_ids"].tolist()]
        return ProbabilityTable(
            item_ids,
            np.asarray(npz["proba"], dtype=np.float64),
            [str(c) for c in npz["classes"].tolist()],
            multilabel=kind == _LABELS,
            predictions=predictions,
        )


# ----------------------------------------------------------------------------- the catalog


def chunk_name(project: str, chunk_id: str) -> str:
    return f"catalog/{project}/{chunk_id}.npz"


def _index_key(project: str, chunk_id: str = "") -> str:
    return f"catalog.{project}.chunk.{chunk_id}"


@dataclass
class FeatureSpace:
    """The feature rows of one space, by item id."""

    dim: int
    rows: dict[str, NDArray[np.float32]] = field(default_factory=dict)


@dataclass
class ProjectItems:
    """What the catalog holds for one project, as one process has loaded it so far."""

    records: dict[str, IngestedItem] = field(default_factory=dict)
    """Every item; without its data when the catalog does not keep it (``keep_data=False``)."""
    spaces: dict[str, FeatureSpace] = field(default_factory=dict)
    chunks: set[str] = field(default_factory=set)
    chunk_of: dict[str, str] = field(default_factory=dict)
    """Item id -> the chunk its record was read from (kept only without the data)."""
    listed: int | None = None
    """The catalog index's revision when its chunks were last listed: while no index key has
    changed since, a load lists nothing."""

    def __len__(self) -> int:
        return len(self.records)

    def item_ids(self) -> list[str]:
        """Every item id, sorted: an order that does not depend on how items were chunked."""
        return sorted(self.records)

    def best_space(self, item_ids: Iterable[str] | None = None) -> str | None:
        """The space covering most of ``item_ids`` (all items by default); producer vectors win
        ties, then the name."""
        wanted = list(self.records) if item_ids is None else list(item_ids)
        scored = [
            (sum(i in s.rows for i in wanted), name.startswith("producer"), name)
            for name, s in self.spaces.items()
        ]
        best = max(scored, default=None)
        return best[2] if best is not None and best[0] > 0 else None

    def matrix(
        self, item_ids: Sequence[str], space: str | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]] | None:
        """Feature rows of ``item_ids`` in one space (the best one by default) and which ids
        have a row there; missing rows are the mean row (neither favoured nor excluded)."""
        name = space or self.best_space(item_ids)
        if name is None:
            return None
        found = self.spaces[name]
        has = np.asarray([i in found.rows for i in item_ids], dtype=bool)
        out = np.zeros((len(item_ids), found.dim), dtype=np.float32)
        if has.any():
            present = [found.rows[i] for i, h in zip(item_ids, has, strict=True) if h]
            out[has] = np.asarray(present, dtype=np.float32)
            out[~has] = out[has].mean(axis=0)
        return out, has


class Catalog:
    """Writes (the ingester) and reads (everyone else) the item catalog of every project.

    Chunks never change once written, so each process reads each one once and keeps it: the
    records and features, and the data too unless ``keep_data`` is false; then the data of the
    items asked for is read from their chunks (the last ``chunk_cache`` kept decoded).
    """

    def __init__(
        self,
        kv: KeyValue | Callable[[], KeyValue],
        blobs: Blobs | Callable[[], Blobs],
        *,
        keep_data: bool = True,
        chunk_cache: int = 8,
    ) -> None:
        self._kv = kv
        self._blobs = blobs
        self._projects: dict[str, ProjectItems] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._keep_data = keep_data
        self._chunk_cache = chunk_cache
        self._decoded: OrderedDict[tuple[str, str], _Records | dict[str, IngestedItem]] = (
            OrderedDict()
        )

    @property
    def kv(self) -> KeyValue:
        return self._kv() if callable(self._kv) else self._kv

    @property
    def blobs(self) -> Blobs:
        return self._blobs() if callable(self._blobs) else self._blobs

    async def write(self, project: str, chunk_id: str, chunk: Chunk) -> str:
        """Store a chunk and index it; idempotent (same chunk id, same object). Its name."""
        raw = await asyncio.to_thread(encode_chunk, chunk)
        return await self.write_encoded(
            project, chunk_id, raw, n=len(chunk.items), space=chunk.space
        )

    async def write_encoded(
        self, project: str, chunk_id: str, raw: bytes, *, n: int, space: str | None
    ) -> str:
        """:meth:`write` of a chunk already encoded (:func:`encode_chunk`) by a caller that
        does its CPU work where it chooses: ``n`` items, in feature ``space``."""
        name = chunk_name(project, chunk_id)
        await self.blobs.put(name, raw)
        index = {"ref": name, "n": n, "space": space}
        await self.kv.put(_index_key(project, chunk_id), json.dumps(index).encode())
        return name

    async def chunk_ids(self, project: str) -> list[str]:
        prefix = _index_key(project)
        return [k[len(prefix) :] for k in await self.kv.keys(prefix)]

    async def load(self, project: str) -> ProjectItems:
        """Every item of the project (chunks not read yet are read now)."""
        lock = self._locks.setdefault(project, asyncio.Lock())
        async with lock:
            items = self._projects.setdefault(project, ProjectItems())
            changed = await self.kv.last_change(_index_key(project))
            if changed is None or changed == items.listed:
                return items  # no chunk indexed since the last listing: one request, not a scan
            unread = [c for c in await self.chunk_ids(project) if c not in items.chunks]
            with _collection_paused() if unread else contextlib.nullcontext():
                for chunk_id in unread:
                    raw = await self.blobs.get(chunk_name(project, chunk_id))
                    if raw is None:  # indexed but deleted by an operator: nothing to read
                        continue
                    chunk = await asyncio.to_thread(decode_chunk, raw)
                    _add(items, chunk, None if self._keep_data else chunk_id)
                    items.chunks.add(chunk_id)
            items.listed = changed
            return items

    async def data_of(
        self, project: str, items: ProjectItems, item_ids: Iterable[str]
    ) -> dict[str, dict[str, JsonValue]]:
        """The data of the items of ``item_ids`` that ``items`` (this catalog's
        :meth:`load`) holds: from their records, or read from their chunks when the catalog
        does not keep the data."""
        out: dict[str, dict[str, JsonValue]] = {}
        wanted: dict[str, list[str]] = {}
        for item_id in item_ids:
            record = items.records.get(item_id)
            if record is None:
                continue
            chunk_id = items.chunk_of.get(item_id)
            if chunk_id is None:
                out[item_id] = record.data
            else:
                wanted.setdefault(chunk_id, []).append(item_id)
        for chunk_id, ids in sorted(wanted.items()):
            records = await self._chunk_records(project, chunk_id)
            for item_id in ids:
                out[item_id] = (
                    records[item_id] if isinstance(records, dict) else records.get(item_id)
                ).data
        return out

    async def _chunk_records(
        self, project: str, chunk_id: str
    ) -> _Records | dict[str, IngestedItem]:
        key = (project, chunk_id)
        records = self._decoded.get(key)
        if records is None:
            raw = await self.blobs.get(chunk_name(project, chunk_id))
            if raw is None:
                raise LookupError(f"catalog chunk {chunk_id} of {project} is gone")
            records = await asyncio.to_thread(_Records.read, raw)
        self._decoded[key] = records
        self._decoded.move_to_end(key)
        while len(self._decoded) > self._chunk_cache:
            self._decoded.popitem(last=False)
        return records

    def decoded_chunks(self) -> int:
        """Chunks kept decoded for :meth:`data_of` (at most ``chunk_cache``)."""
        return len(self._decoded)


class _Pauses:
    """Loads in progress that paused the cyclic garbage collector (any project, any catalog)."""

    count = 0


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a load adds records, on again after the last
    load in progress ends (unless it was off before the first began).

    A load allocates millions of objects that live on (a record and its dicts per item), and
    each time a quarter more have survived the collector walks all of them again: at 1M items
    the walks took more than half of a load (15 s against 7 s without). Memory is unaffected:
    records are freed by reference counting, and the collector runs again after the load."""
    if _Pauses.count == 0 and not gc.isenabled():
        yield  # switched off by someone else: theirs to switch on
        return
    _Pauses.count += 1
    gc.disable()
    try:
        yield
    finally:
        _Pauses.count -= 1
        if _Pauses.count == 0:
            gc.enable()


def _add(items: ProjectItems, chunk: Chunk, chunk_id: str | None = None) -> None:
    """Add a chunk's items; ``chunk_id``: keep their records without data, and where it is."""
    for item in chunk.items:
        if item.item_id in items.records:
            continue
        if chunk_id is None:
            items.records[item.item_id] = item
        else:
            items.records[item.item_id] = item.model_copy(update={"data": {}})
            items.chunk_of[item.item_id] = chunk_id
    if chunk.X is None or chunk.space is None:
        return
    space = items.spaces.setdefault(chunk.space, FeatureSpace(dim=int(chunk.X.shape[1])))
    for item, row in zip(chunk.items, chunk.X, strict=True):
        space.rows.setdefault(item.item_id, row)
