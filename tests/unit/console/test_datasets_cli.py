"""``labelloop datasets list`` finds the demo's versions too (2026-12-01: it looked only in
``./exports``, the demo writes ``runs/<run-id>/exports``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelloop_console.cli import _register_commands, app


def _version(root: Path, project: str, version: str, rows: int) -> None:
    folder = root / project / version
    folder.mkdir(parents=True)
    manifest = {"version": version, "n_rows": rows, "n_new_rows": rows, "created_at": "2026"}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_the_demo_runs_versions_are_listed_with_their_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_commands()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LABELLOOP_EXPORTER_EXPORT_DIR", raising=False)
    nothing = CliRunner().invoke(app, ["datasets", "list"])
    assert nothing.exit_code == 0
    assert "no dataset versions under" in nothing.output
    _version(tmp_path / "runs" / "20261202-035235" / "exports", "digits", "v0001", 40)
    _version(tmp_path / "exports", "reviews", "v0001", 12)
    listed = CliRunner().invoke(app, ["datasets", "list"], env={"COLUMNS": "160"})
    assert listed.exit_code == 0, listed.output
    assert "20261202-035235" in listed.output
    assert "digits" in listed.output
    assert "reviews" in listed.output
