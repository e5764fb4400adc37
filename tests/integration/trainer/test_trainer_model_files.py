"""A model file replaced in the object store is never run: the trainer loads data, not code.

The attack of 2026-12-01: a local process without credentials overwrote the serving model in
``trainer/<project>/models/`` with a pickle, and the trainer unpickled it (running the
attacker's code) on the next dataset version. Here a raw nats-py client does the same, twice:
with a pickle whose loading touches a marker file, and with a genuine model file of another
project (trusted types only: only the digest can tell). Each time the next round trains, no
code runs, the refusal is counted, and the campaign goes on with a new serving model.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import random
from pathlib import Path
from typing import Any

import nats
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelloop.catalog import Catalog, Chunk
from labelloop.events import (
    ConsensusLabel,
    IngestedItem,
    LabelsReady,
    ModelTrained,
    RoundExported,
)
from labelloop.model_format import UntrustedModel, digest_of, dump_model, load_model
from labelloop.project import parse_project
from labelloop.streams import Namespace
from labelloop.testing import EventCollector, apply_project, publish_events, started, writing_as
from labelloop_exporter.app import build_app as build_exporter
from labelloop_exporter.settings import ExporterSettings
from labelloop_trainer.app import build_app as build_trainer
from labelloop_trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

PROJECT = "attacked"
CONFIG = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "training": {"min_new_labels": 10},
}


class _Payload:
    """Unpickling this calls ``Path(marker).touch()``: the attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _corpus(n: int) -> list[tuple[str, str, str]]:
    rng = random.Random(3)
    out = []
    for k in range(n):
        label = "pos" if k % 2 else "neg"
        words = ["good", "great", "nice"] if label == "pos" else ["bad", "awful", "poor"]
        out.append((f"item{k:04d}", " ".join([*rng.sample(words, 2), "film", str(k)]), label))
    return out


async def _project_with_items(
    exporter: Any, corpus: list[tuple[str, str, str]], **config: Any
) -> None:
    """The project applied and its items in the catalog, as the ingester would leave them."""
    await apply_project(exporter.stores.projects, parse_project({**CONFIG, **config}))
    items = [IngestedItem(item_id=i, data={"text": t}) for i, t, _ in corpus]
    await Catalog(exporter.state, writing_as(exporter, "catalog")).write(
        PROJECT, "c1", Chunk(items)
    )


def _round(corpus: list[tuple[str, str, str]], number: int) -> LabelsReady:
    rows = corpus[(number - 1) * 20 : number * 20]
    return LabelsReady(
        project=PROJECT,
        batch_id=f"b{number}",
        round=number,
        labels=[
            ConsensusLabel(item_id=i, label=y, confidence=0.95, method="majority", n_annotations=1)
            for i, _, y in rows
        ],
    )


