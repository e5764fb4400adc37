"""The embedded default is authenticated: without the token nothing reaches the bus.

``labelloop nats`` as a user runs it, attacked with a raw nats-py client: no token and a wrong
token are refused by the server before a single message (a forged ``LabelsReady`` cannot even be
sent); the operator's CLI with the shell file it writes works, without it says in one line that
the server refused the credentials. The token is on no command line and in a file only its owner
reads, and a restarted server keeps it (running services reconnect).
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from reliability_support import until

from labelloop.events import LabelsReady
from labelloop.natsserver import free_ports

pytestmark = [pytest.mark.e2e]

BIN = Path(sys.executable).parent


class NatsCommand:
    """``labelloop nats`` in the foreground of its own process, as in a terminal."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port, self.http_port = free_ports(2)
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        env_file = self.store / "env"
        env_file.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                str(BIN / "labelloop"),
                "nats",
                "--port",
                str(self.port),
                "--http-port",
                str(self.http_port),
                "--store-dir",
                str(self.store),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        until(env_file.exists, what="labelloop nats wrote its env file")

    def stop(self) -> str:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        self.process = None
        return out

    def shell_env(self) -> dict[str, str]:
        """What `set -a; . .nats/env; set +a` gives a shell."""
        pairs = (line.split("=", 1) for line in (self.store / "env").read_text().splitlines())
        return dict(pairs)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[NatsCommand]:
    server = NatsCommand(tmp_path / ".nats")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


async def _refused(url: str, **auth: str) -> str:
    try:
        nc = await nats.connect(
            url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5, **auth
        )
    except nats.errors.Error as exc:
        return str(exc)
    try:  # admitted: show what an attacker could do with it
        await nc.publish(f"labelloop.{LabelsReady.SUBJECT}.digits", b'{"forged": true}')
        await nc.flush()
    finally:
        await nc.close()
    return "admitted"


def _labelloop(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_NATS")}
    return subprocess.run(
        [str(BIN / "labelloop"), *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_token_no_bus(embedded: NatsCommand, tmp_path: Path) -> None:
    token = (embedded.store / "token").read_text().strip()
    assert len(token) >= 40
    assert stat.S_IMODE((embedded.store / "token").stat().st_mode) == 0o600
    shell = embedded.shell_env()
    assert shell["LABELLOOP_NATS_URL"] == embedded.url
    assert Path(shell["LABELLOOP_NATS_TOKEN_FILE"]) == (embedded.store / "token").resolve()

    assert "Authorization Violation" in asyncio.run(_refused(embedded.url))
    assert "Authorization Violation" in asyncio.run(_refused(embedded.url, token="guess"))
    assert "Authorization Violation" in asyncio.run(
        _refused(embedded.url, user="operator", password=token)
    )
    assert asyncio.run(_refused(embedded.url, token=token)) == "admitted"

    # the token is on no process's command line (`ps` shows those to every local user)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert token not in cmdline.read_bytes().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue

    # the operator's CLI with the shell file works, without it fails in one line and fast
    ok = _labelloop("dlq", "list", env=shell, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    started = time.monotonic()
    refused = _labelloop("dlq", "list", env={"LABELLOOP_NATS_URL": embedded.url}, cwd=tmp_path)
    assert refused.returncode == 1
    assert "refused the credentials" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    assert len(refused.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60  # not the 10 s retry of an absent server, repeated

    # a restart keeps the token: services started with the old file reconnect
    embedded.stop()
    embedded.start()
    assert (embedded.store / "token").read_text().strip() == token
    assert asyncio.run(_refused(embedded.url, token=token)) == "admitted"
    assert "Authorization Violation" in asyncio.run(_refused(embedded.url))


def test_no_auth_is_explicit_and_says_so(tmp_path: Path) -> None:
    port, http_port = free_ports(2)
    process = subprocess.Popen(
        [
            str(BIN / "labelloop"),
            "nats",
            "--no-auth",
            *("--port", str(port), "--http-port", str(http_port)),
            *("--store-dir", str(tmp_path / "open")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        until((tmp_path / "open" / "env").exists, what="the env file")
        assert asyncio.run(_refused(f"nats://127.0.0.1:{port}")) == "admitted"
        assert "TOKEN" not in (tmp_path / "open" / "env").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    assert "open server" in out
