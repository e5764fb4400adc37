"""Label Studio projects for labelloop projects: one for labeling, one for expert review, and
one per annotator for blind overlap.

When the project's ``annotators:`` list names people with the role ``annotator``, each of them
gets a labeling project of their own (``Support tickets · ann · <namespace>``, their labelloop id
in the title and in the marker): the bridge imports into it the tasks assigned to them, so
nobody sees, in their project, anyone else's answer. Otherwise labeling happens in the one
labeling project everyone shares (overlap by Label Studio's ``maximum_annotations``, not blind).

Idempotent: the Label Studio project id is kept in KV; when KV has none (a fresh bucket, a lost
volume) the project is found again by the marker in its description, and only then created. The
title names the namespace (``Handwritten digits · demo20261201``) so that people tell the runs
sharing one Label Studio apart; the marker, not the title, is what the bridge looks for. Two
replicas racing to create keep the one stored first and delete their own. The labeling config,
the instructions (from the guidelines) and the overlap are brought up to date on every change of
the project configuration; ``maximum_annotations`` is set by an update after creation because
some versions ignore it on create (label-studio-sdk issue #339).

Tasks carry labelloop's bookkeeping in their data (:data:`INTERNAL_COLUMNS`: the reconciliation
finds a batch's tasks by a Data Manager filter on ``data.labelloop_batch_id``, and Label Studio
filters on nothing else a task carries). Label Studio shows every data key as a Data Manager
column, so :meth:`ProjectProvisioner.hide_internal_columns` hides them in every tab of the
project (the tabs are shared by the organization's users): a tab the bridge creates before anyone
opens the project, and any tab a person adds later once the bridge passes again. Hidden is not
secret: Community Edition has no per-user field permissions, and a task's source, an export or
the API still show them.

Media files (the bridge's ``media_root``, :mod:`labelloop_bridge.media`): Label Studio serves a
file of its Local Files only to a user who may open a project with a Local Files import storage
whose path holds the file. So every project of a labelloop project with an image, audio or video
field gets one such storage on ``label_studio_media_dir`` (found first, then created; never
synced: ``synchronizable`` is off, nothing is imported from it). Label Studio refuses it when
local files serving is off or the path is not inside its document root: the bridge says once
which settings to set, goes on (annotations flow; people cannot play the media), and tries again
before each reconciliation pass.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from typing import Any, Literal

from labelloop.project import ProjectConfig

from .domain.label_config import (
    REVIEW_REASON_FIELD,
    REVIEW_VOTES_FIELD,
    build_label_config,
    guidelines_html,
)
from .intake import TASK_BATCH, TASK_ITEM, TASK_REQUIRED
from .labelstudio import LabelStudioClient, LabelStudioError, LabelStudioUnavailable
from .media import LocalFiles, media_fields
from .store import BridgeState

__all__ = [
    "INTERNAL_COLUMNS",
    "ProjectProvisioner",
    "WebhookSpec",
    "hidden_columns",
    "project_fields",
    "project_title",
]

log = logging.getLogger("labelloop.bridge.provisioning")

Kind = Literal["labeling", "review"]
WEBHOOK_ACTIONS = (
    "ANNOTATION_CREATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
)
_TITLE_MAX = 50  # Label Studio's column width
_NAMESPACE_MAX = 24  # in a title: the namespace's end (a run's timestamp) tells runs apart
_ANNOTATOR_MAX = 12  # in a title: whose project it is
INTERNAL_COLUMNS = tuple(f"tasks:data.{key}" for key in (TASK_ITEM, TASK_BATCH, TASK_REQUIRED))
"""The Data Manager columns of labelloop's bookkeeping in task data, hidden from people."""
_REVIEW_COLUMNS = tuple(f"tasks:data.{key}" for key in (REVIEW_REASON_FIELD, REVIEW_VOTES_FIELD))
"""Shown in the review panel: hidden in the narrow task list beside it, kept in the table."""
_MODES = ("explore", "labeling")  # the Data Manager's table; its list beside the labeling screen
_SERVER_KEYS = ("filters", "ordering", "selectedItems")  # a tab's parts Label Studio keeps apart


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, list):  # Label Studio returns webhook actions in its own order
        return sorted(current or []) == sorted(wanted)
    return bool(current == wanted)


