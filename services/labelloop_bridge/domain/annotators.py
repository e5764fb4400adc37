"""Who annotated: Label Studio users mapped to labelloop annotator ids and roles.

Annotator ids travel in events, datasets, QA reports, logs and metrics, so they are pseudonymous:
a Label Studio user is ``ls-user-<id>`` unless the project's ``annotators:`` list names them, in
which case the id configured there is used (the project owner chose it). An e-mail only ever
serves to *match* a user to that list; it is never an id.

Roles are explicit: a person has the role their ``annotators:`` entry gives (``annotator``,
``expert`` or ``reviewer``), matched by the e-mail of their Label Studio account (the entry's
``email``, or an ``id`` that is an e-mail address). Nothing is inferred from a username or from
the part of an e-mail before the ``@``; a user the list does not match is an ``annotator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from labelloop.project import AnnotatorSpec

__all__ = ["AnnotatorInfo", "Role", "pseudonym", "resolve_annotator"]

Role = Literal["annotator", "expert", "reviewer"]


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

    A project's ``annotators:`` entry matches the user whose e-mail is its ``login`` (its
    ``email``, or its ``id`` when that is an e-mail; case-insensitive); it supplies the id and the
    role. Anyone else is an ``annotator`` known by the pseudonymous ``ls-user-<id>``, never by
    their e-mail or username (``username`` is accepted and ignored: it matches nothing).
    """
    del username  # a username (by default the e-mail's local part) never decides a role
    if email:
        for spec in specs:
            if spec.login is not None and spec.login == email.lower():
                return AnnotatorInfo(spec.id, spec.role, ls_user_id)
    return AnnotatorInfo(pseudonym(ls_user_id), "annotator", ls_user_id)


def pseudonym(ls_user_id: int | None) -> str:
    """The annotator id of a Label Studio user the project does not name."""
    return f"ls-user-{ls_user_id}" if ls_user_id is not None else "ls-user-unknown"
