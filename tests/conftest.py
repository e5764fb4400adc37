"""Fixtures every test level shares: a real nats-server and per-test namespaces."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labelloop.natsserver import EmbeddedNats


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    """One real nats-server (JetStream, temp store, free loopback port) for the session."""
    server = EmbeddedNats().start()
    yield server
    server.cleanup()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
def private_nats() -> Iterator[EmbeddedNats]:
    """A nats-server of this test's own, for tests that stop, kill or restart it."""
    server = EmbeddedNats().start()
    yield server
    server.cleanup()


@pytest.fixture
def namespace() -> str:
    """A unique subject/stream/bucket prefix: tests sharing a server never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"


_LS_SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "labelstudio" / "labelstudio.sh"


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str
    username: str
    password: str
    startup_seconds: float
    files_root: Path
    """Its ``LOCAL_FILES_DOCUMENT_ROOT`` (local files serving is on): a test's media directory
    goes inside (Label Studio serves a storage only strictly inside it)."""

    def __repr__(self) -> str:  # keep the token and password out of pytest's failure output
        return f"LabelStudioServer(url={self.url!r})"


def _read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """One real Label Studio 1.23 per session (``infra/labelstudio``), on loopback, with a token.

    Shared by the bridge's integration tests and the end-to-end tests: every test's projects are
    titled with its own namespace, so they never meet. A fresh start (migrations, first user,
    token) takes ~35-80 s on a 2-core machine. Skipped only when ``LABELLOOP_SKIP_LABELSTUDIO=1``.
    It serves local files under ``files_root``, as the bridge's ``media_root`` needs.
    """
    if os.environ.get("LABELLOOP_SKIP_LABELSTUDIO") == "1":
        pytest.skip("LABELLOOP_SKIP_LABELSTUDIO=1: Label Studio tests skipped")
    state = tmp_path_factory.mktemp("labelstudio")
    files = state / "files"
    files.mkdir()
    subprocess.run([str(_LS_SCRIPT), "install"], check=True, capture_output=True, timeout=900)
    started = time.monotonic()
    run = subprocess.run(
        [str(_LS_SCRIPT), "start", "--dir", str(state), "--document-root", str(files)],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    if run.returncode != 0:
        log = state / "labelstudio.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"Label Studio did not start:\n{run.stderr}\n{tail}")
    env_file = state / "labelstudio.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = _read_env(env_file)
    try:
        yield LabelStudioServer(
            url=env["LABEL_STUDIO_URL"],
            token=env["LABEL_STUDIO_API_KEY"],
            username=env["LABEL_STUDIO_USERNAME"],
            password=env["LABEL_STUDIO_PASSWORD"],
            startup_seconds=time.monotonic() - started,
            files_root=files,
        )
    finally:
        subprocess.run([str(_LS_SCRIPT), "stop", "--dir", str(state)], check=False, timeout=60)


@pytest.fixture(autouse=True)
def _collect_garbage_after_socket_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect a socket test's garbage (nats-py subscriptions, asyncio transports) before the
    next test. CPython 3.11.7 can fail a later ``compile()`` (a lazy import, pytest's assertion
    rewriting) with "SystemError: AST constructor recursion depth mismatch" when such objects'
    finalizers run in the middle of it: seen after the object-store race tests."""
    yield
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("e2e"):
        import gc

        gc.collect()
