"""Media paths played from a real Label Studio 1.23: the bridge turns an item's WAV path into a
Local Files URL and gives the project the storage that lets Label Studio serve it.

The session's Label Studio runs with ``LOCAL_FILES_SERVING_ENABLED=true`` and its
``LOCAL_FILES_DOCUMENT_ROOT`` at ``label_studio.files_root`` (``tests/conftest.py``); this test's
media root is a directory inside it. A person's browser fetches the URL with its session cookie,
so the file is fetched here the same way, after logging in through ``/user/login/``: the bytes
come back to a member of the organization, and nothing to a stranger, to someone removed from
the organization, or for a file no storage covers.
"""

from __future__ import annotations

import logging
import math
import secrets
import struct
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from labelstudio_bridge import LiveBridge, label_studio_client

from labelloop.events import BatchCreated, BatchTask
from labelloop.project import ProjectConfig
from labelloop_bridge.intake import TASK_ITEM
from labelloop_bridge.media import LocalFiles

# fixtures from conftest.py: label_studio (LabelStudioServer), people (LabelStudioPeople)
pytestmark = [pytest.mark.integration, pytest.mark.labelstudio]

CONFIG = ProjectConfig.model_validate(
    {
        "name": "prompts",
        "title": "Phone prompts",
        "task_type": "audio_classification",
        "labels": {"classes": ["en", "fr"]},
        "data_fields": [{"name": "audio", "kind": "audio"}],
    }
)


