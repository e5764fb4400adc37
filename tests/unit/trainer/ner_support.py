"""A small NER corpus made from templates, for the trainer's NER tests: texts and their spans."""

from __future__ import annotations

from typing import Any

import numpy as np

TYPES = ["person", "place"]
PEOPLE = ["Alice", "Bob Smith", "Carla", "Dmitri Ivanov", "Emma Stone", "Farid", "Grace Hopper"]
PLACES = ["Paris", "New York", "Lagos", "Rio de Janeiro", "Oslo", "Kyoto", "Cape Town"]
TEMPLATES = [
    "{person} flew to {place} today",
    "I met {person} in {place} last week",
    "{place} is sunny , says {person}",
    "nothing much happened here today",
    "we love the weather in {place}",
    "{person} will call you tomorrow",
    "the meeting moved to friday again",
]


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """``n`` texts, each with its entity spans (character offsets, Label Studio's form)."""
    rng = np.random.default_rng(seed)
    texts, spans = [], []
    for _ in range(n):
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        text, found = "", []
        rest = template
        while rest:
            head, brace, tail = rest.partition("{")
            text += head
            if not brace:
                break
            kind, _, rest = tail.partition("}")
            names = PEOPLE if kind == "person" else PLACES
            name = names[int(rng.integers(len(names)))]
            found.append({"start": len(text), "end": len(text) + len(name), "label": kind})
            found[-1]["text"] = name
            text += name
        texts.append(text)
        spans.append(found)
    return texts, spans
