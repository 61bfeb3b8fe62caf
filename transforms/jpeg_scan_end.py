"""JPEG scans that end before the image does: libjpeg warns and fills the rest with grey.

When a JPEG's entropy-coded data stops early (a file cut and given an end marker again, a
download stitched from parts), libjpeg meets the marker inside the scan, warns "premature end of
data segment" and decodes every block after it with all coefficients zero: flat mid-grey
(value 128) to the end of the image, or, in a progressive JPEG, the coefficients of the scans
that never came. Pillow and TensorFlow both keep libjpeg's warnings to themselves, so such a
file decodes "fine", grey band included. Telling for sure needs libjpeg's warning itself, which
simplejpeg (libjpeg-turbo with warnings raised, `strict=True`) reports; that costs about one
more entropy decode of the whole file, so it runs only when a cheap sign says a scan may have
ended early:

* the last pixel the decode produced (bottom-right of the decoded rows, stored orientation) is
  mid-grey: blocks are decoded in raster order, so if any decoded block lies after the point
  where the data stopped, the last one does, and its luma is exactly 128 (chroma upsampling can
  blend a neighbour's colour into it, the luma it cannot change);
* a progressive JPEG's scans leave some component's coefficients short of full precision: the
  scans after the point where the data stopped are missing.

Not caught: a progressive JPEG whose data stops inside its last scan (every scan header is
there and the decoded blocks are not grey; those rows lose the last refinement bit of their
coefficients), and a cut in the data of the very block decoded last.
"""

from __future__ import annotations

import numpy as np

# Zero coefficients decode to this sample value (the JPEG level shift of 8-bit samples).
_MID_GREY = 128
# How far from mid-grey the last pixel's luma may be and still count as a sign: the RGB of a
# zero block is exact, its luma recomputed from RGB rounds by one level or two.
_LUMA_SLACK = 2
# libjpeg-turbo's warnings (jerror.h) for entropy-coded data that stops early: JWRN_HIT_MARKER,
# JWRN_JPEG_EOF. Other warnings (extraneous bytes before a marker, an unknown Adobe transform)
# leave the pixels decoded, so they are not reasons to refuse a file.
_ENDS_EARLY = ("premature end of data segment", "premature end of jpeg file")


class ScanEndsEarly(ValueError):
    """A JPEG's entropy-coded data stops before the image is complete; the message says so."""


def last_pixel_is_mid_grey(pixel: int | tuple[int, ...] | np.ndarray, mode: str) -> bool:
    """Whether the last decoded pixel (`mode` is Pillow's: L, RGB, CMYK...) looks like a zero block."""
    values = pixel.tolist() if isinstance(pixel, np.ndarray) else pixel  # plain ints: once per image, on the hot path
    values = [values] if isinstance(values, int) else list(values)
    if mode == "RGB" or len(values) == 3:
        luma = (299 * values[0] + 587 * values[1] + 114 * values[2] + 500) // 1000
        return abs(luma - _MID_GREY) <= _LUMA_SLACK
    # L: the sample itself; CMYK/YCCK: a zero block converts to 127-128 in every ink.
    return all(abs(value - _MID_GREY) <= _LUMA_SLACK for value in values)


def scans_end_early(data: bytes) -> str | None:
    """libjpeg's own words when this JPEG's entropy-coded data stops before the image is
    complete, else None. A strict, 1/8-scale decode of the whole file (about one entropy decode)."""
    words = libjpeg_warning(data)
    return words if words is not None and any(phrase in words.lower() for phrase in _ENDS_EARLY) else None


def libjpeg_warning(data: bytes) -> str | None:
    """libjpeg-turbo's first warning (or error) decoding this JPEG, else None: a strict, 1/8-scale
    decode of the whole file (about one entropy decode)."""
    import simplejpeg  # only the few files with a sign pay for loading it

    try:
        colorspace = "CMYK" if simplejpeg.decode_jpeg_header(data)[2] in ("CMYK", "YCCK") else "GRAY"
        simplejpeg.decode_jpeg(data, colorspace=colorspace, min_factor=8, strict=True)
    except ValueError as err:
        return str(err)
    return None


def refusal(data: bytes, last_pixel: int | tuple[int, ...] | np.ndarray, mode: str, scans_complete: bool = True) -> str | None:
    """The reason to refuse this JPEG as cut short, given the last pixel its decode produced and
    whether its scans bring every coefficient to full precision; None when it is whole."""
    if scans_complete and not last_pixel_is_mid_grey(last_pixel, mode):
        return None
    words = scans_end_early(data)
    if words is None:
        return None
    return f"JPEG scan data stops before the image is complete (libjpeg: {words!r}); the rest would be decoded as flat grey (blurred, in a progressive JPEG)"
