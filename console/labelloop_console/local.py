"""The long-running local deployment: ``labelloop up`` and ``labelloop down``.

``labelloop demo`` runs one campaign and stops everything when it ends; people who keep labeling
need the loop to keep running. ``up`` starts the embedded nats-server (its store and token in
``HOME/nats``, kept across restarts) and the six services, supervises them (a service that exits
on its own is restarted; one that keeps crashing stops the deployment, said with its log) and
writes ``HOME/env`` for shells and the CLI. In the foreground, Ctrl-C stops it; with ``--detach``
a background process supervises and ``down`` stops it. ``HOME/up.json`` says what runs where.

With the ``label-studio`` backend, the bridge listens on a fixed port so that Label Studio can
post its webhooks there, with a secret kept in ``HOME/webhook_secret``; the Label Studio URL and
token come from the environment or from the env file ``make labelstudio`` writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LocalOptions",
    "UpFailed",
    "down",
    "read_env_file",
    "run_up",
    "running",
    "start_detached",
]

STATE_FILE = "up.json"
ENV_FILE = "env"
LOG_FILE = "up.log"


class UpFailed(RuntimeError):
    """The deployment could not start or stopped on a fault (one line, for the CLI)."""


@dataclass
class LocalOptions:
    home: Path
    backend: str = "simulated"
    namespace: str = "labelloop"
    port: int = 4222
    http_port: int = 8222
    bridge_port: int = 8093
    label_studio_env: Path | None = None
    """The env file with LABELLOOP_BRIDGE_LABEL_STUDIO_URL / _TOKEN (``make labelstudio``'s)."""

    def argv(self) -> list[str]:
        """The ``labelloop up`` arguments that run these options in the foreground."""
        argv = [
            "up",
            "--home",
            str(self.home),
            "--backend",
            self.backend,
            "--namespace",
            self.namespace,
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--bridge-port",
            str(self.bridge_port),
        ]
        if self.label_studio_env is not None:
            argv += ["--label-studio-env", str(self.label_studio_env)]
        return argv


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, optional quotes), as ``make labelstudio`` writes."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def running(home: Path) -> dict[str, Any] | None:
    """The state of a deployment whose supervisor is alive in ``home``, else ``None``."""
    try:
        state: dict[str, Any] = json.loads((home / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if _alive(int(state.get("pid", 0))) else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_BRIDGE_MEDIA = (
    "LABELLOOP_BRIDGE_MEDIA_ROOT",
    "LABELLOOP_BRIDGE_LABEL_STUDIO_MEDIA_DIR",
    "LABELLOOP_BRIDGE_LABEL_STUDIO_DOCUMENT_ROOT",
)


def _bridge_env(options: LocalOptions) -> dict[str, str]:
    if options.backend == "simulated":
        return {"LABELLOOP_BRIDGE_BACKEND": "simulated"}
    found = dict(os.environ)
    if options.label_studio_env is not None:
        found.update(read_env_file(options.label_studio_env))
    url = found.get("LABELLOOP_BRIDGE_LABEL_STUDIO_URL")
    token = found.get("LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN")
    if not url or not token:
        raise UpFailed(
            "the label-studio backend needs LABELLOOP_BRIDGE_LABEL_STUDIO_URL and _TOKEN: start"
            " one with `make labelstudio` (it writes .labelstudio/labelstudio.env) or set them"
        )
    secret_file = options.home / "webhook_secret"
    if not secret_file.exists():
        descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(secrets.token_hex(20) + "\n")
    return {
        "LABELLOOP_BRIDGE_BACKEND": "label-studio",
        "LABELLOOP_BRIDGE_LABEL_STUDIO_URL": url,
        "LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN": token,
        "LABELLOOP_BRIDGE_WEBHOOK_URL": (
            f"http://127.0.0.1:{options.bridge_port}/webhooks/label-studio"
        ),
        "LABELLOOP_BRIDGE_WEBHOOK_SECRET": secret_file.read_text(encoding="utf-8").strip(),
        # where Label Studio serves media paths from (``make labelstudio LABEL_STUDIO_MEDIA_DIR=``)
        **{key: found[key] for key in _BRIDGE_MEDIA if found.get(key)},
    }


def run_up(
    options: LocalOptions,
    token: str,
    say: Callable[[str], None],
    stop: Callable[[], bool],
) -> None:
    """Start NATS and the services, supervise them until ``stop()`` says so, then stop them.

    Raises :class:`UpFailed` when a service keeps crashing (after stopping everything)."""
    from labelloop.natsserver import EmbeddedNats
    from labelloop_console.processes import ServiceFailed, Supervisor

    home = options.home.resolve()
    if running(home) is not None:
        raise UpFailed(f"labelloop is already up in {home}: `labelloop down --home {home}`")
    bridge = _bridge_env(options)
    server = EmbeddedNats(
        port=options.port,
        http_port=options.http_port,
        store_dir=home / "nats",
        log_file=home / "nats.log",
        token=token,
    ).start()
    supervisor = Supervisor(
        server.url,
        options.namespace,
        home,
        env={"LABELLOOP_NATS_TOKEN_FILE": str(home / "nats" / "token"), **bridge},
        ports={"annotation-bridge": options.bridge_port},
    )
    try:
        supervisor.start_all()
        supervisor.wait_ready(timeout=120)
        _write_state(home, options, server, supervisor, ready=True)
        say(
            f"labelloop is up: nats {server.url}, namespace {options.namespace}, backend"
            f" {options.backend}, logs in {home / 'logs'}"
        )
        while not stop():
            time.sleep(1.0)
            for name in supervisor.revive():
                say(f"{name} exited on its own and was restarted")
                _write_state(home, options, server, supervisor, ready=True)
    except ServiceFailed as exc:
        raise UpFailed(str(exc)) from None
    finally:
        supervisor.stop_all()
        server.stop()
        (home / STATE_FILE).unlink(missing_ok=True)
        say("labelloop is down")


def _write_state(
    home: Path, options: LocalOptions, server: Any, supervisor: Any, *, ready: bool
) -> None:
    url = server.url
    state = {
        "pid": os.getpid(),
        "ready": ready,
        "nats_url": url,
        "nats_pid": server.pid,
        "namespace": options.namespace,
        "backend": options.backend,
        "services": {
            p.name: {"pid": p.process.pid, "url": p.url, "log": str(p.log_path)}
            for p in supervisor.processes
        },
    }
    temporary = home / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    temporary.replace(home / STATE_FILE)
    (home / ENV_FILE).write_text(
        f"LABELLOOP_NATS_URL={url}\n"
        f"LABELLOOP_NATS_TOKEN_FILE={home / 'nats' / 'token'}\n"
        f"LABELLOOP_NAMESPACE={options.namespace}\n",
        encoding="utf-8",
    )


def start_detached(options: LocalOptions, timeout: float = 180.0) -> dict[str, Any]:
    """Run ``labelloop up`` in the background (its own session, output in ``HOME/up.log``);
    return its state once every service is ready."""
    home = options.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if running(home) is not None:
        raise UpFailed(f"labelloop is already up in {home}: `labelloop down --home {home}`")
    (home / STATE_FILE).unlink(missing_ok=True)
    binary = Path(sys.executable).parent / "labelloop"
    command = [str(binary)] if binary.exists() else [sys.executable, "-m", "labelloop_console.cli"]
    with (home / LOG_FILE).open("ab") as out:
        child = subprocess.Popen(
            [*command, *options.argv()],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = running(home)
        if state is not None and state.get("pid") == child.pid and state.get("ready"):
            return state
        if child.poll() is not None:
            raise UpFailed(f"labelloop up exited ({child.returncode}):\n{_tail(home / LOG_FILE)}")
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGTERM)
    raise UpFailed(f"not up within {timeout:.0f} s:\n{_tail(home / LOG_FILE)}")


def down(home: Path, timeout: float = 60.0) -> bool:
    """Stop the deployment in ``home`` (its services, then NATS); ``False`` if none runs."""
    state = running(home.resolve())
    if state is None:
        return False
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise UpFailed(f"the supervisor (pid {pid}) did not stop within {timeout:.0f} s")
        with contextlib.suppress(ChildProcessError):  # not our child: reaped elsewhere
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
