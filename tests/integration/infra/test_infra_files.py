"""The deployment files hold together: compose, Dockerfile, NATS permissions, Prometheus, Grafana.

The files are checked statically where only Docker could run them (``make compose-test`` runs
them on a Docker engine, outside ``make test``), and for real where something else can:

* the compose file parses, every labelloop container runs ``labelloop-service <name>`` from the
  service image (no operator console in it), only
  the UIs publish ports, every ``LABELLOOP_*`` variable it sets is a real setting of that service
  and every secret comes from ``.env`` (documented in ``.env.example``) or, for NATS, from a
  compose secret file that ``labelloop secrets`` writes;
* ``promtool`` checks the Prometheus config and rules and runs the rules' unit tests, and
  ``nats-server -t`` checks the production NATS config;
* the six services run as ``labelloop-service <service>`` subprocesses with the environment the
  compose file gives them, each as its own NATS user of ``infra/nats/accounts.conf``: a whole
  labeling round (items -> batch -> simulated annotations -> QA -> dataset -> model) passes without
  one permission violation, and every metric the dashboards and alerts use is on their /metrics
  (or among the NATS exporter's families).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from pydantic import AliasChoices

from labelloop.events import (
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    DatasetExported,
    Event,
    ItemIn,
    ItemsIngested,
    ItemsSubmitted,
    LabelsReady,
    ModelTrained,
    QAReport,
)
from labelloop.natsserver import EmbeddedNats, find_binary, free_port
from labelloop.project import parse_project
from labelloop.runtime import ServiceSettings
from labelloop.services import service_specs
from labelloop.testing import EventCollector, configure_project, started
from labelloop_console.credentials import write_credentials
from labelloop_console.permissions import PASSWORD_VARIABLES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
DASHBOARDS = ROOT / "infra" / "grafana" / "dashboards"
NATS_DIR = ROOT / "infra" / "nats"

SERVICES = service_specs()
UI_PORTS = {"label-studio": 8080, "grafana": 3000, "prometheus": 9090, "alertmanager": 9093}
"""Services that may publish a port (Prometheus and Alertmanager on the loopback interface only)."""

# Dummy secrets standing in for .env in these tests.
SECRETS = {
    "NATS_INGESTER_PASSWORD": "ingester-test-pw",
    "NATS_SAMPLER_PASSWORD": "sampler-test-pw",
    "NATS_BRIDGE_PASSWORD": "bridge-test-pw",
    "NATS_QA_PASSWORD": "qa-test-pw",
    "NATS_EXPORTER_PASSWORD": "exporter-test-pw",
    "NATS_TRAINER_PASSWORD": "trainer-test-pw",
    "NATS_PRODUCER_PASSWORD": "producer-test-pw",
    "NATS_OPERATOR_PASSWORD": "operator-test-pw",
    "NATS_SYSTEM_PASSWORD": "system-test-pw",
    "POSTGRES_PASSWORD": "pg-test-pw",
    "LABEL_STUDIO_USERNAME": "admin@example.com",
    "LABEL_STUDIO_PASSWORD": "ls-test-pw",
    "LABEL_STUDIO_TOKEN": "0123456789abcdef0123456789abcdef01234567",
    "LABELLOOP_WEBHOOK_SECRET": "webhook-test-secret",
    "SLACK_WEBHOOK_URL_FILE": "/run/test/slack_webhook_url",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test-pw",
}

# prometheus-nats-exporter's JetStream families (-jsz=all), from its collector/jsz.go; the -varz
# families are `gnatsd_varz_<numeric field of /varz>`, read from a real server below.
NATS_JSZ_FAMILIES = {
    "jetstream_server_jetstream_disabled",
    "jetstream_server_total_streams",
    "jetstream_server_total_consumers",
    "jetstream_server_total_messages",
    "jetstream_server_total_message_bytes",
    "jetstream_server_max_memory",
    "jetstream_server_max_storage",
    "jetstream_stream_total_messages",
    "jetstream_stream_total_bytes",
    "jetstream_stream_first_seq",
    "jetstream_stream_last_seq",
    "jetstream_stream_consumer_count",
    "jetstream_consumer_delivered_consumer_seq",
    "jetstream_consumer_delivered_stream_seq",
    "jetstream_consumer_num_ack_pending",
    "jetstream_consumer_num_redelivered",
    "jetstream_consumer_num_waiting",
    "jetstream_consumer_num_pending",
    "jetstream_consumer_ack_floor_stream_seq",
    "jetstream_consumer_ack_floor_consumer_seq",
}
PROMETHEUS_BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


# ---------------------------------------------------------------------- compose helpers


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _labelloop_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services that run a labelloop service (the image's entrypoint, `run <name>`)."""
    return {
        name: spec
        for name, spec in compose["services"].items()
        if "entrypoint" not in spec and str(spec.get("image", "")).startswith("${LABELLOOP_IMAGE")
    }


