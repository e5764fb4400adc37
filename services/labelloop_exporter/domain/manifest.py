"""The manifest of a dataset version: what it holds, where it came from, and how to check it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from labelloop_exporter.domain.labels import label_classes
from labelloop_exporter.domain.splits import GOLD_SPLIT, SPLIT_ORDER, stratification_deviation

__all__ = [
    "IMBALANCE_RATIO",
    "BatchAgreement",
    "build_manifest",
    "class_counts",
    "distribution",
    "manifest_bytes",
    "sha256",
]

IMBALANCE_RATIO = 2.0
"""A class is flagged when its observed share is off its expected share by more than this factor
(under half or over double). Without an expected distribution, a class is flagged when its share is
under a uniform share divided by ``UNEXPECTED_IMBALANCE`` (a missing or very rare class)."""
UNEXPECTED_IMBALANCE = 5.0


@dataclass(frozen=True, slots=True)
class BatchAgreement:
    """Inter-annotator agreement of one batch, as QA reported it."""

    percent_agreement: float | None
    krippendorff_alpha: float | None
    n_items: int


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def class_counts(rows: pd.DataFrame, classes: Sequence[str]) -> dict[str, int]:
    """Occurrences per class (every class listed, zeros included; regions count one each)."""
    counts = dict.fromkeys(classes, 0)
    for value in rows["label"]:
        for name in label_classes(value):
            counts[name] = counts.get(name, 0) + 1
    return counts


def distribution(
    counts: Mapping[str, int], expected: Mapping[str, float] | None
) -> tuple[dict[str, dict[str, float | None]], list[str]]:
    """Observed share of every class beside its expected share, and the classes out of line."""
    total = sum(counts.values())
    report: dict[str, dict[str, float | None]] = {}
    flagged: list[str] = []
    for name, n in counts.items():
        observed = n / total if total else 0.0
        share = None if expected is None else float(expected.get(name, 0.0))
        report[name] = {"observed": round(observed, 6), "expected": share}
        if share is not None and total:
            too_low = share > 0 and observed < share / IMBALANCE_RATIO
            too_high = observed > share * IMBALANCE_RATIO
            if too_low or too_high:
                flagged.append(name)
    if expected is None and total:
        uniform = 1.0 / len(counts)
        flagged = [n for n, c in counts.items() if c / total < uniform / UNEXPECTED_IMBALANCE]
    return report, flagged


def _mean_agreement(
    batches: Sequence[str], agreement: Mapping[str, BatchAgreement]
) -> tuple[float | None, float | None]:
    pct_num = pct_den = alpha_num = alpha_den = 0.0
    for batch in batches:
        a = agreement.get(batch)
        if a is None:
            continue
        if a.percent_agreement is not None:
            pct_num += a.percent_agreement * a.n_items
            pct_den += a.n_items
        if a.krippendorff_alpha is not None:
            alpha_num += a.krippendorff_alpha * a.n_items
            alpha_den += a.n_items
    return (
        round(pct_num / pct_den, 6) if pct_den else None,
        round(alpha_num / alpha_den, 6) if alpha_den else None,
    )


def _split_class_counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {s: {} for s in SPLIT_ORDER}
    for split, value in zip(rows["split"], rows["label"], strict=True):
        for name in label_classes(value):
            out[split][name] = out[split].get(name, 0) + 1
    return {s: dict(sorted(c.items())) for s, c in out.items()}


def build_manifest(
    *,
    project: str,
    version: str,
    parent_version: str | None,
    created_at: datetime,
    task_type: str,
    rows: pd.DataFrame,
    classes: Sequence[str],
    expected_distribution: Mapping[str, float] | None,
    fractions: Mapping[str, float],
    salt: str,
    min_confidence: float,
    low_confidence: str,
    excluded_low_confidence: int,
    weighted_low_confidence: int,
    n_new_rows: int,
    n_changed_rows: int,
    content_sha256: str,
    files: Mapping[str, bytes],
    schema: list[dict[str, str]],
    formats: Sequence[str],
    agreement: Mapping[str, BatchAgreement],
    round_number: int = 1,
    excluded: Sequence[Mapping[str, Any]] = (),
    revisions: Mapping[int, int] | None = None,
    n_removed_rows: int = 0,
) -> dict[str, Any]:
    """Everything a reader needs to trust, reproduce and compare a dataset version."""
    counts = class_counts(rows, classes)
    dist, flagged = distribution(counts, expected_distribution)
    batches = sorted(set(rows["batch_id"]))
    annotators = sorted({a for names in rows["annotators"] for a in names})
    pct, alpha = _mean_agreement(batches, agreement)
    not_gold = rows[~rows["is_gold"]]
    primary = [label_classes(v)[0] if label_classes(v) else "" for v in not_gold["label"]]
    split_sizes = {s: int((rows["split"] == s).sum()) for s in SPLIT_ORDER}
    return {
        "format_version": 1,
        "project": project,
        "version": version,
        "round": round_number,
        "parent_version": parent_version,
        "created_at": created_at.isoformat(),
        "task_type": task_type,
        "classes": list(classes),
        "n_rows": len(rows),
        "n_new_rows": n_new_rows,
        "n_changed_rows": n_changed_rows,
        "n_removed_rows": n_removed_rows,
        "revisions": {str(r): int(k) for r, k in sorted((revisions or {}).items())},
        "content_sha256": content_sha256,
        "class_counts": counts,
        "distribution": dist,
        "imbalance": {
            "flagged": bool(flagged),
            "classes": flagged,
            "rule": (
                f"observed share under expected/{IMBALANCE_RATIO:g} or over "
                f"expected*{IMBALANCE_RATIO:g}"
                if expected_distribution is not None
                else f"observed share under a uniform share/{UNEXPECTED_IMBALANCE:g}"
            ),
        },
        "mean_confidence": round(float(rows["confidence"].mean()), 6) if len(rows) else None,
        "mean_percent_agreement": pct,
        "mean_krippendorff_alpha": alpha,
        "annotators": annotators,
        "source_batches": batches,
        "confidence": {
            "min_confidence": min_confidence,
            "low_confidence": low_confidence,
            "excluded": excluded_low_confidence,
            "weighted": weighted_low_confidence,
        },
        "splits": {
            "method": "sha256(salt, item_id) bucket thresholds; gold items always in test",
            "salt": salt,
            "fractions": dict(fractions),
            "sizes": split_sizes,
            "class_counts": _split_class_counts(rows),
            "gold_split": GOLD_SPLIT,
            "gold_items": int(rows["is_gold"].sum()),
            "stratification_deviation": {
                k: round(v, 6)
                for k, v in stratification_deviation(not_gold["split"], primary, fractions).items()
            },
        },
        "excluded_rows": list(excluded),
        "formats": list(formats),
        "schema": schema,
        "files": {
            name: {"sha256": sha256(data), "bytes": len(data)}
            for name, data in sorted(files.items())
        },
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
