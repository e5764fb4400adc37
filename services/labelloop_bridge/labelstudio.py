"""A thin async client for the Label Studio 1.23 (Community Edition) endpoints the bridge uses.

Why not ``label_studio_sdk``: its client is synchronous (the async one wraps the same generated
code), so every call would need a thread; we need a per-call retry policy (an import must *not* be
blindly retried, a list may be), latency and error metrics per operation, and a transport tests can
replace (``httpx.MockTransport``). A few endpoints over ``httpx.AsyncClient`` give all that in
one page, and the bridge never touches the ~255 Enterprise-only SDK methods by accident.

Every endpoint here was checked against a running label-studio 1.23.2 (see
``tests/integration/bridge``). The token is sent as ``Authorization: Token ...`` and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

__all__ = [
    "ApiObserver",
    "LabelStudioAuthError",
    "LabelStudioClient",
    "LabelStudioError",
    "LabelStudioUnavailable",
    "RetryPolicy",
    "format_ls_datetime",
]

log = logging.getLogger("labelloop.bridge.labelstudio")

Json = dict[str, Any]


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error that retrying will not fix (4xx other than auth)."""

    def __init__(self, operation: str, status: int | None, detail: str) -> None:
        self.operation = operation
        self.status = status
        super().__init__(f"label studio {operation}: {status or ''} {detail}".strip())


class LabelStudioUnavailable(LabelStudioError):
    """Down, timing out, or answering 5xx/429: worth retrying later."""


class LabelStudioAuthError(LabelStudioError):
    """401/403: the token is wrong or lacks permission. Fix the configuration; retries will not."""


class ApiObserver(Protocol):
    """Receives one observation per HTTP attempt (the bridge's metrics implement it)."""

    def api_call(self, operation: str, outcome: str, seconds: float) -> None: ...


class _NoObserver:
    def api_call(self, operation: str, outcome: str, seconds: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2**attempt))


