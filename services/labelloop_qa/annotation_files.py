"""Annotation files the CLI reads: CSV / JSONL long format, or a Label Studio JSON export.

Every row keeps where it came from (``line 7``, 1-based with the CSV header as line 1, or
``task 3, annotation 12`` in a Label Studio export), so that whatever is skipped, repeated or
refused is reported at its place in the file.

Read with the standard library's ``csv`` and ``json`` and coded with dictionaries and numpy:
no pandas, whose import alone takes longer than reading a small file and computing every
coefficient on it. Ids and labels are coded once, here: ``item``/``annotator`` index the sorted
distinct ids (``np.unique``'s order), ``label`` the labels in order of appearance.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DUPLICATE_RULES",
    "AnnotationFileError",
    "Duplicates",
    "LabelScale",
    "LongTable",
    "RepeatedAnswer",
    "SkippedRow",
    "label_scale",
    "places",
    "read_annotations",
    "read_gold",
]

REQUIRED = ("item_id", "annotator_id", "label")
Duplicates = Literal["last", "first", "error"]
DUPLICATE_RULES: tuple[Duplicates, ...] = ("last", "first", "error")
_SHOWN = 10
"""Places quoted in a one-line error; the rest are counted."""

_Codes = NDArray[np.int64]


class AnnotationFileError(ValueError):
    """A file that cannot be read as annotations, with the reason."""


@dataclass(frozen=True)
class SkippedRow:
    """A row or annotation left out, and why."""

    where: str
    reason: str


@dataclass(frozen=True)
class RepeatedAnswer:
    """An (item, annotator) pair answered on several rows."""

    item_id: str
    annotator_id: str
    where: tuple[str, ...]
    """Every row of the pair, in file order."""


@dataclass(frozen=True, eq=False)
class LongTable:
    """The usable rows of an annotation file, in file order, coded."""

    path: Path
    item: _Codes
    """Each row's item: an index into ``items``."""
    annotator: _Codes
    """Each row's annotator: an index into ``annotators``."""
    label: _Codes
    """Each row's label as written: an index into ``labels``."""
    where: NDArray[Any]
    """Each row's line (an int) in a CSV/JSONL file, its ``"task 3, annotation 12"`` in a Label
    Studio export."""
    items: list[str]
    """Distinct item ids, sorted."""
    annotators: list[str]
    """Distinct annotator ids, sorted."""
    labels: list[str]
    """Distinct labels, in order of first appearance."""
    skipped_rows: tuple[SkippedRow, ...] = ()
    """Rows or annotations left out (malformed, empty field, cancelled, several choices)."""
    repeated: tuple[RepeatedAnswer, ...] = ()
    """(item, annotator) pairs answered more than once: one answer counts, by ``duplicate_rule``."""
    duplicate_rule: Duplicates = "last"
    lead_time: NDArray[np.float64] | None = None
    """Seconds spent on each annotation (NaN where not given), from a Label Studio export."""

    def __len__(self) -> int:
        return len(self.item)

    @property
    def skipped(self) -> int:
        return len(self.skipped_rows)

    @property
    def duplicates(self) -> int:
        """Rows left out because their (item, annotator) pair is answered on another row."""
        return sum(len(r.where) - 1 for r in self.repeated)


def _place(where: object) -> str:
    # line numbers stay ints: a million "line N" strings cost a quarter second
    return where if isinstance(where, str) else f"line {where}"


def places(where: Sequence[str]) -> str:
    """``line 2, line 6`` as ``lines 2 and 6``; other places joined as they are."""
    if len(where) > 1 and all(w.startswith("line ") for w in where):
        numbers = [w.removeprefix("line ") for w in where]
        return "lines " + ", ".join(numbers[:-1]) + " and " + numbers[-1]
    return ", ".join(where)


# --------------------------------------------------------------------------- rows

_Columns = dict[str, list[Any]]


