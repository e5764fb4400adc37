"""A dataset version's files and manifest, from labels to checksums."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest

from labelloop.events import ConsensusLabel, LabelsReady
from labelloop.project import ProjectConfig, parse_project
from labelloop_exporter.domain.dataset import formats_for, prepare, render
from labelloop_exporter.domain.labels import current_labels
from labelloop_exporter.domain.manifest import BatchAgreement, distribution, sha256
from labelloop_exporter.domain.table import ItemData

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _config(**export: Any) -> ProjectConfig:
    return parse_project(
        {
            "name": "reviews",
            "task_type": "text_classification",
            "labels": {
                "classes": ["pos", "neg", "neu"],
                "expected_distribution": {"pos": 0.4, "neg": 0.4, "neu": 0.2},
            },
            "data_fields": [{"name": "text", "kind": "text"}],
            "export": export,
        }
    )


def _event(batch: str, labels: dict[str, str], at: datetime, **kw: Any) -> LabelsReady:
    return LabelsReady(
        project="reviews",
        batch_id=batch,
        round=kw.get("round", 1 + int((at - T0).total_seconds() // 3600)),
        occurred_at=at,
        labels=[
            ConsensusLabel(
                item_id=i,
                label=v,
                confidence=kw.get("confidence", 0.9),
                method="dawid-skene",
                n_annotations=3,
                annotators=kw.get("annotators", ["ann1", "ann2"]),
                is_gold=kw.get("gold", False),
            )
            for i, v in labels.items()
        ],
    )


def _items(n: int) -> dict[str, ItemData]:
    return {f"i{k:03d}": ItemData(data={"text": f"review number {k}"}) for k in range(n)}


def _labels(start: int, stop: int, cls: str) -> dict[str, str]:
    return {f"i{k:03d}": cls for k in range(start, stop)}


def _build(events: list[LabelsReady], config: ProjectConfig, **kw: Any) -> Any:
    prepared = prepare(current_labels(events), _items(100), config, salt="salt")
    assert prepared.ok, prepared.reason()
    return prepared, render(
        prepared,
        config,
        version=kw.get("version", "v0001"),
        parent_version=kw.get("parent_version"),
        parent_labels=kw.get("parent_labels"),
        created_at=T0,
        salt="salt",
        agreement=kw.get("agreement", {}),
    )


def test_manifest_describes_the_files_and_the_labels() -> None:
    config = _config()
    events = [
        _event("b1", _labels(0, 30, "pos"), T0),
        _event("b2", _labels(30, 50, "neg"), T0, annotators=["ann3"]),
        _event("g", _labels(50, 60, "neu"), T0, gold=True),
    ]
    agreement = {"b1": BatchAgreement(0.8, 0.6, 30), "b2": BatchAgreement(0.5, None, 10)}
    _, out = _build(events, config, agreement=agreement)
    m = out.manifest
    assert m["version"] == "v0001"
    assert m["parent_version"] is None
    assert m["n_rows"] == 60
    assert m["n_new_rows"] == 60
    assert m["class_counts"] == {"pos": 30, "neg": 20, "neu": 10}
    assert m["distribution"]["pos"] == {"observed": pytest.approx(0.5, abs=1e-6), "expected": 0.4}
    assert m["imbalance"]["flagged"] is False
    assert m["mean_confidence"] == pytest.approx(0.9)
    assert m["mean_percent_agreement"] == pytest.approx((0.8 * 30 + 0.5 * 10) / 40)
    assert m["mean_krippendorff_alpha"] == pytest.approx(0.6)
    assert m["annotators"] == ["ann1", "ann2", "ann3"]
    assert m["source_batches"] == ["b1", "b2", "g"]
    assert m["confidence"]["min_confidence"] == 0.0
    assert sum(m["splits"]["sizes"].values()) == 60
    assert m["splits"]["gold_items"] == 10
    assert m["splits"]["class_counts"]["test"].get("neu") == 10  # gold items all in test
    assert [c["name"] for c in m["schema"]][:3] == ["item_id", "split", "label"]
    assert m["schema"][-1] == {"name": "text", "type": "string"}
    assert set(m["files"]) == {"dataset.jsonl", "dataset.csv", "dataset.parquet"}
    for name, meta in m["files"].items():
        assert meta["sha256"] == sha256(out.files[name])
        assert meta["bytes"] == len(out.files[name])
    assert json.loads(out.files["manifest.json"]) == m
    assert out.manifest_sha256 == sha256(out.files["manifest.json"])
    table = pq.read_table(io.BytesIO(out.files["dataset.parquet"])).to_pandas()
    assert len(table) == 60
    assert set(table.loc[table["is_gold"], "split"]) == {"test"}


def test_child_version_counts_new_and_changed_rows_and_keeps_splits() -> None:
    config = _config()
    first = [_event("b1", _labels(0, 40, "pos"), T0)]
    _, v1 = _build(first, config)
    t1 = pq.read_table(io.BytesIO(v1.files["dataset.parquet"])).to_pandas()
    parent = dict(zip(t1["item_id"], t1["label"], strict=True))
    later = [
        *first,
        _event("b2", {**_labels(40, 60, "neg"), "i000": "neu"}, T0 + timedelta(hours=1)),
    ]
    _, v2 = _build(later, config, version="v0002", parent_version="v0001", parent_labels=parent)
    assert v2.manifest["parent_version"] == "v0001"
    assert v2.manifest["n_new_rows"] == 20
    assert v2.manifest["n_changed_rows"] == 1
    t2 = pq.read_table(io.BytesIO(v2.files["dataset.parquet"])).to_pandas()
    splits1 = dict(zip(t1["item_id"], t1["split"], strict=True))
    splits2 = dict(zip(t2["item_id"], t2["split"], strict=True))
    assert all(splits2[i] == s for i, s in splits1.items())


def test_same_labels_give_the_same_content_fingerprint() -> None:
    config = _config()
    events = [_event("b1", _labels(0, 10, "pos"), T0), _event("b2", _labels(10, 20, "neg"), T0)]
    a, rendered = _build(events, config)
    b, _ = _build([*reversed(events), events[0]], config)
    assert a.content_sha256 == b.content_sha256
    # the JSON lines written are the ones fingerprinted (rendered once, in ``prepare``)
    from labelloop_exporter.domain.formats import render_jsonl
    from labelloop_exporter.domain.manifest import sha256

    assert rendered.files["dataset.jsonl"] == a.jsonl
    assert sha256(a.jsonl) == a.content_sha256
    assert a.jsonl == render_jsonl(a.validation.rows, a.data_columns)


def test_low_confidence_rows_are_excluded_and_counted() -> None:
    config = _config(min_confidence=0.7)
    events = [
        _event("b1", _labels(0, 10, "pos"), T0),
        _event("b2", _labels(10, 14, "neg"), T0, confidence=0.5),
    ]
    _, out = _build(events, config)
    assert out.manifest["n_rows"] == 10
    assert out.manifest["confidence"]["excluded"] == 4


def test_imbalance_against_expected_distribution_is_flagged() -> None:
    report, flagged = distribution(
        {"pos": 90, "neg": 10, "neu": 0}, {"pos": 0.4, "neg": 0.4, "neu": 0.2}
    )
    assert flagged == ["pos", "neg", "neu"]
    assert report["neu"] == {"observed": 0.0, "expected": 0.2}
    _, uniform_flags = distribution({"a": 50, "b": 48, "c": 2}, None)
    assert uniform_flags == ["c"]


def test_a_bad_row_is_left_out_and_named_in_the_manifest() -> None:
    config = _config()
    prepared = prepare(
        current_labels([_event("b1", {"i000": "pos", "i001": "cow"}, T0)]),
        _items(5),
        config,
        salt="s",
    )
    assert prepared.ok
    assert "unknown_class" in prepared.validation.reason()
    out = render(
        prepared,
        config,
        version="v0001",
        parent_version=None,
        parent_labels=None,
        created_at=T0,
        salt="s",
        agreement={},
    )
    assert out.manifest["n_rows"] == 1
    (excluded,) = out.manifest["excluded_rows"]
    assert (excluded["reason"], excluded["item_ids"]) == ("unknown_class", ["i001"])


def test_formats_the_project_cannot_have_render_nothing() -> None:
    config = _config()
    prepared = prepare(
        current_labels([_event("b1", {"i000": "pos"}, T0)]),
        _items(5),
        config,
        salt="s",
        formats=["coco"],
    )
    assert not prepared.ok
    assert "unsupported_format" in prepared.reason()
    with pytest.raises(ValueError, match="cannot render"):
        render(
            prepared,
            config,
            version="v0001",
            parent_version=None,
            parent_labels=None,
            created_at=T0,
            salt="s",
            agreement={},
        )


def test_formats_for_task_types() -> None:
    config = _config()
    assert formats_for(config, None) == (["jsonl", "csv", "parquet"], [])
    assert formats_for(config, ["csv"]) == (["csv", "parquet"], [])  # parquet always
    _, problems = formats_for(config, ["coco", "xml"])
    assert [p.code for p in problems] == ["unsupported_format", "unsupported_format"]
