"""``labelloop up --detach`` keeps the loop running after the command returns; ``down`` stops it.

The deployment runs as a user would start it (the CLI as a subprocess, its own nats-server and
the six services in the background); the test then uses it through the env file ``up`` wrote,
kills a service with SIGKILL (the supervisor restarts it), and stops everything with ``down``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from labelloop.natsserver import free_ports
from labelloop_console.local import read_env_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
LABELLOOP = str(Path(sys.executable).parent / "labelloop")


def _run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    return subprocess.run(
        [LABELLOOP, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )


def _state(home: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((home / "up.json").read_text(encoding="utf-8"))
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except OSError:
        return False


def test_up_keeps_the_loop_running_restarts_a_killed_service_and_down_stops_it(
    tmp_path: Path,
) -> None:
    home = tmp_path / "state"
    port, http_port, bridge_port = free_ports(3)
    ports = ["--port", str(port), "--http-port", str(http_port), "--bridge-port", str(bridge_port)]
    up = _run("up", "--detach", "--home", str(home), *ports, cwd=tmp_path)
    pids: set[int] = set()
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "labelloop is up in the background" in up.stdout
        state = _state(home)
        services = state["services"]
        pids |= {state["pid"], state["nats_pid"], *(s["pid"] for s in services.values())}
        assert len(services) == 6
        assert all(_ready(s["url"]) for s in services.values())
        # the CLI reaches it through the env file, token and all
        env = read_env_file(home / "env")
        assert env["LABELLOOP_NATS_URL"] == f"nats://127.0.0.1:{port}"
        applied = _run(
            "project", "apply", str(EXAMPLES / "reviews" / "project.yaml"), cwd=tmp_path, env=env
        )
        assert applied.returncode == 0, applied.stderr
        items = tmp_path / "items.jsonl"
        items.write_text(
            "".join(json.dumps({"data": {"text": f"review {i}"}}) + "\n" for i in range(8))
        )
        ingested = _run("ingest", str(items), "--project", "reviews", cwd=tmp_path, env=env)
        assert ingested.returncode == 0, ingested.stdout + ingested.stderr
        assert "8 ingested" in ingested.stdout
        # a second `up` on the same state is refused, and changes nothing
        again = _run("up", "--detach", "--home", str(home), *ports, cwd=tmp_path)
        assert again.returncode == 1
        assert "already up" in again.stderr
        assert _state(home)["pid"] == state["pid"]

        # SIGKILL, as an OOM kill would: the supervisor starts it again
        victim = services["sampler-0"]["pid"]
        os.killpg(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while True:
            now = _state(home)["services"]["sampler-0"]
            if now["pid"] != victim and _ready(now["url"]):
                pids.add(now["pid"])
                break
            assert time.monotonic() < deadline, "the killed sampler was not restarted"
            time.sleep(0.5)
        assert "sampler-0 exited on its own and was restarted" in (home / "up.log").read_text()
    finally:
        down = _run("down", "--home", str(home), cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "labelloop is down" in down.stdout
    assert not (home / "up.json").exists()
    assert pids
    assert not [pid for pid in pids if _alive(pid)], "a process outlived `down`"
    assert (home / "nats" / "token").exists()  # the data and the token stay for the next `up`
    nothing = _run("down", "--home", str(home), cwd=tmp_path)
    assert nothing.returncode == 0
    assert "nothing is up" in nothing.stdout