def _text(value: Any) -> str | None:
    """A JSON value as the text of an id or label; ``None`` for a list or an object."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else str(value)


def _csv_rows(path: Path) -> tuple[_Columns, list[SkippedRow]]:
    item: list[str] = []
    annotator: list[str] = []
    label: list[str] = []
    lines: list[int] = []
    skipped: list[SkippedRow] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        # strict: a quote left open would otherwise swallow the rest of the file as one field
        reader = csv.reader(fh, strict=True)
        start = 1
        try:
            header = next(reader, None)
            if header is None:
                raise AnnotationFileError(f"{path}: empty file")
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise AnnotationFileError(f"{path}: missing column(s) {', '.join(missing)}")
            width = len(header)
            i, a, b = (header.index(c) for c in REQUIRED)
            start = reader.line_num + 1
            # the hot loop of a large file: fields are checked for emptiness later, vectorised
            for fields in reader:
                here, start = start, reader.line_num + 1
                if len(fields) != width:
                    if fields:  # a blank line is no row
                        skipped.append(
                            SkippedRow(
                                f"line {here}", f"expected {width} fields, found {len(fields)}"
                            )
                        )
                    continue
                item.append(fields[i])
                annotator.append(fields[a])
                label.append(fields[b])
                lines.append(here)
        except csv.Error as exc:
            raise AnnotationFileError(f"{path}: line {start}: {exc}") from None
    return {"item_id": item, "annotator_id": annotator, "label": label, "where": lines}, skipped


def _jsonl_rows(path: Path) -> tuple[_Columns, list[SkippedRow]]:
    columns: _Columns = {c: [] for c in (*REQUIRED, "where")}
    skipped: list[SkippedRow] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                skipped.append(SkippedRow(f"line {number}", "not valid JSON"))
                continue
            if not isinstance(record, dict):
                skipped.append(SkippedRow(f"line {number}", "not a JSON object"))
                continue
            seen.update(record)
            values = [_text(record.get(c)) for c in REQUIRED]
            nested = [c for c, v in zip(REQUIRED, values, strict=True) if v is None]
            if nested:
                reason = f"{', '.join(nested)} not a single value"
                skipped.append(SkippedRow(f"line {number}", reason))
                continue
            for col, v in zip(REQUIRED, values, strict=True):
                columns[col].append(v)
            columns["where"].append(number)
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        raise AnnotationFileError(f"{path}: missing column(s) {', '.join(missing)}")
    return columns, skipped


def _label_studio(raw: list[Any]) -> tuple[_Columns, list[SkippedRow]]:
    columns: _Columns = {c: [] for c in (*REQUIRED, "where", "lead_time")}
    skipped: list[SkippedRow] = []
    for n, task in enumerate(raw, start=1):
        if not isinstance(task, dict):
            skipped.append(SkippedRow(f"task #{n}", "not a JSON object"))
            continue
        item = _text(task.get("id", task.get("inner_id"))) or ""
        for m, ann in enumerate(task.get("annotations") or [], start=1):
            if not isinstance(ann, dict):
                skipped.append(
                    SkippedRow(f"task {item or f'#{n}'}, annotation #{m}", "not an object")
                )
                continue
            where = f"task {item or f'#{n}'}, annotation {ann.get('id', f'#{m}')}"
            who = ann.get("completed_by")
            if isinstance(who, dict):
                who = who.get("email") or who.get("id")
            choices = [
                c
                for res in ann.get("result") or []
                if res.get("type") == "choices"
                for c in (res.get("value") or {}).get("choices", [])
            ]
            if ann.get("was_cancelled"):
                skipped.append(SkippedRow(where, "cancelled"))
                continue
            if len(choices) != 1:
                skipped.append(SkippedRow(where, f"{len(choices)} choices, not one"))
                continue
            values = [item, _text(who) or "", _text(choices[0]) or ""]
            reason = _empty_reason(values)
            if reason:
                skipped.append(SkippedRow(where, reason))
                continue
            for col, v in zip(REQUIRED, values, strict=True):
                columns[col].append(v)
            columns["where"].append(where)
            columns["lead_time"].append(ann.get("lead_time"))
    return columns, skipped


# --------------------------------------------------------------------------- coding


def _code(values: list[str]) -> tuple[_Codes, list[str]]:
    """Each value's index among the distinct values, in order of first appearance."""
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return np.array(codes, dtype=np.int64), list(index)


def _sorted_domain(codes: _Codes, domain: list[str]) -> tuple[_Codes, list[str]]:
    """Recode onto the values that occur, sorted as ``np.unique`` sorts them."""
    used = np.flatnonzero(np.bincount(codes, minlength=len(domain)))
    values = domain if len(used) == len(domain) else [domain[c] for c in used.tolist()]
    order = sorted(range(len(values)), key=values.__getitem__)
    recode = np.zeros(len(domain), dtype=np.int64)
    recode[used[order]] = np.arange(len(order))
    return recode[codes], [values[n] for n in order]


