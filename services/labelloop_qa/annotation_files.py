"""Annotation files the CLI reads: CSV / JSONL long format, or a Label Studio JSON export.

Every row keeps where it came from (``line 7``, 1-based with the CSV header as line 1, or
``task 3, annotation 12`` in a Label Studio export), so that whatever is skipped, repeated or
refused is reported at its place in the file.
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

import pandas as pd

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


@dataclass(frozen=True)
class LongTable:
    path: Path
    frame: pd.DataFrame
    """Columns ``item_id``, ``annotator_id``, ``label`` (strings) and ``where``: the row's line
    (an int) in a CSV/JSONL file, its ``"task 3, annotation 12"`` in a Label Studio export, which
    also gives ``lead_time``."""
    skipped_rows: tuple[SkippedRow, ...] = ()
    """Rows or annotations left out (malformed, empty field, cancelled, several choices)."""
    repeated: tuple[RepeatedAnswer, ...] = ()
    """(item, annotator) pairs answered more than once: one answer counts, by ``duplicate_rule``."""
    duplicate_rule: Duplicates = "last"

    @property
    def skipped(self) -> int:
        return len(self.skipped_rows)

    @property
    def duplicates(self) -> int:
        """Rows left out because their (item, annotator) pair is answered on another row."""
        return sum(len(r.where) - 1 for r in self.repeated)


def _place(where: object) -> str:
    # line numbers stay ints in the frame: a million "line N" strings cost a quarter second
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


def _empty_reason(values: Sequence[str]) -> str | None:
    empty = [name for name, v in zip(REQUIRED, values, strict=True) if not v.strip()]
    return f"empty {', '.join(empty)}" if empty else None


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


def _without_empty(
    frame: pd.DataFrame, skipped: list[SkippedRow]
) -> tuple[pd.DataFrame, list[SkippedRow]]:
    """Rows of a CSV/JSONL file with an empty (or blank) id or label left out, in line order."""
    if frame.empty:
        return frame, skipped
    blank = pd.DataFrame({c: frame[c].str.strip().eq("") for c in REQUIRED})
    empty = blank.any(axis=1)
    if not empty.any():
        return frame, skipped
    for where, *values in frame.loc[empty, ["where", *REQUIRED]].itertuples(index=False):
        skipped.append(SkippedRow(_place(where), _empty_reason(values) or "empty field"))
    skipped.sort(key=lambda row: int(row.where.removeprefix("line ")))
    return frame[~empty].reset_index(drop=True), skipped


def _repeated(frame: pd.DataFrame) -> tuple[RepeatedAnswer, ...]:
    key = ["item_id", "annotator_id"]
    twice = frame.duplicated(subset=key, keep=False)
    if not twice.any():
        return ()
    groups = frame.loc[twice].groupby(key, sort=False)["where"].agg(list)
    pairs = zip(groups.index.tolist(), groups.tolist(), strict=True)
    return tuple(RepeatedAnswer(str(i), str(a), tuple(map(_place, w))) for (i, a), w in pairs)


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
    frame = pd.DataFrame(columns)
    if suffix != ".json":
        frame, skipped = _without_empty(frame, skipped)
    repeated = _repeated(frame)
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
    if repeated:
        keep: Literal["first", "last"] = "first" if duplicates == "first" else "last"
        frame = frame[~frame.duplicated(subset=["item_id", "annotator_id"], keep=keep)]
        frame = frame.reset_index(drop=True)
    if frame.empty:
        said = "; ".join(f"{row.where}: {row.reason}" for row in skipped[:_SHOWN])
        more = f"; and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
        why = f" ({len(skipped)} rows skipped: {said}{more})" if skipped else ""
        raise AnnotationFileError(f"{path}: no usable annotations{why}")
    return LongTable(path, frame, tuple(skipped), repeated, duplicates)


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


@dataclass(frozen=True)
class LabelScale:
    """Each row's label on the scale of the chosen level, and the scale in order."""

    labels: pd.Series
    classes: list[str]
    notes: tuple[str, ...] = ()
    """Things the reader should notice (labels that differ as written but not as numbers)."""


def _quoted_at(frame: pd.DataFrame, mask: pd.Series) -> str:
    bad = frame.loc[mask, ["where", "label"]]
    shown = ", ".join(f"{_place(w)} {lab!r}" for w, lab in bad.head(_SHOWN).itertuples(index=False))
    return shown + (f", and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")


def _same_numbers(
    frame: pd.DataFrame, numbers: dict[str, float | None], level: str, merged: bool
) -> tuple[str, ...]:
    by_value: dict[float, list[str]] = {}
    for label, value in numbers.items():
        if value is not None:
            by_value.setdefault(value, []).append(label)
    twins = [group for group in by_value.values() if len(group) > 1]  # in order of appearance
    if not twins:
        return ()
    first = frame.drop_duplicates("label").set_index("label")["where"]
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
    frame, path = table.frame, table.path
    labels: pd.Series = frame["label"]
    numbers = {str(u): _number(str(u)) for u in labels.unique()}
    all_numbers = all(v is not None for v in numbers.values())
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
        outside = ~labels.isin(declared)
        if outside.any():
            raise AnnotationFileError(
                f"{path}: labels outside --order {','.join(declared)}"
                f" ({int(outside.sum())} rows): " + _quoted_at(frame, outside)
            )
        notes = _same_numbers(frame, numbers, level, merged=False)
        return LabelScale(labels, declared, notes)
    if level in ("interval", "ratio") or (level == "ordinal" and all_numbers):
        if not all_numbers:
            outside = labels.map(lambda v: numbers[v] is None).astype(bool)
            raise AnnotationFileError(
                f"{path}: level {level} needs numeric labels: " + _quoted_at(frame, outside)
            )
        spelling = {lab: _spelling(v) for lab, v in numbers.items() if v is not None}
        classes = sorted(set(spelling.values()), key=float)
        notes = _same_numbers(frame, numbers, level, merged=True)
        return LabelScale(labels.map(spelling), classes, notes)
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
    return LabelScale(labels, classes, _same_numbers(frame, numbers, level, merged=False))


# --------------------------------------------------------------------------- gold


def _read_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as exc:
        raise AnnotationFileError(f"{path}: cannot read: {exc}") from None
    raise AnnotationFileError(f"{path}: expected .csv, .jsonl or a Label Studio .json export")


def read_gold(path: str | Path) -> dict[str, str]:
    """Known answers: a CSV/JSONL with ``item_id`` and ``label`` columns."""
    path = Path(path)
    if not path.exists():
        raise AnnotationFileError(f"{path}: no such file")
    frame = _read_frame(path)
    if "item_id" not in frame.columns or "label" not in frame.columns:
        raise AnnotationFileError(f"{path}: a gold file needs item_id and label columns")
    return {str(i): str(lab) for i, lab in zip(frame["item_id"], frame["label"], strict=True)}
