"""Pixel features of a picture: a small grayscale thumbnail, for images and video frames alike."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["image_vector", "thumbnail_vector"]


def thumbnail_vector(img: Image, side: int = 16) -> NDArray[np.float32]:
    """Grayscale pixels of a ``side`` x ``side`` thumbnail of ``img``, in [0, 1]."""
    from PIL import Image as PILImage

    small = img.convert("L").resize((side, side), PILImage.Resampling.BILINEAR)
    return (np.asarray(small, dtype=np.float32) / 255.0).ravel()


def image_vector(raw: bytes, side: int = 16) -> NDArray[np.float32] | None:
    """:func:`thumbnail_vector` of the image in ``raw``, or None if not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:
            return thumbnail_vector(img, side)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
