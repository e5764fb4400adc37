"""The ``labelloop agreement`` and ``labelloop aggregate`` commands, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from labelloop_console.commands.quality import register
from labelloop_qa.domain import agreement as ag
from labelloop_qa.domain.aggregation import aggregate
from labelloop_qa.domain.crowd import simulate_crew
from labelloop_qa.domain.ratings import Ratings


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def crew_csv(tmp_path: Path) -> Path:
    crew = simulate_crew(
        n_items=200,
        n_classes=4,
        behaviours=["good"] * 6 + ["spammer"] * 2,
        accuracies=[0.85] * 8,
        labels_per_item=3,
        random_state=7,
    )
    r = crew.ratings
    frame = pd.DataFrame(
        {
            "item_id": r.item_ids[r.item],
            "annotator_id": r.annotator_ids[r.annotator],
            "label": r.classes[r.label],
        }
    )
    path = tmp_path / "annotations.csv"
    frame.to_csv(path, index=False)
    gold = pd.DataFrame({"item_id": r.item_ids[:20], "label": r.classes[crew.truth[:20]]})
    gold.to_csv(tmp_path / "gold.csv", index=False)
    return path


def test_agreement_json_has_the_documented_fields(cli: typer.Typer, crew_csv: Path) -> None:
    result = CliRunner().invoke(cli, ["agreement", str(crew_csv), "--json", "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in (
        "n_items",
        "n_annotators",
        "n_annotations",
        "percent_agreement",
        "cohen_kappa_mean",
        "fleiss_kappa",
        "krippendorff_alpha",
        "gwet_ac1",
        "per_annotator",
    ):
        assert key in out
    assert (out["n_items"], out["n_annotators"], out["n_annotations"]) == (200, 8, 600)
    frame = pd.read_csv(crew_csv, dtype=str)
    r = Ratings.from_records(frame.item_id, frame.annotator_id, frame.label)
    assert out["krippendorff_alpha"] == pytest.approx(ag.krippendorff_alpha(r), abs=1e-12)
    assert out["fleiss_kappa"] == pytest.approx(ag.fleiss_kappa(r), abs=1e-12)
    lo, hi = out["krippendorff_alpha_ci"]
    assert lo <= out["krippendorff_alpha"] <= hi
    ann = out["per_annotator"]["ann-007"]
    assert set(ann) >= {"n", "agreement_with_consensus", "estimated_accuracy"}
    assert ann["flagged"] is True
    assert out["per_annotator"]["ann-000"]["flagged"] is False


def test_agreement_table_and_levels(cli: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "ordinal.jsonl"
    rows = [
        {"item_id": i, "annotator_id": a, "label": v}
        for i, (a, b) in enumerate([(1, 2), (2, 2), (3, 3), (10, 3), (2, 1)])
        for a, v in (("x", a), ("y", b))
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    runner = CliRunner()
    table = runner.invoke(cli, ["agreement", str(path), "--level", "ordinal"])
    assert table.exit_code == 0, table.output
    assert "krippendorff_alpha" in table.stdout
    values = {}
    for level in ("nominal", "ordinal", "interval", "ratio"):
        res = runner.invoke(cli, ["agreement", str(path), "--level", level, "--json"])
        assert res.exit_code == 0, res.output
        values[level] = json.loads(res.stdout)["krippendorff_alpha"]
    r = Ratings.from_records(
        [x["item_id"] for x in rows],
        [x["annotator_id"] for x in rows],
        [str(x["label"]) for x in rows],
        classes=["1", "2", "3", "10"],
    )
    assert values["ordinal"] == pytest.approx(ag.krippendorff_alpha(r, "ordinal"))
    assert values["interval"] == pytest.approx(ag.krippendorff_alpha(r, "interval"))
    bad = runner.invoke(cli, ["agreement", str(path), "--level", "fuzzy"])
    assert bad.exit_code == 2


def test_agreement_reads_a_label_studio_export(cli: typer.Typer, tmp_path: Path) -> None:
    def ann(who: int, choice: str, cancelled: bool = False) -> dict[str, object]:
        return {
            "completed_by": who,
            "was_cancelled": cancelled,
            "lead_time": 3.0,
            "result": [{"type": "choices", "value": {"choices": [choice]}}],
        }

    export = [
        {"id": 1, "annotations": [ann(1, "cat"), ann(2, "cat")]},
        {"id": 2, "annotations": [ann(1, "dog"), ann(2, "cat"), ann(3, "dog", cancelled=True)]},
        {"id": 3, "annotations": [ann(1, "dog"), ann(2, "dog")]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    res = CliRunner().invoke(cli, ["agreement", str(path), "--json", "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_annotations"] == 6
    assert out["n_skipped"] == 1
    assert out["percent_agreement"] == pytest.approx(2 / 3)


def test_agreement_errors_are_clear(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["agreement", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2
    assert "no such file" in missing.stderr
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    res = runner.invoke(cli, ["agreement", str(wrong)])
    assert res.exit_code == 2
    assert "missing column" in res.stderr
    text = tmp_path / "text.csv"
    text.write_text("item_id,annotator_id,label\n1,a,x\n1,b,y\n")
    res = runner.invoke(cli, ["agreement", str(text), "--level", "interval"])
    assert res.exit_code == 2
    assert "numeric" in res.stderr


@pytest.mark.parametrize("method", ["majority", "dawid-skene", "one-coin", "auto"])
def test_aggregate_writes_labels(cli: typer.Typer, crew_csv: Path, method: str) -> None:
    out = crew_csv.parent / f"labels-{method}.csv"
    res = CliRunner().invoke(
        cli, ["aggregate", str(crew_csv), "--method", method, "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    labels = pd.read_csv(out, dtype={"item_id": str, "label": str})
    assert list(labels.columns) == ["item_id", "label", "confidence"]
    assert len(labels) == 200
    assert labels.confidence.between(0, 1).all()
    frame = pd.read_csv(crew_csv, dtype=str)
    r = Ratings.from_records(frame.item_id, frame.annotator_id, frame.label)
    expected = aggregate(r, method)
    assert labels.label.tolist() == r.classes[expected.label].tolist()


def test_aggregate_with_gold(cli: typer.Typer, crew_csv: Path) -> None:
    out = crew_csv.parent / "gold-labels.csv"
    gold = crew_csv.parent / "gold.csv"
    res = CliRunner().invoke(
        cli,
        [
            "aggregate",
            str(crew_csv),
            "--method",
            "dawid-skene",
            "--gold",
            str(gold),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "gold-dawid-skene" in res.stderr
    labels = pd.read_csv(out, dtype=str).set_index("item_id")
    answers = pd.read_csv(gold, dtype=str).set_index("item_id")
    assert (labels.loc[answers.index, "label"] == answers.label).all()
    assert np.allclose(labels.loc[answers.index, "confidence"].astype(float), 1.0)
    bad = CliRunner().invoke(
        cli, ["aggregate", str(crew_csv), "--method", "vote", "--out", str(out)]
    )
    assert bad.exit_code == 2


def test_a_repeated_item_annotator_row_is_one_rating_and_skips_are_said(
    cli: typer.Typer, tmp_path: Path
) -> None:
    """2026-12-01: a duplicate (item, annotator) row counted as a second rating, and skipped
    rows were counted only in --json."""
    path = tmp_path / "answers.csv"
    path.write_text(
        "item_id,annotator_id,label\n"
        "1,ann,a\n1,bob,a\n2,ann,b\n2,bob,b\n"
        "1,ann,b\n"  # ann changed her mind on item 1: the later answer counts, once
        "3,bob,\n",  # no label
        encoding="utf-8",
    )
    res = CliRunner().invoke(cli, ["agreement", str(path), "--json", "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_annotations"] == 4
    assert out["n_duplicates"] == 1
    assert out["n_skipped"] == 1
    assert out["percent_agreement"] == pytest.approx(0.5)  # item 1 now a/b, item 2 b/b
    assert "1 rows skipped" in res.stderr
    assert "1 repeated (item, annotator) rows" in res.stderr
