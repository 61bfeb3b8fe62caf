"""Decode only what the crops need: pure functions from file bytes to crop pixels, no Beam.

Two paths give the same pixels:
- `window`: JPEG sources whose crop windows fit inside the image and need no resize are
  decoded window by window with libjpeg-turbo's partial decode (`jpeg_window`), EXIF
  orientation handled by mapping each window into the stored orientation (`orientation`);
- `pillow`: everything else is decoded whole with Pillow (JPEG with `draft()` first when a
  `--resize` lets libjpeg downscale in the DCT domain), oriented, converted and cropped.

The reference for both is Pillow: open -> `ImageOps.exif_transpose` -> colour conversion
(`to_output_mode`) -> resize -> crop, and the tests hold the window path to it exactly.
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings
from collections.abc import Iterator

import numpy as np
from cropshard.transforms import jpeg_scan_end, jpeg_window, png_stream
from cropshard.transforms.crop import CropSpec, box_in_source, fits, plan_boxes, working_shape
from cropshard.transforms.encode import raw_mode
from cropshard.transforms.orientation import (
    display_transpose,
    exif_orientation,
    oriented_box_to_stored,
    oriented_shape,
    swaps_axes,
)
from cropshard.transforms.raster import convert as raster_convert
from cropshard.transforms.raster.open_raster import refuse_references
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import Box
from PIL import Image, ImageOps, UnidentifiedImageError

# `open_image` enforces this (--max_pixels) on the header; worker.setup_worker(max_pixels) sets
# Pillow's own check to the same limit, for images nested in others.
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit (0.25 GiB of RGBA)

RESAMPLE = Image.Resampling.BILINEAR  # antialiased in Pillow when downscaling
# Above this fraction of the image area, one full decode is cheaper than per-window decodes.
WINDOW_AREA_LIMIT = 0.5

PATH_WINDOW = "window"
PATH_PILLOW = "pillow"
PATH_DRAFT = "pillow_draft"

# Formats Pillow decodes by running another program on the file: never done for an input (a
# hostile .eps named .jpg would reach Ghostscript, whose PostScript sandbox has been escaped).
_RENDERED_BY_ANOTHER_PROGRAM = {"EPS": "EPS is PostScript, which Pillow renders by running Ghostscript; cropshard does not run it on inputs"}

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclasses.dataclass
class Crop:
    """One output image: pixels (uint8 HWC) and the window it came from in the oriented source."""

    pixels: np.ndarray
    source_box: Box


@dataclasses.dataclass
class Decoded:
    crops: list[Crop] | Iterator[Crop]  # a list from decode_crops; lazy from stream_crops
    path: str  # PATH_WINDOW | PATH_PILLOW | PATH_DRAFT
    source_format: str  # Pillow's format name: JPEG, PNG, ...
    source_shape: tuple[int, int]  # (height, width) after EXIF orientation
    orientation: int


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open lazily (header only) and apply the pixel-count guard before anything is decoded."""
    if not data:
        raise Rejected("empty_file", "the file has zero bytes")
    _refuse_cut_riff(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as err:
        fmt = sniff_format(data)
        if fmt in _NO_DECODER:  # an image, in a format Pillow here does not read
            raise Rejected("decode_error", _NO_DECODER[fmt]) from err
        if fmt is None and data.startswith(b"\xff\xd8") and len(data) < 4:
            fmt = "JPEG"  # a start-of-image marker and nothing after it: a JPEG cut short
        if fmt is not None and header_cut_short(data, fmt):
            raise Rejected("truncated", f"{fmt} file of {len(data)} bytes that ends inside its header: the file is cut short") from err
        if fmt is not None:  # a real PNG/JPEG/... whose header is corrupt, not some other file
            raise Rejected("decode_error", f"{fmt} signature, but the header cannot be parsed: {_header_error(data, fmt)}") from err
        refuse_references(data[:64])  # a GDAL VRT is raster_reference whatever its name (x.vrt never takes the raster path)
        raise Rejected("not_an_image", f"no image format recognises these {len(data)} bytes") from err
    except Exception as err:  # noqa: BLE001 - any header parse failure is this file's problem
        raise _decode_rejection(err) from err
    if img.format in _RENDERED_BY_ANOTHER_PROGRAM:
        raise Rejected("decode_error", _RENDERED_BY_ANOTHER_PROGRAM[img.format])
    width, height = img.size
    if width < 1 or height < 1:
        raise Rejected("decode_error", f"header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise Rejected("too_many_pixels", f"{width}x{height} = {width * height} pixels exceeds --max_pixels {max_pixels}")
    frame = jpeg_window.jpeg_frame_or_none(data) if img.format == "JPEG" else None
    if frame is not None and frame.arithmetic:
        # Pillow feeds libjpeg 64 KiB at a time, and libjpeg's arithmetic decoder cannot suspend
        # for more input: every arithmetic-coded JPEG over 64 KiB failed, "broken data stream".
        # The bytes are in memory already: hand them over in one block. A file cut short fails
        # with the same words, so it is named here.
        if not _has_end_marker(data):
            raise Rejected("truncated", "arithmetic-coded JPEG without its end marker (EOI): the file is cut short")
        img.decodermaxblock = max(img.decodermaxblock, len(data))
    return img


# Leading bytes that identify a format for certain (BMP's two-letter "BM" is too weak to claim).
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


# ISO base media files (an `ftyp` box first) whose major brand is HEIF's: iPhone and many Android
# photos. Pillow reads AVIF (brand avif, tried first by Image.open) but has no HEVC decoder.
_HEIF_BRANDS = frozenset((b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"))
_JPEG_XL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")  # bare codestream, container
_NO_DECODER = {
    "HEIF": "HEIF/HEIC image (HEVC-coded, as phones save photos): no decoder for it here (Pillow reads AVIF, not HEIC); convert the files, e.g. to JPEG, before the build",
    "JPEG XL": "JPEG XL image: no decoder for it here; convert the files, e.g. to PNG or JPEG, before the build",
}


def sniff_format(data: bytes) -> str | None:
    """The format the file's magic bytes announce, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF"
    if data.startswith(_JPEG_XL_SIGNATURES):
        return "JPEG XL"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def header_cut_short(data: bytes, fmt: str) -> bool:
    """Whether a JPEG or PNG ends before its header does: a marker segment or chunk runs past the
    end, or the data ends before the first scan (JPEG SOS) or image data (PNG IDAT). Its header
    then fails to parse because the file is cut short, not because it is corrupt."""
    if fmt == "JPEG":
        return _jpeg_header_cut(data)
    if fmt == "PNG":
        return png_stream.header_cut_short(data)
    return False


def _jpeg_header_cut(data: bytes) -> bool:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False  # corrupt, not cut
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a segment
            i += 2
        elif marker == 0xDA:  # SOS: the header is whole
            return i + 2 + int.from_bytes(data[i + 2 : i + 4], "big") > n
        elif int.from_bytes(data[i + 2 : i + 4], "big") < 2:
            return False  # corrupt: a segment length counts its own two bytes
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return True  # ended inside a segment, or before the first scan


def _refuse_cut_riff(data: bytes) -> None:
    # A WebP cut short fails in libwebp as "could not create decoder object", which names no
    # cause; its RIFF header declares the file's length, so the cut is told here.
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 12:
        declared = 8 + int.from_bytes(data[4:8], "little")
        if len(data) < declared:
            raise Rejected("truncated", f"WebP file of {len(data)} bytes whose RIFF header declares {declared}: the file is cut short")


def _header_error(data: bytes, fmt: str) -> str:
    # Image.open hides why each plugin refused the file; ask the format's own plugin again.
    try:
        factory = Image.OPEN[fmt][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factory(io.BytesIO(data), "")
    except Exception as err:  # noqa: BLE001 - only used for the message
        return f"{type(err).__name__}: {err}"
    return "Pillow did not identify it"


def _decode_rejection(err: BaseException) -> Rejected:
    message = f"{type(err).__name__}: {err}"
    if isinstance(err, Image.DecompressionBombError):  # Pillow's check at --max_pixels (worker.setup_worker)
        size = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{size.group(1)} pixels" if size else "its size"
        return Rejected("too_many_pixels", f"an image in this file (the file or one nested in it) has {pixels}, over --max_pixels {round(2 * Image.MAX_IMAGE_PIXELS)}")
    if isinstance(err, EOFError) or "truncated" in str(err).lower():
        return Rejected("truncated", message)
    return Rejected("decode_error", message)


def to_output_mode(img: Image.Image, channels: int, wide_bits: int = 16) -> Image.Image:
    """Convert any Pillow mode to 'RGB' (channels=3) or 'L' (channels=1).

    - alpha (RGBA, LA, PA, palette or 1-bit/L/RGB/16-bit grey with a transparency key) is
      composited on black;
    - 16-bit and 32-bit integer greyscale is scaled to 8 bits by the --to_uint8 bits rule with
      `wide_bits` significant bits: v >> (wide_bits - 8), by default the top byte (v >> 8), the
      same rule Pillow applies to 16-bit RGB PNGs; float images by `float_to_uint8`;
    - CMYK, YCbCr, 1-bit and palette images use Pillow's conversions.
    """
    target = "RGB" if channels == 3 else "L"
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(img)
        pixels = raster_convert.to_uint8(values, wide_bits)  # a new array
        key = img.info.get("transparency")
        if isinstance(key, int):  # a PNG tRNS key on 16-bit grey: those pixels are transparent, so black
            pixels[values == key] = 0
        img = Image.fromarray(pixels, "L")
    elif mode == "F":
        img = Image.fromarray(float_to_uint8(np.asarray(img, dtype=np.float64)), "L")
    elif mode in _ALPHA_MODES or (mode in ("P", "RGB", "L", "1") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba).convert("RGB")
    if img.mode != target:
        try:
            img = img.convert(target)
        except ValueError as err:
            if target == "L":  # Pillow converts LAB to RGB but not to L: go through RGB
                try:
                    return img.convert("RGB").convert("L")
                except ValueError:
                    pass
            raise Rejected("decode_error", f"cannot convert colour mode {mode} to {target}: {err}") from err
    return img


def decode_oriented(
    img: Image.Image, channels: int, draft_shape: tuple[int, int] | None = None, wide_bits: int = 16, data: bytes | None = None
) -> Image.Image:
    """Full decode: optional DCT-domain downscale, EXIF orientation, colour conversion. With the
    file's bytes `data`, a JPEG whose scans stop early is Rejected (refuse_scans_ending_early)."""
    orientation = exif_orientation(img)
    try:
        if draft_shape is not None and img.format == "JPEG":
            height, width = draft_shape
            if swaps_axes(orientation):
                height, width = width, height
            # draft() only picks a scale whose result is still >= the requested size.
            img.draft(img.mode, (width, height))
        img.load()
        if data is not None:
            refuse_scans_ending_early(data, img)
        if orientation != 1:
            ImageOps.exif_transpose(img, in_place=True)  # in place: the stored copy is freed now
    except Rejected:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise _decode_rejection(err) from err
    return to_output_mode(img, channels, wide_bits)


def refuse_broken_restarts(data: bytes, img: Image.Image) -> None:
    """Rejected('decode_error') for a JPEG whose restart markers break its restart interval
    (jpeg_window.restart_mismatch: an interval changed, a marker lost or corrupt) when libjpeg
    warns about it too: its blocks would be decoded out of place, most of the image garbage."""
    if img.format not in ("JPEG", "MPO"):
        return
    mismatch = jpeg_window.restart_mismatch(data)
    words = jpeg_scan_end.libjpeg_warning(data) if mismatch else None
    if words is not None:
        raise Rejected("decode_error", f"JPEG restart markers do not fit its restart interval ({mismatch}; libjpeg: {words!r}):"
                                       " its blocks would be decoded out of place")


def refuse_scans_ending_early(data: bytes, img: Image.Image) -> None:
    """Rejected('truncated') for a JPEG whose entropy-coded data stops before the image is
    complete (jpeg_scan_end): `img` is its Pillow decode, loaded, in stored orientation."""
    if img.format not in ("JPEG", "MPO"):
        return
    frame = jpeg_window.jpeg_frame_or_none(data)
    complete = frame is None or not frame.progressive or jpeg_window.scans_complete(data)
    reason = jpeg_scan_end.refusal(data, img.getpixel((img.width - 1, img.height - 1)), img.mode, complete)
    if reason is not None:
        raise Rejected("truncated", reason)


def float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Float greyscale (PFM, FITS, SPIDER) -> uint8: values within [0, 1] are scaled by 255, values
    within [0, 255] rounded. `check_float_range` has rejected every image this would clip."""
    scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def check_float_range(values: np.ndarray, kind: str) -> None:
    """Rejected unless `float_to_uint8` keeps the image: NaN or infinite samples, or values
    outside both [0, 1] and [0, 255], are band_mismatch (uint8 has no value for them: clipping
    would destroy them); varying values that would become (nearly) one grey level are
    range_collapsed."""
    finite = np.isfinite(values)
    if not finite.all():
        raise Rejected("band_mismatch", f"this {kind} image has {int(values.size - finite.sum())} NaN or infinite samples, which uint8 cannot hold")
    if not values.size:
        return
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 255.0:
        raise Rejected(
            "band_mismatch",
            f"this {kind} image's values {low:g}..{high:g} fit neither [0, 1] nor [0, 255], so uint8 would clip them;"
            " convert it to 8 or 16 bits, or to a float32 GeoTIFF for --dtype keep",
        )
    converted = float_to_uint8(values)
    levels = int(converted.max()) - int(converted.min())
    if high > low and levels < raster_convert.COLLAPSE_LEVELS:
        raise Rejected(
            "range_collapsed",
            f"this {kind} image's values {low:g}..{high:g} become {converted.min()}..{converted.max()} of 0..255"
            f" ({'scaled by 255: they are within [0, 1]' if high <= 1.0 else 'rounded'}): (nearly) one grey level",
        )


def wider_than_uint8(img: Image.Image) -> bool:
    """Samples over 8 bits: 16/32-bit or float modes, or 16-bit RGB(A) that Pillow opens as 8-bit
    modes (PNG, PPM: their raw mode says so)."""
    return img.mode == "F" or img.mode in _SIXTEEN_BIT_MODES or ";16" in raw_mode(img)


def refuse_wide_samples(img: Image.Image) -> None:
    """A --dtype keep dataset of uint8 converts nothing: Rejected for samples over 8 bits."""
    if wider_than_uint8(img):
        raise Rejected("band_mismatch", f"this {img.format or ''} image's samples are wider than 8 bits; the dataset stores uint8 ({raster_convert.KEPT_NOTE})")


def check_wide_range(img: Image.Image, rule: raster_convert.Uint8Rule) -> int:
    """For 16/32-bit greyscale: the bits the uint8 rule uses (`bits:N`, else 16), after checking
    that it does not collapse the image's range (Rejected('range_collapsed')); 16 otherwise.
    Float images are checked by `check_float_range`.
    Photos have no dataset statistics: with --to_uint8 minmax|percentile they use `bits` (16)."""
    if img.mode == "F":
        check_float_range(np.asarray(_load(img), dtype=np.float64), f"{img.format or ''} float".strip())
    if img.mode in _SIXTEEN_BIT_MODES:
        return checked_uint8(np.asarray(_load(img)), rule, f"{img.format or ''} {img.mode}".strip())[1]
    return photo_rule(rule).bits or 16


def photo_rule(rule: raster_convert.Uint8Rule) -> raster_convert.Uint8Rule:
    """The --to_uint8 rule a photo's samples follow: photos have no dataset statistics, so
    minmax|percentile fall back to `bits`."""
    return raster_convert.DEFAULT_RULE if rule.needs_dataset_range else rule


def checked_uint8(wide: np.ndarray, rule: raster_convert.Uint8Rule, kind: str) -> tuple[np.ndarray, int]:
    """A photo's 16-bit samples as uint8 by `rule` (photo_rule), and the bits it used, after the
    rule's checks: Rejected('range_collapsed') for a near-black result, 'band_mismatch' when it
    saturates."""
    rule = photo_rule(rule)
    bits = rule.bits or 16
    converted = raster_convert.to_uint8(wide, bits)
    tracker = raster_convert.RangeTracker(bits)
    tracker.add(wide, converted)
    tracker.check(rule, bits, kind, keepable=False)  # --dtype keep never stores a photo's samples
    return converted, bits


def sixteen_bit_rgb_png(data: bytes, img: Image.Image, rule: raster_convert.Uint8Rule) -> Image.Image:
    """A 16-bit RGB(A) PNG as an 8-bit RGB(A) image by the --to_uint8 rule, after its range
    checks, as 16-bit greyscale is converted. Pillow opens such a PNG as its top bytes only, so
    `bits:12` was ignored and a 12-bit photo was written near-black without a word: the samples
    are decoded by libpng instead (TensorFlow's decode_png), alpha kept for `to_output_mode` to
    composite on black as before. `img` (already decoded) lends its EXIF."""
    import tensorflow as tf

    try:
        wide = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as err:
        raise Rejected("decode_error", f"libpng cannot decode this 16-bit {img.mode} PNG: {err.message.splitlines()[0][:200]}") from err
    converted, _ = checked_uint8(wide[..., :3], rule, f"PNG {img.mode};16")
    pixels = np.dstack([converted, (wide[..., 3] >> 8).astype(np.uint8)]) if wide.shape[2] == 4 else converted
    out = Image.fromarray(np.ascontiguousarray(pixels), img.mode)
    if "exif" in img.info:
        out.info["exif"] = img.info["exif"]
    return out


def _has_end_marker(data: bytes) -> bool:
    # libjpeg's partial decode stops after the window's last row, so it would not notice a
    # truncated tail that the Pillow reference rejects; such files take the full path.
    return b"\xff\xd9" in data[-4096:]


def _output_size(spec: CropSpec, box: Box) -> tuple[int, int]:
    if spec.strategy in ("box", "manifest") and spec.size is not None:
        return spec.size
    return box[2], box[3]


def _to_array(img: Image.Image, channels: int) -> np.ndarray:
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)


def decode_crops(
    data: bytes,
    spec: CropSpec,
    key: str,
    channels: int = 3,
    manifest_box: Box | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_window: bool = True,
    wide_rule: raster_convert.Uint8Rule | None = raster_convert.DEFAULT_RULE,
) -> Decoded:
    """Decode `data` and cut the crops that `spec` asks for. Raises `Rejected` with a reason."""
    decoded = stream_crops(data, spec, key, channels, manifest_box, max_pixels, allow_window, wide_rule)
    decoded.crops = list(decoded.crops)
    return decoded


def stream_crops(
    data: bytes,
    spec: CropSpec,
    key: str,
    channels: int = 3,
    manifest_box: Box | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_window: bool = True,
    wide_rule: raster_convert.Uint8Rule | None = raster_convert.DEFAULT_RULE,
) -> Decoded:
    """Like `decode_crops`, but `Decoded.crops` is an iterator that cuts each crop when asked.

    The image is decoded (and any `Rejected` raised) here, before returning; only the cutting
    is deferred, so a caller that encodes each crop and drops its pixels holds one decoded
    image plus one crop, not a second image's worth of crops (a `grid` over a 15000x15000
    scan). Without resizing, the image also stays in its stored orientation and colour mode:
    each crop is cut from it, then converted and oriented (see `_cut_stored`), instead of
    transposing or converting a full copy. 16-bit greyscale is converted whole, once, by the
    --to_uint8 rule `wide_rule` (after its collapse check); None refuses samples wider than 8 bits.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    img, rgb16 = _opened(data, max_pixels, wide_rule)
    refuse_broken_restarts(data, img)
    orientation = exif_orientation(img)
    source_shape = oriented_shape(img, orientation)
    work_shape = working_shape(spec, *source_shape)
    check_working_size(work_shape, source_shape, max_pixels)
    boxes = plan_boxes(spec, *work_shape, key=key, manifest_box=manifest_box)
    info = dict(source_format=img.format or "", source_shape=source_shape, orientation=orientation)

    if allow_window and _window_path_applies(img, data, spec, boxes, work_shape, source_shape):
        try:
            crops = []
            for box in boxes:
                pixels = jpeg_window.decode_jpeg_window(data, box, orientation, channels)
                crops.append(Crop(_resize_array(pixels, _output_size(spec, box), channels), box))
            return Decoded(crops=crops, path=PATH_WINDOW, **info)
        except jpeg_scan_end.ScanEndsEarly as err:
            raise Rejected("truncated", str(err)) from err
        except Exception:  # noqa: BLE001 - fall through: the Pillow path decides how to reject
            img = open_image(data, max_pixels)

    if rgb16:
        img = sixteen_bit_rgb_png(data, img, wide_rule or raster_convert.DEFAULT_RULE)
    wide_bits = check_wide_range(img, wide_rule or raster_convert.DEFAULT_RULE)
    if work_shape == source_shape:
        stored = _load(img)
        refuse_scans_ending_early(data, stored)
        if stored.mode == "F" or stored.mode in _SIXTEEN_BIT_MODES:  # F: scaled by the whole image's maximum
            stored = to_output_mode(stored, channels, wide_bits)
        cuts = (Crop(_cut_stored(stored, box, orientation, _output_size(spec, box), channels), box_in_source(box, work_shape, source_shape)) for box in boxes)
        return Decoded(crops=cuts, path=PATH_PILLOW, **info)

    # Not on lossless JPEGs: there is no DCT to scale, and libjpeg-turbo 3 asked to scale one
    # aborted the worker ("double free or corruption") or failed with "broken data stream".
    frame = jpeg_window.jpeg_frame_or_none(data) if img.format == "JPEG" else None
    use_draft = spec.resize is not None and work_shape[0] < source_shape[0] and frame is not None and frame.scalable
    full = decode_oriented(img, channels, draft_shape=work_shape if use_draft else None, wide_bits=wide_bits, data=data)
    del img  # with in-place orientation, `full` may be the only copy left
    if full.size != (work_shape[1], work_shape[0]):
        full = full.resize((work_shape[1], work_shape[0]), RESAMPLE)
    return Decoded(crops=_cut_oriented(full, boxes, spec, work_shape, source_shape, channels), path=PATH_DRAFT if use_draft else PATH_PILLOW, **info)


def check_working_size(work_shape: tuple[int, int], source_shape: tuple[int, int], max_pixels: int) -> None:
    """Rejected('too_many_pixels') when --resize or --small upscale would scale the image past
    --max_pixels: a 375-byte 100000x1 PNG, resized to a shorter side of 64, is 6.4 billion bytes
    of working image."""
    if work_shape != source_shape and work_shape[0] * work_shape[1] > max_pixels:
        (h, w), (sh, sw) = work_shape, source_shape
        raise Rejected("too_many_pixels", f"this {sw}x{sh} image scaled by --resize or --small upscale would be {w}x{h} = {w * h} pixels, over --max_pixels {max_pixels}")


def _opened(data: bytes, max_pixels: int, wide_rule: raster_convert.Uint8Rule | None) -> tuple[Image.Image, bool]:
    """The opened image (a PNG decoded and checked for missing rows), and whether it is a 16-bit
    RGB(A) PNG whose samples `sixteen_bit_rgb_png` must convert."""
    img = open_image(data, max_pixels)
    if wide_rule is None:
        refuse_wide_samples(img)  # before any load: loading drops the raw mode that tells 16-bit RGB
    rgb16 = img.format == "PNG" and img.mode in ("RGB", "RGBA") and ";16" in raw_mode(img) and "transparency" not in img.info
    if img.format == "PNG":
        # Pillow's getexif() decodes a PNG whole to look for an eXIf chunk after its pixels, inside
        # exif_orientation's guard against broken EXIF: a corrupt PNG's decode error was swallowed
        # there, and the next load() returned the rows decoded so far, which were written as data.
        _load(img)
        _check_png_rows(data)
    return img, rgb16


def _cut_oriented(
    full: Image.Image, boxes: list[Box], spec: CropSpec, work_shape: tuple[int, int], source_shape: tuple[int, int], channels: int
) -> Iterator[Crop]:
    for box in boxes:
        y, x, h, w = box
        # Pillow fills the part of a window outside the image with zeros: that is --small pad.
        piece = full.crop((x, y, x + w, y + h))
        out_h, out_w = _output_size(spec, box)
        if (out_h, out_w) != (h, w):
            piece = piece.resize((out_w, out_h), RESAMPLE)
        yield Crop(_to_array(piece, channels), box_in_source(box, work_shape, source_shape))


def _check_png_rows(data: bytes) -> None:
    # Pillow ends a PNG's decode quietly when its zlib stream ends early and leaves the rows it
    # never got zero: a black band, unless the stream is measured against the IHDR (png_stream).
    expected, inflated = png_stream.image_data_bytes(data)
    if inflated < expected:
        raise Rejected(
            "truncated",
            f"PNG image data ends early: its IDAT stream holds {inflated} of the {expected} bytes of rows its header declares"
            " (the rest would be black)",
        )


def _load(img: Image.Image) -> Image.Image:
    try:
        img.load()
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise _decode_rejection(err) from err
    return img


def _cut_stored(stored: Image.Image, box: Box, orientation: int, out_size: tuple[int, int], channels: int) -> np.ndarray:
    """One crop of the displayed image, cut from the stored (un-oriented, unconverted) image.

    Equal to the reference (exif_transpose -> to_output_mode -> crop with zero fill) because a
    transpose only permutes pixels and every conversion `to_output_mode` makes here is per
    pixel (mode F, the exception, is converted whole by the caller): so cut the stored window
    of `box`, convert it, put back the part outside the image as zeros of the output mode (what
    the reference's crop fills in; a zero CMYK or palette pixel would not convert to black), then
    transpose."""
    width, height = stored.size
    sy, sx, sh, sw = oriented_box_to_stored(box, orientation, width, height)
    inside = (max(sx, 0), max(sy, 0), min(sx + sw, width), min(sy + sh, height))
    piece = to_output_mode(stored.crop(inside), channels)
    if inside != (sx, sy, sx + sw, sy + sh):
        canvas = Image.new(piece.mode, (sw, sh))
        canvas.paste(piece, (inside[0] - sx, inside[1] - sy))
        piece = canvas
    transpose = display_transpose(orientation)
    if transpose is not None:
        piece = piece.transpose(transpose)
    out_h, out_w = out_size
    if (out_h, out_w) != (box[2], box[3]):
        piece = piece.resize((out_w, out_h), RESAMPLE)
    return _to_array(piece, channels)


def _window_path_applies(
    img: Image.Image, data: bytes, spec: CropSpec, boxes: list[Box], work_shape: tuple[int, int], source_shape: tuple[int, int]
) -> bool:
    if spec.strategy in ("none", "grid") or work_shape != source_shape:
        return False
    if not jpeg_window.fast_path_applies(img) or not _has_end_marker(data) or not jpeg_window.window_decodes_exactly(data):
        return False
    if not all(fits(box, *source_shape) for box in boxes):
        return False
    area = sum(box[2] * box[3] for box in boxes)
    return area <= WINDOW_AREA_LIMIT * source_shape[0] * source_shape[1]


def _resize_array(pixels: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    if pixels.shape[:2] == size:
        return pixels
    img = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, "L" if channels == 1 else "RGB")
    return _to_array(img.resize((size[1], size[0]), RESAMPLE), channels)
