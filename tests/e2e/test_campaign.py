"""The main job, shortened: a whole campaign as real processes on a real nats-server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelloop.natsserver import new_token
from labelloop_console import demo
from labelloop_console.demo import DemoOptions, run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_short_campaign_learns_catches_the_spammer_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = new_token()
    monkeypatch.setattr(demo, "new_token", lambda: token)  # to look for it afterwards
    summary = run_demo(
        DemoOptions(
            budget=400, random_arm=False, runs_dir=tmp_path, timeout_seconds=300, quiet=True
        )
    )
    run_dir = tmp_path / summary["run_id"]
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert (run_dir / "report.html").stat().st_size > 10_000  # plots are inline

    assert summary["simulation"] is True
    assert summary["finished"], "the campaign stopped on its own (budget or convergence)"
    assert summary["budget_exhausted"] or summary["converged"]
    if summary["converged"]:  # the trainer saw the model stop changing: the rest is saved
        assert 150 <= summary["labels_used"] <= 400
    else:
        assert 350 <= summary["labels_used"] <= 400
    assert summary["annotations_used"] > summary["labels_used"]  # overlap for agreement
    assert summary["final_test_accuracy"] >= 0.9
    assert summary["label_accuracy"] >= 0.95

    scored = [b for b in summary["batches"] if b["kind"] == "labeling"]
    assert scored
    assert all(b["krippendorff_alpha"] is not None for b in scored)
    # pairwise kappa needs annotator pairs sharing items: a last batch trimmed to the budget may
    # have too few for any pair (its alpha still exists)
    full = [b for b in scored if b["n_tasks"] >= 20]
    assert full
    assert all(b["cohen_kappa_mean"] is not None for b in full)

    board = {a["id"]: a for a in summary["annotators"]}
    assert board["ann-eve"]["flagged"], "the spammer is caught"
    assert not any(a["flagged"] for name, a in board.items() if name != "ann-eve")
    assert summary["annotators"][-1]["id"] == "ann-eve", "and ranks last"

    dataset = Path(summary["dataset_path"])
    assert dataset.is_dir()
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["version"] == summary["dataset_version"]
    assert {p.name for p in dataset.iterdir()} >= {
        "dataset.jsonl",
        "dataset.csv",
        "dataset.parquet",
    }
    assert summary["dead_letters"] == 0

    # the campaign ended with QA's last word exported: every label it released, reviews included
    final = summary["final_dataset"]
    assert final["version"] == summary["dataset_version"]
    assert final["complete"], final
    assert final["released"] == summary["labels_used"]
    assert summary["failure"] is None
    assert summary["service_restarts"] == {}

    # the run's own server admitted the services with a token of this run that no file keeps
    assert "Authorization Violation" not in (run_dir / "nats.log").read_text()
    for path in run_dir.rglob("*"):
        if path.is_file():  # logs, summary, report, exports, the JetStream store
            assert token.encode() not in path.read_bytes(), path
