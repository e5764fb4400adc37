"""Who annotated: Label Studio users mapped to labelloop annotator ids and roles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from labelloop.project import AnnotatorSpec

__all__ = ["AnnotatorInfo", "resolve_annotator"]

Role = Literal["annotator", "expert"]


@dataclass(frozen=True, slots=True)
class AnnotatorInfo:
    annotator_id: str
    role: Role
    ls_user_id: int | None = None


def resolve_annotator(
    ls_user_id: int,
    email: str | None,
    username: str | None,
    specs: Sequence[AnnotatorSpec],
) -> AnnotatorInfo:
    """The annotator a Label Studio user is.

    A project's ``annotators:`` entry matches by email (case-insensitive) or by its id equal to the
    user's email or username; it supplies the id and the role. Anyone else is an ``annotator``
    known by their email (or username, or ``ls-user-<id>`` when Label Studio has neither).
    """
    keys = {k.lower() for k in (email, username) if k}
    for spec in specs:
        if (spec.email and spec.email.lower() in keys) or spec.id.lower() in keys:
            return AnnotatorInfo(spec.id, spec.role, ls_user_id)
    fallback = email or username or f"ls-user-{ls_user_id}"
    return AnnotatorInfo(fallback, "annotator", ls_user_id)