def _appearance_domain(codes: _Codes, domain: list[str]) -> tuple[_Codes, list[str]]:
    """Recode onto the values that occur, in order of appearance."""
    _, first = np.unique(codes, return_index=True)
    first = np.sort(first)
    recode = np.zeros(len(domain), dtype=np.int64)
    recode[codes[first]] = np.arange(len(first))
    return recode[codes], [domain[c] for c in codes[first].tolist()]


def _empty_reason(values: Sequence[str]) -> str | None:
    empty = [name for name, v in zip(REQUIRED, values, strict=True) if not v.strip()]
    return f"empty {', '.join(empty)}" if empty else None


def _blank_rows(
    coded: list[tuple[_Codes, list[str]]], where: NDArray[Any], skipped: list[SkippedRow]
) -> NDArray[np.bool_]:
    """Rows with an empty (or blank) id or label, listed among the skipped rows in line order.

    Each distinct value is checked once, not each row.
    """
    blank = np.zeros(len(where), dtype=bool)
    for codes, domain in coded:
        empty = [n for n, v in enumerate(domain) if not v.strip()]
        if empty:
            blank |= np.isin(codes, empty)
    if blank.any():
        for row in np.flatnonzero(blank).tolist():
            values = [dom[c[row]] for c, dom in coded]
            skipped.append(SkippedRow(_place(where[row]), _empty_reason(values) or "empty field"))
        skipped.sort(key=lambda s: int(s.where.removeprefix("line ")))
    return blank


def _seconds(value: Any) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if number else math.nan


def _repeats(item: _Codes, annotator: _Codes, n_annotators: int) -> list[_Codes]:
    """Rows of each (item, annotator) pair answered more than once, in file order; pairs in
    order of their first row."""
    key = item * max(n_annotators, 1) + annotator
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return []
    member = np.zeros(len(key), dtype=bool)
    member[1:] |= same
    member[:-1] |= same
    rows, keys = order[member], ordered[member]
    groups = np.split(rows, np.flatnonzero(keys[1:] != keys[:-1]) + 1)
    groups.sort(key=lambda g: int(g[0]))
    return groups


