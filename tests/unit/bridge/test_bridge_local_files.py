"""Media paths reach Label Studio as Local Files URLs, and each project with media gets the one
Local Files storage that lets Label Studio serve them (fake Label Studio; the real one's checks
are in ``tests/integration/bridge/test_bridge_local_files_labelstudio.py``)."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
from bridge_support import FakeBridge
from pydantic import ValidationError

from labelloop.events import BatchCreated, BatchTask
from labelloop.project import ProjectConfig
from labelloop_bridge.importer import ls_task
from labelloop_bridge.labelstudio import LabelStudioUnavailable
from labelloop_bridge.media import LocalFiles, media_fields
from labelloop_bridge.settings import BridgeSettings

STORAGES = "/api/storages/localfiles/"


def _config(team: tuple[str, ...] = (), kind: str = "audio") -> ProjectConfig:
    return ProjectConfig.model_validate(
        {
            "name": "prompts",
            "title": "Phone prompts",
            "task_type": "audio_classification" if kind == "audio" else "text_classification",
            "labels": {"classes": ["en", "fr"]},
            "data_fields": [
                {"name": kind, "kind": kind},
                {"name": "note", "kind": "text", "required": False},
                {"name": "source", "kind": "url", "required": False},
            ],
            "annotators": [{"id": who, "email": f"{who}@example.com"} for who in team],
        }
    )


def _batch(*data: dict[str, Any], batch_id: str = "batch-1") -> BatchCreated:
    return BatchCreated(
        project="prompts",
        batch_id=batch_id,
        round=1,
        strategy="random",
        seed=0,
        tasks=[
            BatchTask(item_id=f"{batch_id}-item-{i}", data=d, annotations_required=1)
            for i, d in enumerate(data)
        ],
    )


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """``tmp_path/files/media`` with a few sounds (Label Studio's document root: ``files``)."""
    root = tmp_path / "files" / "media"
    (root / "en").mkdir(parents=True)
    for name in ("en/hello.wav", "en/hello world #1?.wav", "en/été.wav"):
        (root / name).write_bytes(b"RIFF")
    (tmp_path / "secret.wav").write_bytes(b"RIFF")
    return root


# ---------------------------------------------------------------------- settings


def test_media_root_alone_means_the_same_machine_and_its_parent_as_document_root(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELLOOP_BRIDGE_MEDIA_ROOT", str(media))
    files = BridgeSettings().local_files()
    assert files is not None
    assert files.media_root == media.resolve()
    assert files.label_studio_media_dir == PurePosixPath(media)
    assert files.document_root == PurePosixPath(media.parent)
    assert files.storage_path == str(media)


def test_the_label_studio_side_may_be_another_mount(media: Path) -> None:
    settings = BridgeSettings(
        media_root=str(media),
        label_studio_media_dir="/label-studio/files/media/",
        label_studio_document_root="/label-studio",
    )
    files = settings.local_files()
    assert files is not None
    assert files.storage_path == "/label-studio/files/media"
    assert files.url(str(media / "en" / "hello.wav")) == (
        "/data/local-files/?d=files/media/en/hello.wav"
    )


def test_without_media_root_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BridgeSettings().local_files() is None
    monkeypatch.setenv("LABELLOOP_BRIDGE_MEDIA_ROOT", "")  # set empty: off, as unset
    assert BridgeSettings().local_files() is None


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        (
            {"label_studio_media_dir": "/srv/media", "label_studio_document_root": "/srv/media"},
            "must be a subdirectory",
        ),
        (
            {"label_studio_media_dir": "/srv/media", "label_studio_document_root": "/data"},
            "must be a subdirectory",
        ),
        ({"label_studio_media_dir": "media"}, "absolute path"),
        ({"label_studio_document_root": "files"}, "absolute path"),
        ({"label_studio_media_dir": "/"}, "must be a subdirectory"),  # no parent to serve from
    ],
)
def test_a_storage_label_studio_would_refuse_is_refused_at_start_up(
    media: Path, fields: dict[str, str], why: str
) -> None:
    with pytest.raises(ValidationError, match=why):
        BridgeSettings(media_root=str(media), **fields)


