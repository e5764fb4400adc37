"""Least privilege, attacked: every user of ``infra/nats/accounts.conf`` tries every destructive
JetStream call and every foreign subject on a real nats-server, and the server refuses each one.

The attacks (2026-12-01's finding: service users held ``$JS.API.>``): delete, purge, shorten or
shadow a stream; purge the state bucket; delete or redirect another service's consumer; delete a
message; write another service's state keys or a project configuration; write, replace or purge
another service's artefacts (a chunk, a metadata record, the purge that replacing an object
does); publish another service's event; subscribe to the event subjects. Afterwards the streams,
the consumer, the keys and the artefacts are as the operator left them. The positive controls:
each user may still write its own keys and replace its own artefacts, and the operator may do
what the others may not.

The data producers' user, which every producer shares, must read nothing of the bus but the
project configurations and the ingester's answers: it may not fetch a message of the ITEMS stream
(or any other), create a consumer there (not even on the answers), read the catalog, sniff the
inboxes the services' pulls are delivered to, subscribe to the items, or forge an answer. And
``labelloop ingest`` as that user gets its own answers: the report by line, no violation logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig
from security_support import NS, secured_server, url_for

from labelloop.artifacts import AREAS
from labelloop.events import (
    ItemsIngested,
    ItemsSubmitted,
    LabelsReady,
    RoundExported,
    SubmissionAnswered,
)
from labelloop.natsserver import EmbeddedNats
from labelloop.services import service_specs
from labelloop.streams import Namespace
from labelloop.testing import configure_project, started
from labelloop_ingester.app import build_app as build_ingester
from labelloop_ingester.settings import IngesterSettings

pytestmark = [pytest.mark.e2e]

NAMESPACE = Namespace(NS)
QUALITY = NAMESPACE.stream_name(NAMESPACE.stream_for(LabelsReady))
MODELS = NAMESPACE.stream_name(NAMESPACE.stream_for(RoundExported))
STATE = NAMESPACE.kv_bucket("state")
PROJECTS = NAMESPACE.kv_bucket("projects")
ITEMS = NAMESPACE.stream_name(NAMESPACE.stream_for(ItemsSubmitted))
VICTIM = NAMESPACE.durable("trainer", RoundExported)  # the trainer's own consumer (its input)
ATTACKERS = [*service_specs(), "producer"]


def _artefact(area: str) -> str:
    return f"{area}/matrix/owned.bin"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    running = secured_server(tmp_path_factory.mktemp("permissions"))
    yield running
    running.cleanup()


async def _operator_setup(server: EmbeddedNats) -> dict[str, bytes]:
    """What the attacks aim at: a message in QUALITY, the trainer's consumer, every service's
    keys, a project. Returns the keys and their values."""
    nc = await nats.connect(url_for(server, "operator"))
    try:
        js = nc.jetstream()
        await js.publish(f"{NS}.{LabelsReady.SUBJECT}.matrix", b"{}", stream=QUALITY)
        await js.add_consumer(
            MODELS,
            ConsumerConfig(
                durable_name=VICTIM,
                filter_subject=NAMESPACE.subject(RoundExported),
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        keys = {
            f"{prefix}.matrix.owned": f"{name} wrote this".encode()
            for name, spec in service_specs().items()
            for prefix in spec.state_keys
        }
        state = await js.key_value(STATE)
        for key, value in keys.items():
            await state.put(key, value)
        await (await js.key_value(PROJECTS)).put("matrix", b'{"name": "matrix"}')
        for area in AREAS:
            store = await js.object_store(NAMESPACE.object_bucket(area))
            await store.put(_artefact(area), f"{area} wrote this".encode())
        return keys
    finally:
        await nc.close()


def _attacks(user: str, keys: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """(subject, payload) of every call ``user`` must not be able to make."""
    api = "$JS.API"
    own = tuple(service_specs()[user].state_keys) if user in service_specs() else ()
    foreign_keys = [k for k in keys if not k.startswith(tuple(f"{p}." for p in own))]
    attacks = [
        (f"{api}.STREAM.DELETE.{QUALITY}", b""),
        (f"{api}.STREAM.PURGE.{QUALITY}", b""),
        (f"{api}.STREAM.PURGE.KV_{STATE}", b""),
        (
            f"{api}.STREAM.UPDATE.{QUALITY}",
            json.dumps(
                {"name": QUALITY, "subjects": [f"{NS}.labels.*.*"], "max_age": 1_000_000_000}
            ).encode(),
        ),
        (
            f"{api}.STREAM.CREATE.SHADOW",
            json.dumps({"name": "SHADOW", "subjects": ["shadow.>"]}).encode(),
        ),
        (f"{api}.STREAM.MSG.DELETE.{QUALITY}", json.dumps({"seq": 1}).encode()),
        (f"{api}.CONSUMER.DELETE.{MODELS}.{VICTIM}", b""),
        (f"{api}.META.LEADER.STEPDOWN", b""),
        (f"$KV.{PROJECTS}.matrix", b'{"name": "matrix", "forged": true}'),
        *((f"$KV.{STATE}.{key}", b"forged") for key in foreign_keys),
    ]
    own_area = service_specs()[user].artifacts if user in service_specs() else None
    for area in sorted(AREAS - {own_area}):
        bucket = NAMESPACE.object_bucket(area)
        meta = base64.urlsafe_b64encode(_artefact(area).encode()).decode()
        attacks += [
            (f"{api}.STREAM.PURGE.OBJ_{bucket}", b""),
            (f"$O.{bucket}.C.forgedchunk", b"forged"),
            (f"$O.{bucket}.M.{meta}", json.dumps({"name": _artefact(area)}).encode()),
        ]
    if user != "trainer":  # redirect the trainer's consumer to an attacker's filter
        attacks.append(
            (
                f"{api}.CONSUMER.CREATE.{MODELS}.{VICTIM}",
                json.dumps(
                    {
                        "stream_name": MODELS,
                        "config": {"durable_name": VICTIM, "deliver_policy": "new"},
                    }
                ).encode(),
            )
        )
    if user != "qa-scorer":  # QA's event, forged
        attacks.append((NAMESPACE.subject(LabelsReady, "matrix"), b'{"forged": true}'))
    if user == "producer":
        attacks += _producer_reads()
    return attacks


def _producer_reads() -> list[tuple[str, bytes]]:
    """What a data producer must not read: other producers' items, any other message."""
    api = "$JS.API"
    submitted = NAMESPACE.subject(ItemsSubmitted, "matrix")
    answered = NAMESPACE.subject(SubmissionAnswered, "matrix")
    catalog = f"OBJ_{NAMESPACE.object_bucket('catalog')}"

    def consumer(stream: str, filter_subject: str) -> bytes:
        config = {"name": "sniff", "filter_subject": filter_subject, "deliver_policy": "all"}
        return json.dumps({"stream_name": stream, "config": config}).encode()

    return [
        (f"{api}.STREAM.MSG.GET.{ITEMS}", json.dumps({"seq": 1}).encode()),
        (f"{api}.STREAM.MSG.GET.{QUALITY}", json.dumps({"seq": 1}).encode()),
        (f"{api}.STREAM.MSG.GET.KV_{STATE}", json.dumps({"seq": 1}).encode()),
        (f"{api}.DIRECT.GET.{ITEMS}", json.dumps({"seq": 1}).encode()),
        (f"{api}.DIRECT.GET.{ITEMS}.{submitted}", b""),
        (f"{api}.CONSUMER.CREATE.{ITEMS}", consumer(ITEMS, submitted)),
        (f"{api}.CONSUMER.CREATE.{ITEMS}.sniff.{submitted}", consumer(ITEMS, submitted)),
        (f"{api}.CONSUMER.CREATE.{ITEMS}.sniff.{answered}", consumer(ITEMS, answered)),
        (f"{api}.CONSUMER.DURABLE.CREATE.{ITEMS}.sniff", consumer(ITEMS, submitted)),
        (f"{api}.CONSUMER.CREATE.{catalog}", consumer(catalog, ">")),
        (answered, b'{"forged": true}'),
    ]


