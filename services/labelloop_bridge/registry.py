"""The annotator registry: Label Studio users as labelloop annotators (id and role)."""

from __future__ import annotations

from collections.abc import Sequence

from labelloop.project import AnnotatorSpec

from .domain.annotators import AnnotatorInfo, pseudonym, resolve_annotator
from .labelstudio import LabelStudioClient

__all__ = ["AnnotatorRegistry"]


class AnnotatorRegistry:
    """Caches Label Studio users; an unknown user id is looked up once, then remembered.

    Emails and usernames stay in this process's memory, only to match the project's
    ``annotators:`` list; what leaves it is the resolved (pseudonymous or configured) id.
    """

    def __init__(self, client: LabelStudioClient | None) -> None:
        self._client = client
        self._users: dict[int, tuple[str | None, str | None]] = {}

    async def refresh(self) -> None:
        if self._client is None:
            return
        for user in await self._client.list_users():
            self._users[int(user["id"])] = (user.get("email") or None, user.get("username") or None)

    async def resolve(
        self, ls_user_id: int | None, specs: Sequence[AnnotatorSpec]
    ) -> AnnotatorInfo:
        if ls_user_id is None:
            return AnnotatorInfo(pseudonym(None), "annotator")
        if not specs:  # nobody to match: no need to know who the user is
            return AnnotatorInfo(pseudonym(ls_user_id), "annotator", ls_user_id)
        if ls_user_id not in self._users and self._client is not None:
            user = await self._client.get_user(ls_user_id)
            if user is not None:
                self._users[ls_user_id] = (user.get("email") or None, user.get("username") or None)
        email, username = self._users.get(ls_user_id, (None, None))
        return resolve_annotator(ls_user_id, email, username, specs)

    async def annotators(self, specs: Sequence[AnnotatorSpec]) -> list[AnnotatorInfo]:
        """Everyone who can annotate: Label Studio's users, with roles from the project config."""
        await self.refresh()
        known = [resolve_annotator(uid, e, u, specs) for uid, (e, u) in sorted(self._users.items())]
        seen = {a.annotator_id for a in known}
        known.extend(AnnotatorInfo(s.id, s.role) for s in specs if s.id not in seen)
        return known
