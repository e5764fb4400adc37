"""Item data is written once: by the ingester, into the catalog; no service keeps its own copy.

Six services in process on a real nats-server run a text campaign of three rounds (sampling,
the simulated crew, QA, export, training). Every item's text is unique. Then every object in the
object store is read, Parquet files decoded, and searched for the texts: only the catalog's
chunks may hold them (a text model's vocabulary holds words of them, not the items; a dataset
version's labels and a round's delta, which the trainer reads, hold labels and ids). The bytes
per ingested item, by owner, are reported in the test's output.
"""

from __future__ import annotations

import io
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats
import pyarrow.parquet as pq
import pytest

from labelloop.artifacts import nats_artifacts
from labelloop.events import ItemIn, ModelTrained, RequestSampling
from labelloop.streams import Namespace
from labelloop.testing import EventCollector, configure_project, publish_events, wait_until
from labelloop_console.commands.ingest import submissions

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PROJECT = "once"
CLASSES = ["pos", "neg"]
N_ITEMS = 240


def _project() -> dict[str, Any]:
    return {
        "name": PROJECT,
        "task_type": "text_classification",
        "labels": {"classes": CLASSES},
        "data_fields": [{"name": "text", "kind": "text"}],
        "quality": {"overlap_fraction": 0.25, "gold_fraction": 0.1, "consensus": "majority"},
        "sampling": {"strategy": "hybrid", "batch_size": 20, "start": "on_command", "seed": 3},
        # a version every 40 labels: rounds between export deltas, and both are searched
        "export": {"formats": ["jsonl", "csv", "parquet"], "every_n_labels": 40},
        "training": {"min_new_labels": 1},
        "budget": {"max_labels": 54},
        "simulation": {
            "seed": 1,
            "annotators": [
                {"id": "ann-a", "behaviour": "good", "accuracy": 0.95},
                {"id": "ann-b", "behaviour": "good", "accuracy": 0.9},
                {"id": "ann-c", "behaviour": "good", "accuracy": 0.9},
            ],
        },
    }


def _text(k: int, token: str) -> str:
    words = "wonderful lovely great" if k % 2 == 0 else "awful dreadful poor"
    return f"review {token}: {words} number {k}"


def _items(tokens: list[str]) -> list[ItemIn]:
    out = []
    for k, token in enumerate(tokens):
        truth = CLASSES[k % 2]
        out.append(
            ItemIn(
                data={"text": _text(k, token)},
                metadata={"simulation_truth": truth},
                known_label=truth if k < 12 else None,
            )
        )
    return out


def _text_of(name: str, raw: bytes) -> str:
    """What an object says, readable: Parquet decoded, anything else as bytes."""
    if name.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(raw))
        return " ".join(str(v) for column in table.columns for v in column.to_pylist())
    return raw.decode("utf-8", errors="replace")


async def test_no_service_keeps_a_copy_of_the_items(
    six_services: Any, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    tokens = [f"tok{uuid.uuid4().hex[:12]}" for _ in range(N_ITEMS)]
    texts = [_text(k, token) for k, token in enumerate(tokens)]
    async with (
        six_services(retry_backoff_seconds=0.05) as _,
        EventCollector(nats_url, namespace, ModelTrained) as models,
    ):
        await configure_project(nats_url, namespace, _project())
        await publish_events(
            nats_url, namespace, *submissions(_items(tokens), PROJECT, source="test")
        )
        # sampling starts once the pool is in the catalog
        ns = Namespace(namespace)
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            blobs = nats_artifacts(js, ns, home=None)

            async def catalogued() -> int:
                return len(await blobs.list(f"catalog/{PROJECT}/"))

            await wait_until(catalogued, timeout=120)
            await publish_events(
                nats_url, namespace, RequestSampling(project=PROJECT, action="start")
            )
            trained = await models.wait_for(3, timeout=240)
            assert {m.round for m in trained} >= {1, 2, 3}

            sizes: dict[str, int] = defaultdict(int)
            holders: dict[str, list[str]] = defaultdict(list)
            names = await blobs.list("")
            exported = f"exporter/{PROJECT}/"
            assert any(n.startswith(exported + "deltas/") for n in names), names
            assert any(n.startswith(exported + "datasets/") for n in names), names
            for name in names:
                raw = await blobs.get(name) or b""
                owner = name.split("/", 1)[0]
                sizes[owner] += len(raw)
                if owner == "catalog":
                    continue
                text = _text_of(name, raw)
                found = [t for t in texts if t in text]
                if found:
                    holders[name] = found[:3]
        finally:
            await nc.close()
    assert sizes["catalog"] > 0
    assert not holders, f"item data outside the catalog: {dict(holders)}"
    per_item = {owner: round(size / N_ITEMS, 1) for owner, size in sorted(sizes.items())}
    print(f"object-store bytes per ingested item, by owner: {per_item}")
