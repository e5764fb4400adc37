"""``labelloop export`` (ask for a dataset version now) and ``labelloop datasets list``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from labelloop_exporter.store import DatasetDirectory

__all__ = ["register"]

_FORMATS = ("jsonl", "csv", "parquet", "coco", "yolo", "conll")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    datasets = typer.Typer(help="Dataset versions written by the exporter.", no_args_is_help=True)
    datasets.command("list")(list_datasets)
    app.add_typer(datasets, name="datasets")


def export(
    project: Annotated[str, typer.Option("--project", "-p", help="Project name")],
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help=f"Format to write (repeatable): {', '.join(_FORMATS)}"),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the exporter's answer (0: do not wait)")
    ] = 30.0,
) -> None:
    """Ask the exporter for the latest dataset version and print it: the latest round's version,
    written now if that round has none (versions come every ``export.every_n_labels`` labels
    and for a campaign's last round), announced again for a script. A large project's version
    takes a while to write: raise ``--wait``."""
    bad = sorted(set(formats or []) - set(_FORMATS))
    if bad:
        raise typer.BadParameter(f"unknown formats {bad}; choose from {', '.join(_FORMATS)}")
    from labelloop.events import DatasetExported, RequestExport
    from labelloop_console.commands.asking import ask
    from labelloop_exporter.settings import ExporterSettings

    command = RequestExport(project=project, formats=formats or None)
    answer = ask(ExporterSettings(), command, (DatasetExported,), wait=wait, who="exporter")
    if isinstance(answer, DatasetExported):
        splits = ", ".join(f"{k} {v}" for k, v in sorted(answer.split_sizes.items()))
        typer.echo(
            f"{project} {answer.version}: {answer.n_rows} rows ({splits}), "
            f"{', '.join(answer.formats)}, at {answer.path}"
        )


def list_datasets(
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project")
    ] = None,
    export_dir: Annotated[
        Path | None, typer.Option(help="Where versions are (default: the exporter's export_dir)")
    ] = None,
) -> None:
    """Dataset versions on disk, oldest first, with their row counts and splits: the exporter's
    export_dir, and without --export-dir also the demo's runs/<run-id>/exports."""
    from rich.console import Console
    from rich.table import Table

    from labelloop_exporter.settings import ExporterSettings
    from labelloop_exporter.store import DatasetDirectory

    roots = [export_dir or ExporterSettings().export_dir]
    if export_dir is None:
        # the demo's runs keep their versions in runs/<run-id>/exports
        roots += sorted(Path("runs").glob("*/exports"))
    table = Table(
        "run", "project", "version", "created", "parent", "rows", "new", "splits", "imbalance"
    )
    for index, root in enumerate(roots):
        directory = DatasetDirectory(root)
        if not Path(directory.root).is_dir():
            continue
        run = "-" if index == 0 else Path(root).parent.name  # the demo's run id
        for name in [project] if project else directory.projects():
            _add_versions(table, directory, name, run)
    if not table.rows:
        typer.echo(f"no dataset versions under {', '.join(str(r) for r in roots)}")
        return
    Console().print(table)


def _add_versions(table: Table, directory: DatasetDirectory, name: str, where: str) -> None:
    for version in directory.versions(name):
        m: dict[str, Any] = directory.manifest(name, version)
        sizes = m.get("splits", {}).get("sizes", {})
        imbalance = m.get("imbalance", {})
        table.add_row(
            where,
            name,
            version,
            str(m.get("created_at", ""))[:19],
            m.get("parent_version") or "-",
            str(m.get("n_rows", "")),
            str(m.get("n_new_rows", "")),
            "/".join(str(sizes.get(s, 0)) for s in ("train", "validation", "test")),
            ", ".join(imbalance.get("classes", [])) if imbalance.get("flagged") else "-",
        )
