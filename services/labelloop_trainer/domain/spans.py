"""Entity spans <-> BIO tags over tokens: what a sequence model learns from and answers with.

A document's entities arrive as Label Studio's span regions, ``{"start", "end", "label"}`` in
character offsets of the text (``end`` exclusive, like Python's slices, as Label Studio's
``labels`` results give them). A sequence model sees tokens instead: words, runs of digits and
single punctuation marks, with their character offsets (:func:`tokenize`).

Spans to tags (:func:`spans_to_bio`), the rules a person's selection meets:

* a token belongs to a span when they share a character: a selection that starts or ends inside
  a word (``"Pari"`` of ``"Paris"``) takes the whole word, and a span's leading or trailing
  whitespace takes nothing. A span that covers no token (only whitespace) is dropped;
* BIO tags one entity per token, so overlapping spans cannot all be kept: the span that starts
  first wins, the longer of two that start together, and a span that shares a token with a kept
  one is dropped (counted in :attr:`Tagged.dropped`);
* a label the project does not have is left out (tagged ``O``).

Tags to spans (:func:`bio_to_spans`): an entity starts at ``B-x``, or at an ``I-x`` that does
not continue an entity of type ``x`` (conlleval's reading of an ill-formed sequence), and runs
while ``I-x`` follows; the span's offsets are its first token's start and last token's end, its
``text`` the document's characters between them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OUTSIDE",
    "Entity",
    "Tagged",
    "Token",
    "bio_to_entities",
    "bio_to_spans",
    "spans_to_bio",
    "tokenize",
]

OUTSIDE = "O"

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
"""A word (letters, digits, underscore) or one punctuation mark: a URL or ``@name`` becomes
several tokens, and every boundary a person can select at whitespace or punctuation is one."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity in token positions: tokens ``start`` to ``end - 1``, of type ``label``."""

    start: int
    end: int
    label: str


@dataclass(frozen=True, slots=True)
class Tagged:
    tokens: list[Token]
    tags: list[str]
    dropped: int
    """Spans left out: overlapping a kept one, or covering no token."""


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _span_bounds(span: Mapping[str, Any]) -> tuple[int, int, str] | None:
    label = span.get("label")
    if isinstance(label, list):  # Label Studio's own ``labels`` list
        label = label[0] if label else None
    if label is None and isinstance(span.get("labels"), list) and span["labels"]:
        label = span["labels"][0]
    start, end = span.get("start"), span.get("end")
    if not isinstance(label, str) or not isinstance(start, int) or not isinstance(end, int):
        return None
    if isinstance(start, bool) or isinstance(end, bool) or end <= start:
        return None
    return start, end, label


def spans_to_bio(
    text: str, spans: Iterable[Mapping[str, Any]], labels: Sequence[str] | None = None
) -> Tagged:
    """The document's tokens and their BIO tags for ``spans`` (the module docstring's rules);
    ``labels``: the entity types to keep (``None``: all)."""
    tokens = tokenize(text)
    tags = [OUTSIDE] * len(tokens)
    allowed = None if labels is None else set(labels)
    bounds = []
    dropped = 0
    for span in spans:
        b = _span_bounds(span)
        if b is None or (allowed is not None and b[2] not in allowed):
            continue
        bounds.append(b)
    for start, end, label in sorted(bounds, key=lambda b: (b[0], -(b[1] - b[0]), b[2])):
        covered = [k for k, t in enumerate(tokens) if t.start < end and start < t.end]
        if not covered or any(tags[k] != OUTSIDE for k in covered):
            dropped += 1
            continue
        tags[covered[0]] = f"B-{label}"
        for k in covered[1:]:
            tags[k] = f"I-{label}"
    return Tagged(tokens, tags, dropped)


def bio_to_entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of a BIO sequence, in order (the module docstring's reading)."""
    out: list[Entity] = []
    start: int | None = None
    kind = ""
    for k, tag in enumerate([*tags, OUTSIDE]):
        prefix, _, name = tag.partition("-")
        continues = prefix == "I" and start is not None and name == kind
        if start is not None and not continues:
            out.append(Entity(start, k, kind))
            start = None
        if prefix in ("B", "I") and not continues and name:
            start, kind = k, name
    return out


def bio_to_spans(text: str, tokens: Sequence[Token], tags: Sequence[str]) -> list[dict[str, Any]]:
    """BIO tags back as Label Studio span regions over ``text``."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tags)} tags for {len(tokens)} tokens")
    out: list[dict[str, Any]] = []
    for e in bio_to_entities(tags):
        start, end = tokens[e.start].start, tokens[e.end - 1].end
        out.append({"start": start, "end": end, "text": text[start:end], "label": e.label})
    return out