def read_annotations(path: str | Path, *, duplicates: Duplicates = "last") -> LongTable:
    """Long-format annotations from CSV, JSONL or a Label Studio JSON export.

    Malformed rows (wrong number of fields, invalid JSON, an empty item, annotator or label)
    are left out and listed with their place. An (item, annotator) pair answered on several
    rows counts once: its ``last`` answer (a resubmission) or its ``first``; ``error`` refuses
    the file, naming the rows.
    """
    path = Path(path)
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"duplicates must be one of {', '.join(DUPLICATE_RULES)}")
    if not path.exists():
        raise AnnotationFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            try:
                raw = json.loads(path.read_text(encoding="utf-8-sig"))
            except ValueError as exc:
                raise AnnotationFileError(f"{path}: not valid JSON: {exc}") from None
            if not isinstance(raw, list):
                raise AnnotationFileError(f"{path}: a Label Studio export is a JSON list of tasks")
            columns, skipped = _label_studio(raw)
        elif suffix == ".csv":
            columns, skipped = _csv_rows(path)
        elif suffix in (".jsonl", ".ndjson"):
            columns, skipped = _jsonl_rows(path)
        else:
            raise AnnotationFileError(
                f"{path}: expected .csv, .jsonl or a Label Studio .json export"
            )
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(f"{path}: not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise AnnotationFileError(f"{path}: cannot read: {exc}") from None
    where = np.array(columns["where"], dtype=np.int64 if suffix != ".json" else object)
    coded = [_code(columns[c]) for c in REQUIRED]
    keep = np.ones(len(where), dtype=bool)
    if suffix != ".json":  # a Label Studio export's empty fields are skipped as they are read
        keep &= ~_blank_rows(coded, where, skipped)
    rows = np.flatnonzero(keep)
    (item, item_dom), (annotator, annotator_dom), (label, label_dom) = coded
    groups = _repeats(item[rows], annotator[rows], len(annotator_dom))
    repeated = tuple(
        RepeatedAnswer(
            item_dom[item[rows[g[0]]]],
            annotator_dom[annotator[rows[g[0]]]],
            tuple(_place(w) for w in where[rows[g]].tolist()),
        )
        for g in groups
    )
    if repeated and duplicates == "error":
        shown = "; ".join(
            f"item {r.item_id!r} by {r.annotator_id!r} at {places(r.where)}"
            for r in repeated[:_SHOWN]
        )
        more = f"; and {len(repeated) - _SHOWN} more pairs" if len(repeated) > _SHOWN else ""
        n = sum(len(r.where) - 1 for r in repeated)
        raise AnnotationFileError(
            f"{path}: {n} repeated (item, annotator) rows, and repeats are refused: {shown}{more}"
        )
    for g in groups:  # one answer per pair counts
        keep[rows[g[:-1] if duplicates == "last" else g[1:]]] = False
    if not keep.any():
        said = "; ".join(f"{row.where}: {row.reason}" for row in skipped[:_SHOWN])
        more = f"; and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
        why = f" ({len(skipped)} rows skipped: {said}{more})" if skipped else ""
        raise AnnotationFileError(f"{path}: no usable annotations{why}")
    rows = np.flatnonzero(keep)
    item, items = _sorted_domain(item[rows], item_dom)
    annotator, annotators = _sorted_domain(annotator[rows], annotator_dom)
    label, labels = _appearance_domain(label[rows], label_dom)
    lead_time = None
    if "lead_time" in columns:
        lead = [_seconds(t) for t in columns["lead_time"]]
        lead_time = np.array(lead, dtype=np.float64)[rows]
    return LongTable(
        path,
        item,
        annotator,
        label,
        where[rows],
        items,
        annotators,
        labels,
        tuple(skipped),
        repeated,
        duplicates,
        lead_time,
    )


# --------------------------------------------------------------------------- labels

_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _number(label: str) -> float | None:
    """The label as a finite decimal number, or ``None`` (``"1_0"``, ``"nan"``, ``"inf"``)."""
    if _NUMBER.fullmatch(label) is None:
        return None
    value = float(label)
    return value if math.isfinite(value) else None


def _spelling(value: float) -> str:
    """One spelling per number: ``"01"``, ``"1.0"`` and ``"1e0"`` are all ``"1"``."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


@dataclass(frozen=True, eq=False)
class LabelScale:
    """Each row's label on the scale of the chosen level, and the scale in order."""

    codes: _Codes
    """Each row's class: an index into ``classes``."""
    classes: list[str]
    notes: tuple[str, ...] = ()
    """Things the reader should notice (labels that differ as written but not as numbers)."""


def _quoted_at(table: LongTable, bad_labels: set[int]) -> tuple[int, str]:
    """How many rows carry one of these labels, and the first of them quoted with their place."""
    bad = np.flatnonzero(np.isin(table.label, sorted(bad_labels)))
    shown = ", ".join(
        f"{_place(table.where[row])} {table.labels[table.label[row]]!r}"
        for row in bad[:_SHOWN].tolist()
    )
    return len(bad), shown + (f", and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")


def _same_numbers(
    table: LongTable, numbers: dict[str, float | None], level: str, merged: bool
) -> tuple[str, ...]:
    by_value: dict[float, list[str]] = {}
    for label, value in numbers.items():
        if value is not None:
            by_value.setdefault(value, []).append(label)
    twins = [group for group in by_value.values() if len(group) > 1]  # in order of appearance
    if not twins:
        return ()
    _, first_row = np.unique(table.label, return_index=True)
    first = {
        lab: table.where[row] for lab, row in zip(table.labels, first_row.tolist(), strict=True)
    }
    notes = []
    for group in twins:
        quoted = [f"{lab!r} ({_place(first[lab])})" for lab in group]
        spelled = ", ".join(quoted[:-1]) + " and " + quoted[-1]
        if merged:
            notes.append(f"labels {spelled} are the same number at level {level}")
        else:
            notes.append(
                f"labels {spelled} are different categories at level {level},"
                " though equal as numbers"
            )
    return tuple(notes)


def label_scale(table: LongTable, level: str, order: Sequence[str] | None = None) -> LabelScale:
    """The labels on the scale of a level of measurement.

    * ``interval``/``ratio``: labels are numbers, compared as numbers (``"01"`` is ``"1"``).
    * ``ordinal``: with ``order``, that order, labels as written; without, labels must be
      numbers (ordered and compared as numbers): strings have no order of their own.
    * ``nominal``: categories as written; ``order`` declares them (unused ones count for
      Gwet's AC1/AC2 and Brennan-Prediger). Labels that differ as written but not as numbers
      are noted.

    A label outside ``order``, or a non-number at a numeric level, is refused with its place.
    """
    path = table.path
    numbers = {lab: _number(lab) for lab in table.labels}  # in order of appearance
    all_numbers = all(v is not None for v in numbers.values())

    def coded(classes: list[str], spelled: dict[str, str] | None = None) -> _Codes:
        position = {c: n for n, c in enumerate(classes)}
        of_label = [position[spelled[lab] if spelled else lab] for lab in table.labels]
        return np.array(of_label, dtype=np.int64)[table.label]

    if order is not None:
        if level in ("interval", "ratio"):
            raise AnnotationFileError(
                f"--order is for the nominal and ordinal levels; at {level} labels are numbers"
            )
        declared = list(order)
        if any(not c for c in declared):
            raise AnnotationFileError("--order has an empty entry")
        twice = sorted({c for c in declared if declared.count(c) > 1})
        if twice:
            raise AnnotationFileError(f"--order lists {', '.join(map(repr, twice))} more than once")
        outside = {n for n, lab in enumerate(table.labels) if lab not in set(declared)}
        if outside:
            n_rows, shown = _quoted_at(table, outside)
            raise AnnotationFileError(
                f"{path}: labels outside --order {','.join(declared)} ({n_rows} rows): " + shown
            )
        notes = _same_numbers(table, numbers, level, merged=False)
        return LabelScale(coded(declared), declared, notes)
    if level in ("interval", "ratio") or (level == "ordinal" and all_numbers):
        if not all_numbers:
            words = {n for n, lab in enumerate(table.labels) if numbers[lab] is None}
            raise AnnotationFileError(
                f"{path}: level {level} needs numeric labels: " + _quoted_at(table, words)[1]
            )
        spelling = {lab: _spelling(v) for lab, v in numbers.items() if v is not None}
        classes = sorted(set(spelling.values()), key=float)
        notes = _same_numbers(table, numbers, level, merged=True)
        return LabelScale(coded(classes, spelling), classes, notes)
    if level == "ordinal":
        seen = ", ".join(map(repr, list(numbers)[:_SHOWN])) + (
            ", ..." if len(numbers) > _SHOWN else ""
        )
        raise AnnotationFileError(
            f"{path}: --level ordinal needs --order a,b,c (the scale, lowest first): the labels"
            f" are not all numbers and strings have no order of their own ({seen})"
        )
    if all_numbers:  # numbers are listed as numbers ("2" before "10"), ties as written
        classes = sorted(numbers, key=lambda lab: (numbers[lab], lab))
    else:
        classes = sorted(numbers)
    return LabelScale(coded(classes), classes, _same_numbers(table, numbers, level, merged=False))


# --------------------------------------------------------------------------- gold


def _gold_rows(path: Path) -> tuple[set[str], list[dict[str, Any]]]:
    """The columns and the records of a gold file."""
    suffix = path.suffix.lower()
    records: list[dict[str, Any]] = []
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None) or []
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise AnnotationFileError(
                        f"{path}: cannot read: line {reader.line_num}: expected"
                        f" {len(header)} fields, found {len(fields)}"
                    )
                records.append(dict(zip(header, fields, strict=True)))
        return set(header), records
    if suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise AnnotationFileError(f"{path}: line {number}: not a JSON object")
                records.append(record)
        return {key for record in records for key in record}, records
    raise AnnotationFileError(f"{path}: expected .csv, .jsonl or a Label Studio .json export")


def read_gold(path: str | Path) -> dict[str, str]:
    """Known answers: a CSV/JSONL with ``item_id`` and ``label`` columns."""
    path = Path(path)
    if not path.exists():
        raise AnnotationFileError(f"{path}: no such file")
    try:
        columns, records = _gold_rows(path)
    except AnnotationFileError:
        raise
    except (ValueError, OSError, csv.Error) as exc:
        raise AnnotationFileError(f"{path}: cannot read: {exc}") from None
    if "item_id" not in columns or "label" not in columns:
        raise AnnotationFileError(f"{path}: a gold file needs item_id and label columns")
    return {_text(r.get("item_id")) or "": _text(r.get("label")) or "" for r in records}
