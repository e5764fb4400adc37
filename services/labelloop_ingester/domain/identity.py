"""Item identity: a stable id from the canonical JSON of the item's data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from pydantic import JsonValue

__all__ = ["canonical_json", "item_id"]


def canonical_json(value: Mapping[str, JsonValue] | JsonValue) -> bytes:
    """Key-sorted, whitespace-free UTF-8 JSON: equal data gives equal bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def item_id(data: Mapping[str, JsonValue]) -> str:
    """The item id: 32 hex characters of the SHA-256 of the canonical data.

    Metadata, labels and predictions do not count: the same text or image is the same item.
    """
    return hashlib.sha256(canonical_json(data)).hexdigest()[:32]
