"""Item identity: a stable id from the canonical JSON of the item's data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from functools import cache
from json import encoder as _json_encoder
from typing import Any

from pydantic import JsonValue

__all__ = ["canonical_json", "item_id", "item_id_of"]


def canonical_json(value: Mapping[str, JsonValue] | JsonValue) -> bytes:
    """Key-sorted, whitespace-free UTF-8 JSON: equal data gives equal bytes.

    ``ValueError`` for NaN or infinity, which JSON cannot say."""
    return "".join(_encoder()(value, 0)).encode()


@cache
def _encoder() -> Callable[[Any, int], Any]:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False)``, its C encoder built once: ``json.dumps`` builds an encoder per call,
    which costs as much as encoding a short item. Plain Python's where there is no C one."""
    make = getattr(_json_encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        plain = json.JSONEncoder(
            sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return lambda value, _: plain.iterencode(value)
    encoder: Callable[[Any, int], Any] = make(
        None, _unserializable, _json_encoder.encode_basestring, None, ":", ",", True, False, False
    )
    return encoder


def _unserializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def item_id(data: Mapping[str, JsonValue]) -> str:
    """The item id: 32 hex characters of the SHA-256 of the canonical data.

    Metadata, labels and predictions do not count: the same text or image is the same item.
    """
    return item_id_of(canonical_json(data))


def item_id_of(canonical_data: bytes) -> str:
    """:func:`item_id` from the data's canonical JSON, when it is at hand already."""
    return hashlib.sha256(canonical_data).hexdigest()[:32]