def test_the_label_studio_side_without_a_media_root_is_a_mistake() -> None:
    with pytest.raises(ValidationError, match="need media_root"):
        BridgeSettings(label_studio_media_dir="/srv/media")


# ---------------------------------------------------------------------- rewriting


def test_a_path_inside_the_media_root_becomes_its_url_relative_to_the_document_root(
    media: Path,
) -> None:
    files = LocalFiles.of(str(media))
    assert files.url(str(media / "en" / "hello.wav")) == "/data/local-files/?d=media/en/hello.wav"
    # quoted as Label Studio quotes its own (urllib's quote, "/" kept)
    assert files.url(str(media / "en" / "hello world #1?.wav")) == (
        "/data/local-files/?d=media/en/hello%20world%20%231%3F.wav"
    )
    assert files.url(str(media / "en" / "été.wav")) == (
        "/data/local-files/?d=media/en/%C3%A9t%C3%A9.wav"
    )
    assert files.url(f"file://{media}/en/hello.wav") == "/data/local-files/?d=media/en/hello.wav"


def test_a_relative_path_resolves_as_the_ingester_resolves_it(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(media)
    files = LocalFiles.of(str(media))
    assert files.url("en/hello.wav") == "/data/local-files/?d=media/en/hello.wav"
    assert files.url("./en/../en/hello.wav") == "/data/local-files/?d=media/en/hello.wav"


def test_nothing_outside_the_media_root_gets_a_url(media: Path, tmp_path: Path) -> None:
    (media / "escape").symlink_to(tmp_path)  # a link inside that points out
    (media / "en" / "alias.wav").symlink_to(media / "en" / "hello.wav")
    files = LocalFiles.of(str(media))
    assert files.url(str(tmp_path / "secret.wav")) is None
    assert files.url(f"{media}/../secret.wav") is None  # traversal
    assert files.url(f"{media}/en/../../secret.wav") is None
    assert files.url(f"file://{media}/../secret.wav") is None
    assert files.url(str(media / "escape" / "secret.wav")) is None
    assert files.url(f"{media}-private/x.wav") is None  # a sibling sharing the prefix
    assert files.url(str(media)) is None  # the directory itself
    assert files.url("/etc/passwd") is None
    assert files.url(f"{media}/en/\0.wav") is None
    # a link to a file inside stays inside: served as the file it points to
    assert files.url(str(media / "en" / "alias.wav")) == ("/data/local-files/?d=media/en/hello.wav")


def test_only_the_media_fields_paths_change_and_the_item_does_not(
    media: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config()
    assert media_fields(config) == ("audio",)
    inside = str(media / "en" / "hello.wav")
    batch = _batch(
        {"audio": inside, "note": inside, "source": inside},
        {"audio": str(tmp_path / "secret.wav")},
        {"audio": f"{media}/../secret.wav"},
        {"audio": "data:audio/wav;base64,UklGRg=="},
        {"audio": "https://cdn.example.com/hello.wav"},
        {"audio": "http://cdn.example.com/hello.wav"},
        {"audio": "/data/upload/3/hello.wav"},
    )
    before = batch.model_dump(mode="json")
    files = LocalFiles.of(str(media))
    sent = [ls_task(t, batch, config, media=files)["data"] for t in batch.tasks]
    assert sent[0] == {
        "audio": "/data/local-files/?d=media/en/hello.wav",
        "note": inside,  # a text field keeps its text, whatever it looks like
        "source": inside,  # a url field too: only images, sounds and videos are served
        "labelloop_item_id": "batch-1-item-0",
        "labelloop_batch_id": "batch-1",
        "labelloop_annotations_required": 1,
    }
    for task, data in zip(batch.tasks[1:], sent[1:], strict=True):
        assert isinstance(data, dict)
        assert data["audio"] == task.data["audio"]  # left as they are
    assert batch.model_dump(mode="json") == before  # what labelloop keeps and exports
    # without a media root, as before
    assert ls_task(batch.tasks[0], batch, config)["data"]["audio"] == inside  # type: ignore[index]
    assert files.links(batch.tasks[1].data, ["audio"]) == ({}, ["audio"])
    assert files.links(batch.tasks[3].data, ["audio"]) == ({}, [])  # a data URI is not outside


def test_a_review_task_gets_the_url_too(media: Path) -> None:
    config = _config()
    batch = _batch({"audio": str(media / "en" / "hello.wav")}).model_copy(update={"kind": "review"})
    data: Any = ls_task(batch.tasks[0], batch, config, media=LocalFiles.of(str(media)))["data"]
    assert data["audio"] == "/data/local-files/?d=media/en/hello.wav"


async def test_the_importer_sends_urls_and_warns_once_per_batch_naming_only_the_field(
    fake_ls: Any, kv: Any, media: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config()
    bridge = FakeBridge(fake_ls, kv, config, attempts=2, media=LocalFiles.of(str(media)))
    outside = str(tmp_path / "secret.wav")
    batch = _batch(
        {"audio": str(media / "en" / "hello.wav")},
        {"audio": outside},
        {"audio": f"{media}/../secret.wav"},
    )
    before = batch.model_dump(mode="json")
    with caplog.at_level(logging.WARNING, logger="labelloop"):
        assert await bridge.importer.place(batch, config) == 3
    sent = {t["data"]["labelloop_item_id"]: t["data"]["audio"] for t in fake_ls.tasks.values()}
    assert sent == {
        "batch-1-item-0": "/data/local-files/?d=media/en/hello.wav",
        "batch-1-item-1": outside,
        "batch-1-item-2": f"{media}/../secret.wav",
    }
    warnings = [r.getMessage() for r in caplog.records if "outside the media root" in r.message]
    assert len(warnings) == 1
    assert "batch-1" in warnings[0]
    assert "2 media paths" in warnings[0]
    assert "(field audio: 2)" in warnings[0]
    assert "secret" not in warnings[0]  # no path of an item
    assert batch.model_dump(mode="json") == before


# ---------------------------------------------------------------------- the storage


def _storages(fake: Any, project: int) -> list[dict[str, Any]]:
    return [s for s in fake.storages.values() if s["project"] == project]


def _posts(fake: Any) -> int:
    return sum(1 for method, path in fake.requests if (method, path) == ("POST", STORAGES))


async def test_a_project_with_media_gets_one_storage_never_synced_and_found_again(
    fake_ls: Any, kv: Any, media: Path
) -> None:
    config = _config()
    files = LocalFiles.of(str(media))
    bridge = FakeBridge(fake_ls, kv, config, attempts=2, media=files)
    ls_id = await bridge.provisioner.ensure(config, "labeling")
    review_id = await bridge.provisioner.ensure(config, "review")
    for project in (ls_id, review_id):
        (storage,) = _storages(fake_ls, project)
        assert storage["path"] == str(media)
        assert storage["synchronizable"] is False  # Label Studio refuses to sync it
        assert storage["use_blob_urls"] is False
    await bridge.importer.place(_batch({"audio": str(media / "en" / "hello.wav")}), config)
    # a restarted bridge (same state, nothing cached) finds it and adds none
    again = FakeBridge(fake_ls, kv, config, attempts=2, media=files)
    assert await again.provisioner.ensure(config, "labeling") == ls_id
    await again.importer.place(_batch({"audio": "x"}, batch_id="batch-2"), config)
    assert len(_storages(fake_ls, ls_id)) == 1
    assert _posts(fake_ls) == 2


async def test_a_storage_someone_made_on_the_same_directory_is_kept(
    fake_ls: Any, kv: Any, media: Path
) -> None:
    config = _config()
    bridge = FakeBridge(fake_ls, kv, config, attempts=2, media=LocalFiles.of(str(media)))
    ls_id = await bridge.provisioner.ensure(config, "labeling")
    fake_ls.storages.clear()
    fake_ls.storages[999] = {"id": 999, "project": ls_id, "path": f"{media}/"}
    again = FakeBridge(fake_ls, kv, config, attempts=2, media=LocalFiles.of(str(media)))
    await again.provisioner.ensure(config, "labeling")
    assert list(fake_ls.storages) == [999]


async def test_each_annotators_own_project_gets_its_storage(
    fake_ls: Any, kv: Any, media: Path
) -> None:
    config = _config(team=("amy", "ben"))
    bridge = FakeBridge(fake_ls, kv, config, attempts=2, media=LocalFiles.of(str(media)))
    sound = str(media / "en" / "hello.wav")
    await bridge.importer.place(_batch({"audio": sound}, {"audio": sound}), config)
    await bridge.importer.place(_batch({"audio": sound}, batch_id="batch-2"), config)
    assert len(fake_ls.projects) == 2
    for ls_id in fake_ls.projects:
        assert [s["path"] for s in _storages(fake_ls, ls_id)] == [str(media)]


async def test_no_storage_without_media_fields_or_without_a_media_root(
    fake_ls: Any, kv: Any, media: Path
) -> None:
    text = _config(kind="text")
    bridge = FakeBridge(fake_ls, kv, text, attempts=2, media=LocalFiles.of(str(media)))
    await bridge.provisioner.ensure(text, "labeling")
    audio = _config()
    plain = FakeBridge(fake_ls, kv, audio, attempts=2)
    await plain.importer.place(_batch({"audio": str(media / "en" / "hello.wav")}), audio)
    assert not any(path.startswith("/api/storages") for _, path in fake_ls.requests)
    (task,) = fake_ls.tasks.values()
    assert task["data"]["audio"] == str(media / "en" / "hello.wav")


def _refused(request: httpx.Request) -> httpx.Response:
    detail = (
        "Serving local files from the host filesystem can be a security risk, so"
        " LOCAL_FILES_SERVING_ENABLED is disabled by default."
    )
    return httpx.Response(400, json={"non_field_errors": [detail]})


async def test_a_refused_storage_is_said_once_the_batch_goes_on_and_it_is_tried_again(
    fake_ls: Any, kv: Any, media: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(team=("amy", "ben"))
    bridge = FakeBridge(fake_ls, kv, config, attempts=3, media=LocalFiles.of(str(media)))
    fake_ls.fail("POST", STORAGES, _refused)
    fake_ls.fail("POST", STORAGES, _refused)
    sound = str(media / "en" / "hello.wav")
    with caplog.at_level(logging.DEBUG, logger="labelloop"):
        assert await bridge.importer.place(_batch({"audio": sound}, {"audio": sound}), config)
        assert len(fake_ls.tasks) == 2  # annotations can flow: the tasks are there
        await bridge.importer.place(_batch({"audio": sound}, batch_id="batch-2"), config)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # one clear error, whatever the number of projects
    said = errors[0].getMessage()
    assert "LOCAL_FILES_SERVING_ENABLED=true" in said
    assert f"LOCAL_FILES_DOCUMENT_ROOT={media.parent}" in said
    assert "fake-token" not in caplog.text
    assert _posts(fake_ls) == 2  # not retried: a 4xx will not change by itself
    errors_total = bridge.registry.get_sample_value(
        "labelloop_bridge_labelstudio_errors_total",
        {"operation": "create_local_storage", "outcome": "client_error"},
    )
    assert errors_total == 2
    assert not fake_ls.storages
    # Label Studio set up meanwhile: the next reconciliation pass adds them
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="labelloop"):
        await bridge.provisioner.upkeep()
        await bridge.provisioner.upkeep()
    assert sorted(s["project"] for s in fake_ls.storages.values()) == sorted(fake_ls.projects)
    assert caplog.text.count("accepted at last") == 2


async def test_an_unavailable_label_studio_fails_the_create_once_and_it_is_not_repeated(
    fake_ls: Any, kv: Any, media: Path
) -> None:
    config = _config()
    bridge = FakeBridge(fake_ls, kv, config, attempts=3, media=LocalFiles.of(str(media)))
    fake_ls.fail("POST", STORAGES, "apply-then-503")
    with pytest.raises(LabelStudioUnavailable):
        await bridge.provisioner.ensure(config, "labeling")
    assert _posts(fake_ls) == 1  # a create is never repeated blindly
    (ls_id,) = fake_ls.projects
    assert len(_storages(fake_ls, ls_id)) == 1  # it happened: listed next time, not doubled
    await bridge.provisioner.ensure(config, "labeling")
    assert len(_storages(fake_ls, ls_id)) == 1
