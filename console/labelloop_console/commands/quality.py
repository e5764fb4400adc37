"""``labelloop agreement`` and ``labelloop aggregate``: the QA maths on annotation files."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from labelloop_qa.annotation_files import LongTable
    from labelloop_qa.domain.ratings import Ratings

__all__ = ["register"]

LEVELS = ("nominal", "ordinal", "interval", "ratio")
_FILE_HELP = "CSV/JSONL with item_id,annotator_id,label, or a Label Studio JSON export"
_DUPLICATES_HELP = (
    "a repeated (item, annotator) row: its last answer counts (a resubmission), its first,"
    " or the file is refused: last | first | error"
)


def register(app: typer.Typer) -> None:
    """Add the QA commands to the root ``labelloop`` CLI."""
    app.command("agreement")(agreement_command)
    app.command("aggregate")(aggregate_command)


def _ratings(
    path: Path, level: str, order: str | None, duplicates: str
) -> tuple[Ratings, LongTable]:
    import numpy as np

    from labelloop_qa.annotation_files import (
        DUPLICATE_RULES,
        label_scale,
        places,
        read_annotations,
    )
    from labelloop_qa.domain.ratings import Ratings

    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"--duplicates must be one of {', '.join(DUPLICATE_RULES)}")
    table = read_annotations(path, duplicates=duplicates)
    # said on stderr whatever the output format: a silent skip reads as a clean file
    if table.skipped:
        _note(f"{path}: {table.skipped} rows skipped:")
        _listed(f"{s.where}: {s.reason}" for s in table.skipped_rows)
    if table.duplicates:
        _note(
            f"{path}: {table.duplicates} repeated (item, annotator) rows: the {duplicates} answer"
            f" counts (--duplicates {duplicates})"
        )
        _listed(
            f"item {r.item_id!r} by {r.annotator_id!r}: {places(r.where)}" for r in table.repeated
        )
    declared = None if order is None else [c.strip() for c in order.split(",")]
    scale = label_scale(table, level, declared)
    for note in scale.notes:
        _note(f"{path}: {note}")
    # the file is coded already: ids in np.unique's order, as Ratings.from_records would
    r = Ratings(
        table.item,
        table.annotator,
        scale.codes,
        np.array(table.items, dtype=object),
        np.array(table.annotators, dtype=object),
        np.asarray(scale.classes),
    )
    return r, table


_LISTED = 20
"""Rows listed under a note on stderr; the rest are counted."""


def _note(text: str) -> None:
    typer.echo(f"note: {text}", err=True)


def _listed(lines: Iterable[str]) -> None:
    rest = 0
    for n, line in enumerate(lines):
        if n < _LISTED:
            typer.echo(f"  {line}", err=True)
        else:
            rest += 1
    if rest:
        typer.echo(f"  ... and {rest} more", err=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return [_clean(v) for v in value]
    return value


def agreement_command(
    file: Annotated[
        Path, typer.Argument(help="CSV/JSONL (item_id,annotator_id,label) or LS export")
    ],
    level: Annotated[str, typer.Option(help="nominal | ordinal | interval | ratio")] = "nominal",
    order: Annotated[
        str | None,
        typer.Option(
            help="the scale, comma-separated, e.g. low,mid,high: needed at --level ordinal"
            " unless every label is a number; at nominal it declares the categories"
        ),
    ] = None,
    duplicates: Annotated[str, typer.Option(help=_DUPLICATES_HELP)] = "last",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    n_boot: Annotated[int, typer.Option(help="bootstrap replicates for alpha's 95% CI")] = 1000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
    spammer_threshold: Annotated[
        float, typer.Option(help="flag annotators whose spammer score exceeds this")
    ] = 0.3,
) -> None:
    """Inter-annotator agreement of an annotation file, and each annotator's quality."""
    if level not in LEVELS:
        raise _fail(ValueError(f"--level must be one of {', '.join(LEVELS)}"))
    from labelloop_qa.annotation_files import AnnotationFileError
    from labelloop_qa.domain import agreement
    from labelloop_qa.domain.aggregation import aggregate, choose_method
    from labelloop_qa.domain.annotators import score_annotators, tally_batch

    try:
        r, table = _ratings(file, level, order, duplicates)
        summary = agreement.summarize(r, level, n_boot=n_boot, random_state=seed)  # type: ignore[arg-type]
    except (AnnotationFileError, ValueError) as exc:
        raise _fail(exc) from None
    method, _ = choose_method(r)
    consensus = aggregate(r, method)
    classes = [str(c) for c in r.classes.tolist()]
    scores = score_annotators(
        tally_batch(r, consensus), classes, spammer_threshold=spammer_threshold
    )
    per_annotator = {
        s.annotator_id: {
            "n": s.n_annotations,
            "agreement_with_consensus": s.agreement_with_consensus,
            "estimated_accuracy": s.estimated_accuracy,
            "spammer_score": s.spammer_score,
            "flagged": s.flagged,
        }
        for s in scores
    }
    result: dict[str, Any] = {
        "file": str(file),
        "level": level,
        "n_items": summary.n_items,
        "n_annotators": summary.n_annotators,
        "n_annotations": summary.n_annotations,
        "n_skipped": table.skipped,
        "n_duplicates": table.duplicates,
        "duplicates_rule": duplicates,
        "weights": summary.weights,
        "percent_agreement": summary.percent_agreement,
        "unanimous_share": summary.unanimous_share,
        "cohen_kappa_mean": summary.cohen_kappa_mean,
        "fleiss_kappa": summary.fleiss_kappa,
        "krippendorff_alpha": summary.krippendorff_alpha,
        "krippendorff_alpha_ci": summary.krippendorff_alpha_ci,
        "gwet_ac1": summary.gwet_ac1,
        "gwet_ac2": summary.gwet_ac2,
        "brennan_prediger": summary.brennan_prediger,
        "conger_kappa": summary.conger_kappa,
        "per_class_agreement": summary.per_class_agreement,
        "consensus_method": consensus.method,
        "per_annotator": per_annotator,
        "undefined": summary.notes,
    }
    if as_json:
        typer.echo(json.dumps({k: _clean(v) for k, v in result.items()}, sort_keys=False))
        return
    _print_tables(result)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    overview = Table(title=f"Agreement: {result['file']} ({result['level']})")
    overview.add_column("measure")
    overview.add_column("value", justify="right")
    for key in (
        "n_items",
        "n_annotators",
        "n_annotations",
        "n_skipped",
        "n_duplicates",
        "percent_agreement",
        "unanimous_share",
        "cohen_kappa_mean",
        "fleiss_kappa",
        "krippendorff_alpha",
        "krippendorff_alpha_ci",
        "gwet_ac1",
        "gwet_ac2",
        "brennan_prediger",
        "conger_kappa",
        "weights",
        "consensus_method",
    ):
        overview.add_row(key, "none" if key == "weights" and not result[key] else _fmt(result[key]))
    console.print(overview)
    people = Table(title="Annotators")
    for col in ("annotator", "n", "agreement w/ consensus", "est. accuracy", "spammer", "flag"):
        people.add_column(col, justify="left" if col == "annotator" else "right")
    for name, s in result["per_annotator"].items():
        people.add_row(
            name,
            str(s["n"]),
            _fmt(s["agreement_with_consensus"]),
            _fmt(s["estimated_accuracy"]),
            _fmt(s["spammer_score"]),
            "!" if s["flagged"] else "",
        )
    console.print(people)
    for name, reason in result["undefined"].items():
        console.print(f"[dim]{name}: undefined ({reason})[/dim]")


