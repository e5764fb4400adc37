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
import io
import json
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, JsonValue, TypeAdapter

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
    ids, in order), so that one item's record is read without parsing the others; ``data_at``,
    where in each record its data begins (it is the last field: a reader that reads the data on
    demand keeps what comes before), and ``gold`` (which items have a known label); with
    features ``X`` and ``space``."""
    arrays = _columns(chunk.items)
    if chunk.X is not None and chunk.space is not None:
        if len(chunk.X) != len(chunk.items):
            raise ValueError(f"{len(chunk.X)} feature rows for {len(chunk.items)} items")
        arrays["X"] = np.asarray(chunk.X, dtype=np.float32)
        arrays["space"] = np.asarray(chunk.space)
    return _npz(arrays)


def _columns(items: Sequence[IngestedItem]) -> dict[str, NDArray[Any]]:
    """The records members of a chunk (:func:`encode_chunk`)."""
    bare = [_record().dump_json(item, exclude={"data"}) for item in items]
    data = [_data().dump_json(item.data) for item in items]
    # a record is its bare record with the data added last (JSON objects have no field order):
    # a reader that keeps no data cuts it off; two dumps cost little more than one
    records = [b[:-1] + b',"data":' + d + b"}" for b, d in zip(bare, data, strict=True)]
    full, offsets = _json_array(records)
    return {
        "items": full,
        "offsets": offsets,
        "data_at": np.asarray([len(b) - 1 for b in bare], dtype=np.uint32),
        "ids": np.asarray([item.item_id.encode() for item in items], dtype=np.bytes_),
        "gold": np.asarray([item.known_label is not None for item in items], dtype=bool),
    }


def _json_array(records: Sequence[bytes]) -> tuple[NDArray[np.uint8], NDArray[np.uint64]]:
    """Records as one JSON list's bytes, and where each starts in it (and where the last
    ends, plus one)."""
    starts = np.cumsum([1] + [len(r) + 1 for r in records], dtype=np.uint64)
    return np.frombuffer(b"[" + b",".join(records) + b"]", dtype=np.uint8), starts


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


@cache
def _data() -> TypeAdapter[dict[str, JsonValue]]:
    return TypeAdapter(dict[str, JsonValue])


class _BareItem(IngestedItem):
    """An item's record as a reader without the data keeps it: its data is empty."""

    data: dict[str, JsonValue] = Field(default_factory=dict)


@cache
def _bare() -> TypeAdapter[_BareItem]:
    return TypeAdapter(_BareItem)


@dataclass(frozen=True, slots=True)
class _Held:
    """A chunk as a reader keeps it: its records as one JSON list's bytes (with their data, or
    ``bare``: without), deflated unless ``compressed`` is false, where each starts in the
    inflated bytes, and its features. A record is parsed when asked for: at ten million items
    a parsed record cost a kilobyte and a load parsed every one."""

    chunk_id: str
    packed: bytes
    offsets: NDArray[np.uint64]
    bare: bool
    space: str | None
    X: NDArray[np.float32] | None
    compressed: bool = True

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def plain(self) -> bytes:
        """The records' bytes, inflated."""
        return zlib.decompress(self.packed) if self.compressed else self.packed

    def raw(self, plain: bytes, row: int) -> bytes:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1]) - 1
        return plain[start:end]

    def record(self, plain: bytes, row: int) -> IngestedItem:
        return (_bare() if self.bare else _record()).validate_json(self.raw(plain, row))

    def fields(self, plain: bytes, rows: Sequence[int]) -> list[dict[str, Any]]:
        """The records at ``rows`` as parsed JSON objects: the whole list parsed at once when
        most of it is asked for, else record by record."""
        if len(rows) * 4 >= len(self):
            every = json.loads(plain)
            return [every[row] for row in rows]
        return [json.loads(self.raw(plain, row)) for row in rows]


