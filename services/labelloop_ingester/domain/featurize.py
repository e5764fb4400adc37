"""Feature vectors for sampling: producer vectors win, else hashed text, pixels or spectra.

Every featuriser here is stateless and deterministic (no fitting on the data), so replicas that
ingest different chunks put their items in the same space:

* text: word uni- and bi-grams hashed (``HashingVectorizer``) then a fixed sparse random
  projection (seeded, depends only on the dimensions) to ``text_dim`` dimensions, L2-normalised;
* images: the picture in grayscale, downscaled to ``image_side`` squared pixels, in [0, 1];
* audio: spectral summary statistics of the waveform (:mod:`.audio`); video: the image
  features of frames spread over the clip, pooled (:mod:`.video`). Both by
  :func:`media_features`, which also names the files that cannot be decoded: such an item is
  rejected (before its id is claimed), not ingested without features;
* anything else (URLs or paths the service cannot read): no vector; the sampler gives such
  items the pool's mean vector.

Items sharing a space form one ``FeatureBlock`` (a rectangular matrix).
"""

# ruff: noqa: N806  (X is scikit-learn's name for a feature matrix)

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelloop.events import ItemIn
from labelloop.project import DataKind, ProjectConfig

from .audio import UnreadableMedia, audio_space, audio_vectors, decode_audio
from .pixels import image_vector
from .video import video_space, video_vector

__all__ = [
    "FeatureBlock",
    "ImageLoader",
    "MediaFeatures",
    "MediaOptions",
    "decode_data_uri",
    "featurize",
    "image_vector",
    "media_features",
    "text_vectors",
    "warm_up",
]

_HASH_FEATURES = 2**18

ImageLoader = Callable[[str], bytes | None]
"""Returns the bytes behind a media reference (an image's, a sound's, a video's: data URI,
path), or None when it cannot."""


@dataclass(frozen=True, slots=True)
class FeatureBlock:
    space: str
    """``producer-<dim>``, ``text-hash-<dim>``, ``image-px-<side>``, ``audio-spectral-<rate>``
    or ``video-px-<side>-x<frames>``."""
    rows: list[int]
    """Positions of the items (in the input sequence) whose vectors these are."""
    X: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """How audio and video items are decoded and summarised."""

    sample_rate: int = 16_000
    """Every sound is resampled to this rate (its features' space depends on it)."""
    audio_max_seconds: float = 30.0
    """Only the start of a longer sound is decoded."""
    video_frames: int = 8
    video_max_seconds: float = 60.0
    image_side: int = 16


@dataclass(frozen=True, slots=True)
class MediaFeatures:
    """What :func:`media_features` found: positions are in its input sequence."""

    block: FeatureBlock | None
    unreadable: dict[int, str]
    """Items whose file could not be decoded, with the reason."""
    unread: list[int]
    """Items whose reference gave no bytes (a URL, a path outside the media root)."""
    kind: DataKind | None
    """The project's media kind (audio or video), None for other projects."""


def media_features(
    items: Sequence[ItemIn],
    project: ProjectConfig,
    load: ImageLoader,
    options: MediaOptions | None = None,
) -> MediaFeatures:
    """Vectors of the audio or video items that carry none, from their files; which files
    cannot be decoded. Items of other projects, or with producer vectors, are left alone."""
    options = options or MediaOptions()
    field = project.primary_field
    kind = field.kind if field.kind in (DataKind.AUDIO, DataKind.VIDEO) else None
    if kind is None:
        return MediaFeatures(None, {}, [], None)
    rows: list[int] = []
    vectors: list[NDArray[np.float32]] = []
    waves: list[NDArray[np.float32]] = []
    unreadable: dict[int, str] = {}
    unread: list[int] = []
    pending = 0  # samples in waves

    def spectra() -> None:
        # a message's sounds a few minutes of them at a time: the spectra of all of them at
        # once would hold about 40 MB per minute of sound
        if waves:
            vectors.extend(audio_vectors(waves, options.sample_rate))
            waves.clear()

    for i, item in enumerate(items):
        if item.features is not None:
            continue
        ref = item.data.get(field.name)
        raw = load(ref) if isinstance(ref, str) else None
        if raw is None:
            unread.append(i)
            continue
        try:
            if kind is DataKind.AUDIO:
                waves.append(decode_audio(raw, options.sample_rate, options.audio_max_seconds))
            else:
                vectors.append(
                    video_vector(
                        raw,
                        side=options.image_side,
                        frames=options.video_frames,
                        max_seconds=options.video_max_seconds,
                    )
                )
        except UnreadableMedia as exc:
            unreadable[i] = str(exc)
            continue
        rows.append(i)
        if waves:
            pending += waves[-1].size
            if pending > _AUDIO_BATCH_SECONDS * options.sample_rate:
                spectra()
                pending = 0
    spectra()
    if not rows:
        return MediaFeatures(None, unreadable, unread, kind)
    space = (
        audio_space(options.sample_rate)
        if kind is DataKind.AUDIO
        else video_space(options.image_side, options.video_frames)
    )
    return MediaFeatures(FeatureBlock(space, rows, np.stack(vectors)), unreadable, unread, kind)


