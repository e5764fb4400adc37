"""A fake Label Studio behind ``httpx.MockTransport``: the endpoints the bridge uses, in memory.

It mirrors what ``tests/integration/bridge`` checks against the real server: tasks' ``updated_at``
moves on every annotation change, Data Manager filters on ``data.<field>`` and ``updated_at``,
pages of ``page_size`` with 404 past the end, Data Manager tabs (``/api/dm/views``) and columns
(every data key of the tasks, visible in the table by default), Local Files import storages
(listed per project, created as given: the path checks Label Studio makes are the integration
tests'), legacy token auth. Failures can be injected.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from labelloop.stores import MemoryKeyValue

TOKEN = "fake-token"


class FakeLabelStudio:
    def __init__(self) -> None:
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {
            1: {"id": 1, "email": "admin@example.com", "username": ""}
        }
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.views: dict[int, dict[str, Any]] = {}
        self.storages: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.failures: list[tuple[str, str, Callable[[httpx.Request], httpx.Response] | str]] = []
        """(method, path regex, what): what is a response factory, or "apply-then-503"."""
        self.transport = httpx.MockTransport(self._handle)

    # ------------------------------------------------------------------ helpers for tests

    def now(self) -> str:
        self._clock += timedelta(milliseconds=7)
        return self._clock.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def user(self, email: str) -> int:
        uid = next(self._ids) + 1000
        self.users[uid] = {"id": uid, "email": email, "username": email.split("@")[0]}
        return uid

    def annotate(
        self,
        task_id: int,
        user_id: int,
        result: list[dict[str, Any]],
        *,
        cancelled: bool = False,
        lead_time: float = 3.0,
    ) -> dict[str, Any]:
        stamp = self.now()
        annotation = {
            "id": next(self._ids),
            "task": task_id,
            "project": self.tasks[task_id]["project"],
            "result": result,
            "completed_by": user_id,
            "was_cancelled": cancelled,
            "lead_time": lead_time,
            "created_at": stamp,
            "updated_at": stamp,
        }
        self.tasks[task_id]["annotations"].append(annotation)
        self.tasks[task_id]["updated_at"] = stamp
        return annotation

    def update(
        self, task_id: int, annotation_id: int, result: list[dict[str, Any]]
    ) -> dict[str, Any]:
        stamp = self.now()
        for annotation in self.tasks[task_id]["annotations"]:
            if annotation["id"] == annotation_id:
                annotation.update(result=result, updated_at=stamp)
                self.tasks[task_id]["updated_at"] = stamp
                return dict(annotation)
        raise KeyError(annotation_id)

    def delete(self, task_id: int, annotation_id: int) -> None:
        task = self.tasks[task_id]
        task["annotations"] = [a for a in task["annotations"] if a["id"] != annotation_id]
        task["updated_at"] = self.now()

    def project_tasks(self, project_id: int) -> list[dict[str, Any]]:
        return [t for t in self.tasks.values() if t["project"] == project_id]

    def columns(self, project_id: int) -> list[dict[str, Any]]:
        """Label Studio's shape: data keys under ``data`` (shown in the table), then task fields."""
        keys = sorted({k for t in self.project_tasks(project_id) for k in t["data"]})
        data = [
            {"id": k, "parent": "data", "visibility_defaults": {"explore": True, "labeling": False}}
            for k in keys
        ]
        return [
            *data,
            {"id": "id", "visibility_defaults": {"explore": True, "labeling": False}},
            {"id": "inner_id", "visibility_defaults": {"explore": False, "labeling": False}},
            {"id": "total_annotations", "visibility_defaults": {"explore": True, "labeling": True}},
        ]

    def fail(
        self, method: str, path: str, what: Callable[[httpx.Request], httpx.Response] | str
    ) -> None:
        self.failures.append((method, path, what))

    # ------------------------------------------------------------------ HTTP

    def _handle(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        self.requests.append((method, path))
        if request.headers.get("Authorization") != f"Token {TOKEN}":
            return httpx.Response(401, json={"detail": "Invalid token."})
        for index, (f_method, f_path, what) in enumerate(self.failures):
            if f_method == method and (
                re.fullmatch(f_path, path) or re.fullmatch(f_path, path.rstrip("/") + "/")
            ):
                del self.failures[index]
                if what == "apply-then-503":
                    self._route(request)
                    return httpx.Response(503, text="upstream timeout")
                assert callable(what)
                return what(request)
        return self._route(request)

    def _route(self, request: httpx.Request) -> httpx.Response:
        # Label Studio answers with and without the trailing slash (the SDK sends one)
        method, path = request.method, request.url.path.rstrip("/")
        body = json.loads(request.content) if request.content else None
        if path == "/api/projects" and method == "GET":
            return httpx.Response(
                200,
                json={
                    "count": len(self.projects),
                    "next": None,
                    "results": list(self.projects.values()),
                },
            )
        if path == "/api/projects" and method == "POST":
            pid = next(self._ids)
            self.projects[pid] = {"id": pid, "maximum_annotations": 1, **body}
            return httpx.Response(201, json=self.projects[pid])
        if m := re.fullmatch(r"/api/projects/(\d+)", path):
            pid = int(m.group(1))
            if pid not in self.projects:
                return httpx.Response(404, json={"detail": "Not found."})
            if method == "PATCH":
                if "maximum_annotations" in body:
                    for task in self.project_tasks(pid):
                        task["overlap"] = body["maximum_annotations"]
                self.projects[pid].update(body)
            if method == "DELETE":
                del self.projects[pid]
                return httpx.Response(204)
            return httpx.Response(200, json=self.projects[pid])
        if m := re.fullmatch(r"/api/projects/(\d+)/import", path):
            pid = int(m.group(1))
            ids = []
            for raw in body:
                tid = next(self._ids)
                self.tasks[tid] = {
                    "id": tid,
                    "project": pid,
                    "data": raw["data"],
                    "meta": raw.get("meta", {}),
                    "predictions": raw.get("predictions", []),
                    "annotations": [],
                    "overlap": self.projects[pid].get("maximum_annotations", 1),
                    "updated_at": self.now(),
                }
                ids.append(tid)
            return httpx.Response(201, json={"task_count": len(ids), "task_ids": ids})
        if path == "/api/tasks" and method == "GET":
            return self._list_tasks(request)
        if m := re.fullmatch(r"/api/tasks/(\d+)", path):
            if int(m.group(1)) not in self.tasks:
                return httpx.Response(404, json={"detail": "Not found."})
            if method == "DELETE":  # with its annotations, as Label Studio does
                del self.tasks[int(m.group(1))]
                return httpx.Response(204)
            task = self.tasks[int(m.group(1))]
            if method == "PATCH":
                task.update(body)
                task["updated_at"] = self.now()
            return httpx.Response(200, json=task)
        if m := re.fullmatch(r"/api/annotations/(\d+)", path):
            wanted = int(m.group(1))
            for task in self.tasks.values():
                for annotation in task["annotations"]:
                    if annotation["id"] == wanted:
                        return httpx.Response(200, json=annotation)
            return httpx.Response(404, json={"detail": "Not found."})
        if path == "/api/dm/views" and method == "GET":
            pid = int(request.url.params["project"])
            return httpx.Response(200, json=[v for v in self.views.values() if v["project"] == pid])
        if path == "/api/dm/views" and method == "POST":
            vid = next(self._ids)
            self.views[vid] = {"id": vid, "project": body["project"], "data": body["data"]}
            return httpx.Response(201, json=self.views[vid])
        if (m := re.fullmatch(r"/api/dm/views/(\d+)", path)) and method == "PATCH":
            self.views[int(m.group(1))]["data"] = body["data"]
            return httpx.Response(200, json=self.views[int(m.group(1))])
        if path == "/api/dm/columns":
            return httpx.Response(
                200, json={"columns": self.columns(int(request.url.params["project"]))}
            )
        if path == "/api/storages/localfiles" and method == "GET":
            pid = int(request.url.params["project"])
            return httpx.Response(
                200, json=[v for v in self.storages.values() if v["project"] == pid]
            )
        if path == "/api/storages/localfiles" and method == "POST":
            sid = next(self._ids)
            self.storages[sid] = {"id": sid, "type": "localfiles", **body}
            return httpx.Response(201, json=self.storages[sid])
        if path == "/api/users":
            return httpx.Response(200, json=list(self.users.values()))
        if m := re.fullmatch(r"/api/users/(\d+)", path):
            user = self.users.get(int(m.group(1)))
            return httpx.Response(200, json=user) if user else httpx.Response(404, json={})
        if path == "/api/webhooks" and method == "GET":
            pid = int(request.url.params["project"])
            return httpx.Response(
                200, json=[h for h in self.webhooks.values() if h["project"] == pid]
            )
        if path == "/api/webhooks" and method == "POST":
            hid = next(self._ids)
            self.webhooks[hid] = {"id": hid, **body}
            return httpx.Response(201, json=self.webhooks[hid])
        if m := re.fullmatch(r"/api/webhooks/(\d+)", path):
            self.webhooks[int(m.group(1))].update(body)
            return httpx.Response(200, json=self.webhooks[int(m.group(1))])
        return httpx.Response(404, json={"detail": f"no route {method} {path}"})

    def _list_tasks(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        tasks = self.project_tasks(int(params["project"]))
        if "query" in params:
            for flt in json.loads(params["query"])["filters"]["items"]:
                name = flt["filter"].removeprefix("filter:tasks:")
                if name.startswith("data."):
                    key = name.removeprefix("data.")
                    tasks = [t for t in tasks if str(t["data"].get(key)) == flt["value"]]
                elif name == "updated_at":
                    since = datetime.strptime(flt["value"], "%Y-%m-%dT%H:%M:%S.%fZ")
                    tasks = [
                        t
                        for t in tasks
                        if datetime.strptime(t["updated_at"], "%Y-%m-%dT%H:%M:%S.%fZ") > since
                    ]
        size = int(params.get("page_size", 100))
        page = int(params.get("page", 1))
        chunk = tasks[(page - 1) * size : page * size]
        if page > 1 and not chunk:
            return httpx.Response(404, json={"detail": "Invalid page."})
        return httpx.Response(200, json={"tasks": chunk, "total": len(tasks)})


@pytest.fixture
def fake_ls() -> FakeLabelStudio:
    return FakeLabelStudio()


@pytest.fixture
def kv() -> MemoryKeyValue:
    return MemoryKeyValue()
