"""Video features (frames spread over a clip, pooled) and media items through the ingester:
featurised before the claim, a file that cannot be decoded rejected with its reason."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile  # type: ignore[import-untyped]  # no type information
from av.video.stream import VideoStream
from numpy.typing import NDArray
from PIL import Image

from labelloop.catalog import Catalog
from labelloop.events import ItemIn, ItemsRejected, ItemsSubmitted, SubmissionAnswered
from labelloop.project import parse_project
from labelloop.testing import in_memory
from labelloop_ingester.app import build_app
from labelloop_ingester.domain.audio import AUDIO_DIM, UnreadableMedia
from labelloop_ingester.domain.featurize import MediaOptions, media_features
from labelloop_ingester.domain.pixels import image_vector
from labelloop_ingester.domain.video import video_vector
from labelloop_ingester.settings import IngesterSettings

SIDE = 16


def _frames(n: int, w: int = 64, h: int = 48) -> list[NDArray[np.uint8]]:
    """A white bar sweeping left to right over black: frame i is white up to column i*w/n."""
    out: list[NDArray[np.uint8]] = []
    for i in range(n):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[:, : (i * w) // max(n - 1, 1)] = 255
        out.append(img)
    return out


def _clip(frames: list[NDArray[np.uint8]], fmt: str = "mp4", codec: str = "mpeg4") -> bytes:
    buf = io.BytesIO()
    h, w = frames[0].shape[:2] if frames else (32, 32)
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        assert isinstance(stream, VideoStream)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _png(img: NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_a_clips_vector_pools_the_image_features_of_frames_spread_over_it() -> None:
    frames = _frames(41)
    vector = video_vector(_clip(frames, codec="libx264"), side=SIDE, frames=5)
    assert vector.shape == (2 * SIDE * SIDE,)
    assert vector.dtype == np.float32
    # the five frames taken are 0, 10, 20, 30, 40: their image vectors, pooled
    chosen = [image_vector(_png(frames[i]), SIDE) for i in (0, 10, 20, 30, 40)]
    stack = np.stack([v for v in chosen if v is not None])
    np.testing.assert_allclose(vector[: SIDE * SIDE], stack.mean(axis=0), atol=0.05)
    np.testing.assert_allclose(vector[SIDE * SIDE :], stack.std(axis=0), atol=0.05)
    # where the bar moves the pixels vary; the left edge is white from the second frame on
    deviation = vector[SIDE * SIDE :].reshape(SIDE, SIDE)
    assert deviation[:, SIDE // 2].mean() > 0.3
    np.testing.assert_array_equal(
        vector, video_vector(_clip(frames, codec="libx264"), side=SIDE, frames=5)
    )


def test_a_still_clip_has_no_deviation_and_a_short_one_pools_what_it_has() -> None:
    grey: list[NDArray[np.uint8]] = [np.full((32, 32, 3), 128, dtype=np.uint8)] * 12
    vector = video_vector(_clip(grey), side=8, frames=8)
    assert vector[64:].max() < 0.02
    assert vector[:64].mean() == pytest.approx(128 / 255, abs=0.03)
    single = video_vector(_clip(_frames(1)), side=8, frames=8)  # one frame: no deviation
    assert single.shape == (128,)
    assert np.allclose(single[64:], 0.0)


def _no_frames(fmt: str) -> bytes:
    buf = io.BytesIO()
    out = av.open(buf, "w", format=fmt)
    stream = out.add_stream("mpeg4", rate=10)
    assert isinstance(stream, VideoStream)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    out.start_encoding()  # the header, with its video stream, though no frame follows
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return buf.getvalue()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (_no_frames("avi"), "no frames"),
        (_no_frames("mp4"), "no video stream"),
        (np.random.default_rng(5).bytes(3_000), "not a video"),
        (_clip(_frames(10))[:400], "not a video"),
    ],
    ids=["no-frames", "no-video-stream", "random-bytes", "cut-short"],
)
def test_a_video_that_cannot_be_decoded_is_refused_with_a_reason(raw: bytes, says: str) -> None:
    with pytest.raises(UnreadableMedia, match=says):
        video_vector(raw, side=SIDE, frames=4)


# --- through the ingester ------------------------------------------------------------------

AUDIO: dict[str, Any] = {
    "name": "calls",
    "task_type": "audio_classification",
    "labels": {"classes": ["low", "high"]},
    "data_fields": [{"name": "audio", "kind": "audio"}],
}


def _wav(freq: float, seconds: float = 0.5, rate: int = 8_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    soundfile.write(
        buf, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, "PCM_16", format="WAV"
    )
    return buf.getvalue()


def _uri(raw: bytes, mime: str = "audio/wav") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def test_media_features_name_the_files_that_cannot_be_decoded() -> None:
    project = parse_project(AUDIO)
    items = [
        ItemIn(data={"audio": _uri(_wav(300))}),
        ItemIn(data={"audio": _uri(b"not a sound at all")}),
        ItemIn(data={"audio": "https://example.org/a.wav"}),  # not read: no bytes, no verdict
        ItemIn(data={"audio": _uri(_wav(2_000))}, features=[1.0, 2.0]),  # the producer's wins
        ItemIn(data={"audio": _uri(_wav(2_000))}),
    ]

    def load(ref: str) -> bytes | None:
        return base64.b64decode(ref.partition(",")[2]) if ref.startswith("data:") else None

    found = media_features(items, project, load, MediaOptions(sample_rate=8_000))
    assert found.block is not None
    assert found.block.space == "audio-spectral-8000"
    assert found.block.rows == [0, 4]
    assert found.block.X.shape == (2, AUDIO_DIM)
    assert found.block.X[1, 4 * 20] > 3 * found.block.X[0, 4 * 20]  # 2 kHz is brighter
    assert list(found.unreadable) == [1]
    assert "not a sound file" in found.unreadable[1]
    assert found.unread == [2]


async def test_sounds_are_ingested_with_features_and_a_corrupt_one_is_rejected(
    tmp_path: Path,
) -> None:
    (tmp_path / "low.wav").write_bytes(_wav(250))
    (tmp_path / "high.flac").write_bytes(_flac(3_000))
    (tmp_path / "cut.wav").write_bytes(_wav(1_000)[:2_000])
    settings = IngesterSettings(media_root=str(tmp_path), audio_sample_rate=8_000)
    service = build_app(settings)
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(AUDIO))
        submitted = ItemsSubmitted(
            project="calls",
            items=[
                ItemIn(data={"audio": str(tmp_path / "low.wav")}, external_id="low"),
                ItemIn(data={"audio": str(tmp_path / "cut.wav")}, external_id="cut"),
                ItemIn(data={"audio": _uri(_wav(900))}, external_id="inline"),
                ItemIn(data={"audio": str(tmp_path / "high.flac")}, external_id="high"),
                ItemIn(data={"audio": "/elsewhere/x.wav"}, external_id="outside"),
            ],
            origins=[1, 2, 3, 4, 5],
            origin_unit="line",
        )
        await bus.publish(submitted)
        (answer,) = bus.published(SubmissionAnswered)
        assert (answer.ingested, answer.rejected, answer.duplicates) == (4, 1, 0)
        ((line, verdict, reason),) = [(o.origin, o.verdict, o.reason) for o in answer.outcomes]
        assert (line, verdict) == (2, "rejected")
        assert reason.startswith("unreadable_media: truncated WAV")
        (rejected,) = bus.published(ItemsRejected)
        assert [(r.external_id, r.origin) for r in rejected.rejections] == [("cut", 2)]

        items = await Catalog(bus.stores.state, bus.stores.artifacts).load("calls")
        by_external = {r.external_id: i for i, r in items.records.items()}
        assert set(by_external) == {"low", "inline", "high", "outside"}
        space = items.spaces["audio-spectral-8000"]
        assert space.dim == AUDIO_DIM
        assert set(space.rows) == {by_external[k] for k in ("low", "inline", "high")}
        centroid = {k: space.rows[by_external[k]][4 * 20] for k in ("low", "inline", "high")}
        assert centroid["low"] < centroid["inline"] < centroid["high"]

        registry = service.registry
        assert (
            registry.get_sample_value(
                "labelloop_ingester_items_rejected_total", {"reason": "unreadable_media"}
            )
            == 1
        )
        counts = {
            outcome: registry.get_sample_value(
                "labelloop_ingester_media_items_total", {"kind": "audio", "outcome": outcome}
            )
            for outcome in ("featurized", "unreadable", "unread")
        }
        assert counts == {"featurized": 3, "unreadable": 1, "unread": 1}

        # the rejected file claimed nothing: fixed and sent again under the same path, it is
        # ingested, not called a duplicate
        (tmp_path / "cut.wav").write_bytes(_wav(1_000))
        again = ItemsSubmitted(
            project="calls", items=[ItemIn(data={"audio": str(tmp_path / "cut.wav")})]
        )
        await bus.publish(again)
        said = bus.published(SubmissionAnswered)[-1]
        assert (said.ingested, said.rejected, said.duplicates) == (1, 0, 0)


def _flac(freq: float) -> bytes:
    t = np.arange(8_000) / 16_000
    buf = io.BytesIO()
    soundfile.write(
        buf, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000, format="FLAC"
    )
    return buf.getvalue()


async def test_videos_are_ingested_with_pooled_frame_features(tmp_path: Path) -> None:
    project = {
        **AUDIO,
        "name": "clips",
        "task_type": "video_classification",
        "data_fields": [{"name": "video", "kind": "video"}],
    }
    (tmp_path / "sweep.mp4").write_bytes(_clip(_frames(20)))
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(2).bytes(2_000))
    service = build_app(IngesterSettings(media_root=str(tmp_path), video_frames=4, image_side=8))
    async with in_memory(service) as bus:
        await bus.apply_project(parse_project(project))
        await bus.publish(
            ItemsSubmitted(
                project="clips",
                items=[
                    ItemIn(data={"video": str(tmp_path / "sweep.mp4")}),
                    ItemIn(data={"video": str(tmp_path / "broken.mp4")}),
                ],
            )
        )
        (answer,) = bus.published(SubmissionAnswered)
        assert (answer.ingested, answer.rejected) == (1, 1)
        assert answer.outcomes[0].reason.startswith("unreadable_media: not a video")
        items = await Catalog(bus.stores.state, bus.stores.artifacts).load("clips")
        (vector,) = items.spaces["video-px-8-x4"].rows.values()
        assert vector.shape == (128,)
        assert vector[64:].max() > 0.3  # the bar moved
