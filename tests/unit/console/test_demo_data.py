"""The demo's data sets: one per task it can run, with the project's classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelloop.project import load_project, parse_project
from labelloop_console.demo import load_demo_data, load_news_data

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_the_news_articles_load_whole_split_and_stratified() -> None:
    data = load_news_data(seed=20, test_fraction=0.3)
    assert len(data.texts) == 2225
    assert data.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(data.pool_index) + len(data.test_index) == 2225
    assert not set(data.pool_index.tolist()) & set(data.test_index.tolist())
    items = data.items(n_gold=30, seed=20)
    assert len(items) == len(data.pool_index)
    assert sum(i.known_label is not None for i in items) == 30
    first = items[0]
    assert first.external_id is not None
    assert data.truth(first.external_id) == first.metadata["simulation_truth"]
    assert len(str(first.data["text"])) > 100
    assert load_news_data(seed=20, test_fraction=0.3).test_index.tolist() == (
        data.test_index.tolist()
    )


def test_each_example_project_gets_its_data_and_a_mismatch_is_refused() -> None:
    news = load_project(EXAMPLES / "news" / "project.yaml")
    assert load_demo_data(news, 20, 0.3).source == "bbc-news"
    digits = load_project(EXAMPLES / "digits" / "project.yaml")
    assert load_demo_data(digits, 20, 0.3).source == "sklearn-digits"
    raw = news.model_dump(mode="json")
    raw["labels"] = {"classes": ["business", "sport"]}
    raw["labels"].pop("expected_distribution", None)
    with pytest.raises(ValueError, match="classes"):
        load_demo_data(parse_project(raw), 20, 0.3)


def test_the_demo_refuses_a_project_it_has_no_data_for_before_starting_anything(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from labelloop_console.cli import app

    text = (EXAMPLES / "news" / "project.yaml").read_text()
    bad = tmp_path / "project.yaml"
    bad.write_text(
        text.replace("tech]", "technology]")
        .replace("tech: 0.18", "technology: 0.18")
        .replace("guidelines: guidelines.md", "")
    )
    result = CliRunner().invoke(app, ["demo", "--project", str(bad), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "the demo's bbc-news data" in result.output
    assert not any(p.is_dir() for p in tmp_path.iterdir()), "no run was started"