def aggregate_command(
    file: Annotated[
        Path, typer.Argument(help="CSV/JSONL (item_id,annotator_id,label) or LS export")
    ],
    out: Annotated[Path, typer.Option("--out", help="CSV to write: item_id,label,confidence")],
    method: Annotated[str, typer.Option(help="majority | dawid-skene | one-coin | auto")] = "auto",
    gold: Annotated[Path | None, typer.Option(help="CSV/JSONL of known answers")] = None,
    duplicates: Annotated[str, typer.Option(help=_DUPLICATES_HELP)] = "last",
) -> None:
    """Consensus labels of an annotation file, one row per item."""
    import csv

    import numpy as np

    from labelloop_qa.annotation_files import AnnotationFileError, read_gold
    from labelloop_qa.domain.aggregation import METHODS, aggregate

    if method not in METHODS:
        raise _fail(ValueError(f"--method must be one of {', '.join(METHODS)}"))
    try:
        r, _ = _ratings(file, "nominal", None, duplicates)
        answers = read_gold(gold) if gold else {}
    except (AnnotationFileError, ValueError) as exc:
        raise _fail(exc) from None
    index = {str(c): i for i, c in enumerate(r.classes.tolist())}
    known = np.full(r.n_items, -1, dtype=np.int64)
    unknown_gold = 0
    if answers:
        for i, item in enumerate(r.item_ids.tolist()):
            if str(item) in answers:
                label = answers[str(item)]
                if label in index:
                    known[i] = index[label]
                else:
                    unknown_gold += 1
    if method == "dawid-skene" and (known >= 0).any():
        method = "gold-dawid-skene"
    consensus = aggregate(r, method, known=known if (known >= 0).any() else None)
    confidence = ["" if math.isnan(c) else c for c in np.round(consensus.confidence, 6).tolist()]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("item_id", "label", "confidence"))
        writer.writerows(
            zip(r.item_ids.tolist(), r.classes[consensus.label].tolist(), confidence, strict=True)
        )
    typer.echo(
        f"wrote {r.n_items} labels to {out} (method {consensus.method}"
        + (
            f", {unknown_gold} gold labels outside the annotated classes ignored"
            if unknown_gold
            else ""
        )
        + ")",
        err=True,
    )
