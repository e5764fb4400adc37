"""The newest dataset version: the last round's, and of a revised round's rewrites the last."""

from __future__ import annotations

from labelloop.events import DatasetExported
from labelloop_console.campaign import latest_dataset


def _version(name: str, number: int) -> DatasetExported:
    return DatasetExported(
        project="p",
        version=name,
        round=number,
        path=f"/exports/p/{name}",
        n_rows=1,
        n_new_rows=1,
        split_sizes={"train": 1},
        class_counts={"a": 1},
        formats=["jsonl"],
        manifest_sha256="0" * 64,
    )


def test_a_rewrite_is_newer_than_its_round_and_older_than_the_next() -> None:
    versions = [_version("v0002-r10", 2), _version("v0002", 2), _version("v0002-r2", 2)]
    assert latest_dataset(versions).version == "v0002-r10"  # not the string order's r2
    versions.append(_version("v0003", 3))
    assert latest_dataset(versions).version == "v0003"
