"""A throwaway labelloop bus for the bus benchmarks: nats-server, namespace, project, services.

Services run as real subprocesses (``labelloop-service <service>``, what a container runs), as in
production: the benchmark process, the service and nats-server then share the machine's cores the
way a deployment would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labelloop.natsserver import EmbeddedNats, free_port
from labelloop.services import service_spec

SERVICE = str(Path(sys.executable).parent / "labelloop-service")


def namespace(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def nats_server() -> Iterator[EmbeddedNats]:
    server = EmbeddedNats().start()
    try:
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def service_process(
    name: str, nats_url: str, ns: str, *, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``labelloop-service NAME`` against ``nats_url`` in namespace ``ns``, ready when yielded."""
    port = free_port()
    env = {
        **os.environ,
        "LABELLOOP_NATS_URL": nats_url,
        "LABELLOOP_NAMESPACE": ns,
        service_spec(name).env("http_port"): str(port),
        **(extra_env or {}),
    }
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([SERVICE, name], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, port, Path(log.name))
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"service not ready within {timeout}s:\n{log.read_text()[-3000:]}")


def text_project(name: str, classes: list[str], **sections: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task_type": "text_classification",
        "labels": {"classes": classes},
        "data_fields": [{"name": "text", "kind": "text"}],
        **sections,
    }
