"""The digit-clips example: its project loads as a video project, and the clips its item writer
renders are items the ingester accepts and featurises whole (the same frames, the same bytes)."""

from __future__ import annotations

import hashlib
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest

from labelloop.events import ItemIn
from labelloop.project import DataKind, TaskType, load_project
from labelloop.testing import example_module
from labelloop_ingester.domain.featurize import MediaOptions, media_features
from labelloop_ingester.domain.validation import Limits, validate_item

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "digit-clips"


@pytest.fixture(scope="module")
def clips() -> ModuleType:
    return example_module(EXAMPLE / "clips.py", "digit_clips")


def test_the_project_is_a_video_project_of_the_ten_digits(clips: ModuleType) -> None:
    config = load_project(EXAMPLE / "project.yaml")
    assert config.task_type is TaskType.VIDEO_CLASSIFICATION
    assert config.primary_field.name == "video"
    assert config.primary_field.kind is DataKind.VIDEO
    assert config.labels.classes == clips.CLASSES
    assert config.simulation is not None
    assert "rendered, not filmed" in " ".join((config.guidelines_text or "").split())


def test_the_scans_split_by_digit_and_hold_out_a_share_of_each(clips: ModuleType) -> None:
    scans = clips.load_scans()
    assert len(scans.labels) == 1797
    assert sorted(set(scans.labels.tolist())) == clips.CLASSES
    pool, test = scans.split(20)
    assert not set(pool.tolist()) & set(test.tolist())
    assert len(pool) + len(test) == 1797
    assert abs(len(test) / 1797 - 0.3) < 0.01
    picked = scans.subset(pool, 3, 20)
    assert sorted(scans.labels[picked].tolist()) == sorted(clips.CLASSES * 3)


def test_rendered_clips_are_items_the_ingester_accepts_and_featurises(
    clips: ModuleType, tmp_path: Path
) -> None:
    scans = clips.load_scans()
    index = scans.subset(np.arange(len(scans.labels)), 1, 0)  # one clip of each digit
    paths = scans.render(tmp_path, index)
    items = scans.items(tmp_path, index, n_gold=3, seed=0)
    config = load_project(EXAMPLE / "project.yaml")

    assert [Path(str(item.data["video"])) for item in items] == paths
    assert all(p.is_relative_to(tmp_path) for p in paths)
    assert len({item.external_id for item in items}) == len(items)
    assert sum(item.known_label is not None for item in items) == 3
    for item, i in zip(items, index, strict=True):
        assert item.metadata["simulation_truth"] == scans.labels[i]
        assert item.known_label in (None, scans.labels[i])
        # as `labelloop ingest` reads a line of the writer's output, and the ingester checks it
        line = json.dumps(item.model_dump(mode="json", exclude_none=True))
        assert validate_item(ItemIn.model_validate_json(line), config, Limits()) is None

    with av.open(str(paths[0])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"  # what a browser's player plays
        assert (stream.width, stream.height) == (clips.SIDE, clips.SIDE)
        assert sum(1 for _ in container.decode(stream)) == clips.FRAMES

    found = media_features(items, config, lambda ref: Path(ref).read_bytes(), MediaOptions())
    assert found.unreadable == {}
    assert found.block is not None
    assert found.block.rows == list(range(len(items)))
    assert found.block.X.shape == (len(items), 2 * MediaOptions().image_side ** 2)
    assert np.all(np.isfinite(found.block.X))


def test_the_same_seed_renders_the_same_bytes_and_another_seed_other_frames(
    clips: ModuleType, tmp_path: Path
) -> None:
    index = np.arange(4)
    first = clips.load_scans(20).render(tmp_path / "a", index)
    again = clips.load_scans(20).render(tmp_path / "b", index)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in first]
    assert digest == [hashlib.sha256(p.read_bytes()).hexdigest() for p in again]
    assert not np.array_equal(clips.load_scans(20).frames(0), clips.load_scans(21).frames(0))


def test_the_writer_prints_an_item_per_clip_it_rendered(clips: ModuleType, tmp_path: Path) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        clips.main(["--out", str(tmp_path / "media"), "--limit", "5"])
    items = [ItemIn.model_validate_json(line) for line in out.getvalue().splitlines()]
    assert [i.metadata["scan"] for i in items] == [0, 1, 2, 3, 4]
    assert [i.metadata["simulation_truth"] for i in items] == ["0", "1", "2", "3", "4"]
    assert all(Path(str(i.data["video"])).is_file() for i in items)
    assert all(Path(str(i.data["video"])).is_absolute() for i in items)