_AUDIO_BATCH_SECONDS = 300


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
    """Hashed word n-grams projected to ``dim`` dimensions (stateless, same on every replica).

    The same vectors as scikit-learn's ``HashingVectorizer(ngram_range=(1, 2),
    alternate_sign=False, norm="l2")`` followed by the projection, computed for the whole
    message at once: the words of every text in one array of word numbers, the word pairs
    (bigrams) as pairs of numbers, each distinct word and pair hashed once (and remembered:
    words recur from message to message), one sparse matrix, one product."""
    from scipy import sparse

    lowered = list(map(str.lower, texts))
    # ASCII text (most text): the ASCII pattern finds the same words a quarter faster
    pattern = _ASCII_TOKEN if all(map(str.isascii, lowered)) else _TOKEN
    docs = list(map(pattern.findall, lowered))
    rows, columns = _vocabulary().columns(docs)
    hashed = sparse.csr_matrix(
        (np.ones(len(columns), dtype=np.float32), (rows, columns)),
        shape=(len(texts), _HASH_FEATURES),
    )
    hashed.sum_duplicates()
    # each row over its L2 norm as scikit-learn's normalize(norm="l2") computes it: squares in
    # float32 summed in float64, the division in float64 rounded to float32 (the counts are
    # whole numbers: every sum is exact, whatever its order)
    row = np.repeat(np.arange(len(texts)), np.diff(hashed.indptr))
    squares = np.square(hashed.data).astype(np.float64)
    lengths = np.sqrt(np.bincount(row, weights=squares, minlength=len(texts)))
    hashed.data = (hashed.data / lengths[row]).astype(np.float32)
    X: NDArray[np.float32] = np.asarray((hashed @ _projection(dim)).toarray(), dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    out: NDArray[np.float32] = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return out


_TOKEN = re.compile(r"\w\w+")
r"""Words of two or more word characters: what scikit-learn's default token pattern
``(?u)\b\w\w+\b`` finds, a quarter faster. The same matches: a greedy run of word characters
ends where a non-word character (a boundary) starts, and the search resumes there, so every
match starts at a boundary too; a lone word character matches neither."""


_ASCII_TOKEN = re.compile(r"\w\w+", re.ASCII)
"""The same on ASCII text, where a word character is ``[a-zA-Z0-9_]`` either way."""


def _hasher() -> Callable[[str], int]:
    """The hashed-space column of an n-gram, as scikit-learn computes it: murmurhash3 (seed 0)
    of its UTF-8, ``abs(h) % n``, with ``abs(-2**31)`` taken as ``2**31 - 1``."""
    from sklearn.utils import murmurhash3_32

    def column(gram: str) -> int:
        h = int(murmurhash3_32(gram, 0))
        if h == -(2**31):
            return (2**31 - 1 - (_HASH_FEATURES - 1)) % _HASH_FEATURES
        return abs(h) % _HASH_FEATURES

    return column


class _Vocabulary:
    """The words and word pairs this process has seen, numbered, with their columns.

    Forgotten all at once when it holds more than ``limit`` words or pairs (some 50 MB);
    one lock around its use: messages are featurised in several threads."""

    def __init__(self, limit: int = 1 << 18) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._column = _hasher()
        self._forget()

    def _forget(self) -> None:
        self._number: dict[str, int] = {}
        self._words: list[str] = []
        self._word_columns: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._pair_columns: dict[int, int] = {}

    def columns(self, docs: list[list[str]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(row, column) of every word and every pair of consecutive words of each document
        (its row), repeats included: the entries of the hashed count matrix."""
        flat = list(chain.from_iterable(docs))
        row = np.repeat(np.arange(len(docs)), np.fromiter(map(len, docs), np.int64, len(docs)))
        with self._lock:
            new = set(flat).difference(self._number)
            if len(self._words) + len(new) > self._limit or len(self._pair_columns) > self._limit:
                self._forget()
                new = set(flat)
            if new:
                start = len(self._words)
                self._words += new
                self._number.update(
                    zip(self._words[start:], range(start, len(self._words)), strict=True)
                )
                added = np.fromiter(map(self._column, self._words[start:]), np.int64, len(new))
                self._word_columns = np.concatenate([self._word_columns, added])
            word = np.fromiter(map(self._number.__getitem__, flat), np.int64, len(flat))
            # a pair is two consecutive words of one document; numbered first * 2**32 + second
            same = row[:-1] == row[1:]
            pairs, where = np.unique((word[:-1][same] << 32) | word[1:][same], return_inverse=True)
            keys: list[int] = pairs.tolist()
            known = self._pair_columns
            pair_columns = [known.get(k) for k in keys]
            if None in pair_columns:
                words, column = self._words, self._column
                for i, k in enumerate(keys):
                    if pair_columns[i] is None:
                        known[k] = pair_columns[i] = column(f"{words[k >> 32]} {words[k & _LOW]}")
            word_columns = self._word_columns[word]
        columns = np.concatenate([word_columns, np.asarray(pair_columns, np.int64)[where]])
        return np.concatenate([row, row[:-1][same]]), columns


_LOW = (1 << 32) - 1


@lru_cache(maxsize=1)
def _vocabulary() -> _Vocabulary:
    return _Vocabulary()


@lru_cache(maxsize=4)
def _projection(dim: int) -> Any:
    """The matrix of a sparse random projection to ``dim`` dimensions (hashed features x
    ``dim``, CSR), which depends only on the dimensions and the seed: scikit-learn's
    ``SparseRandomProjection(random_state=0)``, its product taken directly."""
    from scipy import sparse
    from sklearn.random_projection import SparseRandomProjection

    projector = SparseRandomProjection(n_components=dim, dense_output=True, random_state=0)
    projector.fit(sparse.csr_matrix((1, _HASH_FEATURES), dtype=np.float32))
    return projector.components_.T.tocsr()


def warm_up(text_dim: int = 64) -> None:
    """Load what featurising needs (scikit-learn, SciPy, Pillow, the projection matrix) now,
    rather than in the first message's handler. Not librosa (seconds of numba), which only
    audio needs: the first audio item loads it."""
    import PIL.Image  # noqa: F401

    text_vectors(["warm up"], text_dim)


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
