"""Who annotated: Label Studio users mapped to labelloop annotator ids and roles.

Annotator ids travel in events, datasets, QA reports, logs and metrics, so they are pseudonymous:
a Label Studio user is ``ls-user-<id>`` unless the project's ``annotators:`` list names them, in
which case the id configured there is used (the project owner chose it). An email or username
only ever serves to *match* a user to that list; it is never an id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from labelloop.project import AnnotatorSpec

__all__ = ["AnnotatorInfo", "pseudonym", "resolve_annotator"]

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
    known by the pseudonymous ``ls-user-<id>`` (never by their email or username).
    """
    keys = {k.lower() for k in (email, username) if k}
    for spec in specs:
        if (spec.email and spec.email.lower() in keys) or spec.id.lower() in keys:
            return AnnotatorInfo(spec.id, spec.role, ls_user_id)
    return AnnotatorInfo(pseudonym(ls_user_id), "annotator", ls_user_id)


def pseudonym(ls_user_id: int | None) -> str:
    """The annotator id of a Label Studio user the project does not name."""
    return f"ls-user-{ls_user_id}" if ls_user_id is not None else "ls-user-unknown"
