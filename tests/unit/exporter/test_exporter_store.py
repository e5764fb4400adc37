"""Versions on disk appear whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelloop_exporter.store import DatasetDirectory, VersionExists


def _files(n: int) -> dict[str, bytes]:
    return {
        "dataset.jsonl": b"{}\n" * n,
        "conll/train.conll": b"x -X- _ O\n",
        "manifest.json": json.dumps({"version": "v0001", "n_rows": n}).encode(),
    }


def test_write_is_complete_and_listed(tmp_path: Path) -> None:
    d = DatasetDirectory(tmp_path)
    path = d.write("p", "v0001", _files(3))
    assert path == tmp_path / "p" / "v0001"
    assert (path / "conll" / "train.conll").read_bytes() == b"x -X- _ O\n"
    assert d.versions("p") == ["v0001"]
    assert d.manifest("p", "v0001")["n_rows"] == 3
    assert d.projects() == ["p"]
    assert not list((tmp_path / "p").glob(".tmp-*"))


def test_an_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    d = DatasetDirectory(tmp_path)
    d.write("p", "v0001", _files(3))
    with pytest.raises(VersionExists):
        d.write("p", "v0001", _files(5))
    assert d.manifest("p", "v0001")["n_rows"] == 3
    assert not list((tmp_path / "p").glob(".tmp-*"))


def test_half_written_versions_are_invisible(tmp_path: Path) -> None:
    d = DatasetDirectory(tmp_path)
    (tmp_path / "p" / ".tmp-v0002-dead").mkdir(parents=True)
    (tmp_path / "p" / "v0003").mkdir()  # no manifest: not a version
    d.write("p", "v0001", _files(1))
    assert d.versions("p") == ["v0001"]
    assert d.versions("missing") == []


def test_latest_and_has_agree_with_the_full_listing(tmp_path: Path) -> None:
    """A round's export checks one version and finds the newest without a stat per version:
    the answers are those of ``versions()``, rewrites and an unfinished directory included."""
    d = DatasetDirectory(tmp_path)
    assert d.latest("p") is None
    assert not d.has("p", "v0001")
    for name in ("v0002", "v0001", "v0010", "v0002-r1", "v0010-r2", "v0010-r1"):
        d.write("p", name, _files(1))
    (tmp_path / "p" / "v0011").mkdir()  # a version whose manifest never landed
    (tmp_path / "p" / "notes").mkdir()
    assert d.versions("p")[-1] == d.latest("p") == "v0010-r2"
    assert d.has("p", "v0002-r1")
    assert not d.has("p", "v0011")