def _forbidden_subscriptions(user: str) -> list[str]:
    """Subjects ``user`` may not subscribe to: the events (pull consumers never need them); for
    the producer also the inboxes every pull is delivered to, and the items themselves."""
    forbidden = [f"{NS}.>"]
    if user == "producer":
        forbidden += [
            "_INBOX.>",
            NAMESPACE.subject(ItemsSubmitted),
            NAMESPACE.subject(ItemsIngested),
        ]
    return forbidden


async def _try_all(server: EmbeddedNats, user: str, keys: dict[str, bytes]) -> list[str]:
    """Make every attack as ``user``; returns the subjects the server did not refuse."""
    refused: list[str] = []
    heard = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        refused.append(str(exc))
        heard.set()

    nc = await nats.connect(url_for(server, user), error_cb=on_error)
    try:
        attacks = _attacks(user, keys)
        for subject, payload in attacks:
            await nc.publish(subject, payload, reply=nc.new_inbox())
        forbidden = _forbidden_subscriptions(user)
        for subject in forbidden:  # sniffing the events, or the deliveries of others' pulls
            await nc.subscribe(subject)
        await nc.flush()
        # what the server says, as nats-py lowercases it
        expected = [f'publish to "{s}"' for s, _ in attacks]
        expected += [f'subscription to "{s}"' for s in forbidden]

        def unrefused() -> list[str]:
            said = " ".join(refused).lower()
            return [e for e in expected if e.lower() not in said]

        deadline = time.monotonic() + 30
        while unrefused() and time.monotonic() < deadline:
            heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), timeout=1.0)
        return unrefused()
    finally:
        await nc.close()