def _wav(path: Path, hz: float = 440.0, seconds: float = 0.2, rate: int = 8000) -> bytes:
    """A short sine tone as a 16-bit mono WAV file; its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * i / rate)))
        for i in range(int(rate * seconds))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return path.read_bytes()


def _batch(*paths: str) -> BatchCreated:
    return BatchCreated(
        project="prompts",
        batch_id="prompts-1",
        round=1,
        strategy="random",
        seed=0,
        tasks=[
            BatchTask(item_id=f"item-{i}", data={"audio": p}, annotations_required=1)
            for i, p in enumerate(paths)
        ],
    )


async def _session(url: str, email: str, password: str) -> httpx.AsyncClient:
    """A browser's session: logged in through Label Studio's login form (CSRF cookie + form)."""
    http = httpx.AsyncClient(base_url=url, timeout=30.0)
    await http.get("/user/login/")
    await http.post(
        "/user/login/",
        data={
            "csrfmiddlewaretoken": http.cookies["csrftoken"],
            "email": email,
            "password": password,
        },
        headers={"Referer": f"{url}/user/login/"},
    )
    assert "sessionid" in http.cookies, "login failed"
    return http


async def _sign_up(url: str, invite: str, email: str, password: str) -> httpx.AsyncClient:
    """A new member of the organization, signed up through its invite link (and so logged in)."""
    http = httpx.AsyncClient(base_url=url, timeout=30.0)
    await http.get(invite)
    await http.post(
        invite,
        data={
            "csrfmiddlewaretoken": http.cookies["csrftoken"],
            "email": email,
            "password": password,
        },
        headers={"Referer": f"{url}{invite}"},
    )
    assert "sessionid" in http.cookies, "sign-up failed"
    return http


@pytest.fixture
async def admin(label_studio: Any) -> AsyncIterator[httpx.AsyncClient]:
    http = await _session(label_studio.url, label_studio.username, label_studio.password)
    yield http
    await http.aclose()


async def test_a_wav_path_plays_for_members_and_for_nobody_else(
    label_studio: Any, people: Any, admin: httpx.AsyncClient, namespace: str
) -> None:
    media = label_studio.files_root / namespace  # the document root's parent is the default
    sound = _wav(media / "en" / "hello world.wav")
    files = LocalFiles.of(str(media))
    async with label_studio_client(label_studio) as client:
        bridge = LiveBridge(client, namespace, CONFIG, media=files)
        batch = _batch(str(media / "en" / "hello world.wav"))
        assert await bridge.importer.place(batch, CONFIG) == 1
        assert batch.tasks[0].data["audio"] == str(media / "en" / "hello world.wav")
        ls_id = await bridge.provisioner.ensure(CONFIG, "labeling")
        (storage,) = await client.list_local_storages(ls_id)
        assert storage["path"] == str(media)
        assert storage["synchronizable"] is False
        # another bridge (no state: it finds the project by its marker) adds no second one
        again = LiveBridge(client, namespace, CONFIG, media=files)
        assert await again.provisioner.ensure(CONFIG, "labeling") == ls_id
        assert len(await client.list_local_storages(ls_id)) == 1
        # Label Studio refuses to sync it: nothing is ever imported from the media directory
        sync = await people.http.post(f"/api/storages/localfiles/{storage['id']}/sync")
        assert sync.status_code == 400

    (task,) = await people.tasks(ls_id)
    assert task["data"][TASK_ITEM] == "item-0"
    url = task["data"]["audio"]
    assert url == f"/data/local-files/?d={namespace}/en/hello%20world.wav"

    # the person's browser, logged in: the file's bytes, and ranges (seeking) work
    got = await admin.get(url)
    assert got.status_code == 200, got.text[:200]
    assert got.content == sound
    assert got.headers["content-type"].startswith("audio/")
    part = await admin.get(url, headers={"Range": "bytes=0-3"})
    assert part.status_code == 206
    assert part.content == b"RIFF"

    # nobody logged in
    async with httpx.AsyncClient(base_url=label_studio.url, timeout=30.0) as anonymous:
        refused = await anonymous.get(url)
    assert refused.status_code in (401, 403)
    assert refused.content != sound

    # a file inside the document root that no storage covers (a sibling sharing the prefix)
    _wav(label_studio.files_root / f"{namespace}-other" / "x.wav")
    assert (await admin.get(f"/data/local-files/?d={namespace}-other/x.wav")).status_code == 404
    # and no way out of the storage
    escape = await admin.get(f"/data/local-files/?d={namespace}/../{namespace}-other/x.wav")
    assert escape.status_code in (403, 404)

    # a new member plays it (Community Edition: every member may open every project); once
    # removed from the organization, they get nothing
    invite = (await people.http.get("/api/invite")).json()["invite_url"]
    email = f"listener-{namespace}@example.com"
    guest = await _sign_up(label_studio.url, invite, email, secrets.token_urlsafe(16))
    try:
        assert (await guest.get(url)).content == sound
        guest_id = await people.user(email)
        organization = (await people.http.get("/api/current-user/whoami")).json()[
            "active_organization"
        ]
        removed = await people.http.delete(
            f"/api/organizations/{organization}/memberships/{guest_id}/"
        )
        assert removed.status_code == 204, removed.text[:200]
        after = await guest.get(url)
        assert after.status_code in (403, 404)
        assert after.content != sound
    finally:
        await guest.aclose()


async def test_a_storage_label_studio_refuses_is_said_and_the_batch_still_arrives(
    label_studio: Any,
    people: Any,
    namespace: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    media = tmp_path / "media"  # not inside Label Studio's document root
    _wav(media / "hello.wav")
    async with label_studio_client(label_studio) as client:
        bridge = LiveBridge(client, namespace, CONFIG, media=LocalFiles.of(str(media)))
        with caplog.at_level(logging.WARNING, logger="labelloop"):
            assert await bridge.importer.place(_batch(str(media / "hello.wav")), CONFIG) == 1
        ls_id = await bridge.provisioner.ensure(CONFIG, "labeling")
        assert await client.list_local_storages(ls_id) == []
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Label Studio refused the Local Files storage" in error
    assert "LOCAL_FILES_DOCUMENT_ROOT" in error
    assert label_studio.token not in caplog.text
    (task,) = await people.tasks(ls_id)
    assert task["data"]["audio"] == "/data/local-files/?d=media/hello.wav"
