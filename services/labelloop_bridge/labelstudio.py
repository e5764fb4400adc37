"""The bridge's Label Studio 1.23 (Community Edition) client: ``label_studio_sdk``'s
``AsyncLabelStudio`` under labelloop's retry policy, metrics and errors.

The SDK's async client is asynchronous all the way down (``AsyncHttpClient`` awaits an
``httpx.AsyncClient``, which it accepts as ``httpx_client=``), so the bridge hands it its own
``httpx.AsyncClient``: the base URL, the timeouts and, in tests, an ``httpx.MockTransport``. Around
each SDK call this module keeps what the bridge needs and the SDK does not give:

* **a per-call retry policy**: the SDK's own retries are off (``max_retries=0``: it would retry an
  import on a 5xx or a dropped connection, and an import that timed out may have been applied);
  :class:`RetryPolicy` retries what is safe to repeat, and an import is attempted once (the
  importer lists what arrived before it tries again);
* **per-operation latency and error metrics**: one observation per attempt (:class:`ApiObserver`);
* **labelloop's errors**: the SDK's ``ApiError`` and httpx's transport errors become
  :class:`LabelStudioUnavailable` (retry later), :class:`LabelStudioAuthError` or
  :class:`LabelStudioError`; and plain JSON dicts, as Label Studio sent them, in place of the
  SDK's models.

Local Files import storages (``import_storage.local.list/create``) only give Label Studio the
right to serve the media under their path (:mod:`labelloop_bridge.media`); the bridge never syncs
one. Two endpoints the SDK (2.1.2) has no method for are called on the same ``httpx.AsyncClient``:
``GET /api/dm/columns/`` (the Data Manager's columns, whose ids the bridge hides) and
``GET /health``. The SDK never touches its ~255 Enterprise-only methods here. The SDK sends the
token (``Authorization: Token ...`` for a legacy token) per request, never as a default header of
the shared client, and it is never logged. Every endpoint here was checked against a running
label-studio 1.23.2 (``tests/integration/bridge``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol, TypeVar

import httpx
from label_studio_sdk.client import AsyncLabelStudio
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.parse_error import ParsingError

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
T = TypeVar("T")


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


def _plain(value: Any) -> Any:
    """An SDK model (or a list of them) as the JSON Label Studio sent: dicts, ISO date strings."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "json") and callable(value.json):
        return json.loads(value.json())
    return value


def _detail(body: Any) -> str:
    return (body if isinstance(body, str) else json.dumps(body, default=str))[:300]