async def _own_keys_still_writable(server: EmbeddedNats, user: str) -> None:
    if user not in service_specs():
        return
    nc: Client = await nats.connect(url_for(server, user))
    try:
        js = nc.jetstream()
        state = await js.key_value(STATE)
        for prefix in service_specs()[user].state_keys:
            await state.put(f"{prefix}.matrix.scratch", b"mine")
        area = service_specs()[user].artifacts
        if area is not None:  # replacing an object writes chunks and purges the old ones
            store = await js.object_store(NAMESPACE.object_bucket(area))
            await store.put(f"{area}/matrix/scratch.bin", b"mine")
            await store.put(f"{area}/matrix/scratch.bin", b"mine, again")
    finally:
        await nc.close()


async def test_no_user_but_the_operator_can_destroy_or_forge(server: EmbeddedNats) -> None:
    keys = await _operator_setup(server)
    admitted = {user: await _try_all(server, user, keys) for user in ATTACKERS}
    assert not any(admitted.values()), f"the server let these through: {admitted}"
    for user in ATTACKERS:
        await _own_keys_still_writable(server, user)

    nc = await nats.connect(url_for(server, "operator"))
    try:
        js = nc.jetstream()
        quality = await js.stream_info(QUALITY)
        assert quality.state.messages == 1
        assert quality.config.max_age != 1.0
        consumer = await js.consumer_info(MODELS, VICTIM)
        assert consumer.config.filter_subject == NAMESPACE.subject(RoundExported)
        state = await js.key_value(STATE)
        for key, value in keys.items():
            entry = await state.get(key)
            assert entry.value == value, key
        for area in AREAS:
            store = await js.object_store(NAMESPACE.object_bucket(area))
            kept = await store.get(_artefact(area))
            assert kept.data == f"{area} wrote this".encode(), area
        project = await (await js.key_value(PROJECTS)).get("matrix")
        assert b"forged" not in (project.value or b"")
        assert "SHADOW" not in [s.config.name for s in await js.streams_info()]
        # the operator may (the attacks were refused for being made by the wrong user)
        await js.purge_stream(QUALITY)
        assert (await js.stream_info(QUALITY)).state.messages == 0
        await js.delete_consumer(MODELS, VICTIM)
    finally:
        await nc.close()


async def test_the_producer_hears_its_own_answers(server: EmbeddedNats, tmp_path: Path) -> None:
    """``labelloop ingest`` as the producer, the ingester as its own user: the report by line
    (so the answers reached the producer), and the server logged no violation meanwhile."""
    project = {
        "name": "answered",
        "task_type": "text_classification",
        "labels": {"classes": ["pos", "neg"]},
        "data_fields": [{"name": "text", "kind": "text", "max_length": 20}],
    }
    await configure_project(url_for(server, "operator"), NS, project)
    rows = [
        {"data": {"text": "fine"}},
        {"data": {"text": "also fine"}},
        {"data": {"text": "fine"}},
        {"data": {"title": "no text"}},
        {"data": {"text": "far too long for the field"}},
    ]
    file = tmp_path / "rows.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    log = server.log_file
    assert log is not None
    logged = len(log.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    env |= {"LABELLOOP_NATS_URL": url_for(server, "producer"), "LABELLOOP_NAMESPACE": NS}
    command = [
        str(Path(sys.executable).parent / "labelloop"),
        "ingest",
        str(file),
        "-p",
        "answered",
    ]
    ingester = build_ingester(IngesterSettings(nats_url=url_for(server, "ingester"), namespace=NS))
    async with started(ingester):
        done = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "line 3: same content as line 1: duplicate",
        "line 4: missing_field: data.text is required: rejected",
        "line 5: too_long: data.text has 26 characters, the limit is 20: rejected",
    ]
    assert done.stdout.splitlines()[1] == "2 ingested, 1 duplicate, 2 rejected, 0 not submitted"
    since = log.read_bytes()[logged:].decode(errors="replace")
    assert "Violation" not in since, since
