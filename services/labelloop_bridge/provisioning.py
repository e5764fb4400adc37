"""Label Studio projects for labelloop projects: one for labeling, one for expert review.

Idempotent: the Label Studio project id is kept in KV; when KV has none (a fresh bucket, a lost
volume) the project is found again by the marker in its description, and only then created. Two
replicas racing to create keep the one stored first and delete their own. The labeling config,
the instructions (from the guidelines) and the overlap are brought up to date on every change of
the project configuration; ``maximum_annotations`` is set by an update after creation because
some versions ignore it on create (label-studio-sdk issue #339).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

from labelloop.project import ProjectConfig

from .domain.label_config import build_label_config, guidelines_html
from .labelstudio import LabelStudioClient, LabelStudioError, LabelStudioUnavailable
from .store import BridgeState

__all__ = ["ProjectProvisioner", "WebhookSpec", "project_fields"]

log = logging.getLogger("labelloop.bridge.provisioning")

Kind = Literal["labeling", "review"]
WEBHOOK_ACTIONS = (
    "ANNOTATION_CREATED",
    "ANNOTATIONS_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
)
_TITLE_MAX = 50  # Label Studio's column width


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, list):  # Label Studio returns webhook actions in its own order
        return sorted(current or []) == sorted(wanted)
    return bool(current == wanted)


def _marker(namespace: str, project: str, kind: Kind) -> str:
    return f"[labelloop:{namespace}/{project}/{kind}]"


def project_fields(config: ProjectConfig, kind: Kind, namespace: str) -> dict[str, Any]:
    """The Label Studio project fields for a labelloop project (labeling or review)."""
    title = config.title or config.name
    suffix = " (expert review)" if kind == "review" else ""
    title = title[: _TITLE_MAX - len(suffix)] + suffix
    if len(title) < 3:  # Label Studio wants at least 3 characters
        title = f"{title}___"[:3]
    overlap = 1 if kind == "review" else config.quality.annotators_per_overlapped_item
    what = "Expert review of" if kind == "review" else "Labeling of"
    return {
        "title": title,
        "description": f"{what} labelloop project {config.name}. "
        + _marker(namespace, config.name, kind),
        "label_config": build_label_config(config),
        "expert_instruction": guidelines_html(config.guidelines_text),
        "show_instruction": bool(config.guidelines_text),
        "show_skip_button": True,
        "maximum_annotations": overlap,
    }


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
    ) -> None:
        self._client = client
        self._state = state
        self._namespace = namespace
        self._webhook = webhook
        self._synced: dict[tuple[str, Kind], str] = {}
        """(project, kind) -> fingerprint of the fields last written, to skip needless updates."""

    async def ensure(self, config: ProjectConfig, kind: Kind) -> int:
        """The Label Studio project id for (project, kind), created or updated as needed."""
        fields = project_fields(config, kind, self._namespace)
        fingerprint = hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()
        ls_id = await self._state.ls_project(config.name, kind)
        if ls_id is not None and self._synced.get((config.name, kind)) == fingerprint:
            return ls_id
        existing = await self._client.get_project(ls_id) if ls_id is not None else None
        if existing is None:
            existing = await self._find(config.name, kind)
            if existing is not None:
                ls_id = int(existing["id"])
                await self._state.replace_ls_project(config.name, kind, ls_id)
        if existing is None:
            ls_id = await self._create(config, kind, fields)
        else:
            assert ls_id is not None
            await self._update(ls_id, existing, fields)
        assert ls_id is not None
        await self._try_webhook(ls_id)
        self._synced[(config.name, kind)] = fingerprint
        return ls_id

    async def _find(self, project: str, kind: Kind) -> dict[str, Any] | None:
        marker = _marker(self._namespace, project, kind)
        for candidate in await self._client.list_projects():
            if marker in (candidate.get("description") or ""):
                return candidate
        return None

    async def _create(self, config: ProjectConfig, kind: Kind, fields: dict[str, Any]) -> int:
        created = await self._client.create_project(fields)
        ls_id = int(created["id"])
        await self._client.update_project(
            ls_id, {"maximum_annotations": fields["maximum_annotations"]}
        )
        winner = await self._state.claim_ls_project(config.name, kind, ls_id)
        if winner != ls_id:
            log.warning("another replica created the Label Studio project first; using it")
            await self._client.delete_project(ls_id)
            return winner
        log.info("created Label Studio project %d for %s (%s)", ls_id, config.name, kind)
        return ls_id

    async def _update(self, ls_id: int, existing: dict[str, Any], fields: dict[str, Any]) -> None:
        changed = {k: v for k, v in fields.items() if existing.get(k) != v}
        if changed:
            await self._client.update_project(ls_id, changed)
            log.info("updated Label Studio project %d: %s", ls_id, sorted(changed))

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
