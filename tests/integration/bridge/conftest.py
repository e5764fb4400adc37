"""A real Label Studio 1.23 for the bridge's integration tests (one per session).

Started by ``infra/labelstudio/labelstudio.sh`` on a free loopback port with a temporary data dir;
skipped only when ``LABELLOOP_SKIP_LABELSTUDIO=1``. A fresh start (migrations, first user, token)
takes ~35 s on a 2-core machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

_SCRIPT = Path(__file__).resolve().parents[3] / "infra" / "labelstudio" / "labelstudio.sh"


class LabelStudioPeople:
    """Plays the humans: creates users and annotates as them through Label Studio's API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def user(self, email: str) -> int:
        users = (await self.http.get("/api/users/")).json()
        for user in users:
            if user["email"] == email:
                return int(user["id"])
        created = await self.http.post(
            "/api/users/", json={"email": email, "username": email.split("@")[0]}
        )
        created.raise_for_status()
        return int(created.json()["id"])

    async def annotate(
        self,
        task_id: int,
        user_id: int,
        result: list[dict[str, Any]],
        *,
        lead_time: float = 4.0,
        cancelled: bool = False,
    ) -> dict[str, Any]:
        response = await self.http.post(
            f"/api/tasks/{task_id}/annotations/",
            json={
                "result": result,
                "completed_by": user_id,
                "lead_time": lead_time,
                "was_cancelled": cancelled,
            },
        )
        response.raise_for_status()
        return dict(response.json())

    async def update(self, annotation_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        response = await self.http.patch(
            f"/api/annotations/{annotation_id}/", json={"result": result}
        )
        response.raise_for_status()
        return dict(response.json())

    async def delete(self, annotation_id: int) -> None:
        (await self.http.delete(f"/api/annotations/{annotation_id}/")).raise_for_status()

    async def tasks(self, project_id: int) -> list[dict[str, Any]]:
        response = await self.http.get(
            "/api/tasks", params={"project": project_id, "page_size": 1000, "fields": "all"}
        )
        response.raise_for_status()
        return list(response.json()["tasks"])


@pytest.fixture
async def people(label_studio: Any) -> AsyncIterator[LabelStudioPeople]:
    async with httpx.AsyncClient(
        base_url=label_studio.url,
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=30.0,
    ) as http:
        yield LabelStudioPeople(http)