def _dockerfile_entrypoint(target: str = "service") -> list[str]:
    """The exec-form ENTRYPOINT of one build stage of the Dockerfile."""
    stages = re.split(r"^FROM\s+", DOCKERFILE.read_text(), flags=re.MULTILINE)
    (stage,) = [s for s in stages if re.match(rf"\S+\s+AS\s+{target}\s*$", s.splitlines()[0])]
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", stage, re.MULTILINE)
    assert match, f"the Dockerfile's {target} stage has no exec-form ENTRYPOINT"
    value = json.loads(match.group(1))
    assert isinstance(value, list)
    return [str(v) for v in value]


_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against ``env``."""

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env and env[name] != "":
            return env[name]
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return ""

    return _INTERPOLATION.sub(sub, value)


def _settings_class(service: str) -> type[ServiceSettings]:
    return SERVICES[service].settings


def _env_names(cls: type[ServiceSettings]) -> set[str]:
    """Environment variables a settings class reads."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {
                str(c).upper() for c in alias.choices if str(c).upper().startswith("LABELLOOP_")
            }
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


# ---------------------------------------------------------------------- static checks


def test_compose_runs_every_service_from_the_one_image_with_its_real_command() -> None:
    compose = _compose()
    services = _labelloop_services(compose)
    entrypoint = _dockerfile_entrypoint("service")
    assert entrypoint == ["labelloop-service"]
    assert _dockerfile_entrypoint("console") == ["labelloop"]
    assert set(services) == set(SERVICES), "one compose service per labelloop entry point"
    for name, spec in services.items():
        argv = [*entrypoint, *spec["command"]]
        assert argv == ["labelloop-service", name], f"{name}: runs {argv}"
        assert spec["build"]["dockerfile"] == "infra/docker/Dockerfile"
        assert spec["build"]["target"] == "service", f"{name}: the image without the console"
        grace = int(str(spec["stop_grace_period"]).rstrip("s"))
        graceful = float(spec["environment"]["LABELLOOP_GRACEFUL_TIMEOUT_SECONDS"])
        assert grace > graceful, f"{name}: docker would kill in-flight handlers"
        assert spec["deploy"]["replicas"] >= 1
        assert "container_name" not in spec, f"{name}: a fixed name prevents replicas"


def test_only_the_user_interfaces_publish_ports() -> None:
    for name, spec in _compose()["services"].items():
        ports = spec.get("ports", [])
        if name not in UI_PORTS:
            assert not ports, f"{name} publishes {ports}"
            continue
        (mapping,) = ports
        container_port = int(str(mapping).rsplit(":", 1)[1])
        assert container_port == UI_PORTS[name]
        if name in ("prometheus", "alertmanager"):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} is for operators only"


