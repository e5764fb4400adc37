"""Item media files as Label Studio serves them: paths under the media root become Local Files
URLs (``/data/local-files/?d=...``) that a person's browser can load.

Producers may send images, sounds and videos as file paths under the ingester's media root
(``LABELLOOP_INGESTER_MEDIA_ROOT``), which only labelloop's machines can open. Label Studio 1.23
serves such files itself (``io_storages/localfiles/views.py``, ``localfiles_data``), to a logged-in
user only, and only when

* it runs with ``LOCAL_FILES_SERVING_ENABLED=true``,
* the file is inside its ``LOCAL_FILES_DOCUMENT_ROOT`` (the ``d`` parameter is the path relative to
  it), and
* a Local Files import storage of a project the user may open has a ``path`` that holds the file.
  Creating that storage checks that the path exists and lies *strictly* inside the document root
  (the root itself is refused), so the document root is a parent of the media directory.

:class:`LocalFiles` maps a path (or ``file://`` URL) under the bridge's ``media_root`` to the URL
of the same file in Label Studio's ``label_studio_media_dir``; the bridge's provisioning adds the
storage (:meth:`labelloop_bridge.provisioning.ProjectProvisioner.ensure`). A path is resolved
(symlinks and ``..``) and must stay inside the media root, as the ingester checks it, so no item
reaches a file outside it. Data URIs and URLs are left as they are; so is a path outside the root
(the importer warns). Only what Label Studio receives changes: the item labelloop stores and
exports keeps its path.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from pydantic import JsonValue

from labelloop.project import DataKind, ProjectConfig

__all__ = ["LOCAL_FILES_URL", "LocalFiles", "media_fields"]

LOCAL_FILES_URL = "/data/local-files/?d="
"""Label Studio's Local Files view; ``d`` is the file's path relative to its document root."""
_MEDIA_KINDS = (DataKind.IMAGE, DataKind.AUDIO, DataKind.VIDEO)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LABEL_STUDIO_OWN = ("/data/local-files/", "/data/upload/")
"""References Label Studio serves itself (an uploaded file, a Local Files URL): left alone."""


def media_fields(config: ProjectConfig) -> tuple[str, ...]:
    """The project's data fields that hold an image, a sound or a video."""
    return tuple(f.name for f in config.data_fields if f.kind in _MEDIA_KINDS)


def _absolute(raw: str, what: str) -> PurePosixPath:
    path = PurePosixPath(posixpath.normpath(raw.strip()))
    if not path.is_absolute():
        raise ValueError(f"{what} must be an absolute path (as Label Studio's machine sees it)")
    return path


@dataclass(frozen=True, slots=True)
class LocalFiles:
    """Where the media live, on the bridge's machine and on Label Studio's."""

    media_root: Path
    """The directory item paths point into, resolved (symlinks followed) on this machine."""
    label_studio_media_dir: PurePosixPath
    """The same directory on Label Studio's machine: the path of the Local Files storage."""
    document_root: PurePosixPath
    """Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``, a parent of ``label_studio_media_dir``."""

    @classmethod
    def of(
        cls,
        media_root: str,
        label_studio_media_dir: str | None = None,
        document_root: str | None = None,
    ) -> LocalFiles:
        """From the bridge's settings: the Label Studio side defaults to ``media_root`` itself
        (as written, made absolute: Label Studio compares paths as text), the document root to
        its parent directory. :class:`ValueError` when Label Studio would refuse the storage."""
        if not media_root.strip():
            raise ValueError("media_root is empty")
        ls_dir = _absolute(
            label_studio_media_dir or os.path.abspath(media_root), "label_studio_media_dir"
        )
        root = (
            _absolute(document_root, "label_studio_document_root")
            if document_root
            else ls_dir.parent
        )
        if root not in ls_dir.parents:  # Label Studio's own check (the root itself is refused)
            raise ValueError(
                f"label_studio_media_dir {ls_dir} must be a subdirectory of"
                f" label_studio_document_root {root}: Label Studio serves Local Files storages"
                " strictly inside its LOCAL_FILES_DOCUMENT_ROOT"
            )
        return cls(Path(media_root).resolve(), ls_dir, root)

    @property
    def storage_path(self) -> str:
        """The ``path`` of the Local Files storage that lets Label Studio serve the media."""
        return str(self.label_studio_media_dir)

    def url(self, ref: str) -> str | None:
        """Label Studio's URL of a file path (or ``file://`` URL) inside the media root; ``None``
        for a path outside it (after resolving symlinks and ``..``), the root itself, or a path
        the system cannot resolve. Only call it for a path (:meth:`is_path`)."""
        try:
            path = Path(ref.removeprefix("file://")).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
            return None
        if not path.is_relative_to(self.media_root) or path == self.media_root:
            return None
        there = self.label_studio_media_dir / path.relative_to(self.media_root).as_posix()
        return LOCAL_FILES_URL + quote(there.relative_to(self.document_root).as_posix())

    @staticmethod
    def is_path(value: JsonValue) -> bool:
        """A file path or ``file://`` URL; not a data URI, a URL of another scheme, or a
        reference Label Studio serves itself."""
        if not isinstance(value, str) or not value.strip():
            return False
        if value.startswith("file://"):
            return True
        if value[:5].lower() == "data:" or _URL.match(value):
            return False
        return not value.startswith(_LABEL_STUDIO_OWN)

    def links(
        self, data: Mapping[str, JsonValue], fields: Iterable[str]
    ) -> tuple[dict[str, str], list[str]]:
        """The Label Studio URL of each of ``fields`` that holds a path inside the media root,
        and the fields that hold a path outside it. ``data`` is not changed."""
        found: dict[str, str] = {}
        outside: list[str] = []
        for name in fields:
            value = data.get(name)
            if not isinstance(value, str) or not self.is_path(value):
                continue
            url = self.url(value)
            if url is None:
                outside.append(name)
            else:
                found[name] = url
        return found, outside
