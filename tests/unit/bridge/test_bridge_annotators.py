"""Label Studio users as annotators: configured ids and roles, pseudonyms for everyone else."""

from __future__ import annotations

from labelloop.project import AnnotatorSpec
from labelloop_bridge.domain.annotators import resolve_annotator

SPECS = [
    AnnotatorSpec(id="dr-x", role="expert", email="X@Example.com"),
    AnnotatorSpec(id="bob", role="annotator"),
]


def test_a_named_person_gets_the_configured_id_and_role() -> None:
    assert resolve_annotator(7, "x@example.com", "xx", SPECS).annotator_id == "dr-x"
    assert resolve_annotator(7, "x@example.com", "xx", SPECS).role == "expert"
    assert resolve_annotator(8, "bob@corp.example", "bob", SPECS).annotator_id == "bob"


def test_anyone_else_is_a_pseudonymous_annotator_never_an_email() -> None:
    who = resolve_annotator(9, "carol@example.com", "carol", SPECS)
    assert (who.annotator_id, who.role, who.ls_user_id) == ("ls-user-9", "annotator", 9)
    assert resolve_annotator(10, None, None, []).annotator_id == "ls-user-10"
