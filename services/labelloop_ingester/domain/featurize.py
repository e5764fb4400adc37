"""Feature vectors for sampling: producer vectors win, else hashed text or downscaled pixels.

Every featuriser here is stateless and deterministic (no fitting on the data), so replicas that
ingest different chunks put their items in the same space:

* text: word uni- and bi-grams hashed (``HashingVectorizer``) then a fixed sparse random
  projection (seeded, depends only on the dimensions) to ``text_dim`` dimensions, L2-normalised;
* images: the picture in grayscale, downscaled to ``image_side`` squared pixels, in [0, 1];
* anything else (audio, video, URLs the service cannot read): no vector; the sampler gives such
  items the pool's mean vector.

Items sharing a space form one ``FeatureBlock`` (a rectangular matrix).
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelloop.events import ItemIn
from labelloop.project import DataKind, ProjectConfig

__all__ = [
    "FeatureBlock",
    "ImageLoader",
    "decode_data_uri",
    "featurize",
    "image_vector",
    "text_vectors",
]

_HASH_FEATURES = 2**18

ImageLoader = Callable[[str], bytes | None]
"""Returns the bytes behind an image reference (data URI, path), or None when it cannot."""


@dataclass(frozen=True, slots=True)
class FeatureBlock:
    space: str
    """``producer-<dim>``, ``text-hash-<dim>`` or ``image-px-<side>``."""
    rows: list[int]
    """Positions of the items (in the input sequence) whose vectors these are."""
    X: NDArray[np.float32]


def featurize(
    items: Sequence[ItemIn],
    project: ProjectConfig,
    *,
    load_image: ImageLoader | None = None,
    text_dim: int = 64,
    image_side: int = 16,
) -> list[FeatureBlock]:
    """Feature blocks for ``items`` (items with no possible vector appear in none)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if item.features is not None:
            groups.setdefault(f"producer-{len(item.features)}", []).append(i)
    blocks = [
        FeatureBlock(
            space,
            rows,
            np.asarray([items[i].features for i in rows], dtype=np.float32),
        )
        for space, rows in groups.items()
    ]
    rest = [i for i, item in enumerate(items) if item.features is None]
    field = project.primary_field
    if field.kind is DataKind.TEXT and rest:
        texts = [str(items[i].data.get(field.name, "")) for i in rest]
        blocks.append(FeatureBlock(f"text-hash-{text_dim}", rest, text_vectors(texts, text_dim)))
    elif field.kind is DataKind.IMAGE and rest:
        loader = load_image or decode_data_uri
        rows, vectors = [], []
        for i in rest:
            ref = items[i].data.get(field.name)
            raw = loader(ref) if isinstance(ref, str) else None
            vec = image_vector(raw, image_side) if raw is not None else None
            if vec is not None:
                rows.append(i)
                vectors.append(vec)
        if rows:
            blocks.append(FeatureBlock(f"image-px-{image_side}", rows, np.stack(vectors)))
    return blocks


def text_vectors(texts: Sequence[str], dim: int = 64) -> NDArray[np.float32]:
    """Hashed word n-grams projected to ``dim`` dimensions (stateless, same on every replica)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    hashed = HashingVectorizer(
        n_features=_HASH_FEATURES,
        ngram_range=(1, 2),
        alternate_sign=False,
        norm="l2",
        dtype=np.float32,
    ).transform(texts)
    X: NDArray[np.float32] = np.asarray(_projection(dim).transform(hashed), dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    out: NDArray[np.float32] = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return out


@lru_cache(maxsize=4)
def _projection(dim: int) -> Any:
    """A sparse random projection whose matrix depends only on the dimensions and the seed."""
    from scipy import sparse
    from sklearn.random_projection import SparseRandomProjection

    projector = SparseRandomProjection(n_components=dim, dense_output=True, random_state=0)
    return projector.fit(sparse.csr_matrix((1, _HASH_FEATURES), dtype=np.float32))


def decode_data_uri(ref: str) -> bytes | None:
    """The bytes of a ``data:...;base64,`` URI, or None for anything else."""
    if not ref.startswith("data:"):
        return None
    head, sep, payload = ref.partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


def image_vector(raw: bytes, side: int = 16) -> NDArray[np.float32] | None:
    """Grayscale pixels of a ``side`` x ``side`` thumbnail in [0, 1], or None if not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            small = img.convert("L").resize((side, side), Image.Resampling.BILINEAR)
            return (np.asarray(small, dtype=np.float32) / 255.0).ravel()
    except (UnidentifiedImageError, OSError, ValueError):
        return None