def _marker(namespace: str, project: str, kind: Kind, annotator: str | None = None) -> str:
    whose = f"/{annotator}" if annotator is not None else ""
    return f"[labelloop:{namespace}/{project}/{kind}{whose}]"


def project_title(title: str, kind: Kind, namespace: str, annotator: str | None = None) -> str:
    """``Handwritten digits · demo20261201`` (labeling), ``... (review) · ...`` (review),
    ``Handwritten digits · ann · demo20261201`` (the labeling project of annotator ``ann``).

    At most 50 characters (Label Studio's limit): a long namespace keeps its end (a demo run's
    timestamp), and the title is shortened to make room, so that what tells runs apart stays.
    """
    if len(namespace) > _NAMESPACE_MAX:
        namespace = "…" + namespace[-(_NAMESPACE_MAX - 1) :]
    whose = ""
    if annotator is not None:
        short = annotator.split("@")[0] if "@" in annotator else annotator
        whose = f" · {short[:_ANNOTATOR_MAX]}"
    tail = (" (review)" if kind == "review" else "") + whose + f" · {namespace}"
    room = _TITLE_MAX - len(tail)
    if len(title) > room:
        title = title[: room - 1].rstrip() + "…"
    return title + tail


def project_fields(
    config: ProjectConfig, kind: Kind, namespace: str, annotator: str | None = None
) -> dict[str, Any]:
    """The Label Studio project fields for a labelloop project (labeling or review; with
    ``annotator``, that annotator's own labeling project: one answer per task, theirs)."""
    personal = annotator is not None
    overlap = 1 if kind == "review" or personal else config.quality.annotators_per_overlapped_item
    what = "Expert review of" if kind == "review" else "Labeling of"
    whose = f" for {annotator} only (tasks assigned to them)" if personal else ""
    return {
        "title": project_title(config.title or config.name, kind, namespace, annotator),
        "description": f"{what} labelloop project {config.name}{whose}. "
        + _marker(namespace, config.name, kind, annotator),
        "label_config": build_label_config(config, review=kind == "review"),
        "expert_instruction": guidelines_html(config.guidelines_text),
        "show_instruction": bool(config.guidelines_text),
        "show_skip_button": True,
        "maximum_annotations": overlap,
    }


def hidden_columns(
    current: dict[str, Any] | None, columns: list[dict[str, Any]], kind: Kind
) -> dict[str, list[str]]:
    """A tab's hidden columns with :data:`INTERNAL_COLUMNS` added to both modes (and, in a
    review project, the review panel's data to the list beside the labeling screen).

    ``current`` is the tab's ``hiddenColumns``; a tab without one shows Label Studio's defaults,
    which ``columns`` (``/api/dm/columns``) give, and which must stay hidden once the tab names
    its own: the Data Manager then hides exactly what the list says.
    """
    if current is None:
        current = {mode: [] for mode in _MODES}
        for column in columns:
            path = ("data." if column.get("parent") == "data" else "") + str(column.get("id"))
            for mode, visible in (column.get("visibility_defaults") or {}).items():
                if mode in current and not visible:
                    current[mode].append(f"tasks:{path}")
    out = {mode: list(current.get(mode) or []) for mode in current}
    for mode in _MODES:
        hide = INTERNAL_COLUMNS
        if kind == "review" and mode == "labeling":
            hide += _REVIEW_COLUMNS
        listed = out.setdefault(mode, [])
        listed.extend(c for c in hide if c not in listed)
    return out


def _hidden_of(view: dict[str, Any]) -> dict[str, Any] | None:
    """A tab's ``hiddenColumns``; ``None`` when it has none (it shows Label Studio's defaults)."""
    data = view.get("data")
    hidden = data.get("hiddenColumns") if isinstance(data, dict) else None
    return hidden if isinstance(hidden, dict) else None


class WebhookSpec:
    def __init__(self, url: str, header: str, secret: str) -> None:
        self.url = url
        self.header = header
        self._secret = secret

    def __repr__(self) -> str:
        return f"WebhookSpec(url={self.url!r}, header={self.header!r})"

    def fields(self, ls_project_id: int) -> dict[str, Any]:
        return {
            "url": self.url,
            "project": ls_project_id,
            "send_payload": True,
            "send_for_all_actions": False,
            "actions": list(WEBHOOK_ACTIONS),
            "headers": {self.header: self._secret},
            "is_active": True,
        }


