"""The service runtime against a real nats-server: delivery policy, dead letters, replicas."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import pytest
from echo_service import EchoSettings, build_app

from labelloop.client import connect
from labelloop.deadletters import list_dead_letters, replay_dead_letter
from labelloop.events import DeadLetter, RequestExport, RequestTraining
from labelloop.natsserver import free_port
from labelloop.runtime import Service
from labelloop.testing import EventCollector, started, wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent


def _settings(nats_url: str, namespace: str, **extra: object) -> EchoSettings:
    return EchoSettings(
        nats_url=nats_url,
        namespace=namespace,
        max_deliver=3,
        retry_backoff_seconds=0.05,
        ack_wait_seconds=5,
        **extra,  # type: ignore[arg-type]
    )


def _request(reason: str, n: int = 0) -> RequestExport:
    return RequestExport(
        event_id=f"req-{reason}-{n}".replace(":", "_"), project="p1", reason=reason
    )


async def _publish(nats_url: str, namespace: str, *events: RequestExport) -> None:
    settings = EchoSettings(nats_url=nats_url, namespace=namespace)
    async with connect(settings) as bus:
        for event in events:
            await bus.publish(event)


async def test_event_in_produces_event_out(nats_url: str, namespace: str) -> None:
    service = build_app(_settings(nats_url, namespace))
    async with started(service), EventCollector(nats_url, namespace, RequestTraining) as out:
        await _publish(nats_url, namespace, _request("ok"))
        [echo] = await out.wait_for(1)
    assert echo.reason == "echo of req-ok-0"
    assert service.calls == ["req-ok-0"]  # type: ignore[attr-defined]


async def test_replayed_input_publishes_no_duplicate(nats_url: str, namespace: str) -> None:
    service = build_app(_settings(nats_url, namespace))
    async with started(service), EventCollector(nats_url, namespace, RequestTraining) as out:
        # the same event delivered twice (published without a message id, as a redelivery
        # would present it): the handler runs twice, its deterministic output id makes the
        # server drop the second output
        nc = await nats.connect(nats_url)
        payload = _request("ok").model_dump_json().encode()
        await nc.jetstream().publish(service.ns.subject(RequestExport), payload)
        await out.wait_for(1)
        await nc.jetstream().publish(service.ns.subject(RequestExport), payload)
        await nc.close()
        await wait_until(lambda: len(service.calls) == 2)  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)  # give a duplicate a chance to show up: none may
    assert [e.event_id for e in out.events] == [out.events[0].event_id]


async def test_malformed_payload_goes_to_dlq_without_retry(nats_url: str, namespace: str) -> None:
    service = build_app(_settings(nats_url, namespace))
    async with started(service), EventCollector(nats_url, namespace, DeadLetter) as dlq:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.publish(service.ns.subject(RequestExport), b'{"project": "p1", "formats": 7}')
        await js.publish(service.ns.subject(RequestExport), b"not json at all")
        letters = await dlq.wait_for(2)
        await nc.close()
    assert service.calls == []  # type: ignore[attr-defined]
    assert {d.kind for d in letters} == {"invalid"}
    assert all(d.deliveries == 1 for d in letters)
    assert any("formats" in d.reason for d in letters)
    assert letters[0].payload() == b'{"project": "p1", "formats": 7}'
    assert letters[0].project == "p1"
    value = service.registry.get_sample_value(
        "labelloop_runtime_dead_letters_total", {"event": "RequestExport", "kind": "invalid"}
    )
    assert value == 2


async def test_failing_handler_is_delivered_max_deliver_times_then_dead_lettered(
    nats_url: str, namespace: str
) -> None:
    service = build_app(_settings(nats_url, namespace))
    async with started(service), EventCollector(nats_url, namespace, DeadLetter) as dlq:
        await _publish(nats_url, namespace, _request("fail"))
        [letter] = await dlq.wait_for(1)
        await asyncio.sleep(0.3)  # a fourth delivery would arrive now if the policy were wrong
    assert service.calls == ["req-fail-0"] * 3  # type: ignore[attr-defined]
    assert letter.kind == "failed"
    assert letter.deliveries == 3
    assert "RuntimeError: this handler always fails" in letter.reason
    assert (
        service.registry.get_sample_value(
            "labelloop_runtime_messages_total", {"event": "RequestExport", "outcome": "retried"}
        )
        == 2
    )


async def test_poison_message_is_dead_lettered_at_once(nats_url: str, namespace: str) -> None:
    service = build_app(_settings(nats_url, namespace))
    async with started(service), EventCollector(nats_url, namespace, DeadLetter) as dlq:
        await _publish(nats_url, namespace, _request("poison"))
        [letter] = await dlq.wait_for(1)
    assert service.calls == ["req-poison-0"]  # type: ignore[attr-defined]
    assert letter.reason == "cannot ever process this request"


async def test_dlq_replay_redrives_after_the_cause_is_fixed(nats_url: str, namespace: str) -> None:
    service = build_app(_settings(nats_url, namespace))
    async with (
        started(service),
        EventCollector(nats_url, namespace, DeadLetter) as dlq,
        EventCollector(nats_url, namespace, RequestTraining) as out,
    ):
        await _publish(nats_url, namespace, _request("fail"))
        await dlq.wait_for(1)
        service.broken = False  # type: ignore[attr-defined]  # the operator deploys a fix
        async with connect(service.settings) as bus:
            [pending] = await list_dead_letters(bus.js, bus.ns)
            await replay_dead_letter(bus.js, bus.ns, pending.sequence)
            [echo] = await out.wait_for(1)
            assert await list_dead_letters(bus.js, bus.ns) == []
    assert echo.reason == "echo of req-fail-0"


async def test_dlq_replay_redrives_only_what_was_really_on_the_bus(
    nats_url: str, namespace: str
) -> None:
    """2026-12-01: a forged ``DeadLetter`` naming ``labels.ready``, re-driven by ``dlq replay
    --all``, put 5 wrong labels into a dataset. Any service may publish dead letters, so the
    replay checks the letter against the message it names: forged ones are refused and kept."""
    import base64

    from labelloop.deadletters import ReplayRefused
    from labelloop.events import LabelsReady

    async with connect(EchoSettings(nats_url=nats_url, namespace=namespace)) as bus:
        quality = bus.ns.stream_name(bus.ns.stream_for(LabelsReady))
        forged = b'{"project": "p1", "batch_id": "b", "round": 1, "labels": []}'

        def letter(subject: str, stream: str | None, sequence: int | None) -> DeadLetter:
            return DeadLetter(
                project="p1",
                original_subject=subject,
                original_stream=stream,
                original_sequence=sequence,
                consumer="nobody",
                reason="forged",
                kind="failed",
                payload_b64=base64.b64encode(forged).decode(),
                payload_size=len(forged),
            )

        other = await bus.js.publish(bus.ns.subject(RequestExport, "p1"), b'{"project": "p1"}')
        labels = bus.ns.subject(LabelsReady, "p1")
        real = await bus.js.publish(labels, b'{"the": "labels QA released"}')
        attempts = [
            letter(labels, None, None),  # names no message
            letter(labels, quality, 10**6),  # a message that was never there
            letter(labels, other.stream, other.seq),  # a real message of another event
            letter(labels, quality, real.seq),  # a real LabelsReady, but not this payload
            letter("elsewhere.p1", quality, 1),  # not an event subject
            letter(bus.ns.subject(DeadLetter, "p1"), quality, 1),  # a dead letter of a letter
        ]
        for attempt in attempts:
            await bus.publish(attempt)
        stored = await list_dead_letters(bus.js, bus.ns)
        assert len(stored) == len(attempts)
        before = (await bus.js.stream_info(quality)).state.messages
        for pending in stored:
            with pytest.raises(ReplayRefused, match="not replayed"):
                await replay_dead_letter(bus.js, bus.ns, pending.sequence)
        assert (await bus.js.stream_info(quality)).state.messages == before
        assert len(await list_dead_letters(bus.js, bus.ns)) == len(attempts)  # kept


async def test_two_replicas_share_the_work_without_processing_twice(
    nats_url: str, namespace: str
) -> None:
    one, two = build_app(_settings(nats_url, namespace)), build_app(_settings(nats_url, namespace))
    requests = [_request("ok", n) for n in range(200)]
    async with (
        started(one),
        started(two),
        EventCollector(nats_url, namespace, RequestTraining) as out,
    ):
        await _publish(nats_url, namespace, *requests)
        await out.wait_for(200, timeout=30)
    calls_one, calls_two = one.calls, two.calls  # type: ignore[attr-defined]
    assert len(calls_one) + len(calls_two) == 200
    assert set(calls_one) | set(calls_two) == {r.event_id for r in requests}
    assert not set(calls_one) & set(calls_two)
    assert calls_one, "both replicas should have taken a share"
    assert calls_two, "both replicas should have taken a share"


def _start_process(nats_url: str, namespace: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LABELLOOP_NATS_URL": nats_url,
        "LABELLOOP_NAMESPACE": namespace,
        "LABELLOOP_ECHO_HTTP_PORT": str(port),
        "LABELLOOP_ACK_WAIT_SECONDS": "5",
        "PYTHONPATH": str(HERE),
    }
    return subprocess.Popen(
        [sys.executable, str(HERE / "echo_service.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_http_endpoints_and_graceful_sigterm(nats_url: str, namespace: str) -> None:
    port = free_port()
    process = _start_process(nats_url, namespace, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=20)
            assert (await http.get("/healthz")).status_code == 204
            assert "asyncapi" in (await http.get("/asyncapi")).text.lower()

            async with EventCollector(nats_url, namespace, RequestTraining) as out:
                await _publish(nats_url, namespace, _request("ok"))
                await out.wait_for(1)

                async def counted() -> str | None:
                    text = (await http.get("/metrics")).text
                    return text if _metric(text, "labelloop_runtime_messages_total") == 1 else None

                metrics = await wait_until(counted, timeout=5)
                assert _metric(metrics, "faststream_received_messages_total") >= 1
                assert "labelloop_echo_handled_total" in metrics

                # an in-flight handler finishes and acks when SIGTERM arrives
                await _publish(nats_url, namespace, _request("slow:2"))

                async def in_flight() -> bool:
                    text = (await http.get("/metrics")).text
                    return _metric(text, "faststream_received_messages_in_process") >= 1

                await wait_until(in_flight, timeout=10)
                process.send_signal(signal.SIGTERM)
                started_at = time.monotonic()
                await asyncio.get_running_loop().run_in_executor(None, process.wait, 20)
                # uvicorn re-raises the signal it handled once shutdown is complete
                assert process.returncode in (0, -signal.SIGTERM)
                assert time.monotonic() - started_at < 15
                await out.wait_for(2)
        async with connect(EchoSettings(nats_url=nats_url, namespace=namespace)) as bus:
            service = Service("echo", EchoSettings(nats_url=nats_url, namespace=namespace))
            stream = bus.ns.stream_name(bus.ns.stream_for(RequestExport))
            info = await bus.js.consumer_info(stream, service.ns.durable("echo", RequestExport))
            assert info.num_ack_pending == 0
            assert info.num_pending == 0
            assert info.num_redelivered == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_an_empty_dead_letter_stream_lists_nothing(nats_url: str, namespace: str) -> None:
    async with connect(EchoSettings(nats_url=nats_url, namespace=namespace)) as bus:
        assert await list_dead_letters(bus.js, bus.ns) == []


async def test_a_bare_timeout_from_fetch_does_not_end_or_leak_a_consume_loop(
    nats_url: str, namespace: str
) -> None:
    # nats-py 2.16's fetch can raise a bare asyncio.TimeoutError, which FastStream's consume
    # loop does not expect: the loop ended, the supervisor started another and kept the ended
    # task (traceback, frames) for good. Here every subscription's fetch raises it, for real,
    # from inside nats-py, five times before it fetches again.
    service = build_app(_settings(nats_url, namespace))
    async with started(service), EventCollector(nats_url, namespace, RequestTraining) as out:
        for subscriber in service.broker.subscribers:
            subscription = subscriber.subscription  # type: ignore[attr-defined]
            left = [5]
            for name in ("_fetch_one", "_fetch_n"):  # a batch of one, and of more

                async def bare(
                    *args: object,
                    _real: object = getattr(subscription, name),
                    _left: list[int] = left,
                ) -> object:
                    if _left[0] > 0:
                        _left[0] -= 1
                        raise TimeoutError  # asyncio.TimeoutError, as nats-py raises it
                    return await _real(*args)  # type: ignore[operator]

                setattr(subscription, name, bare)
        await wait_until(lambda: left[0] == 0)
        await _publish(nats_url, namespace, _request("ok"))
        [echo] = await out.wait_for(1)
        assert echo.reason == "echo of req-ok-0"
        for subscriber in service.broker.subscribers:
            tasks = subscriber.tasks  # type: ignore[attr-defined]
            assert [t for t in tasks if t.done()] == []
            assert len(tasks) == 1
