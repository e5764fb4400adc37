"""The photo-patches example's detector over HTTP: raw requests against it on a free port (its
answers, its refusals, the token kept out of its log), the trainer's own hook client asking it
for a pool, and ``detector.py`` run as the program the example's README line starts."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from labelloop.project import load_project, parse_project
from labelloop.testing import example_module
from labelloop_trainer.domain.boxes import label_config, parse_predict_response, predict_request
from labelloop_trainer.model_hook import HookError, ModelHook

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "photo-patches"
TOKEN = "detector-token-51c2e8"  # a test credential: it must reach no log


def _until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait for what another thread or process does after the client has its answer."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def _load(module: str, name: str) -> ModuleType:
    return example_module(EXAMPLE / f"{module}.py", name)


@pytest.fixture(scope="module")
def detector() -> ModuleType:
    return _load("detector", "photo_patches_detector")


@pytest.fixture(scope="module")
def tiles(detector: ModuleType) -> Any:
    return _load("tiles", "photo_patches").load_tiles()


class _Seen(list[tuple[int, bool]]):
    def __call__(self, status: int, body: Mapping[str, Any] | None) -> None:
        self.append((status, body is not None))


@pytest.fixture
def served(detector: ModuleType) -> Iterator[tuple[Any, _Seen]]:
    """The detector on a free loopback port, on a thread, asking for ``TOKEN``."""
    seen = _Seen()
    server = detector.DetectorServer(("127.0.0.1", 0), token=TOKEN, observe=seen)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _call(
    server: Any, method: str, path: str, body: object = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    """One raw HTTP request: the status and the JSON answered."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    raw = None if body is None else json.dumps(body).encode()
    try:
        connection.request(method, path, body=raw, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _request(tiles: Any, positions: list[int]) -> dict[str, Any]:
    """What the trainer sends for these tiles, built by the trainer's own code."""
    return predict_request(
        [(k, item.data) for k, item in enumerate(tiles.items(positions))],
        "photo-patches",
        label_config("image", ["bright", "dark"]),
    )


def test_it_answers_the_contract_and_refuses_without_the_token(
    detector: ModuleType,
    tiles: Any,
    served: tuple[Any, _Seen],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, seen = served
    host, port = server.server_address[:2]
    caplog.set_level(logging.DEBUG)
    body = _request(tiles, [0, 100])

    status, answer = _call(server, "POST", "/predict", body)
    assert status == 200
    assert answer == json.loads(json.dumps(detector.predict(body)))
    predictions = parse_predict_response(answer, 2, ["bright", "dark"])
    assert [[b["label"] for b in p.boxes] for p in predictions] == [["bright", "dark"]] * 2
    assert all(p.dropped == 0 and p.model_version == detector.MODEL_VERSION for p in predictions)

    assert _call(server, "POST", "/predict", body, token=None) == (401, {"error": "unauthorized"})
    challenge = http.client.HTTPConnection(host, port, timeout=30)
    try:
        challenge.request("GET", "/health")
        assert challenge.getresponse().getheader("WWW-Authenticate", "").startswith("Bearer ")
    finally:
        challenge.close()
    assert _call(server, "POST", "/predict", body, token="guess")[0] == 401
    assert _call(server, "GET", "/health", token=None)[0] == 401
    status, health = _call(server, "GET", "/health")
    assert (status, health["status"]) == (200, "UP")
    assert _call(server, "POST", "/train", body)[0] == 404
    bare = http.client.HTTPConnection(host, port, timeout=30)
    try:  # no Content-Length: refused before anything is read
        bare.putrequest("POST", "/predict")
        bare.endheaders()
        assert bare.getresponse().status == 411
    finally:
        bare.close()
    body["tasks"][1]["data"]["image"] = "http://elsewhere/tile.png"
    status, refused = _call(server, "POST", "/predict", body)
    assert status == 400
    assert refused["error"].startswith("task 1: the image is not a PNG data URI")

    # the embedder hears each /predict request, a body only when it was authorized; the server
    # thread tells it after the answer is sent, so the last may come after the client has it
    wanted = [(200, True), (401, False), (401, False), (411, False), (400, True)]
    _until(lambda: len(seen) >= len(wanted))
    assert seen == wanted
    lines = [r.getMessage() for r in caplog.records if r.name == "photo_patches.detector"]
    assert any(line.startswith("POST /predict 200 2 tasks") for line in lines), lines
    assert any(line.startswith("POST /predict 401") for line in lines), lines
    assert not [r for r in caplog.records if TOKEN in r.getMessage()]


async def test_the_trainers_hook_client_gets_the_pool_scored(
    tiles: Any, served: tuple[Any, _Seen]
) -> None:
    server, seen = served
    raw = load_project(EXAMPLE / "project.yaml").model_dump(mode="json")
    raw["model_hook"] = {**raw["model_hook"], "url": server.url, "batch_size": 3}
    config = parse_project(raw)
    assert config.model_hook is not None
    env = str(config.model_hook.credentials_env)
    items = [(str(item.external_id), item.data) for item in tiles.items(range(7))]

    hook = ModelHook(config.model_hook, env={env: TOKEN})
    pool = await hook.predict_pool(
        config.name, items, field_name="image", labels=config.labels.classes
    )
    assert pool.requests == 3  # 7 tiles, 3 a request
    assert pool.retries == 0
    assert pool.item_ids == [i for i, _ in items]
    assert all(len(p.boxes) == 2 and p.dropped == 0 for p in pool.predictions)
    assert pool.model_versions == ["tile-detector-1"]

    wrong = ModelHook(config.model_hook, env={env: "not-the-token"})
    with pytest.raises(HookError, match="HTTP 401"):
        await wrong.predict_pool(
            config.name, items, field_name="image", labels=config.labels.classes
        )
    assert [status for status, _ in seen] == [200, 200, 200, 401]


_SERVING = re.compile(r" at http://127\.0\.0\.1:(\d+)")


def test_the_program_serves_on_the_port_it_is_given() -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "detector.py"), "--port", "0"],
        env={**os.environ, "PHOTO_PATCHES_TOKEN": TOKEN},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if _SERVING.search(line):
                serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert serving.wait(timeout=30), lines
        match = next(m for line in lines if (m := _SERVING.search(line)))
        connection = http.client.HTTPConnection("127.0.0.1", int(match[1]), timeout=10)
        connection.request("GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["status"] == "UP"
        connection.close()
        # the request is logged after its answer is sent: wait for the line, then stop it
        _until(lambda: "GET /health 200" in "".join(lines))
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)
    log = "".join(lines)
    assert "every request needs the bearer token in PHOTO_PATCHES_TOKEN" in log
    assert "GET /health 200" in log
    assert TOKEN not in log