def format_ls_datetime(moment: datetime) -> str:
    """The one datetime format Label Studio's task filters accept (UTC, microseconds, ``Z``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _outcome(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return "connect"
    return "error"


class LabelStudioClient:
    """Label Studio's REST API over an injected ``httpx.AsyncClient``.

    ``http`` carries the base URL, the timeouts and (in tests) a mock transport; the client adds
    the token header to each request so that it never sits in a shared client's default headers.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        token: str,
        *,
        retry: RetryPolicy | None = None,
        observer: ApiObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = http
        self._auth = {"Authorization": f"Token {token}"}
        self._retry = retry or RetryPolicy()
        self._observer = observer or _NoObserver()
        self._sleep = sleep

    def __repr__(self) -> str:  # the token must not leak through a repr in a log or traceback
        return f"LabelStudioClient(base_url={str(self._http.base_url)!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ transport

    async def _request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        retry: bool = True,
        expect_json: bool = True,
    ) -> Any:
        attempts = self._retry.attempts if retry else 1
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                response = await self._http.request(
                    method, path, params=params, json=body, headers=self._auth
                )
            except httpx.TransportError as exc:
                outcome = _outcome(exc)
                self._observer.api_call(operation, outcome, time.perf_counter() - started)
                error: LabelStudioError = LabelStudioUnavailable(operation, None, outcome)
                error.__cause__ = exc
            else:
                elapsed = time.perf_counter() - started
                status = response.status_code
                if status < 400:
                    self._observer.api_call(operation, "ok", elapsed)
                    if not expect_json or status == 204 or not response.content:
                        return None
                    return response.json()
                detail = response.text[:300]
                if status in (401, 403):
                    self._observer.api_call(operation, "auth", elapsed)
                    raise LabelStudioAuthError(operation, status, "check the API token")
                if status == 429 or status >= 500:
                    self._observer.api_call(operation, "server_error", elapsed)
                    error = LabelStudioUnavailable(operation, status, detail)
                else:
                    self._observer.api_call(operation, "client_error", elapsed)
                    raise LabelStudioError(operation, status, detail)
            if attempt + 1 < attempts:
                delay = self._retry.delay(attempt)
                log.warning(
                    "label studio %s failed (%s), retry %d/%d in %.1fs",
                    operation,
                    error,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                await self._sleep(delay)
        raise error

    # ------------------------------------------------------------------ projects

    async def list_projects(self) -> list[Json]:
        projects: list[Json] = []
        page = 1
        while True:
            data = await self._request(
                "list_projects", "GET", "/api/projects", params={"page": page, "page_size": 100}
            )
            projects.extend(data.get("results", []))
            if not data.get("next"):
                return projects
            page += 1

    async def get_project(self, project_id: int) -> Json | None:
        try:
            return dict(await self._request("get_project", "GET", f"/api/projects/{project_id}"))
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise

    async def create_project(self, fields: Json) -> Json:
        # not retried: a create that timed out may have happened; the caller looks it up again
        return dict(
            await self._request("create_project", "POST", "/api/projects", body=fields, retry=False)
        )

    async def update_project(self, project_id: int, fields: Json) -> Json:
        return dict(
            await self._request(
                "update_project", "PATCH", f"/api/projects/{project_id}", body=fields
            )
        )

    async def delete_project(self, project_id: int) -> None:
        await self._request(
            "delete_project", "DELETE", f"/api/projects/{project_id}", expect_json=False
        )

    # ------------------------------------------------------------------ tasks

    async def import_tasks(self, project_id: int, tasks: list[Json]) -> list[int]:
        """Import tasks (with ``predictions``); one attempt: the caller checks before retrying."""
        data = await self._request(
            "import_tasks",
            "POST",
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            body=tasks,
            retry=False,
        )
        return [int(i) for i in data.get("task_ids", [])]

    async def iter_tasks(
        self, project_id: int, filters: list[Json] | None = None, page_size: int = 100
    ) -> AsyncIterator[Json]:
        """Tasks of a project, with their annotations, page by page (Data Manager filters)."""
        params: dict[str, Any] = {"project": project_id, "fields": "all", "page_size": page_size}
        if filters:
            query = {"filters": {"conjunction": "and", "items": filters}}
            params["query"] = json.dumps(query, separators=(",", ":"))
        page = 1
        seen = 0
        while True:
            try:
                data = await self._request(
                    "list_tasks", "GET", "/api/tasks", params={**params, "page": page}
                )
            except LabelStudioError as exc:
                if exc.status == 404:  # past the last page
                    return
                raise
            tasks = data.get("tasks", [])
            for task in tasks:
                yield task
            seen += len(tasks)
            if not tasks or seen >= int(data.get("total", 0)):
                return
            page += 1

    async def tasks_with_data(self, project_id: int, field: str, value: str) -> list[Json]:
        flt = {"filter": f"filter:tasks:data.{field}", "operator": "equal", "type": "String"}
        return [t async for t in self.iter_tasks(project_id, [{**flt, "value": value}])]

    async def tasks_updated_since(self, project_id: int, since: datetime) -> AsyncIterator[Json]:
        flt = {
            "filter": "filter:tasks:updated_at",
            "operator": "greater",
            "type": "Datetime",
            "value": format_ls_datetime(since),
        }
        async for task in self.iter_tasks(project_id, [flt]):
            yield task

    async def set_task_overlap(self, task_id: int, overlap: int) -> None:
        await self._request(
            "update_task", "PATCH", f"/api/tasks/{task_id}", body={"overlap": overlap}
        )

    async def annotation_exists(self, annotation_id: int) -> bool:
        """Whether Label Studio still has the annotation (404: deleted)."""
        try:
            await self._request("get_annotation", "GET", f"/api/annotations/{annotation_id}/")
        except LabelStudioError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ------------------------------------------------------------------ data manager tabs

    async def list_views(self, project_id: int) -> list[Json]:
        """The project's Data Manager tabs, shared by everyone in the organization."""
        data = await self._request(
            "list_views", "GET", "/api/dm/views/", params={"project": project_id}
        )
        return list(data if isinstance(data, list) else data.get("results", []))

    async def create_view(self, project_id: int, data: Json) -> Json:
        body = {"project": project_id, "data": data}
        return dict(await self._request("create_view", "POST", "/api/dm/views/", body=body))

    async def update_view(self, view_id: int, project_id: int, data: Json) -> Json:
        """Replace a tab's ``data`` (its filters and ordering, kept apart by Label Studio, stay)."""
        body = {"project": project_id, "data": data}
        return dict(
            await self._request("update_view", "PATCH", f"/api/dm/views/{view_id}/", body=body)
        )

    async def columns(self, project_id: int) -> list[Json]:
        """The Data Manager's columns of a project, with their default visibility."""
        data = await self._request(
            "list_columns", "GET", "/api/dm/columns/", params={"project": project_id}
        )
        return list(data.get("columns", []))

    # ------------------------------------------------------------------ users

    async def list_users(self) -> list[Json]:
        data = await self._request("list_users", "GET", "/api/users/")
        return list(data if isinstance(data, list) else data.get("results", []))

    async def get_user(self, user_id: int) -> Json | None:
        try:
            return dict(await self._request("get_user", "GET", f"/api/users/{user_id}/"))
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise

    # ------------------------------------------------------------------ webhooks

    async def list_webhooks(self, project_id: int) -> list[Json]:
        data = await self._request(
            "list_webhooks", "GET", "/api/webhooks/", params={"project": project_id}
        )
        return list(data if isinstance(data, list) else data.get("results", []))

    async def create_webhook(self, fields: Json) -> Json:
        return dict(await self._request("create_webhook", "POST", "/api/webhooks/", body=fields))

    async def update_webhook(self, webhook_id: int, fields: Json) -> Json:
        return dict(
            await self._request(
                "update_webhook", "PATCH", f"/api/webhooks/{webhook_id}/", body=fields
            )
        )

    async def delete_webhook(self, webhook_id: int) -> None:
        await self._request(
            "delete_webhook", "DELETE", f"/api/webhooks/{webhook_id}/", expect_json=False
        )

    async def health(self) -> bool:
        try:
            data = await self._request("health", "GET", "/health", retry=False)
        except LabelStudioError:
            return False
        return bool(data and data.get("status") == "UP")