def test_compose_sets_only_real_settings_and_no_secret_values() -> None:
    compose = _compose()
    for name, spec in _labelloop_services(compose).items():
        known = _env_names(_settings_class(name))
        env = spec["environment"]
        unknown = sorted(k for k in env if k.startswith("LABELLOOP_") and k not in known)
        assert not unknown, f"{name}: settings ignore {unknown} (pydantic-settings drops them)"
        prefix = str(_settings_class(name).model_config["env_prefix"])
        assert env[f"{prefix}HTTP_HOST"] == "0.0.0.0", f"{name} must listen beyond loopback"
    secret = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)
    for name, spec in compose["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if not secret.search(key):
                continue
            mounted = re.fullmatch(r"/run/secrets/(\w+)", str(value))
            if key.endswith("_FILE") and mounted:  # a compose secret this container mounts
                assert mounted.group(1) in spec.get("secrets", []), f"{name}.{key}: not mounted"
                assert mounted.group(1) in compose["secrets"], f"{name}.{key}: no such secret"
                continue
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), (
                f"{name}.{key} must come from .env as ${{VAR:?...}} or a secret file, not be"
                " written here"
            )


def test_nats_credentials_are_compose_secrets_each_container_gets_only_its_own() -> None:
    compose = _compose()
    for name, spec in compose["services"].items():
        mounted = [s if isinstance(s, str) else s["source"] for s in spec.get("secrets", [])]
        env = spec.get("environment") or {}
        if name.startswith("nats-") and not name.startswith("nats-exporter"):
            assert sorted(mounted) == ["nats_accounts_conf", "nats_routes_conf"], name
            assert not any("PASSWORD" in key for key in env), f"{name}: a password in its env"
            continue
        passwords = [m for m in mounted if m.startswith("nats_")]
        if "LABELLOOP_NATS_USER" in env:
            assert passwords == [env["LABELLOOP_NATS_PASSWORD_FILE"].rsplit("/", 1)[1]], name
        else:
            assert not passwords, f"{name} mounts NATS passwords it does not use"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("${"), "secret files live outside the repository"