def _read(
    raw: bytes, chunk_id: str, *, bare: bool, keep: bool = True
) -> tuple[_Held, list[str], NDArray[np.bool_]]:
    """A chunk as kept (with the data unless ``bare``), its item ids in order and which are
    gold; ``keep``: to be kept (deflated), else read once (as is). A chunk written before
    chunks had ``data_at`` and a gold column is parsed and its records written again as
    :func:`encode_chunk` writes them now."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        space, matrix = None, None
        if "X" in npz.files:
            space, matrix = str(npz["space"]), np.asarray(npz["X"], dtype=np.float32)
        if "data_at" in npz.files:
            columns: Any = npz
        else:
            columns = _columns(_chunk_items(npz))
        ids = [str(i) for i in np.char.decode(np.asarray(columns["ids"]), "utf-8").tolist()]
        records = np.asarray(columns["items"]).tobytes()
        offsets = np.asarray(columns["offsets"], dtype=np.uint64)
        if bare:  # each record up to where its data begins, closed
            cut = (offsets[:-1] + np.asarray(columns["data_at"], dtype=np.uint64)).tolist()
            starts = offsets[:-1].tolist()
            joined, offsets = _json_array(
                [records[a:b] + b"}" for a, b in zip(starts, cut, strict=True)]
            )
            records = joined.tobytes()
        # deflated at the fastest level: a reader keeps ten million of these records, which
        # are mostly field names and hex ids (a third of their size deflated)
        held = _Held(
            chunk_id,
            zlib.compress(records, 1) if keep else records,
            offsets,
            bare,
            space,
            matrix,
            compressed=keep,
        )
        return held, ids, np.asarray(columns["gold"], dtype=bool)


READS_IN_FLIGHT = 16
"""Catalog chunks :meth:`Catalog.data_of` reads at once from the object store."""


def _read_records(raw: bytes, chunk_id: str) -> _Held:
    """A chunk's records with their data, to read some once (:meth:`Catalog.data_of`): only
    the records and their offsets are read (a quarter of :func:`_read`'s time: no ids, no
    features); a chunk written before ``data_at`` is read as :func:`_read` reads it."""
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        if "data_at" in npz.files:
            records = np.asarray(npz["items"]).tobytes()
            offsets = np.asarray(npz["offsets"], dtype=np.uint64)
            return _Held(chunk_id, records, offsets, False, None, None, compressed=False)
    return _read(raw, chunk_id, bare=False, keep=False)[0]


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
    rows: Mapping[str, NDArray[np.float32]] = field(default_factory=dict)


_INFLATED = 8
"""Chunks a :class:`ProjectItems` keeps inflated (a batch's items are in a few)."""

_ROW_BITS = 32
_ROW_MASK = (1 << _ROW_BITS) - 1


class ProjectItems:
    """What the catalog holds for one project, as one process has loaded it so far.

    Columnar: each chunk is kept as read (:class:`_Held`: its records' JSON bytes and its
    feature matrix), and one dict says where each item is (chunk number and row, packed in one
    int). ``records``, ``spaces[...].rows`` and ``chunk_of`` are read-only mappings over
    that; a record is parsed when asked for. Bulk reads (:meth:`rows_of`, :meth:`data`) go
    chunk by chunk. An item in two chunks (a chunk written again under another id) is the
    first chunk's.
    """

    def __init__(self, *, keeps_data: bool = True) -> None:
        self.keeps_data = keeps_data
        """Whether records hold their data (else it is read from the object store)."""
        self._at: dict[str, int] = {}
        self._held: list[_Held] = []
        self._gold: set[str] = set()
        self._gold_now: frozenset[str] | None = None
        self._sorted: list[str] | None = None
        self._unsorted: list[str] = []
        """Ids added since ``_sorted`` was made."""
        self._space_sizes: dict[str, int] = {}
        self._inflated: OrderedDict[str, bytes] = OrderedDict()
        self._inflating = threading.Lock()
        self.spaces: dict[str, FeatureSpace] = {}
        self.chunks: set[str] = set()
        self.listed: int | None = None
        """The catalog index's revision when its chunks were last listed: while no index key
        has changed since, a load lists nothing."""
        self.records: Mapping[str, IngestedItem] = _RecordsView(self)
        """Every item; without its data when the catalog does not keep it."""
        self.chunk_of: Mapping[str, str] = _ChunkOf(self)
        """Item id -> the chunk its record was read from."""

    def __len__(self) -> int:
        return len(self._at)

    def add(self, held: _Held, ids: Sequence[str], gold: NDArray[np.bool_]) -> None:
        """Add a chunk's items (those not read from an earlier chunk)."""
        number = len(self._held) << _ROW_BITS
        self._held.append(held)
        at, before = self._at, len(self._at)
        for row, item_id in enumerate(ids):
            at.setdefault(item_id, number | row)
        added = len(at) - before
        if added and self._sorted is not None:
            self._unsorted.extend(i for r, i in enumerate(ids) if at[i] == number | r)
        for row in np.flatnonzero(gold).tolist():
            if at[ids[row]] == number | row:
                self._gold.add(ids[row])
                self._gold_now = None
        if held.space is not None and held.X is not None:
            if held.space not in self.spaces:
                self.spaces[held.space] = FeatureSpace(
                    int(held.X.shape[1]), _SpaceRows(self, held.space)
                )
            self._space_sizes[held.space] = self._space_sizes.get(held.space, 0) + added
        self.chunks.add(held.chunk_id)

    def item_ids(self) -> list[str]:
        """Every item id, sorted: an order that does not depend on how items were chunked.
        Sorted once per state of the catalog; the list is shared, not to be changed."""
        if self._sorted is None:
            self._sorted = sorted(self._at)
        elif self._unsorted:
            # two sorted runs: the sort merges them in one pass (a full sort of 10M ids took
            # 15 s, and a catalog that keeps growing would pay it at every cut)
            merged = self._sorted + sorted(self._unsorted)
            merged.sort()
            self._sorted = merged
        self._unsorted = []
        return self._sorted

    @property
    def gold(self) -> frozenset[str]:
        """The items with a known label."""
        if self._gold_now is None:
            self._gold_now = frozenset(self._gold)
        return self._gold_now

    def plain(self, held: _Held) -> bytes:
        """A chunk's records inflated; the last few chunks' are kept."""
        with self._inflating:  # the trainer reads in a worker thread
            found = self._inflated.get(held.chunk_id)
            if found is None:
                found = self._inflated[held.chunk_id] = held.plain()
                while len(self._inflated) > _INFLATED:
                    self._inflated.popitem(last=False)
            self._inflated.move_to_end(held.chunk_id)
            return found

    def locate(self, item_id: str) -> tuple[_Held, int] | None:
        """The chunk holding the item and its row there."""
        slot = self._at.get(item_id)
        if slot is None:
            return None
        return self._held[slot >> _ROW_BITS], slot & _ROW_MASK

    def by_chunk(
        self, item_ids: Sequence[str]
    ) -> Iterator[tuple[_Held, NDArray[np.intp], list[int]]]:
        """The ids the catalog holds grouped by chunk: each chunk, the positions in
        ``item_ids`` of its items and their rows in it."""
        slots = np.fromiter(
            (self._at.get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids)
        )
        positions = np.flatnonzero(slots >= 0)
        if not len(positions):
            return
        numbers = slots[positions] >> _ROW_BITS
        order = np.argsort(numbers, kind="stable")
        positions, numbers = positions[order], numbers[order]
        starts = np.flatnonzero(np.r_[True, numbers[1:] != numbers[:-1]])
        ends = np.r_[starts[1:], len(numbers)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            where = positions[start:end]
            rows = (slots[where] & _ROW_MASK).tolist()
            yield self._held[int(numbers[start])], where, rows

    def best_space(self, item_ids: Iterable[str] | None = None) -> str | None:
        """The space covering most of ``item_ids`` (all items by default); producer vectors win
        ties, then the name."""
        covered: dict[str, int] = {}
        if item_ids is None:
            covered = dict(self._space_sizes)
        else:
            for held, where, _rows in self.by_chunk(list(item_ids)):
                if held.space is not None and held.X is not None:
                    covered[held.space] = covered.get(held.space, 0) + len(where)
        scored = [(n, name.startswith("producer"), name) for name, n in covered.items()]
        best = max(scored, default=None)
        return best[2] if best is not None and best[0] > 0 else None

    def rows_of(
        self, item_ids: Sequence[str], space: str
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """The feature rows of ``item_ids`` in ``space`` (zeros where an item has none) and
        which have one: gathered from the chunks' matrices, chunk by chunk."""
        dim = self.spaces[space].dim
        out = np.zeros((len(item_ids), dim), dtype=np.float32)
        has = np.zeros(len(item_ids), dtype=bool)
        for held, where, rows in self.by_chunk(item_ids):
            if held.space == space and held.X is not None:
                out[where] = held.X[rows]
                has[where] = True
        return out, has

    def matrix(
        self, item_ids: Sequence[str], space: str | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]] | None:
        """Feature rows of ``item_ids`` in one space (the best one by default) and which ids
        have a row there; missing rows are the mean row (neither favoured nor excluded)."""
        name = space or self.best_space(item_ids)
        if name is None:
            return None
        out, has = self.rows_of(item_ids, name)
        if has.any():
            out[~has] = out[has].mean(axis=0)
        return out, has

    def records_at(self, item_ids: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        """The records of the items of ``item_ids`` the catalog holds, parsed chunk by chunk:
        each one's position in ``item_ids`` and its JSON object."""
        for held, where, rows in self.by_chunk(item_ids):
            yield from zip(where.tolist(), held.fields(self.plain(held), rows), strict=True)

    def data(self, item_ids: Sequence[str]) -> dict[str, dict[str, JsonValue]]:
        """The data of the items of ``item_ids`` the catalog holds, read chunk by chunk (a
        catalog that keeps the data only)."""
        if not self.keeps_data:
            raise ValueError("this catalog does not keep the items' data: Catalog.data_of")
        return {item_ids[at]: record["data"] for at, record in self.records_at(item_ids)}

    def column(self, item_ids: Sequence[str], name: str) -> list[Any]:
        """One field of the records of ``item_ids`` (``metadata``, ``data``, ...), read chunk by
        chunk; ``None`` for an item the catalog does not hold or whose record lacks it."""
        out: list[Any] = [None] * len(item_ids)
        for at, record in self.records_at(item_ids):
            out[at] = record.get(name)
        return out


class _RecordsView(Mapping[str, IngestedItem]):
    """``ProjectItems.records``: each record parsed from its chunk when asked for."""

    def __init__(self, items: ProjectItems) -> None:
        self._items = items

    def __getitem__(self, item_id: str) -> IngestedItem:
        found = self._items.locate(item_id)
        if found is None:
            raise KeyError(item_id)
        held, row = found
        return held.record(self._items.plain(held), row)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items._at

    def __iter__(self) -> Iterator[str]:
        return iter(self._items._at)

    def __len__(self) -> int:
        return len(self._items._at)


class _ChunkOf(Mapping[str, str]):
    """``ProjectItems.chunk_of``: the chunk each item was read from."""

    def __init__(self, items: ProjectItems) -> None:
        self._items = items

    def __getitem__(self, item_id: str) -> str:
        found = self._items.locate(item_id)
        if found is None:
            raise KeyError(item_id)
        return found[0].chunk_id

    def __iter__(self) -> Iterator[str]:
        return iter(self._items._at)

    def __len__(self) -> int:
        return len(self._items._at)


class _SpaceRows(Mapping[str, NDArray[np.float32]]):
    """``ProjectItems.spaces[name].rows``: an item's row of its chunk's matrix, if that
    chunk's features are in this space."""

    def __init__(self, items: ProjectItems, space: str) -> None:
        self._items = items
        self._space = space

    def _row(self, item_id: str) -> NDArray[np.float32] | None:
        found = self._items.locate(item_id)
        if found is None or found[0].space != self._space or found[0].X is None:
            return None
        row: NDArray[np.float32] = found[0].X[found[1]]
        return row

    def __getitem__(self, item_id: str) -> NDArray[np.float32]:
        row = self._row(item_id)
        if row is None:
            raise KeyError(item_id)
        return row

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self._row(item_id) is not None

    def __iter__(self) -> Iterator[str]:
        return (i for i in self._items._at if i in self)

    def __len__(self) -> int:
        return self._items._space_sizes.get(self._space, 0)


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
        self._decoded: OrderedDict[tuple[str, str], _Held] = OrderedDict()

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
            items = self._projects.get(project)
            if items is None:
                items = self._projects[project] = ProjectItems(keeps_data=self._keep_data)
            changed = await self.kv.last_change(_index_key(project))
            if changed is None or changed == items.listed:
                return items  # no chunk indexed since the last listing: one request, not a scan
            unread = [c for c in await self.chunk_ids(project) if c not in items.chunks]
            for chunk_id in unread:
                raw = await self.blobs.get(chunk_name(project, chunk_id))
                if raw is None:  # indexed but deleted by an operator: nothing to read
                    continue
                held, ids, gold = await asyncio.to_thread(
                    _read, raw, chunk_id, bare=not self._keep_data
                )
                items.add(held, ids, gold)
            items.listed = changed
            return items

    async def data_of(
        self, project: str, items: ProjectItems, item_ids: Iterable[str]
    ) -> dict[str, dict[str, JsonValue]]:
        """The data of the items of ``item_ids`` that ``items`` (this catalog's
        :meth:`load`) holds: from their records, or read from their chunks when the catalog
        does not keep the data."""
        wanted = list(item_ids)
        if items.keeps_data:
            return items.data(wanted)
        out: dict[str, dict[str, JsonValue]] = {}
        groups = sorted(items.by_chunk(wanted), key=lambda g: g[0].chunk_id)
        for start in range(0, len(groups), READS_IN_FLIGHT):
            window = groups[start : start + READS_IN_FLIGHT]
            # a batch's items sit in as many chunks as it has items: read them side by side
            found = await asyncio.gather(
                *(self._chunk_records(project, bare.chunk_id) for bare, _, _ in window)
            )
            for (_, where, rows), held in zip(window, found, strict=True):
                records = held.fields(held.plain(), rows)
                for position, record in zip(where.tolist(), records, strict=True):
                    out[wanted[position]] = record["data"]
        return out

    async def _chunk_records(self, project: str, chunk_id: str) -> _Held:
        """A chunk with its data, from the object store (the last ``chunk_cache`` kept)."""
        key = (project, chunk_id)
        held = self._decoded.get(key)
        if held is None:
            raw = await self.blobs.get(chunk_name(project, chunk_id))
            if raw is None:
                raise LookupError(f"catalog chunk {chunk_id} of {project} is gone")
            held = await asyncio.to_thread(_read_records, raw, chunk_id)
        self._decoded[key] = held
        self._decoded.move_to_end(key)
        while len(self._decoded) > self._chunk_cache:
            self._decoded.popitem(last=False)
        return held

    def decoded_chunks(self) -> int:
        """Chunks kept decoded for :meth:`data_of` (at most ``chunk_cache``)."""
        return len(self._decoded)
