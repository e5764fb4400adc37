"""Agreement and consensus for region tasks: NER spans and bounding boxes, by matching.

Two annotators' regions on one item are matched one-to-one: spans when start, end and label are
equal (exact-match F1, the usual NER agreement), boxes greedily by IoU >= ``iou_threshold`` with the
same label. Item agreement is the mean pairwise F1 over annotator pairs (two empty sets agree: 1).
Consensus keeps the regions a strict majority of the item's annotators drew (boxes: coordinates
averaged over the matched group); its confidence is the mean support of the kept regions, or the
share of annotators who drew nothing when nothing is kept. A single annotation is taken as it is.

Region data come in Label Studio's shape, flat or under ``value``: ``start``/``end`` (spans) or
``x``/``y``/``width``/``height`` (boxes, percent of the image), and ``labels``,
``rectanglelabels`` or ``label``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, TypeGuard

import numpy as np

__all__ = ["Region", "consensus_regions", "item_agreement", "pair_f1", "parse_regions"]


@dataclass(frozen=True)
class Region:
    label: str
    span: tuple[float, ...]
    """``(start, end)`` for spans, ``(x, y, width, height)`` for boxes."""
    image_size: tuple[float, float] | None = field(default=None, compare=False)
    """A box's image in pixels (Label Studio's ``original_width``, ``original_height``), when
    the annotation said: kept on the consensus box, since COCO's pixel boxes need it."""

    @property
    def is_box(self) -> bool:
        return len(self.span) == 4

    def to_json(self) -> dict[str, Any]:
        if self.is_box:
            x, y, w, h = self.span
            box: dict[str, Any] = {"x": x, "y": y, "width": w, "height": h, "label": self.label}
            if self.image_size is not None:
                box["original_width"], box["original_height"] = self.image_size
            return box
        start, end = self.span
        return {"start": int(start), "end": int(end), "label": self.label}


def parse_regions(value: Sequence[Mapping[str, Any]]) -> list[Region]:
    """Regions from a label value (list of dicts); raises ``ValueError`` on a malformed one."""
    out = []
    for raw in value:
        v = raw.get("value", raw)
        if not isinstance(v, Mapping):
            raise ValueError("a region must be an object")
        names = v.get("labels") or v.get("rectanglelabels") or v.get("label")
        label = names[0] if isinstance(names, list) and names else names
        if not isinstance(label, str):
            raise ValueError("a region needs a label")
        if "start" in v and "end" in v:
            out.append(Region(label, (float(v["start"]), float(v["end"]))))
        elif all(key in v for key in ("x", "y", "width", "height")):
            box = (float(v["x"]), float(v["y"]), float(v["width"]), float(v["height"]))
            out.append(Region(label, box, _image_size(raw, v)))
        else:
            raise ValueError("a region needs start/end or x/y/width/height")
    return out


def _image_size(raw: Mapping[str, Any], value: Mapping[str, Any]) -> tuple[float, float] | None:
    """``original_width``/``original_height`` beside the value (Label Studio) or in it (flat)."""
    for where in (raw, value):
        width, height = where.get("original_width"), where.get("original_height")
        if _pixels(width) and _pixels(height):
            return float(width), float(height)
    return None


def _pixels(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _matches(a: Region, b: Region, iou_threshold: float) -> bool:
    if a.label != b.label or a.is_box != b.is_box:
        return False
    if a.is_box:
        return _iou(a.span, b.span) >= iou_threshold
    return a.span == b.span


def _match_count(a: list[Region], b: list[Region], iou_threshold: float) -> int:
    used: set[int] = set()
    hits = 0
    for ra in a:
        best, best_j = -1.0, -1
        for j, rb in enumerate(b):
            if j in used or not _matches(ra, rb, iou_threshold):
                continue
            score = _iou(ra.span, rb.span) if ra.is_box else 1.0
            if score > best:
                best, best_j = score, j
        if best_j >= 0:
            used.add(best_j)
            hits += 1
    return hits


def pair_f1(a: list[Region], b: list[Region], iou_threshold: float = 0.5) -> float:
    """F1 of one annotator's regions against another's (symmetric; both empty: 1)."""
    if not a and not b:
        return 1.0
    return 2.0 * _match_count(a, b, iou_threshold) / (len(a) + len(b))


def item_agreement(annotations: list[list[Region]], iou_threshold: float = 0.5) -> float | None:
    """Mean pairwise F1 among one item's annotations; ``None`` with fewer than two."""
    if len(annotations) < 2:
        return None
    values = [pair_f1(a, b, iou_threshold) for a, b in combinations(annotations, 2)]
    return float(np.mean(values))


def consensus_regions(
    annotations: list[list[Region]], iou_threshold: float = 0.5
) -> tuple[list[Region], float]:
    """Majority regions of one item and the consensus confidence (see module notes)."""
    n = len(annotations)
    if n == 0:
        return [], 0.0
    if n == 1:
        return list(annotations[0]), 1.0
    taken: set[tuple[int, int]] = set()
    kept: list[tuple[Region, float]] = []
    candidates = [(i, k, r) for i, regs in enumerate(annotations) for k, r in enumerate(regs)]
    for i, k0, cand in candidates:
        if (i, k0) in taken:
            continue
        group: list[tuple[int, int, Region]] = []
        for j, regions in enumerate(annotations):
            for k, other in enumerate(regions):
                if (j, k) not in taken and _matches(cand, other, iou_threshold):
                    group.append((j, k, other))
                    break
        support = len({j for j, _, _ in group})
        if 2 * support > n:
            for j, k, _ in group:
                taken.add((j, k))
            if cand.is_box:
                mean = tuple(float(x) for x in np.mean([g.span for _, _, g in group], axis=0))
                size = next((g.image_size for _, _, g in group if g.image_size), None)
                kept.append((Region(cand.label, mean, size), support / n))
            else:
                kept.append((cand, support / n))
    if kept:
        return [r for r, _ in kept], float(np.mean([s for _, s in kept]))
    # nothing has majority support: agreement on "no region" is the only confidence left
    empty = sum(1 for regions in annotations if not regions)
    return [], empty / n