class LabelStudioClient:
    """Label Studio's API through ``AsyncLabelStudio`` over an injected ``httpx.AsyncClient``.

    ``http`` carries the base URL, the timeouts and (in tests) a mock transport; the SDK adds the
    token header to each request, so that it never sits in a shared client's default headers.
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
        # max_retries=0: the retry policy is ours (an import must never be retried blindly);
        # timeout=None: each request takes the timeouts of ``http``
        self._sdk = AsyncLabelStudio(  # type: ignore[no-untyped-call]  # (*args, **kwargs)
            base_url=str(http.base_url).rstrip("/"),
            api_key=token,
            httpx_client=http,
            max_retries=0,
            timeout=None,
        )
        self._retry = retry or RetryPolicy()
        self._observer = observer or _NoObserver()
        self._sleep = sleep

    def __repr__(self) -> str:  # the token must not leak through a repr in a log or traceback
        return f"LabelStudioClient(base_url={str(self._http.base_url)!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ transport

    async def _call(
        self, operation: str, call: Callable[[], Awaitable[T]], *, retry: bool = True
    ) -> T:
        """One SDK call under the retry policy, each attempt observed; labelloop's errors out."""
        attempts = self._retry.attempts if retry else 1
        error: LabelStudioError = LabelStudioUnavailable(operation, None, "not attempted")
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                result = await call()
            except httpx.TransportError as exc:
                outcome = _outcome(exc)
                self._observer.api_call(operation, outcome, time.perf_counter() - started)
                error = LabelStudioUnavailable(operation, None, outcome)
                error.__cause__ = exc
            except ApiError as exc:
                elapsed = time.perf_counter() - started
                status = exc.status_code
                if status in (401, 403):
                    self._observer.api_call(operation, "auth", elapsed)
                    raise LabelStudioAuthError(operation, status, "check the API token") from None
                if status is None or status == 429 or status >= 500:
                    self._observer.api_call(operation, "server_error", elapsed)
                    error = LabelStudioUnavailable(operation, status, _detail(exc.body))
                else:
                    self._observer.api_call(operation, "client_error", elapsed)
                    raise LabelStudioError(operation, status, _detail(exc.body)) from None
            except ParsingError as exc:  # an answer the SDK's models cannot read: not transient
                self._observer.api_call(operation, "client_error", time.perf_counter() - started)
                raise LabelStudioError(operation, exc.status_code, "unexpected response") from exc
            else:
                self._observer.api_call(operation, "ok", time.perf_counter() - started)
                return result
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

    async def _get(self, operation: str, path: str, params: dict[str, Any] | None = None) -> Any:
        """A GET the SDK has no method for, on the same client and under the same policy."""

        async def call() -> Any:
            response = await self._http.get(path, params=params, headers=self._auth)
            if response.status_code >= 400:
                try:
                    body: Any = response.json()
                except ValueError:
                    body = response.text
                raise ApiError(status_code=response.status_code, body=body)
            return response.json() if response.content else None

        return await self._call(operation, call)

    # ------------------------------------------------------------------ projects

    async def list_projects(self) -> list[Json]:
        projects: list[Json] = []
        page = 1
        while True:
            pager = await self._call("list_projects", partial(self._list_projects, page))
            projects.extend(_plain(list(pager.items or [])))
            if pager.response is None or not getattr(pager.response, "next", None):
                return projects
            page += 1

    async def _list_projects(self, page: int) -> Any:
        # the SDK's project list is an untyped extension (``AsyncProjectsClientExt.list``)
        return await self._sdk.projects.list(page=page, page_size=100)  # type: ignore[no-untyped-call]

    async def get_project(self, project_id: int) -> Json | None:
        try:
            # not ``projects.get``: its extension re-dumps the model with every field it lacks
            # as null; the raw response's model keeps what Label Studio sent
            found = await self._call(
                "get_project", lambda: self._sdk.projects.with_raw_response.get(project_id)
            )
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(_plain(found.data))

    async def create_project(self, fields: Json) -> Json:
        # not retried: a create that timed out may have happened; the caller looks it up again
        created = await self._call(
            "create_project", lambda: self._sdk.projects.create(**fields), retry=False
        )
        return dict(_plain(created))

    async def update_project(self, project_id: int, fields: Json) -> Json:
        updated = await self._call(
            "update_project", lambda: self._sdk.projects.update(project_id, **fields)
        )
        return dict(_plain(updated))

    async def delete_project(self, project_id: int) -> None:
        await self._call("delete_project", lambda: self._sdk.projects.delete(project_id))

    # ------------------------------------------------------------------ tasks

    async def import_tasks(self, project_id: int, tasks: list[Json]) -> list[int]:
        """Import tasks (with ``predictions``); one attempt: the caller checks before retrying."""
        answer = await self._call(
            "import_tasks",
            lambda: self._sdk.projects.import_tasks(
                project_id,
                request=tasks,  # type: ignore[arg-type]  # the SDK serializes plain dicts
                return_task_ids=True,
            ),
            retry=False,
        )
        # Community Edition's answer (task_ids among it) is not modelled by the SDK: extra fields
        return [int(i) for i in _plain(answer).get("task_ids") or []]

    async def iter_tasks(
        self, project_id: int, filters: list[Json] | None = None, page_size: int = 100
    ) -> AsyncIterator[Json]:
        """Tasks of a project, with their annotations, page by page (Data Manager filters).

        Paged here, not by the SDK's pager: iterating it asks for one page past the last (which
        Label Studio 1.23 answers with 404, a request wasted per listing) and would put all
        pages under one retry; here each page is one call and ``total`` says when to stop."""
        query = None
        if filters:
            query = json.dumps(
                {"filters": {"conjunction": "and", "items": filters}}, separators=(",", ":")
            )
        page = 1
        seen = 0
        while True:
            try:
                pager = await self._call(
                    "list_tasks", partial(self._list_tasks, project_id, page, page_size, query)
                )
            except LabelStudioError as exc:
                if exc.status == 404:  # past the last page
                    return
                raise
            tasks = list(pager.items or [])
            for task in tasks:
                yield dict(_plain(task))
            seen += len(tasks)
            total = getattr(pager.response, "total", None) or 0
            if not tasks or seen >= int(total):
                return
            page += 1

    async def _list_tasks(
        self, project_id: int, page: int, page_size: int, query: str | None
    ) -> Any:
        # ``AsyncTasksClientExt.list`` is untyped (it defaults ``fields`` to ``all``)
        return await self._sdk.tasks.list(  # type: ignore[no-untyped-call]
            project=project_id, fields="all", page=page, page_size=page_size, query=query
        )

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
        await self._call(
            "update_task", lambda: self._sdk.tasks.update(str(task_id), overlap=overlap)
        )

    async def delete_task(self, task_id: int) -> bool:
        """Delete a task with its annotations; False when it was already gone (404)."""
        try:
            await self._call("delete_task", lambda: self._sdk.tasks.delete(str(task_id)))
        except LabelStudioError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def annotation_exists(self, annotation_id: int) -> bool:
        """Whether Label Studio still has the annotation (404: deleted)."""
        try:
            await self._call("get_annotation", lambda: self._sdk.annotations.get(annotation_id))
        except LabelStudioError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # ------------------------------------------------------------------ data manager tabs

    async def list_views(self, project_id: int) -> list[Json]:
        """The project's Data Manager tabs, shared by everyone in the organization."""
        views = await self._call("list_views", lambda: self._sdk.views.list(project=project_id))
        return list(_plain(list(views)))

    async def create_view(self, project_id: int, data: Json) -> Json:
        created = await self._call(
            "create_view",
            lambda: self._sdk.views.create(project=project_id, data=data),
        )
        return dict(_plain(created))

    async def update_view(self, view_id: int, project_id: int, data: Json) -> Json:
        """Replace a tab's ``data`` (its filters and ordering, kept apart by Label Studio, stay)."""
        updated = await self._call(
            "update_view",
            lambda: self._sdk.views.update(
                str(view_id),
                project=project_id,
                data=data,  # the SDK passes keys its model lacks (hiddenColumns) through
            ),
        )
        return dict(_plain(updated))

    async def columns(self, project_id: int) -> list[Json]:
        """The Data Manager's columns of a project, with their default visibility (no SDK
        method: a plain GET)."""
        data = await self._get("list_columns", "/api/dm/columns/", {"project": project_id})
        return list((data or {}).get("columns", []))

    # ------------------------------------------------------------------ storages

    async def list_local_storages(self, project_id: int) -> list[Json]:
        """The project's Local Files import storages (each lets Label Studio serve the files
        under its ``path`` to the people who may open the project)."""
        storages = await self._call(
            "list_local_storages",
            lambda: self._sdk.import_storage.local.list(project=project_id),
        )
        return list(_plain(list(storages)))

    async def create_local_storage(self, project_id: int, fields: Json) -> Json:
        # not retried: a create that timed out may have happened; the caller lists first
        created = await self._call(
            "create_local_storage",
            lambda: self._sdk.import_storage.local.create(project=project_id, **fields),
            retry=False,
        )
        return dict(_plain(created))

    # ------------------------------------------------------------------ users

    async def list_users(self) -> list[Json]:
        users = await self._call("list_users", lambda: self._sdk.users.list())
        return list(_plain(list(users)))

    async def get_user(self, user_id: int) -> Json | None:
        try:
            user = await self._call("get_user", lambda: self._sdk.users.get(user_id))
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise
        return dict(_plain(user))

    # ------------------------------------------------------------------ webhooks

    async def list_webhooks(self, project_id: int) -> list[Json]:
        hooks = await self._call(
            "list_webhooks", lambda: self._sdk.webhooks.list(project=str(project_id))
        )
        return list(_plain(list(hooks)))

    async def create_webhook(self, fields: Json) -> Json:
        created = await self._call("create_webhook", lambda: self._sdk.webhooks.create(**fields))
        return dict(_plain(created))

    async def update_webhook(self, webhook_id: int, fields: Json) -> Json:
        # a webhook's project is fixed: the SDK's update takes everything else
        changes = {k: v for k, v in fields.items() if k != "project"}
        updated = await self._call(
            "update_webhook", lambda: self._sdk.webhooks.update(webhook_id, **changes)
        )
        return dict(_plain(updated))

    async def delete_webhook(self, webhook_id: int) -> None:
        await self._call("delete_webhook", lambda: self._sdk.webhooks.delete(webhook_id))

    async def health(self) -> bool:
        """``GET /health`` (no SDK method), one attempt."""
        try:
            data = await self._call(
                "health", lambda: self._http.get("/health", headers=self._auth), retry=False
            )
        except LabelStudioError:
            return False
        try:
            body = data.json() if data.status_code == 200 else None
        except ValueError:
            return False
        return bool(body and body.get("status") == "UP")
