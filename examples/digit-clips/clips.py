"""Handwritten digits on video: short clips rendered from real scans, for labeling by digit.

We found no labeled collection of real video that installs offline from a package (the video
packages of Debian and PyPI ship a few unlabeled sample clips at most), so the footage is
**rendered, not filmed**: each clip shows one of the 1,797 real handwritten digits scikit-learn
bundles (``load_digits``: 8x8 scans, the test set of UCI's optical recognition of handwritten
digits, ten classes), drifting a few pixels, zooming and turning a little over three seconds on
a background of its own shade, with sensor-like noise in every frame. The handwriting is real;
what a camera would add is simulated, seeded by the clip, so the same seed renders the same
frames and the same bytes.

Each clip: 64 x 64 pixels, 30 frames at 10 frames per second, grey, H.264 in MP4 (what a
browser's video player, and so Label Studio's, plays), about 16 kB; rendering and encoding
take under 10 ms a clip on one core (all 1,797 in some 15 s)::

    python examples/digit-clips/clips.py --out /srv/media/digit-clips > clips.jsonl
    python examples/digit-clips/clips.py --out /tmp/clips --limit 100   # a quick try
    export LABELLOOP_INGESTER_MEDIA_ROOT=/srv/media   # the ingester reads there

Each line is an item whose ``video`` is the clip's path (the ingester reads it when its media
root covers ``--out``), with its digit in ``metadata.simulation_truth`` (what the simulated
crew answers from). The end-to-end test and the benchmark render the same clips through
:func:`load_scans` and :meth:`Scans.render`.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from labelloop.events import ItemIn

Array = npt.NDArray[Any]

CLASSES = [str(d) for d in range(10)]
SEED = 20
"""The seed of the clips' motion, shading and noise (each clip's own stream: ``[seed, scan]``)."""
SIDE = 64
"""Frame width and height, pixels."""
FPS = 10
FRAMES = 30
PREFIX = "digit-clip"
_CODEC = "libx264"
_CODEC_OPTIONS = {"crf": "28", "preset": "veryfast", "x264-params": "rc-lookahead=0"}
"""No lookahead (and so no macroblock tree): with it, the x264 of PyAV 18's wheels now and then
encodes the same frames to different bytes, even on one thread; without it, a clip is some 50%
larger."""
_SCAN = 8
"""The scans' side, pixels; their values run from 0 (paper) to 16 (ink)."""


@dataclass(frozen=True)
class Scans:
    """The real scans the clips are rendered from, their digits, and the rendering's seed."""

    images: Array
    """``(n, 8, 8)``, ink from 0 to 16."""
    labels: Array
    """Each scan's digit, as a string (the project's class)."""
    classes: list[str]
    seed: int = SEED

    def split(self, seed: int, test_fraction: float = 0.3) -> tuple[Array, Array]:
        """Pool and held-out positions, sorted: a seeded share of each digit held out."""
        rng = np.random.default_rng(seed)
        pool, test = [], []
        for name in self.classes:
            members = rng.permutation(np.flatnonzero(self.labels == name))
            n_test = round(len(members) * test_fraction)
            test.extend(members[:n_test].tolist())
            pool.extend(members[n_test:].tolist())
        return np.sort(np.asarray(pool)), np.sort(np.asarray(test))

    def subset(self, index: Array, per_class: int, seed: int) -> Array:
        """At most ``per_class`` positions of each digit from ``index`` (seeded), sorted."""
        rng = np.random.default_rng(seed)
        out: list[int] = []
        for name in self.classes:
            members = index[self.labels[index] == name]
            out.extend(rng.permutation(members)[:per_class].tolist())
        return np.sort(np.asarray(out))

    def path(self, root: Path, i: int) -> Path:
        """Where the clip of scan ``i`` is written under ``root``."""
        return root / f"{PREFIX}-{self.seed}-{int(i):04d}.mp4"

    def frames(self, i: int) -> npt.NDArray[np.uint8]:
        """The clip of scan ``i``: ``(FRAMES, SIDE, SIDE)`` grey levels."""
        return render_frames(self.images[i], np.random.default_rng([self.seed, int(i)]))

    def render(self, root: Path, index: Array) -> list[Path]:
        """The clips of the scans ``index``, written under ``root``; their paths."""
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in index:
            path = self.path(root, int(i))
            path.write_bytes(encode(self.frames(int(i))))
            paths.append(path)
        return paths

    def items(self, root: Path, index: Array, *, n_gold: int = 0, seed: int = 0) -> list[ItemIn]:
        """Items for ``labelloop ingest``: the rendered clip's path, the truth for the simulated
        crew, and ``n_gold`` of them (seeded) with their labels known, as gold."""
        rng = np.random.default_rng(seed)
        gold = set(rng.choice(index, size=min(n_gold, len(index)), replace=False).tolist())
        return [
            ItemIn(
                data={"video": str(self.path(root, int(i)))},
                metadata={"simulation_truth": str(self.labels[i]), "scan": int(i)},
                known_label=str(self.labels[i]) if int(i) in gold else None,
                external_id=f"{PREFIX}-{self.seed}-{int(i):04d}",
            )
            for i in index
        ]


