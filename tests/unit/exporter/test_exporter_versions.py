"""Version ids are monotonic, readable and sortable."""

from __future__ import annotations

import pytest

from labelloop_exporter.domain.versions import (
    format_version,
    latest_version,
    next_version,
    parse_version,
)


def test_next_version_follows_the_largest() -> None:
    assert next_version([]) == "v0001"
    assert next_version(["v0001", "v0003", ".tmp-v0004-xyz", "notes"]) == "v0004"
    assert latest_version(["v0002", "v0010"]) == "v0010"
    assert latest_version(["x"]) is None


def test_parse_and_format_round_trip() -> None:
    assert parse_version(format_version(12)) == 12
    assert format_version(12345) == "v12345"
    assert parse_version("v12") is None
    with pytest.raises(ValueError, match="start at 1"):
        format_version(0)
