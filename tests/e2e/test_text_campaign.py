"""A text campaign through the six services: real news articles, learned from, and sampled by
the model's uncertainty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelloop_console.demo import DemoOptions, run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NEWS = Path(__file__).resolve().parents[2] / "examples" / "news" / "project.yaml"


def test_a_news_campaign_trains_on_text_and_samples_by_its_uncertainty(tmp_path: Path) -> None:
    summary = run_demo(
        DemoOptions(
            project_file=NEWS,
            budget=160,
            random_arm=False,  # the demo's own runs compare the arms; here: does text learn
            runs_dir=tmp_path,
            timeout_seconds=600,
            quiet=True,
        )
    )
    assert summary["finished"], summary.get("failure")
    assert summary["failure"] is None
    assert summary["data_source"] == "bbc-news"
    assert summary["confusion_matrix"]["classes"] == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]
    # the model learned the articles: held out, better than guessing by far
    assert summary["final_test_accuracy"] >= 0.85

    labeling = [b for b in summary["batches"] if b["kind"] == "labeling"]
    assert labeling[0]["strategy"] == "diversity"  # no model yet: spread over the pool
    chosen_by_model = [b for b in labeling[1:] if b["model_version"] is not None]
    assert chosen_by_model, "later batches are chosen with a trained model"
    assert all(b["strategy"] == "hybrid" for b in chosen_by_model)

    dataset = Path(summary["dataset_path"])
    rows = [json.loads(line) for line in (dataset / "dataset.jsonl").read_text().splitlines()]
    assert rows
    assert all(len(r["text"]) > 100 for r in rows)  # whole articles, not ids
    assert summary["final_dataset"]["complete"]
    assert summary["dead_letters"] == 0