class ProjectProvisioner:
    def __init__(
        self,
        client: LabelStudioClient,
        state: BridgeState,
        namespace: str,
        webhook: WebhookSpec | None,
        *,
        media: LocalFiles | None = None,
    ) -> None:
        self._client = client
        self._state = state
        self._namespace = namespace
        self._webhook = webhook
        self._media = media
        self._synced: dict[tuple[str, Kind, str | None], str] = {}
        """(project, kind, annotator) -> fingerprint of the fields last written."""
        self._storage_refused: set[int] = set()
        """Label Studio projects whose Local Files storage Label Studio refused: tried again."""

    async def ensure(self, config: ProjectConfig, kind: Kind, annotator: str | None = None) -> int:
        """The Label Studio project id for (project, kind) or for ``annotator``'s own labeling
        project, created or updated as needed."""
        fields = project_fields(config, kind, self._namespace, annotator)
        fingerprint = hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()
        key = (config.name, kind, annotator)
        ls_id = await self._state.ls_project(config.name, kind, annotator)
        if ls_id is not None and self._synced.get(key) == fingerprint:
            return ls_id
        existing = await self._client.get_project(ls_id) if ls_id is not None else None
        if existing is None:
            existing = await self._find(config.name, kind, annotator)
            if existing is not None:
                ls_id = int(existing["id"])
                await self._state.replace_ls_project(config.name, kind, ls_id, annotator)
        if existing is None:
            ls_id = await self._create(config, kind, fields, annotator)
        else:
            assert ls_id is not None
            await self._update(ls_id, existing, fields)
            # indexed again (no write when it is): a bridge stopped between storing the id and
            # indexing it, or one from before the index was split per project, completes it
            await self._state.remember(ls_id, config.name, kind, annotator)
        assert ls_id is not None
        await self._try_webhook(ls_id)
        if self._media is not None and media_fields(config):
            await self._try_storage(ls_id)
        self._synced[key] = fingerprint
        return ls_id

    async def _find(self, project: str, kind: Kind, annotator: str | None) -> dict[str, Any] | None:
        marker = _marker(self._namespace, project, kind, annotator)
        for candidate in await self._client.list_projects():
            if marker in (candidate.get("description") or ""):
                return candidate
        return None

    async def _create(
        self, config: ProjectConfig, kind: Kind, fields: dict[str, Any], annotator: str | None
    ) -> int:
        created = await self._client.create_project(fields)
        ls_id = int(created["id"])
        await self._client.update_project(
            ls_id, {"maximum_annotations": fields["maximum_annotations"]}
        )
        winner = await self._state.claim_ls_project(config.name, kind, ls_id, annotator)
        if winner != ls_id:
            log.warning("another replica created the Label Studio project first; using it")
            await self._client.delete_project(ls_id)
            return winner
        whose = f", {annotator}'s own" if annotator is not None else ""
        log.info("created Label Studio project %d for %s (%s%s)", ls_id, config.name, kind, whose)
        await self.hide_internal_columns(ls_id, kind)  # before anyone opens it: no defaults
        return ls_id

    async def _update(self, ls_id: int, existing: dict[str, Any], fields: dict[str, Any]) -> None:
        changed = {k: v for k, v in fields.items() if existing.get(k) != v}
        if changed:
            await self._client.update_project(ls_id, changed)
            log.info("updated Label Studio project %d: %s", ls_id, sorted(changed))

    async def hide_internal_columns(self, ls_id: int, kind: Kind) -> None:
        """Hide :data:`INTERNAL_COLUMNS` in every Data Manager tab of the project (a new tab
        when it has none). Cosmetic: a refusal is logged and tried again with the next batch."""
        try:
            views = await self._client.list_views(ls_id)
            tabs = [(view, _hidden_of(view)) for view in views]
            columns: list[dict[str, Any]] = []
            if not tabs or any(hidden is None for _, hidden in tabs):
                columns = await self._client.columns(ls_id)
            if not tabs:
                data = {"title": "Tasks", "hiddenColumns": hidden_columns(None, columns, kind)}
                await self._client.create_view(ls_id, data)
                log.info("Label Studio project %d: tab created, internal columns hidden", ls_id)
            for view, hidden in tabs:
                wanted = hidden_columns(hidden, columns, kind)
                if wanted == hidden:
                    continue
                data = {k: v for k, v in view["data"].items() if k not in _SERVER_KEYS}
                await self._client.update_view(
                    int(view["id"]), ls_id, {**data, "hiddenColumns": wanted}
                )
                log.info(
                    "Label Studio project %d: internal columns hidden in tab %s", ls_id, view["id"]
                )
        except LabelStudioError as exc:
            log.warning("Label Studio project %d: internal columns not hidden (%s)", ls_id, exc)

    async def upkeep(self) -> None:
        """Before each reconciliation pass: webhooks re-registered or re-enabled, and the Local
        Files storages Label Studio refused tried again (it may have been set up since)."""
        await self.ensure_webhooks()
        for ls_id in sorted(self._storage_refused):
            await self._try_storage(ls_id)

    async def _try_storage(self, ls_id: int) -> None:
        """Like a refused webhook, a refused storage must not hold the batch back: annotations
        still flow, people only cannot play the media. Said once (an error for the first
        project, a warning for each later one), then tried again quietly."""
        assert self._media is not None
        try:
            await self._ensure_storage(ls_id)
        except LabelStudioUnavailable:
            raise
        except LabelStudioError as exc:
            if ls_id in self._storage_refused:
                log.debug("Label Studio project %d: Local Files storage refused (%s)", ls_id, exc)
                return
            if self._storage_refused:
                log.warning(
                    "Label Studio refused the Local Files storage for project %d too (%s)",
                    ls_id,
                    exc,
                )
            else:
                log.error(
                    "Label Studio refused the Local Files storage %s for project %d (%s): people"
                    " cannot play its media until Label Studio runs with"
                    " LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT=%s, and"
                    " that directory holds the media on its machine (or the bridge's"
                    " LABELLOOP_BRIDGE_LABEL_STUDIO_MEDIA_DIR / _DOCUMENT_ROOT say where they"
                    " are); annotations still flow, and the bridge tries again",
                    self._media.storage_path,
                    ls_id,
                    exc,
                    self._media.document_root,
                )
            self._storage_refused.add(ls_id)
            return
        if ls_id in self._storage_refused:
            self._storage_refused.discard(ls_id)
            log.info("Label Studio project %d: Local Files storage accepted at last", ls_id)

    async def _ensure_storage(self, ls_id: int) -> None:
        """One Local Files storage on the media directory: any storage with that path (Label
        Studio normalizes it) grants the permission, so one found is kept as it is."""
        assert self._media is not None
        path = self._media.storage_path
        for storage in await self._client.list_local_storages(ls_id):
            if posixpath.normpath(str(storage.get("path") or "")) == path:
                return
        await self._client.create_local_storage(
            ls_id,
            {
                "path": path,
                "title": "labelloop media",
                "description": "Lets Label Studio serve the media files of labelloop's tasks to"
                " the people who label them. Nothing is imported from it: do not sync.",
                "use_blob_urls": False,
                "synchronizable": False,
            },
        )
        log.info("Label Studio project %d: Local Files storage on %s added", ls_id, path)

    async def ensure_webhooks(self) -> None:
        """Re-register or re-enable webhooks (Label Studio disables one after repeated failures)."""
        if self._webhook is None:
            return
        for ref in await self._state.ls_projects():
            await self._try_webhook(ref.ls_project_id)

    async def _try_webhook(self, ls_id: int) -> None:
        """A webhook Label Studio refuses (a URL it finds invalid, say) must not hold the batch
        back: annotations still arrive by reconciliation, only later. Said loudly, every pass."""
        try:
            await self._ensure_webhook(ls_id)
        except LabelStudioUnavailable:
            raise
        except LabelStudioError as exc:
            url = self._webhook.url if self._webhook else None
            log.error(
                "Label Studio refused the webhook %s for project %d (%s): annotations arrive by"
                " reconciliation only until the bridge's webhook_url is one it accepts",
                url,
                ls_id,
                exc,
            )

    async def _ensure_webhook(self, ls_id: int) -> None:
        if self._webhook is None:
            return
        wanted = self._webhook.fields(ls_id)
        for hook in await self._client.list_webhooks(ls_id):
            if hook.get("url") == self._webhook.url:
                stale = {k for k, v in wanted.items() if not _same(hook.get(k), v)}
                if stale:
                    await self._client.update_webhook(int(hook["id"]), wanted)
                    log.info("webhook of Label Studio project %d updated: %s", ls_id, sorted(stale))
                return
        await self._client.create_webhook(wanted)
        log.info("registered webhook %s for Label Studio project %d", self._webhook.url, ls_id)
