"""EXIF orientation math against Pillow's ImageOps.exif_transpose: the tag, sizes as displayed,
windows mapped to stored pixels, and numpy views that orient a stored window."""

from __future__ import annotations

import io

import numpy as np
import pytest
from cropshard.transforms.orientation import (
    display_transpose,
    exif_orientation,
    orient_array,
    oriented_box_to_stored,
    oriented_shape,
    oriented_size,
    swaps_axes,
)
from PIL import Image, ImageOps

ORIENTATIONS = range(1, 9)
STORED = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)  # 7 wide, 5 high, every value unique


def tagged(orientation: int, fmt: str = "PNG") -> Image.Image:
    """STORED saved with an EXIF orientation tag, reopened lazily."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(STORED).save(buffer, fmt, exif=exif)
    buffer.seek(0)
    return Image.open(buffer)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_display_transpose_and_orient_array_equal_exif_transpose(orientation: int) -> None:
    img = tagged(orientation)
    assert exif_orientation(img) == orientation
    displayed = np.asarray(ImageOps.exif_transpose(img))
    stored = Image.fromarray(STORED)
    transpose = display_transpose(orientation)
    np.testing.assert_array_equal(np.asarray(stored if transpose is None else stored.transpose(transpose)), displayed)
    np.testing.assert_array_equal(orient_array(STORED, orientation), displayed)
    assert np.shares_memory(orient_array(STORED, orientation), STORED)  # a view, not a copy
    assert oriented_shape(img, orientation) == displayed.shape[:2]
    assert swaps_axes(orientation) == (displayed.shape[:2] != STORED.shape[:2])


def test_exif_orientation_absent_invalid_and_tiff() -> None:
    assert exif_orientation(Image.fromarray(STORED)) == 1  # no EXIF at all
    assert exif_orientation(tagged(9)) == 1  # out of range: no transform, as in exif_transpose
    assert exif_orientation(tagged(0)) == 1
    # Pillow's TIFF plugin orients while loading and reports the displayed size: nothing left to do.
    assert exif_orientation(tagged(6, "TIFF")) == 1


def test_invalid_orientations_are_the_identity() -> None:
    for orientation in (0, 1, 9):
        assert display_transpose(orientation) is None and not swaps_axes(orientation)
        assert orient_array(STORED, orientation) is STORED
        assert oriented_size(7, 5, orientation) == (7, 5)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_oriented_box_to_stored_covers_exactly_the_window(orientation: int) -> None:
    stored = np.arange(5 * 7).reshape(5, 7).astype(np.int32)  # unique value per pixel
    oriented = orient_array(stored[..., None], orientation)[..., 0]  # checked against ImageOps.exif_transpose above
    oh, ow = oriented.shape
    assert oriented_size(7, 5, orientation) == (ow, oh)
    for y in range(oh):
        for x in range(ow):
            for h in range(1, oh - y + 1):
                for w in range(1, ow - x + 1):
                    sy, sx, sh, sw = oriented_box_to_stored((y, x, h, w), orientation, 7, 5)
                    assert min(sy, sx) >= 0 and sy + sh <= 5 and sx + sw <= 7
                    want = np.sort(oriented[y : y + h, x : x + w], axis=None)
                    got = np.sort(stored[sy : sy + sh, sx : sx + sw], axis=None)
                    np.testing.assert_array_equal(got, want, err_msg=f"o={orientation} box={(y, x, h, w)}")


def test_oriented_box_to_stored_examples() -> None:
    # Stored 100 wide x 40 high; 6 = rotated 90 degrees clockwise for display (40 wide x 100 high).
    assert oriented_box_to_stored((0, 0, 10, 5), 6, 100, 40) == (35, 0, 5, 10)
    assert oriented_box_to_stored((0, 0, 10, 5), 8, 100, 40) == (0, 90, 5, 10)
    assert oriented_box_to_stored((2, 3, 4, 5), 1, 100, 40) == (2, 3, 4, 5)
    assert oriented_box_to_stored((2, 3, 4, 5), 3, 100, 40) == (34, 92, 4, 5)
    assert oriented_box_to_stored((2, 3, 4, 5), 0, 100, 40) == (2, 3, 4, 5)  # invalid tag: like Pillow, no-op