def test_env_example_documents_every_variable_compose_needs() -> None:
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    required = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(2) in (":?", "?")}
    example = {
        line.split("=", 1)[0].strip()
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert required <= example, f"missing from .env.example: {sorted(required - example)}"
    assert required <= set(SECRETS), "the test's stand-in secrets are out of date"


def test_dockerfile_copies_what_exists_and_the_build_context_keeps_it() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    for source in sources:
        if "[" in source:  # optional file (constraints.tx[t])
            continue
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in sources:
        assert source.rstrip("/").replace("[t]", "t") in kept, (
            f"{source} is not in .dockerignore's !list"
        )
    assert re.search(r"^USER\s+labelloop", text, re.MULTILINE), "the image must not run as root"
    assert "HEALTHCHECK" in text
    assert "healthcheck.py" in text


def _tool(name: str, package: str) -> str:
    """A Debian-packaged checker: required in CI, skipped where it is not installed."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (apt-get install {package})")
        pytest.skip(f"{name} is not installed (apt-get install {package}); CI runs this check")
    return found


def _promtool() -> str:
    return _tool("promtool", "prometheus")


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ],
    ids=["config", "rules", "rule-unit-tests"],
)
def test_promtool_accepts_the_prometheus_files(argv: list[str]) -> None:
    result = subprocess.run(
        [_promtool(), *argv], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _amtool() -> str:
    return _tool("amtool", "prometheus-alertmanager")


def test_alertmanager_accepts_its_config_and_routes_critical_alerts_to_on_call() -> None:
    config = PROMETHEUS_DIR / "alertmanager.yml"
    checked = subprocess.run(
        [_amtool(), "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    def receiver(*labels: str) -> str:
        routed = subprocess.run(
            [_amtool(), "config", "routes", "test", f"--config.file={config}", *labels],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert routed.returncode == 0, routed.stderr
        return routed.stdout.strip()

    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            severity = rule["labels"]["severity"]
            expected = "on-call" if severity == "critical" else "team"
            got = receiver(f"alertname={rule['alert']}", f"severity={severity}")
            assert got == expected, (rule["alert"], severity, got)
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    targets = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    assert "alertmanager" in _compose()["services"]


def test_nats_server_accepts_the_production_config(tmp_path: Path) -> None:
    # beside it, as compose mounts them: what `labelloop secrets` writes
    shutil.copy(NATS_DIR / "nats-prod.conf", tmp_path / "nats-prod.conf")
    write_credentials(tmp_path / "credentials")
    shutil.copytree(tmp_path / "credentials" / "nats", tmp_path / "secrets")
    env = {**os.environ, "NATS_SERVER_NAME": "nats-1"}
    for variable in PASSWORD_VARIABLES.values():
        env.pop(variable, None)  # the hashes in secrets/accounts.conf, not the environment
    result = subprocess.run(
        [find_binary(), "-c", str(tmp_path / "nats-prod.conf"), "-t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (NATS_DIR / "nats-prod.conf").read_text(encoding="utf-8")
    assert re.search(r"^\s*sync_interval:\s*always", text, re.MULTILINE)


# ---------------------------------------------------------------------- PromQL names


_DROP = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # strings (label values, regexes)
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # ranges and subqueries
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),  # label lists
    re.compile(r"\$\w+"),  # Grafana variables
]
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, keywords and labels left out)."""
    for pattern in _DROP:
        expr = pattern.sub(" ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_promql_metric_names_are_found() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, event) (rate(a_seconds_bucket{x="y"}[5m])))'
        ' / on (instance) b_total unless on () c > 0.5 and absent(d{e="f"}) * $rate'
    )
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d"}


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    exprs = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", [])]
        for var in board["templating"]["list"]:
            if var.get("type") == "query":
                exprs.append(re.sub(r"label_values\(([^,]+),.*\)", r"\1", var["definition"]))
    assert exprs
    return exprs


# ---------------------------------------------------------------------- live deployment


@dataclass
class Deployment:
    nats: EmbeddedNats
    nats_log: Path
    ports: dict[str, int]
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]]
    export_dir: Path

    def url_for(self, user: str, password: str) -> str:
        return f"nats://{user}:{password}@127.0.0.1:{self.nats.port}"


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _service_env(
    name: str, spec: dict[str, Any], nats_url: str, port: int, exports: Path
) -> dict[str, str]:
    """The environment compose gives the container, pointed at this machine."""
    prefix = str(_settings_class(name).model_config["env_prefix"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    env.update({k: _interpolate(str(v), SECRETS) for k, v in spec["environment"].items()})
    user, password = env["LABELLOOP_NATS_USER"], _secret_file(env, exports.parent / "secrets")
    assert user, f"{name}: no NATS user"
    assert password, f"{name}: no NATS password"
    env.update(
        {
            "LABELLOOP_NATS_URL": nats_url,
            "LABELLOOP_STREAM_REPLICAS": "1",  # one node here, three in compose
            f"{prefix}HTTP_HOST": "127.0.0.1",
            f"{prefix}HTTP_PORT": str(port),
        }
    )
    if name == "exporter":
        env["LABELLOOP_EXPORTER_EXPORT_DIR"] = str(exports)
    if name == "annotation-bridge":
        env["LABELLOOP_BRIDGE_BACKEND"] = "simulated"  # no Label Studio here
    return env


def _secret_file(env: dict[str, str], folder: Path) -> str:
    """For the NATS password compose mounts (``/run/secrets/nats_<user>_password``), a file in
    ``folder`` that holds the test's password for that user; returns the password."""
    name = env["LABELLOOP_NATS_PASSWORD_FILE"].removeprefix("/run/secrets/")
    password = SECRETS[name.upper()]
    path = folder / name
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(password, encoding="utf-8")
    env["LABELLOOP_NATS_PASSWORD_FILE"] = str(path)
    return password


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """nats-server with the production accounts, and the six services as compose runs them."""
    tmp = Path(tempfile.mkdtemp(prefix="labelloop-infra-"))
    shutil.copy(NATS_DIR / "accounts.conf", tmp / "accounts.conf")
    config = tmp / "nats.conf"
    config.write_text(
        "server_name: infra-test\nmax_payload: 8MB\ninclude ./accounts.conf\n", encoding="utf-8"
    )
    nats_log = tmp / "nats.log"
    # nats-server substitutes the passwords from its environment
    server = EmbeddedNats(
        config_file=config, store_dir=tmp / "js", log_file=nats_log, env=SECRETS
    ).start()
    exports = tmp / "exports"
    compose = _compose()
    binary = str(Path(sys.executable).parent / "labelloop-service")
    ports, logs, processes = {}, {}, {}
    try:
        # the compose `provision` job first: the services' users may not create streams
        job = compose["services"]["provision"]
        assert job["entrypoint"][0] == "labelloop-service"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
        env.update({k: _interpolate(str(v), SECRETS) for k, v in job["environment"].items()})
        _secret_file(env, tmp / "secrets")
        env.update({"LABELLOOP_NATS_URL": server.url, "LABELLOOP_STREAM_REPLICAS": "1"})
        provisioned = subprocess.run(
            [binary, *job["entrypoint"][1:]], env=env, capture_output=True, text=True, timeout=120
        )
        assert provisioned.returncode == 0, provisioned.stderr
        for name, spec in _labelloop_services(compose).items():
            ports[name] = free_port()
            logs[name] = tmp / f"{name}.log"
            env = _service_env(name, spec, server.url, ports[name], exports)
            argv = [binary, *spec["command"]]
            with logs[name].open("wb") as out:
                processes[name] = subprocess.Popen(
                    argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
        deployment = Deployment(server, nats_log, ports, logs, processes, exports)
        _wait_ready(deployment, timeout=60)
        yield deployment
    finally:
        for process in processes.values():
            _stop(process)
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_ready(deployment: Deployment, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(deployment.ports)
    while waiting and time.monotonic() < deadline:
        for name in sorted(waiting):
            process = deployment.processes[name]
            if process.poll() is not None:
                log = deployment.logs[name].read_text(errors="replace")[-3000:]
                refused = [
                    line
                    for line in deployment.nats_log.read_text(errors="replace").splitlines()
                    if "Violation" in line
                ]
                pytest.fail(
                    f"`labelloop-service {name}` exited with {process.returncode}:\n{log}\n"
                    + "\n".join(refused[:10])
                )
            try:
                status, _ = _get(f"http://127.0.0.1:{deployment.ports[name]}/readyz")
            except OSError:
                continue
            if status == 200:
                waiting.discard(name)
        time.sleep(0.2)
    if waiting:
        tails = {n: deployment.logs[n].read_text(errors="replace")[-1500:] for n in waiting}
        pytest.fail(f"not ready within {timeout:.0f} s: {sorted(waiting)}\n{tails}")


def _families(text: str) -> set[str]:
    """Metric families and sample names in a Prometheus text exposition."""
    names = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            parts = line.split()
            name = parts[2]
            names.add(name)
            if line.startswith("# TYPE ") and parts[3] in ("histogram", "summary"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if line.startswith("# TYPE ") and parts[3] == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_service_is_healthy_and_ready(deployment: Deployment) -> None:
    for name, port in deployment.ports.items():
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 204, name
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, name


async def test_dashboards_and_alerts_use_only_metrics_that_exist(
    nats_server: EmbeddedNats, namespace: str
) -> None:
    """Every service started for real; their registries are what /metrics serves."""
    exposed = set(PROMETHEUS_BUILTIN) | NATS_JSZ_FAMILIES
    async with contextlib.AsyncExitStack() as stack:
        for name, spec in SERVICES.items():
            options: dict[str, Any] = {"nats_url": nats_server.url, "namespace": namespace}
            if name == "annotation-bridge":
                options["backend"] = "simulated"  # no Label Studio here; same metric families
            service = spec.build(spec.settings(**options))
            await stack.enter_async_context(started(service))
            exposed |= _families(generate_latest(service.registry).decode())
    _, varz = _get(f"http://127.0.0.1:{nats_server.http_port}/varz")
    exposed |= {
        f"gnatsd_varz_{key}"
        for key, value in json.loads(varz).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    used: dict[str, set[str]] = {
        "alerts.yml": set().union(*map(promql_metric_names, _alert_exprs())),
        "dashboards": set().union(*map(promql_metric_names, _dashboard_exprs())),
    }
    for where, names in used.items():
        missing = sorted(names - exposed)
        assert not missing, f"{where} uses metrics nobody exposes: {missing}"


def test_every_service_serves_its_metrics_over_http(deployment: Deployment) -> None:
    for name, port in deployment.ports.items():
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200, name
        assert "labelloop_runtime_ready 1.0" in body.decode(), name


def _texts(n: int) -> list[tuple[str, str]]:
    good = ["great", "lovely", "excellent", "superb"]
    bad = ["awful", "terrible", "broken", "poor"]
    out = []
    for k in range(n):
        label = "pos" if k % 2 else "neg"
        words = good if label == "pos" else bad
        out.append((f"item {k}: the product was {words[k % 4]} and {words[(k + 1) % 4]}", label))
    return out


PROJECT = {
    "name": "infra-smoke",
    "task_type": "text_classification",
    "labels": {"classes": ["pos", "neg"]},
    "data_fields": [{"name": "text", "kind": "text"}],
    "quality": {"overlap_fraction": 0.2, "annotators_per_overlapped_item": 2, "gold_fraction": 0.0},
    "sampling": {"strategy": "random", "batch_size": 30, "seed": 3},
    "training": {"min_new_labels": 20},
    "simulation": {
        "seed": 5,
        "annotators": [
            {"id": "sim-a", "behaviour": "good", "accuracy": 0.95},
            {"id": "sim-b", "behaviour": "good", "accuracy": 0.95},
        ],
    },
}
_STAGES: tuple[type[Event], ...] = (
    ItemsIngested,
    BatchCreated,
    AnnotationsSubmitted,
    BatchCompleted,
    QAReport,
    LabelsReady,
    DatasetExported,
    ModelTrained,
)


async def test_a_labeling_round_passes_under_the_production_permissions(
    deployment: Deployment,
) -> None:
    operator = deployment.url_for("operator", SECRETS["NATS_OPERATOR_PASSWORD"])
    producer = deployment.url_for("producer", SECRETS["NATS_PRODUCER_PASSWORD"])
    collectors = {e: EventCollector(operator, "labelloop", e) for e in _STAGES}
    for collector in collectors.values():
        await collector.__aenter__()
    try:
        await configure_project(operator, "labelloop", parse_project(PROJECT))
        submission = ItemsSubmitted(
            project="infra-smoke",
            items=[
                ItemIn(data={"text": text}, metadata={"simulation_truth": label})
                for text, label in _texts(90)
            ],
        )
        from labelloop.client import connect  # the producer's path: provision + publish

        async with connect(ServiceSettings(nats_url=producer, namespace="labelloop")) as bus:
            assert await bus.publish(submission)
        with contextlib.suppress(TimeoutError):  # the asserts below say how far it got
            await collectors[ModelTrained].wait_for(1, timeout=45)
        reached = {e.__name__: len(c.events) for e, c in collectors.items()}
        violations = [
            line
            for line in deployment.nats_log.read_text(errors="replace").splitlines()
            if "Violation" in line
        ]
        assert not violations, "permission violations:\n" + "\n".join(violations[:20])
        assert collectors[ModelTrained].events, f"the round stopped early: {reached}"
        # what prometheus-nats-exporter -jsz=all reads: the names the alerts select on
        _, jsz = _get(
            f"http://127.0.0.1:{deployment.nats.http_port}/jsz?consumers=true&config=true"
        )
        streams = {
            stream["name"]: stream
            for account in json.loads(jsz)["account_details"]
            for stream in account.get("stream_detail", [])
        }
        assert "LABELLOOP_DLQ" in streams
        consumers = {c["name"] for s in streams.values() for c in s.get("consumer_detail", [])}
        assert "labelloop_qa_scorer_batches_completed" in consumers
    finally:
        for collector in collectors.values():
            await collector.__aexit__(None, None, None)
