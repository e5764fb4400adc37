"""Video items' feature vectors: the image features of frames spread over the clip, pooled.

``frames`` frames are taken evenly over the first ``max_seconds`` of the first video stream
(by the packets' timestamps, read without decoding; then one decoding pass up to the last one
chosen), each becomes the thumbnail vector images get (:mod:`.pixels`), and the vector of the
clip is their mean then their standard deviation, pixel by pixel: ``2 * side**2`` numbers. The
mean says what the clip looks like, the deviation where it moves.

A file FFmpeg cannot open, with no video stream or with no frame it can decode raises
:class:`~.audio.UnreadableMedia` with the reason.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from .audio import UnreadableMedia
from .pixels import thumbnail_vector

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

__all__ = ["video_space", "video_vector"]


def video_space(side: int, frames: int) -> str:
    return f"video-px-{side}-x{frames}"


def video_vector(
    raw: bytes, *, side: int = 16, frames: int = 8, max_seconds: float = 60.0
) -> NDArray[np.float32]:
    """Mean and standard deviation of ``frames`` frames' thumbnails (``2 * side**2``, float32)."""
    import av

    try:
        with av.open(io.BytesIO(raw), mode="r") as container:
            if not container.streams.video:
                raise UnreadableMedia("not a video FFmpeg can read: it has no video stream")
            stream = container.streams.video[0]
            times = _packet_times(container, stream, max_seconds)
            if not times:
                raise UnreadableMedia("the video has no frames")
            wanted = _evenly(sorted(times), frames)
            container.seek(0)
            vectors = _decode_at(container, stream, wanted, side, max_seconds)
    except UnreadableMedia:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise UnreadableMedia(f"not a video FFmpeg can read ({exc})") from None
    if not vectors:
        raise UnreadableMedia("no frame of the video could be decoded")
    stacked = np.stack(vectors)
    pooled: NDArray[np.float32] = np.concatenate([stacked.mean(axis=0), stacked.std(axis=0)])
    return pooled.astype(np.float32)


def _packet_times(
    container: InputContainer, stream: VideoStream, max_seconds: float
) -> list[float]:
    """Presentation times (seconds) of the stream's packets within ``max_seconds``."""
    base = float(stream.time_base or 0)
    times = []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:  # the flush packet at the end
            continue
        at = float(packet.pts) * base
        if at > max_seconds:
            break
        times.append(at)
    return times


def _evenly(times: list[float], n: int) -> list[float]:
    """``n`` of the sorted ``times`` spread evenly from the first to the last (fewer if the
    clip has fewer frames)."""
    picks = np.unique(np.linspace(0, len(times) - 1, num=min(n, len(times))).round().astype(int))
    return [times[i] for i in picks.tolist()]


def _decode_at(
    container: InputContainer,
    stream: VideoStream,
    wanted: list[float],
    side: int,
    max_seconds: float,
) -> list[NDArray[np.float32]]:
    """Thumbnails of the first decoded frame at or after each wanted time."""
    base = float(stream.time_base or 0)
    vectors: list[NDArray[np.float32]] = []
    pending = iter(wanted)
    target = next(pending, None)
    for frame in container.decode(stream):
        if target is None:
            break
        at = float(frame.pts) * base if frame.pts is not None else target
        if at > max_seconds + 1.0:
            break
        if at + 1e-9 < target:
            continue
        vectors.append(thumbnail_vector(frame.to_image(), side))  # type: ignore[no-untyped-call]
        target = next(pending, None)
        while target is not None and target <= at:  # several wanted times in one frame's span
            target = next(pending, None)
    return vectors
