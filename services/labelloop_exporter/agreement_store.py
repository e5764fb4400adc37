"""Per-batch agreement from QA reports, kept for the manifest's mean agreement."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from labelloop.events import QAReport, deterministic_id
from labelloop.stores import KeyValue
from labelloop_exporter.domain.manifest import BatchAgreement

__all__ = ["AgreementBook"]


class AgreementBook:
    def __init__(self, state: Callable[[], KeyValue]) -> None:
        self._state = state

    @staticmethod
    def key(project: str, batch_id: str) -> str:
        return f"exporter.{project}.qa.{deterministic_id('batch', batch_id)}"

    async def record(self, report: QAReport) -> None:
        """The latest report of a batch wins (QA may report a batch again after review)."""
        value = {
            "percent_agreement": report.percent_agreement,
            "krippendorff_alpha": report.krippendorff_alpha,
            "n_items": report.n_items,
        }
        await self._state().put(
            self.key(report.project, report.batch_id), json.dumps(value).encode()
        )

    async def load(self, project: str, batches: Iterable[str]) -> dict[str, BatchAgreement]:
        out: dict[str, BatchAgreement] = {}
        for batch in sorted(set(batches)):
            entry = await self._state().get(self.key(project, batch))
            if entry is None:
                continue
            raw = json.loads(entry.value)
            out[batch] = BatchAgreement(
                percent_agreement=raw.get("percent_agreement"),
                krippendorff_alpha=raw.get("krippendorff_alpha"),
                n_items=int(raw.get("n_items", 0)),
            )
        return out
