"""The Label Studio client (label-studio-sdk's AsyncLabelStudio under labelloop's retry policy):
its error paths, over httpx.MockTransport (no sockets)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from labelloop_bridge.labelstudio import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioError,
    LabelStudioUnavailable,
    RetryPolicy,
    format_ls_datetime,
)

TOKEN = "secret-token-123"


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def api_call(self, operation: str, outcome: str, seconds: float) -> None:
        self.calls.append((operation, outcome))


def _client(
    handler: Callable[[httpx.Request], httpx.Response], observer: Observer | None = None
) -> tuple[LabelStudioClient, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    http = httpx.AsyncClient(
        base_url="http://ls.test", transport=httpx.MockTransport(handler), timeout=1.0
    )
    client = LabelStudioClient(
        http, TOKEN, retry=RetryPolicy(attempts=3, base_delay=0.5), observer=observer, sleep=sleep
    )
    return client, slept


async def test_sends_the_token_and_reads_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"count": 1, "next": None, "results": [{"id": 3}]})

    client, _ = _client(handler)
    assert await client.list_projects() == [{"id": 3}]
    assert seen[0].headers["Authorization"] == f"Token {TOKEN}"
    assert TOKEN not in repr(client)


async def test_timeouts_are_retried_with_backoff_then_raised() -> None:
    observer = Observer()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client, slept = _client(handler, observer)
    with pytest.raises(LabelStudioUnavailable) as info:
        await client.get_project(1)
    assert "timeout" in str(info.value)
    assert slept == [0.5, 1.0]
    assert observer.calls == [("get_project", "timeout")] * 3


async def test_a_5xx_then_success_recovers() -> None:
    answers = iter([httpx.Response(502, text="bad gateway"), httpx.Response(200, json={"id": 9})])
    observer = Observer()
    client, slept = _client(lambda request: next(answers), observer)
    assert await client.get_project(9) == {"id": 9}
    assert slept == [0.5]
    assert observer.calls == [("get_project", "server_error"), ("get_project", "ok")]


async def test_connection_refused_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _ = _client(handler)
    with pytest.raises(LabelStudioUnavailable, match="connect"):
        await client.list_users()


async def test_401_is_an_auth_error_at_once_and_never_shows_the_token() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, json={"detail": "Invalid token."})

    observer = Observer()
    client, slept = _client(handler, observer)
    with pytest.raises(LabelStudioAuthError) as info:
        await client.list_projects()
    assert calls == 1
    assert slept == []
    assert TOKEN not in str(info.value)
    assert observer.calls == [("list_projects", "auth")]


async def test_4xx_is_a_plain_error_and_404_means_absent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.rstrip("/").endswith("/7"):
            return httpx.Response(404, json={"detail": "Not found."})
        return httpx.Response(400, json={"label_config": ["bad"]})

    client, slept = _client(handler)
    assert await client.get_project(7) is None
    with pytest.raises(LabelStudioError) as info:
        await client.update_project(8, {"label_config": "<View/>"})
    assert not isinstance(info.value, LabelStudioUnavailable)
    assert info.value.status == 400
    assert slept == []


async def test_imports_are_never_retried_blindly() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    client, _ = _client(handler)
    with pytest.raises(LabelStudioUnavailable):
        await client.import_tasks(1, [{"data": {"text": "x"}}])
    assert calls == 1


async def test_task_pages_are_followed_until_total_and_filters_sent() -> None:
    pages = {1: [{"id": 1}, {"id": 2}], 2: [{"id": 3}]}
    queries: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        queries.append(request.url.params.get("query", ""))
        return httpx.Response(200, json={"tasks": pages[page], "total": 3})

    client, _ = _client(handler)
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    tasks = [t async for t in client.tasks_updated_since(5, since)]
    assert [t["id"] for t in tasks] == [1, 2, 3]
    (item,) = json.loads(queries[0])["filters"]["items"]
    assert item["value"] == "2026-01-02T03:04:05.000000Z" == format_ls_datetime(since)


async def test_calls_go_through_the_sdk_whose_own_retries_are_off() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, text="busy")

    observer = Observer()
    client, slept = _client(handler, observer)
    with pytest.raises(LabelStudioUnavailable):
        await client.list_users()
    assert len(seen) == 3  # the policy's three attempts, not three times the SDK's
    assert slept == [0.5, 1.0]
    assert all(r.headers["User-Agent"].startswith("label_studio_sdk/") for r in seen)
    assert observer.calls == [("list_users", "server_error")] * 3


async def test_answers_come_back_as_label_studios_json_not_sdk_models() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.rstrip("/") == "/api/projects/4/import":
            return httpx.Response(201, json={"task_count": 2, "task_ids": [11, 12]})
        return httpx.Response(
            200,
            json={
                "tasks": [{"id": 11, "data": {"k": 1}, "updated_at": "2026-01-02T03:04:05Z"}],
                "total": 1,
            },
        )

    client, _ = _client(handler)
    assert await client.import_tasks(4, [{"data": {"k": 1}}, {"data": {"k": 2}}]) == [11, 12]
    (task,) = await client.tasks_with_data(4, "k", "1")
    assert task["data"] == {"k": 1}
    assert datetime.fromisoformat(task["updated_at"]) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
