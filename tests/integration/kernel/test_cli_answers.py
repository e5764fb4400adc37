"""``labelloop export`` and ``labelloop train`` say what happened, not only "requested".

Against a real nats-server with the exporter and the trainer running: each command prints the
version or model that answered it; a command a service refused prints the refusal (exit 1); a
command nobody answers says so after its wait (exit 1)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from cli_support import labelloop

from labelloop.catalog import Catalog, Chunk
from labelloop.events import ConsensusLabel, IngestedItem, LabelsReady, ModelTrained
from labelloop.project import parse_project
from labelloop.testing import EventCollector, apply_project, publish_events, started, writing_as
from labelloop_exporter.app import build_app as build_exporter
from labelloop_exporter.settings import ExporterSettings
from labelloop_trainer.app import build_app as build_trainer
from labelloop_trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

PROJECT = "answers"
CONFIG = {
    "name": PROJECT,
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "training": {"min_new_labels": 10},
}


async def test_export_and_train_print_their_answer_or_why_there_is_none(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    exporter = build_exporter(
        ExporterSettings(nats_url=nats_url, namespace=namespace, export_dir=tmp_path / "exports")
    )
    trainer = build_trainer(TrainerSettings(nats_url=nats_url, namespace=namespace))
    models = EventCollector(nats_url, namespace, ModelTrained)

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            labelloop, *args, nats_url=nats_url, namespace=namespace, cwd=tmp_path
        )

    async with started(exporter), started(trainer), models:
        await apply_project(exporter.stores.projects, parse_project(CONFIG))
        texts = {f"i{k:03d}": ("good great film" if k % 2 else "bad awful film") for k in range(30)}
        items = [IngestedItem(item_id=i, data={"text": t}) for i, t in texts.items()]
        await Catalog(exporter.state, writing_as(exporter, "catalog")).write(
            PROJECT, "c1", Chunk(items)
        )
        labels = [
            ConsensusLabel(
                item_id=i,
                label="pos" if "good" in t else "neg",
                confidence=0.9,
                method="majority",
                n_annotations=1,
            )
            for i, t in texts.items()
        ]
        await publish_events(
            nats_url,
            namespace,
            LabelsReady(project=PROJECT, batch_id="b1", round=1, labels=labels),
        )
        await models.wait_for(1, timeout=120)

        # 30 labels, under every_n_labels (100): round 1 exported its delta only, and the
        # request writes its version
        exported = await run("export", "--project", PROJECT)
        assert exported.returncode == 0, exported.stderr
        assert f"{PROJECT} v0001: 30 rows" in exported.stdout
        assert str(tmp_path / "exports") in exported.stdout

        # the model was trained on round 1's rows before that version existed: named so
        trained = await run("train", "--project", PROJECT)
        assert trained.returncode == 0, trained.stderr
        assert f"{PROJECT} m0001 on r0001: promoted" in trained.stdout
        assert "serving m0001" in trained.stdout

        unknown = await run("export", "--project", "nosuch")
        assert unknown.returncode == 1
        assert "the exporter refused the command" in unknown.stderr
        assert "nosuch" in unknown.stderr

        later = await run("train", "--project", PROJECT, "--dataset", "v0009", "--wait", "3")
        assert later.returncode == 1
        assert "no answer from the trainer within 3 s" in later.stderr

        sent = await run("train", "--project", PROJECT, "--wait", "0")
        assert sent.returncode == 0, sent.stderr
        assert "not waiting for the trainer" in sent.stdout
