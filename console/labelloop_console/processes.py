"""Running the six services as separate processes, exactly as the containers run them.

Used by ``labelloop demo``, the end-to-end and chaos tests and the benchmarks. Each process is
``labelloop-service <service>`` with its settings in the environment and its logs in a file; the
names come from the services' specs (``labelloop.services``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from labelloop.natsserver import free_port
from labelloop.services import service_spec, service_specs
from labelloop.settings import CREDENTIAL_VARIABLES

__all__ = ["ServiceFailed", "ServiceProcess", "Supervisor", "env_prefix", "service_names"]


class ServiceFailed(RuntimeError):
    """A service kept exiting on its own: restarting it again would not help."""


def service_names() -> tuple[str, ...]:
    """Every installed service, upstream first."""
    return tuple(service_specs())


def env_prefix(service: str) -> str:
    """The environment prefix of a service's own settings, e.g. ``LABELLOOP_SAMPLER_``."""
    return service_spec(service).env_prefix


def _command() -> list[str]:
    script = Path(sys.executable).parent / "labelloop-service"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "labelloop.services"]


@dataclass
class ServiceProcess:
    service: str
    replica: int
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    expected_exit: bool = False
    """Killed or stopped on purpose (a chaos test, shutdown): not a crash to revive."""

    @property
    def name(self) -> str:
        return f"{self.service}-{self.replica}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:  # noqa: S310
            return str(resp.read().decode())


@dataclass
class Supervisor:
    """Starts, kills and stops service processes against one NATS server and namespace."""

    nats_url: str
    namespace: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: list[ServiceProcess] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    """Crashes revived, per process name."""
    ports: dict[str, int] = field(default_factory=dict)
    """Fixed HTTP ports per service (the bridge's, where Label Studio posts its webhooks); the
    others get a free port."""

    def start(
        self, service: str, replica: int = 0, extra_env: dict[str, str] | None = None
    ) -> ServiceProcess:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        port = self.ports.get(service) or free_port()
        inherited = dict(os.environ)
        if any(key in self.env for key in CREDENTIAL_VARIABLES):
            # this server's credentials, not a mix with those of another server in the shell
            inherited = {k: v for k, v in inherited.items() if k not in CREDENTIAL_VARIABLES}
        env = {
            **inherited,
            "LABELLOOP_NATS_URL": self.nats_url,
            "LABELLOOP_NAMESPACE": self.namespace,
            "LABELLOOP_LOG_FORMAT": "json",
            f"{env_prefix(service)}HTTP_PORT": str(port),
            f"{env_prefix(service)}HTTP_HOST": "127.0.0.1",
            **self.env,
            **(extra_env or {}),
        }
        log_path = logs / f"{service}-{replica}.log"
        out = open(log_path, "ab")  # noqa: SIM115 - owned by the child process from here on
        process = subprocess.Popen(
            [*_command(), service],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        out.close()
        proc = ServiceProcess(service, replica, port, log_path, process)
        self.processes.append(proc)
        return proc

    def start_all(self, services: tuple[str, ...] | None = None) -> list[ServiceProcess]:
        return [self.start(s) for s in (services or service_names())]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every live process answers /readyz; fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        pending = [p for p in self.processes if p.alive()]
        while pending:
            for proc in list(pending):
                if not proc.alive():
                    raise ServiceFailed(
                        f"{proc.name} exited at start (code {proc.process.returncode});"
                        f" its log ({proc.log_path}) ends:\n{_tail(proc.log_path, 15)}"
                    )
                if proc.ready():
                    pending.remove(proc)
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in pending)
                raise TimeoutError(f"not ready within {timeout}s: {names}")
            time.sleep(0.1)

    def get(self, service: str, replica: int = 0) -> ServiceProcess:
        for proc in reversed(self.processes):
            if proc.service == service and proc.replica == replica:
                return proc
        raise KeyError(f"{service}-{replica}")

    def kill(self, service: str, replica: int = 0) -> None:
        """SIGKILL, as a crash or an OOM kill would do."""
        proc = self.get(service, replica)
        proc.expected_exit = True
        if proc.alive():
            os.killpg(proc.process.pid, signal.SIGKILL)
            proc.process.wait()

    def revive(self, max_restarts: int = 3) -> list[str]:
        """Restart every process that exited on its own (a crash, an OOM kill); returns their
        names. A process that crashed more than ``max_restarts`` times raises
        :class:`ServiceFailed` with the end of its log: a supervisor that restarts forever
        hides the fault."""
        revived = []
        for proc in list(self.processes):
            if proc.alive() or proc.expected_exit:
                continue
            count = self.restarts.get(proc.name, 0) + 1
            self.restarts[proc.name] = count
            if count > max_restarts:
                proc.expected_exit = True  # said once
                raise ServiceFailed(
                    f"{proc.name} exited {count} times (last exit code "
                    f"{proc.process.returncode}); its log ({proc.log_path}) ends:\n"
                    + _tail(proc.log_path, 15)
                )
            self.processes.remove(proc)
            self.start(proc.service, proc.replica)
            revived.append(proc.name)
        return revived

    def restart(self, service: str, replica: int = 0) -> ServiceProcess:
        old = self.get(service, replica)
        if old.alive():
            self.kill(service, replica)
        self.processes.remove(old)
        return self.start(service, replica)

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM everyone (graceful), then SIGKILL whoever is still there after ``timeout``."""
        for proc in self.processes:
            proc.expected_exit = True
            if proc.alive():
                os.killpg(proc.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            remaining = max(deadline - time.monotonic(), 0.1)
            try:
                proc.process.wait(remaining)
            except subprocess.TimeoutExpired:
                os.killpg(proc.process.pid, signal.SIGKILL)
                proc.process.wait()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
