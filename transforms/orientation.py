"""EXIF orientation: the tag, the image's size as displayed, and windows mapped between the
displayed (oriented) image and the stored pixels. Pure functions, no Beam, no decoding.

Orientation 1..8 is the EXIF tag 0x0112; any other value means "no transform", as in
`ImageOps.exif_transpose`, whose transposes (`display_transpose`) are the reference here.
Boxes are (y, x, height, width).
"""

from __future__ import annotations

import numpy as np
from cropshard.transforms.types import Box
from PIL import Image

_EXIF_ORIENTATION_TAG = 0x0112

# ImageOps.exif_transpose's table: orientation -> the transpose that displays the image.
_DISPLAY_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation 1..8 still to be applied; 1 when absent or unreadable (a broken EXIF block
    is not a broken image), and 1 for TIFF: Pillow's TIFF plugin already reports the displayed
    size and applies the orientation itself in load(), so applying it again rotated twice."""
    if img.format == "TIFF":
        return 1
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def swaps_axes(orientation: int) -> bool:
    """Orientations 5-8 turn the image a quarter: displayed width is the stored height."""
    return orientation in (5, 6, 7, 8)


def oriented_size(stored_width: int, stored_height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of the image as seen after ``exif_transpose``."""
    if swaps_axes(orientation):
        return stored_height, stored_width
    return stored_width, stored_height


def oriented_shape(img: Image.Image, orientation: int) -> tuple[int, int]:
    """(height, width) of a (lazily opened) image as displayed."""
    width, height = oriented_size(*img.size, orientation)
    return height, width


def display_transpose(orientation: int) -> Image.Transpose | None:
    """The Pillow transpose that turns stored pixels into the displayed image (None: none needed)."""
    return _DISPLAY_TRANSPOSE.get(orientation)


def oriented_box_to_stored(box: Box, orientation: int, stored_width: int, stored_height: int) -> Box:
    """Map a (y, x, h, w) window of the EXIF-oriented image to the stored (un-rotated) image.

    ``stored_width``/``stored_height`` are the image's own dimensions (before orientation).
    The returned window covers exactly the stored pixels of ``box``; for orientations 5..8
    its height/width are the box's width/height.
    """
    y, x, h, w = box
    W, H = stored_width, stored_height
    if orientation == 2:  # mirrored horizontally
        return (y, W - x - w, h, w)
    if orientation == 3:  # rotated 180
        return (H - y - h, W - x - w, h, w)
    if orientation == 4:  # mirrored vertically
        return (H - y - h, x, h, w)
    if orientation == 5:  # transposed: oriented (r, c) = stored (c, r)
        return (x, y, w, h)
    if orientation == 6:  # oriented (r, c) = stored (H-1-c, r)
        return (H - x - w, y, w, h)
    if orientation == 7:  # transversed: oriented (r, c) = stored (H-1-c, W-1-r)
        return (H - x - w, W - y - h, w, h)
    if orientation == 8:  # oriented (r, c) = stored (c, W-1-r)
        return (x, W - y - h, w, h)
    return (y, x, h, w)


def orient_array(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored-orientation (H, W, C) array into the displayed one (views only, no copy)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.transpose(1, 0, 2)
    if orientation == 6:
        return a[::-1].transpose(1, 0, 2)
    if orientation == 7:
        return a[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return a[:, ::-1].transpose(1, 0, 2)
    return a
