"""The event routing table is the code's: the README shows it, production permissions follow it."""

from __future__ import annotations

import re
from pathlib import Path

from labelloop.events import DeadLetter
from labelloop.services import service_specs
from labelloop.streams import Namespace
from labelloop_console.permissions import accounts_conf
from labelloop_console.routing import BEGIN, END, OPERATORS, markdown, routes, with_table

ROOT = Path(__file__).resolve().parents[3]


def test_the_readme_shows_the_generated_table() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert with_table(text, markdown()) == text, "README's event table is stale: run `make docs`"


def test_every_event_has_a_publisher_and_commands_have_a_consumer() -> None:
    for route in routes():
        assert route.publishers, f"nobody publishes {route.event.__name__}"
        if route.event in OPERATORS:
            assert route.consumers, f"no service obeys {route.event.__name__}"


def test_production_permissions_allow_each_service_exactly_what_it_publishes() -> None:
    """accounts.conf lets a service's user publish its own events (and dead letters), no more."""
    conf = (ROOT / "infra" / "nats" / "accounts.conf").read_text(encoding="utf-8")
    ns = Namespace()
    dlq = ns.subject(DeadLetter, "*")
    for name, spec in service_specs().items():
        block = re.search(r"user:\s*" + re.escape(name) + r"\s.*?allow:\s*\[(.*?)\]", conf, re.S)
        assert block, f"accounts.conf has no user {name}"
        allowed = set(re.findall(r'"([^"]+)"', block.group(1)))
        events = {s for s in allowed if s.startswith(f"{ns.prefix}.")} - {dlq}
        assert dlq in allowed, name
        assert events == {ns.subject(e, "*") for e in spec.publishes}, name


def test_accounts_conf_is_what_the_code_generates() -> None:
    """The production permissions are derived from the code (`make docs`), never hand-edited."""
    conf = (ROOT / "infra" / "nats" / "accounts.conf").read_text(encoding="utf-8")
    assert conf == accounts_conf(), "infra/nats/accounts.conf is stale: run `make docs`"


def test_with_table_refuses_a_text_without_markers() -> None:
    import pytest

    with pytest.raises(ValueError, match="markers"):
        with_table("no markers here", "| table |")
    assert with_table(f"a\n{BEGIN}\nold\n{END}\nb", "new\n") == f"a\n{BEGIN}\nnew\n{END}\nb"
