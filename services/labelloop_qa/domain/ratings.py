"""Annotations coded as integer arrays: one row per rating, items/annotators/classes by index.

Every coefficient and every consensus method in this package works on a ``Ratings`` value, so the
cost of mapping ids and label strings to integers is paid once, and everything downstream is
``np.bincount`` and sparse matrix products (no Python loop over annotations).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = ["DENSE_CELLS", "AgreementUndefined", "FloatArray", "IntArray", "Ratings"]

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

DENSE_CELLS = 1 << 20
"""Matrices of up to this many cells (8 MB of float64) are dense, larger ones sparse."""


class AgreementUndefined(ValueError):
    """A coefficient has no value for these data (e.g. one class only: 0/0), with the reason."""


def _codes(values: ArrayLike, order: Sequence[Any] | None) -> tuple[IntArray, NDArray[Any]]:
    arr = np.asarray(values)
    if order is None:
        uniques, codes = np.unique(arr, return_inverse=True)
        return codes.astype(np.int64).ravel(), uniques
    domain = np.asarray(list(order))
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), domain
    if len(set(domain.tolist())) != len(domain):
        raise ValueError("the declared categories contain duplicates")
    sorter = np.argsort(domain, kind="stable")
    pos = np.searchsorted(domain, arr, sorter=sorter)
    pos = np.clip(pos, 0, len(domain) - 1)
    codes = sorter[pos] if len(domain) else np.zeros(len(arr), dtype=np.int64)
    bad = len(domain) == 0 or not np.array_equal(domain[codes], arr)
    if bad:
        unknown = sorted({str(v) for v in arr.tolist()} - {str(v) for v in domain.tolist()})
        raise ValueError(f"labels outside the declared categories: {unknown[:10]}")
    return codes.astype(np.int64), domain


@dataclass(frozen=True, eq=False)
class Ratings:
    """Long-format ratings, integer coded.

    ``item[r]``, ``annotator[r]`` and ``label[r]`` index ``item_ids``, ``annotator_ids`` and
    ``classes``. ``classes`` is the category domain in scale order (for ordinal, interval and
    ratio data it is the order that distances are measured in). A domain may hold categories
    nobody used: they count for Gwet's AC1 and the declared ordinal scale, and nowhere else.
    """

    item: IntArray
    annotator: IntArray
    label: IntArray
    item_ids: NDArray[Any]
    annotator_ids: NDArray[Any]
    classes: NDArray[Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.item)
        if len(self.annotator) != n or len(self.label) != n:
            raise ValueError("item, annotator and label arrays must have the same length")

    @classmethod
    def from_records(
        cls,
        item_ids: ArrayLike,
        annotator_ids: ArrayLike,
        labels: ArrayLike,
        *,
        classes: Sequence[Any] | None = None,
        items: Sequence[Any] | None = None,
        annotators: Sequence[Any] | None = None,
    ) -> Ratings:
        """Code long-format records. ``classes``/``items``/``annotators`` fix the domains."""
        item, item_dom = _codes(item_ids, items)
        ann, ann_dom = _codes(annotator_ids, annotators)
        lab, lab_dom = _codes(labels, classes)
        return cls(item, ann, lab, item_dom, ann_dom, lab_dom)

    @classmethod
    def from_matrix(cls, data: ArrayLike, *, classes: Sequence[Any] | None = None) -> Ratings:
        """From reliability data: rows are annotators, columns items, ``None``/NaN missing."""
        arr = np.asarray(data, dtype=object)
        if arr.ndim != 2:
            raise ValueError("reliability data must be a 2-D annotators x items matrix")
        present = np.array(
            [
                [v is not None and not (isinstance(v, float) and np.isnan(v)) for v in row]
                for row in arr
            ],
            dtype=bool,
        ).reshape(arr.shape)
        rows, cols = np.nonzero(present)
        values = arr[rows, cols]
        if len(values) and all(isinstance(v, (int, float, np.number)) for v in values):
            values = values.astype(np.float64)
        return cls.from_records(
            cols,
            rows,
            values,
            classes=classes,
            items=list(range(arr.shape[1])),
            annotators=list(range(arr.shape[0])),
        )

    # ------------------------------------------------------------------ sizes

    @property
    def n_ratings(self) -> int:
        return len(self.item)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_annotators(self) -> int:
        return len(self.annotator_ids)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    # ------------------------------------------------------------------ derived arrays

    def item_counts(self) -> IntArray:
        """Item x class matrix: how many ratings put item i in class k (dense, int64)."""
        if "counts" not in self._cache:
            flat = np.bincount(
                self.item * self.n_classes + self.label, minlength=self.n_items * self.n_classes
            )
            self._cache["counts"] = flat.reshape(self.n_items, self.n_classes).astype(np.int64)
        counts: IntArray = self._cache["counts"]
        return counts

    def item_totals(self) -> IntArray:
        """Number of ratings of each item."""
        return np.bincount(self.item, minlength=self.n_items).astype(np.int64)

    def response_matrix(self) -> sp.csr_matrix | FloatArray:
        """Item x (annotator, class) counts: column ``a * K + k``.

        Dense up to :data:`DENSE_CELLS` cells (a batch, a project's history: numpy's products
        on a few thousand cells take microseconds, scipy.sparse's bookkeeping a hundred times
        that), sparse beyond. Both support ``@``, ``.sum(axis=...)`` and row indexing."""
        k = self.n_classes
        cols = self.annotator * k + self.label
        shape = (self.n_items, self.n_annotators * k)
        if shape[0] * shape[1] <= DENSE_CELLS:
            flat = np.bincount(self.item * shape[1] + cols, minlength=shape[0] * shape[1])
            return flat.reshape(shape).astype(np.float64)
        data = np.ones(self.n_ratings, dtype=np.float64)
        import scipy.sparse as sp  # only past DENSE_CELLS: 70-100 ms to import

        m = sp.csr_matrix((data, (self.item, cols)), shape=shape)
        m.sum_duplicates()
        return m

    def numeric_classes(self) -> FloatArray:
        """The class domain as numbers (for interval and ratio distances)."""
        try:
            return np.asarray(self.classes, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "interval and ratio levels need numeric labels; use nominal or ordinal"
            ) from None

    def subset(self, mask: NDArray[np.bool_]) -> Ratings:
        """The ratings selected by a boolean mask, domains unchanged."""
        return Ratings(
            self.item[mask],
            self.annotator[mask],
            self.label[mask],
            self.item_ids,
            self.annotator_ids,
            self.classes,
        )
