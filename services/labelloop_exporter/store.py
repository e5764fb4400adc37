"""Dataset versions on disk: ``<export_dir>/<project>/<version>/``, each written atomically.

A version is written into a hidden temporary directory beside its final place, every file flushed to
disk, then renamed into place in one step: a reader (or a crash) sees either no version or a
complete one. Renaming onto an existing version fails, so two writers can never mix their files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from labelloop_exporter.domain.dataset import DATASET_FILE, MANIFEST_FILE
from labelloop_exporter.domain.versions import parse_revision

__all__ = ["DatasetDirectory", "VersionExists"]

_STALE_SECONDS = 3600.0


class VersionExists(Exception):
    """Another writer (or an earlier delivery) already wrote this version."""


class DatasetDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def project_dir(self, project: str) -> Path:
        return self.root / project

    def path(self, project: str, version: str) -> Path:
        return self.root / project / version

    def projects(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def versions(self, project: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first: ``v0006`` before its
        rewrites ``v0006-r1``, ``v0006-r2`` (revised rounds), before ``v0007``."""
        base = self.project_dir(project)
        if not base.is_dir():
            return []
        found = [
            p.name
            for p in base.iterdir()
            if parse_revision(p.name) is not None and (p / MANIFEST_FILE).is_file()
        ]
        return sorted(found, key=lambda name: parse_revision(name) or (0, 0))

    def has(self, project: str, version: str) -> bool:
        """Whether ``version`` is complete (has its manifest): one stat, where :meth:`versions`
        takes one per version."""
        return (self.path(project, version) / MANIFEST_FILE).is_file()

    def latest(self, project: str, *, before: int | None = None) -> str | None:
        """The newest complete version (of a round before ``before``, if given), as
        :meth:`versions` would end: the names are listed, and only the newest are checked for a
        manifest (a round's export stats one directory, not the thousands a long campaign has)."""
        base = self.project_dir(project)
        if not base.is_dir():
            return None
        with os.scandir(base) as entries:
            names = [e.name for e in entries if parse_revision(e.name) is not None]
        if before is not None:
            names = [n for n in names if (parse_revision(n) or (0, 0))[0] < before]
        for name in sorted(names, key=lambda n: parse_revision(n) or (0, 0), reverse=True):
            if self.has(project, name):
                return name
        return None

    def manifest(self, project: str, version: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.path(project, version) / MANIFEST_FILE).read_bytes()
        )
        return data

    def manifest_bytes(self, project: str, version: str) -> bytes:
        return (self.path(project, version) / MANIFEST_FILE).read_bytes()

    def labels_of(self, project: str, version: str) -> dict[str, str]:
        """Item id -> label cell of a version (to count new and changed rows in the next one)."""
        table = pq.read_table(
            io.BytesIO((self.path(project, version) / DATASET_FILE).read_bytes()),
            columns=["item_id", "label"],
        )
        ids = table.column("item_id").to_pylist()
        labels = table.column("label").to_pylist()
        return dict(zip(ids, labels, strict=True))

    def write(self, project: str, version: str, files: Mapping[str, bytes]) -> Path:
        """Write a complete version atomically; raise VersionExists if it is already there."""
        base = self.project_dir(project)
        base.mkdir(parents=True, exist_ok=True)
        self._sweep(base)
        final = base / version
        if final.exists():
            raise VersionExists(str(final))
        tmp = base / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        try:
            for name, data in files.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            try:
                os.rename(tmp, final)  # atomic; fails if final exists and is not empty
            except OSError as exc:
                raise VersionExists(str(final)) from exc
            _fsync_dir(base)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _sweep(base: Path) -> None:
        """Remove temporary directories left by a crash (old enough not to be in progress)."""
        now = time.time()
        for p in base.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