async def test_a_replaced_model_file_runs_no_code_and_training_goes_on(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    marker = tmp_path / "attacker-code-ran"
    evil = pickle.dumps(_Payload(marker))
    pickle.loads(evil)  # noqa: S301 - the payload works: loading a pickle runs it
    assert marker.exists()
    marker.unlink()

    corpus = _corpus(200)
    exporter = build_exporter(
        ExporterSettings(nats_url=nats_url, namespace=namespace, export_dir=tmp_path / "exports")
    )
    trainer = build_trainer(TrainerSettings(nats_url=nats_url, namespace=namespace))
    models = EventCollector(nats_url, namespace, ModelTrained)
    attacker = await nats.connect(nats_url)
    try:
        async with started(exporter), started(trainer), models:
            bucket = Namespace(namespace).object_bucket("trainer")  # the services made it
            store = await attacker.jetstream().object_store(bucket)
            await _project_with_items(exporter, corpus)

            await publish_events(nats_url, namespace, _round(corpus, 1))
            (first,) = await models.wait_for(1, timeout=120)
            assert first.promoted
            assert first.model_ref
            assert first.model_digest
            assert first.model_ref.endswith(".skops")
            genuine = await trainer.artifacts.get(first.model_ref)
            assert genuine is not None
            assert digest_of(genuine) == first.model_digest

            # attack 1: the serving model becomes a pickle
            await store.put(first.model_ref, evil)
            await publish_events(nats_url, namespace, _round(corpus, 2))
            second = (await models.wait_for(2, timeout=120))[-1]
            assert not marker.exists(), "the trainer ran the attacker's pickle"
            assert second.round == 2
            assert second.model_ref
            assert second.model_digest
            assert second.promoted  # judged on its own: the refused model is no yardstick

            # attack 2: a genuine skops model, but not this one (trusted types: the digest tells)
            other = load_model(genuine, digest=first.model_digest)
            await store.put(second.model_ref, dump_model(other))
            await publish_events(nats_url, namespace, _round(corpus, 3))
            third = (await models.wait_for(3, timeout=120))[-1]
            assert third.round == 3
            assert third.promoted

            refused = trainer.registry.get_sample_value(
                "labelloop_trainer_untrusted_models_total", {"project": PROJECT}
            )
            assert refused == 2

            # a reader outside the trainer (the demo) refuses both files the same way
            for ref, digest in (
                (first.model_ref, first.model_digest),
                (second.model_ref, second.model_digest),
            ):
                raw = await trainer.artifacts.get(ref)
                assert raw is not None
                with pytest.raises(UntrustedModel):
                    load_model(raw, digest=digest)
            with pytest.raises(UntrustedModel, match="not a skops model"):
                load_model(evil, digest=None)  # without a digest, a pickle still never loads
            assert not marker.exists()
    finally:
        await attacker.close()


@pytest.mark.parametrize(
    ("replaced", "every_n_labels"),
    [
        ("version", 20),  # round 1 writes version v0001: its labels are the round's rows
        ("delta", 40),  # round 1 is a delta; round 2 writes version v0002
    ],
)
async def test_replaced_labels_of_a_round_are_never_trained_on(
    nats_url: str, namespace: str, tmp_path: Path, replaced: str, every_n_labels: int
) -> None:
    """The exporter's labels in the object store are as writable as a model: a raw client
    swaps every label of round 1's file (a full version's labels, or the round's delta) before
    the trainer reads it. The trainer refuses the file (its sha256 is not the one
    ``RoundExported`` carries), skips the round and says why, counts it; the next round, an
    untouched version, trains."""
    corpus = _corpus(200)
    exporter = build_exporter(
        ExporterSettings(nats_url=nats_url, namespace=namespace, export_dir=tmp_path / "exports")
    )
    trainer = build_trainer(TrainerSettings(nats_url=nats_url, namespace=namespace))
    rounds = EventCollector(nats_url, namespace, RoundExported)
    models = EventCollector(nats_url, namespace, ModelTrained)
    attacker = await nats.connect(nats_url)
    try:
        async with started(exporter), rounds, models:
            await _project_with_items(exporter, corpus, export={"every_n_labels": every_n_labels})
            await publish_events(nats_url, namespace, _round(corpus, 1))
            (r1,) = await rounds.wait_for(1, timeout=120)
            if replaced == "version":
                assert (r1.version, r1.deltas) == ("v0001", [])
                assert r1.base_ref
                assert r1.base_sha256
                name, announced = r1.base_ref, r1.base_sha256
            else:
                assert (r1.version, r1.base_ref) == (None, None)
                (d1,) = r1.deltas
                name, announced = d1.ref, d1.sha256

            genuine = await exporter.artifacts.get(name)
            assert genuine is not None
            table = pq.read_table(io.BytesIO(genuine))  # a delta's metadata kept
            swap = {"pos": "neg", "neg": "pos"}
            flipped = pa.array([swap[v] for v in table.column("label").to_pylist()])
            table = table.set_column(table.schema.get_field_index("label"), "label", flipped)
            forged = io.BytesIO()
            pq.write_table(table, forged)
            bucket = Namespace(namespace).object_bucket("exporter")
            await (await attacker.jetstream().object_store(bucket)).put(name, forged.getvalue())

            async with started(trainer):  # reads round 1 only now, after the swap
                (first,) = await models.wait_for(1, timeout=120)
                assert first.dataset_version == r1.dataset_version
                assert first.model_ref is None
                assert first.skipped
                assert "not trained on" in first.skipped
                assert announced in first.skipped
                refused = trainer.registry.get_sample_value(
                    "labelloop_trainer_untrusted_datasets_total", {"project": PROJECT}
                )
                assert refused == 1

                await publish_events(nats_url, namespace, _round(corpus, 2))
                second = (await models.wait_for(2, timeout=120))[-1]
                assert second.round == 2
                assert second.dataset_version == "v0002"  # a full version: no forged delta in it
                assert second.model_ref
                assert second.promoted
                assert second.n_train == 40
    finally:
        await attacker.close()