def load_scans(seed: int = SEED) -> Scans:
    """scikit-learn's 1,797 handwritten digits (bundled with it: no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = np.asarray([str(d) for d in digits.target], dtype=object)
    return Scans(np.asarray(digits.images, dtype=np.float32), labels, CLASSES, seed)


def render_frames(scan: Array, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One scan filmed for ``FRAMES`` frames: it drifts up to 3 pixels from the centre, zooms
    between 4.5 and 5.5 frame pixels per scan pixel (a digit some 40 pixels tall) and turns up
    to 7 degrees either way, each linearly from a random start to a random end; paper and ink
    take a random shade, and every frame gets its own Gaussian noise."""
    from PIL import Image

    source = Image.fromarray(np.asarray(scan, dtype=np.float32) / 16.0, mode="F")
    scale = rng.uniform(4.5, 5.5, size=2)
    centre = SIDE / 2 + rng.uniform(-3.0, 3.0, size=(2, 2))
    angle = rng.uniform(-0.12, 0.12, size=2)
    paper = rng.uniform(0.0, 0.25)
    ink = rng.uniform(0.7, 1.0)
    sigma = rng.uniform(0.01, 0.05)
    out = np.empty((FRAMES, SIDE, SIDE), dtype=np.uint8)
    half = _SCAN / 2
    for k, t in enumerate(np.linspace(0.0, 1.0, FRAMES)):
        zoom = scale[0] + (scale[1] - scale[0]) * t
        cx, cy = centre[0] + (centre[1] - centre[0]) * t
        turn = angle[0] + (angle[1] - angle[0]) * t
        # the affine map from a frame pixel back to the scan: about the digit's centre in the
        # frame, turned and shrunk, then shifted to the scan's centre
        cos, sin = np.cos(turn) / zoom, np.sin(turn) / zoom
        coefficients = (cos, sin, half - cos * cx - sin * cy, -sin, cos, half + sin * cx - cos * cy)
        glyph = np.asarray(
            source.transform(
                (SIDE, SIDE),
                Image.Transform.AFFINE,
                coefficients,
                resample=Image.Resampling.BILINEAR,
                fillcolor=0.0,
            )
        )
        frame = paper + (ink - paper) * glyph + rng.normal(0.0, sigma, glyph.shape)
        out[k] = np.clip(frame * 255.0, 0, 255).astype(np.uint8)
    return out


def encode(frames: npt.NDArray[np.uint8]) -> bytes:
    """Grey frames as H.264 in MP4, on one thread (the same frames give the same bytes)."""
    import av
    from av.video.stream import VideoStream

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(_CODEC, rate=FPS, options=_CODEC_OPTIONS)
        assert isinstance(stream, VideoStream)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        chroma = np.full((SIDE // 2, SIDE), 128, dtype=np.uint8)  # no colour: U and V at 128
        for grey in frames:
            planes = np.concatenate([grey, chroma])  # yuv420p: Y, then U and V a quarter each
            container.mux(stream.encode(av.VideoFrame.from_ndarray(planes, format="yuv420p")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder the clips are written to")
    parser.add_argument("--seed", type=int, default=SEED, help="the rendering's seed")
    parser.add_argument("--limit", type=int, help="only the first LIMIT scans (a quick try)")
    args = parser.parse_args(argv)
    scans = load_scans(args.seed)
    index = np.arange(len(scans.labels))[: args.limit]
    root = args.out.resolve()
    scans.render(root, index)
    for item in scans.items(root, index):
        sys.stdout.write(json.dumps(item.model_dump(mode="json", exclude_none=True)) + "\n")


if __name__ == "__main__":
    main()
