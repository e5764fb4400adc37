"""A real Label Studio 1.23 for the bridge's integration tests (one per session).

Started by ``infra/labelstudio/labelstudio.sh`` on a free loopback port with a temporary data dir;
skipped only when ``LABELLOOP_SKIP_LABELSTUDIO=1``. A fresh start (migrations, first user, token)
takes ~35 s on a 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

_SCRIPT = Path(__file__).resolve().parents[3] / "infra" / "labelstudio" / "labelstudio.sh"


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str
    username: str
    startup_seconds: float

    def __repr__(self) -> str:  # keep the token out of pytest's failure output
        return f"LabelStudioServer(url={self.url!r})"


def _read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    if os.environ.get("LABELLOOP_SKIP_LABELSTUDIO") == "1":
        pytest.skip("LABELLOOP_SKIP_LABELSTUDIO=1: Label Studio integration tests skipped")
    state = tmp_path_factory.mktemp("labelstudio")
    subprocess.run([str(_SCRIPT), "install"], check=True, capture_output=True, timeout=900)
    started = time.monotonic()
    run = subprocess.run(
        [str(_SCRIPT), "start", "--dir", str(state)],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    if run.returncode != 0:
        log = state / "labelstudio.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"Label Studio did not start:\n{run.stderr}\n{tail}")
    env = _read_env(state / "labelstudio.env")
    assert (state / "labelstudio.env").stat().st_mode & 0o777 == 0o600
    try:
        yield LabelStudioServer(
            url=env["LABEL_STUDIO_URL"],
            token=env["LABEL_STUDIO_API_KEY"],
            username=env["LABEL_STUDIO_USERNAME"],
            startup_seconds=time.monotonic() - started,
        )
    finally:
        subprocess.run([str(_SCRIPT), "stop", "--dir", str(state)], check=False, timeout=60)


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
async def people(label_studio: LabelStudioServer) -> AsyncIterator[LabelStudioPeople]:
    async with httpx.AsyncClient(
        base_url=label_studio.url,
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=30.0,
    ) as http:
        yield LabelStudioPeople(http)
