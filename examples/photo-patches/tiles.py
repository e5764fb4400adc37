"""Tiles of scikit-learn's two sample photographs, with the patches to box in each.

The photographs are the ones scikit-learn bundles (``load_sample_images``: a Chinese temple and a
flower, 427 x 640 pixels, offline), cut into 48-pixel tiles, row by row: 104 of each, 208 in all.
Each tile becomes an item whose ``image`` is a PNG data URI (nothing to serve, no media root:
the ingester, Label Studio and the model hook all read it from the item), with the boxes
the guidelines ask for in ``metadata.simulation_truth`` (what the simulated crew answers from;
people never see it): the largest patch of the tile's brightest and of its darkest pixels, the
very boxes ``detector.py`` beside this file draws, so the crew and the toy model agree.

    python examples/photo-patches/tiles.py > tiles.jsonl   # every tile, for labelloop ingest

The end-to-end test loads the same tiles through :func:`load_tiles`.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy.typing as npt
from PIL import Image
from sklearn.datasets import load_sample_images

from labelloop.events import ItemIn

Array = npt.NDArray[Any]

TILE = 48
CLASSES = ["bright", "dark"]
PREFIX = "tile"


def _detector() -> ModuleType:
    """``detector.py`` beside this file (an example is a folder of scripts, not a package),
    imported once."""
    name = "photo_patches_detector"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("detector.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def png_data_uri(tile: Array) -> str:
    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass(frozen=True)
class Tiles:
    images: list[Array]
    """Each tile, ``(TILE, TILE, 3)`` RGB."""
    photos: list[str]
    """The photograph each tile is cut from."""
    size: int

    def truth(self, k: int) -> list[dict[str, Any]]:
        """The boxes of tile ``k`` as the crew draws them: the detector's, in percent."""
        return [
            {
                **box,
                "rotation": 0.0,
                "label": label,
                "original_width": self.size,
                "original_height": self.size,
            }
            for label, box, _ in _detector().detect(self.images[k])
        ]

    def items(self, index: Array | None = None) -> list[ItemIn]:
        """Items for ``labelloop ingest`` (every tile, or those at ``index``): the tile, the
        truth for the simulated crew, the tile's number and photograph."""
        positions = range(len(self.images)) if index is None else [int(i) for i in index]
        return [
            ItemIn(
                data={"image": png_data_uri(self.images[k])},
                metadata={"simulation_truth": self.truth(k), "tile": k, "photo": self.photos[k]},
                external_id=f"{PREFIX}-{k}",
            )
            for k in positions
        ]


def load_tiles(size: int = TILE) -> Tiles:
    """Both photographs cut into ``size``-pixel tiles, row by row (the edges that do not fill a
    tile left out)."""
    photos = load_sample_images()
    images: list[Array] = []
    names: list[str] = []
    for image, path in zip(photos.images, photos.filenames, strict=True):
        rows, cols = image.shape[0] // size, image.shape[1] // size
        for r in range(rows):
            for c in range(cols):
                images.append(image[r * size : (r + 1) * size, c * size : (c + 1) * size])
                names.append(Path(path).name)
    return Tiles(images, names, size)


def main() -> None:
    for item in load_tiles().items():
        sys.stdout.write(item.model_dump_json(exclude_defaults=True) + "\n")


if __name__ == "__main__":
    main()
