"""Label Studio users as annotators: configured ids and roles, pseudonyms for everyone else."""

from __future__ import annotations

import pytest

from labelloop.project import AnnotatorSpec, ProjectConfigError, parse_project
from labelloop_bridge.domain.annotators import resolve_annotator

SPECS = [
    AnnotatorSpec(id="dr-x", role="expert", email="X@Example.com"),
    AnnotatorSpec(id="bob", role="annotator"),
    AnnotatorSpec(id="rita@example.com", role="reviewer"),
]


def test_a_named_person_gets_the_configured_id_and_role() -> None:
    assert resolve_annotator(7, "x@example.com", "xx", SPECS).annotator_id == "dr-x"
    assert resolve_annotator(7, "x@example.com", "xx", SPECS).role == "expert"
    # an id that is an e-mail address is that person's login
    who = resolve_annotator(8, "Rita@example.com", "rita", SPECS)
    assert (who.annotator_id, who.role) == ("rita@example.com", "reviewer")


def test_a_role_is_never_inferred_from_a_username_or_an_email_local_part() -> None:
    # `bob` names no e-mail: the user bob@corp.example (username bob) is not that entry
    who = resolve_annotator(8, "bob@corp.example", "bob", SPECS)
    assert (who.annotator_id, who.role) == ("ls-user-8", "annotator")
    expert = [AnnotatorSpec(id="expert-1", role="expert")]
    assert resolve_annotator(9, "expert-1@example.com", "expert-1", expert).role == "annotator"


def test_anyone_else_is_a_pseudonymous_annotator_never_an_email() -> None:
    who = resolve_annotator(9, "carol@example.com", "carol", SPECS)
    assert (who.annotator_id, who.role, who.ls_user_id) == ("ls-user-9", "annotator", 9)
    assert resolve_annotator(10, None, None, []).annotator_id == "ls-user-10"


def _project(annotators: list[dict[str, str]]) -> dict[str, object]:
    return {
        "name": "p",
        "task_type": "text_classification",
        "labels": {"classes": ["a", "b"]},
        "data_fields": [{"name": "text", "kind": "text"}],
        "annotators": annotators,
    }


def test_an_unknown_role_is_a_clear_validation_error() -> None:
    with pytest.raises(ProjectConfigError) as err:
        parse_project(_project([{"id": "ann@example.com", "role": "admin"}]))
    assert err.value.problems == [
        "annotators.0.role: Value error, unknown role 'admin': one of annotator, expert, reviewer"
    ]


def test_annotator_ids_are_unique() -> None:
    with pytest.raises(ProjectConfigError, match="annotators ids must be unique"):
        parse_project(_project([{"id": "a@example.com"}, {"id": "a@example.com"}]))
