"""The demo supervises its services: a crashed one is restarted, one that keeps crashing is named.

A crash here is what the kernel does to a process from outside (SIGKILL to its process group, as
the OOM killer would), not the supervisor's own ``kill`` (which chaos tests use on purpose).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from reliability_support import until

from labelloop_console.processes import ServiceFailed, Supervisor

pytestmark = [pytest.mark.e2e]


def test_a_crashed_service_is_restarted_and_one_that_keeps_crashing_is_named(
    nats_url: str, namespace: str, tmp_path: Path
) -> None:
    supervisor = Supervisor(nats_url, namespace, tmp_path)
    try:
        supervisor.start("exporter")
        supervisor.wait_ready(timeout=90)
        first = supervisor.get("exporter")
        os.killpg(first.process.pid, signal.SIGKILL)  # the OOM killer, not the supervisor
        first.process.wait()
        assert supervisor.revive() == ["exporter-0"]
        supervisor.wait_ready(timeout=90)
        second = supervisor.get("exporter")
        assert second.process.pid != first.process.pid
        assert second.ready()
        assert supervisor.restarts == {"exporter-0": 1}
        assert supervisor.revive() == []  # a live service is left alone

        supervisor.kill("exporter")  # on purpose (a chaos test): not revived
        assert supervisor.revive() == []

        # a trainer that cannot start (its settings are invalid) exits every time
        supervisor.start("trainer", extra_env={"LABELLOOP_TRAINER_HTTP_PORT": "not-a-port"})
        with pytest.raises(ServiceFailed, match="trainer-0 exited at start"):
            supervisor.wait_ready(timeout=90)
        supervisor.env["LABELLOOP_TRAINER_HTTP_PORT"] = "not-a-port"  # and again on restart

        def exhausted() -> bool:
            try:
                supervisor.revive(max_restarts=2)
            except ServiceFailed as exc:
                message = str(exc)
                assert "trainer-0 exited 3 times" in message
                assert "http_port" in message.lower()  # the end of its log says why
                return True
            return False

        until(exhausted, what="the supervisor gave up on the trainer", timeout=90)
        assert supervisor.revive(max_restarts=2) == []  # said once, then left alone
    finally:
        supervisor.stop_all()
