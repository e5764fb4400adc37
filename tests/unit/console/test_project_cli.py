"""``labelloop project validate``, through typer's runner: one line when valid, every error as
written (2026-12-01: 76 lines of JSON and no "valid"; Rich ate a pattern's character class)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from labelloop_console.cli import app

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_a_valid_project_is_said_to_be_valid_in_one_line() -> None:
    result = CliRunner().invoke(app, ["project", "validate", str(EXAMPLES / "digits/project.yaml")])
    assert result.exit_code == 0, result.output
    (line,) = result.output.strip().splitlines()
    assert ": valid: project digits (image_classification, 10 classes" in line


def test_json_on_request_and_errors_as_written(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(
        app, ["project", "validate", "--json", str(EXAMPLES / "reviews/project.yaml")]
    )
    assert shown.exit_code == 0
    assert json.loads(shown.output)["name"] == "reviews"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'name: "bad name!"\ntask_type: text_classification\nlabels: {classes: [a]}\n'
        "data_fields: [{name: text, kind: text}]\n",
        encoding="utf-8",
    )
    refused = runner.invoke(app, ["project", "validate", str(bad)])
    assert refused.exit_code == 1
    assert "String should match pattern '^[a-z0-9][a-z0-9_-]*$'" in refused.output
