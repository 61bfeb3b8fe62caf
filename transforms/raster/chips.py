"""Windows of a raster -> chips: windowed reads, nodata share, the chip's own transform, and the
spatial block(s) a chip falls in (`--split_by block:N`). Pure functions over a rasterio dataset.

Boxes come from `crop.plan_boxes` in the working image (the raster after `--resize`); a box maps
to a source window scaled by source/working size, so a resized read asks GDAL for `out_shape`
and GDAL serves it from the file's overviews when it has them. Only the window is read.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cropshard.transforms.crop import Box, hash_split
from cropshard.transforms.rejects import Rejected

GEO_UNITS_NOTE = "map units of the raster's CRS (of --split_crs when given) when it has one, else source pixels"


@dataclasses.dataclass
class Chip:
    pixels: np.ndarray  # (height, width, bands), the source dtype
    valid_fraction: float  # share of pixels that are data (not nodata, masked, or padding)
    source_box: Box  # [y, x, h, w] of the window in source pixels, clipped to the raster
    transform: tuple[float, ...]  # the chip's affine transform, GDAL order (c, a, b, f, d, e)
    valid: np.ndarray | None = None  # (height, width) bool, True where a pixel is data; None: every pixel is


def source_window(box: Box, work_shape: tuple[int, int], source_shape: tuple[int, int]) -> Any:
    """The source window (floats when resized) that box of the working image covers."""
    from rasterio.windows import Window

    sy, sx = source_shape[0] / work_shape[0], source_shape[1] / work_shape[1]
    y, x, h, w = box
    return Window(x * sx, y * sy, w * sx, h * sy)


def chip_transform(geo: Sequence[float], source_shape: tuple[int, int], box: Box, work_shape: tuple[int, int]) -> tuple[float, ...]:
    """The affine transform of the output chip (its pixel size included), GDAL order: rasterio's
    `window_transform(window) @ Affine.scale(...)` for the source window of `box`, computed in
    the same floating-point steps without building Window or Affine objects (a third of the
    per-chip cost otherwise). `geo`: the raster's transform (a, b, c, d, e, f), read once per job."""
    a, b, c, d, e, f = geo
    y_scale, x_scale = source_shape[0] / work_shape[0], source_shape[1] / work_shape[1]
    col, row = box[1] * x_scale, box[0] * y_scale  # the source window's offsets, as source_window gives them
    x, y = col * a + row * b + c, col * d + row * e + f  # the window's corner, as Affine * (col, row)
    sx, sy = box[3] * x_scale / box[3], box[2] * y_scale / box[2]
    return float(c + (x - c)), float(a * sx), float(b * sy), float(f + (y - f)), float(d * sx), float(e * sy)


def has_mask(dataset: Any, bands: Sequence[int]) -> bool:
    """Whether some pixel of `bands` may not be data: the raster has nodata, a mask or alpha."""
    from rasterio.enums import MaskFlags

    return not all(MaskFlags.all_valid in dataset.mask_flag_enums[band - 1] for band in bands)


def inside_box(box: Box, work_shape: tuple[int, int]) -> Box:
    """The part of `box` inside the working image (all of it unless --small pad)."""
    y, x, h, w = box
    top, left = max(y, 0), max(x, 0)
    return top, left, min(y + h, work_shape[0]) - top, min(x + w, work_shape[1]) - left


def read_chip(dataset: Any, bands: Sequence[int], box: Box, work_shape: tuple[int, int], masked: bool, geo: Sequence[float] | None = None) -> Chip:
    """Read one box (only its window; zeros where it extends past the raster, for --small pad).
    `masked`: the chip's valid pixels are wanted (`has_mask`, asked once per raster: the raster
    has nodata or a mask for `bands`; or a float raster converted to uint8), so the window's mask
    is read too (the chip's `valid`), and a float raster's NaN or infinite samples are not valid
    either; padding never is. `geo`: the
    raster's transform[:6] when the caller has it (rasterio builds it on each access)."""
    from rasterio.enums import Resampling

    y, x, h, w = box
    inside = inside_box(box, work_shape)
    top, left, bottom, right = inside[0], inside[1], inside[0] + inside[2], inside[1] + inside[3]
    window = source_window(inside, work_shape, dataset.shape)
    resized = work_shape != tuple(dataset.shape)
    out_shape = (len(bands), inside[2], inside[3])
    read = dataset.read(list(bands), window=window, out_shape=out_shape, resampling=Resampling.bilinear if resized else Resampling.nearest)
    padded = inside != tuple(box)
    if not padded:  # band-interleaved; one band is already (height, width, 1) as it lies
        pixels = read.reshape(h, w, 1) if len(bands) == 1 else np.ascontiguousarray(read.transpose(1, 2, 0))
    else:  # --small pad: zeros around the part inside the raster
        pixels = np.zeros((h, w, len(bands)), read.dtype)
        pixels[top - y : bottom - y, left - x : right - x] = read.transpose(1, 2, 0)
    inner = None  # the part inside the raster: True where every band is data
    if masked:
        masks = dataset.read_masks(list(bands), window=window, out_shape=out_shape, resampling=Resampling.nearest)
        inner = np.all(masks > 0, axis=0)
    if masked and read.dtype.kind == "f":
        finite = np.all(np.isfinite(read), axis=0)
        if not finite.all():
            inner = finite if inner is None else inner & finite
    valid = inner
    if padded:
        valid = np.zeros((h, w), bool)
        valid[top - y : bottom - y, left - x : right - x] = True if inner is None else inner
    valid_pixels = h * w if valid is None else int(np.count_nonzero(valid))
    source_box = _clipped_source_box(window, dataset.shape)
    transform = chip_transform(geo or dataset.transform[:6], dataset.shape, box, work_shape)
    return Chip(pixels, valid_pixels / (h * w), source_box, transform, valid)


def _clipped_source_box(window: Any, shape: tuple[int, int]) -> Box:
    top, left = max(0, round(window.row_off)), max(0, round(window.col_off))
    bottom = min(shape[0], round(window.row_off + window.height))
    right = min(shape[1], round(window.col_off + window.width))
    return top, left, max(1, bottom - top), max(1, right - left)


def preview(dataset: Any, bands: Sequence[int], longest: int = 1024) -> np.ndarray:
    """The raster's valid samples at most `longest` pixels on a side (nearest: real sample
    values; GDAL reads the smallest overview that covers it when the file has overviews)."""
    from rasterio.enums import Resampling

    height, width = dataset.shape
    scale = min(1.0, longest / max(height, width))
    out_shape = (len(bands), max(1, round(height * scale)), max(1, round(width * scale)))
    values = dataset.read(list(bands), out_shape=out_shape, resampling=Resampling.nearest)
    if not has_mask(dataset, bands):
        return values.reshape(len(bands), -1)
    masks = dataset.read_masks(list(bands), out_shape=out_shape, resampling=Resampling.nearest)
    return values[:, np.all(masks > 0, axis=0)]


# --- spatial blocks for --split_by block:N ------------------------------------------------------


def crs_identity(crs_text: str) -> str:
    """One name per CRS for a chip's `image/geo/crs` text ('' without a CRS): its PROJ definition,
    so that WKTs of one CRS that differ in names or layout (as two tools write them), and EPSG
    codes of one map projection on datums PROJ ties to WGS 84 alike (SIRGAS 1995 and SIRGAS 2000
    / UTM 25S: EPSG:32000 and 31985), share map units. A definition that names an ellipsoid but no
    datum shift (ED50 and FD54 / UTM 29N: one `+ellps=intl` string, ~200 m apart on the ground)
    adds its datum's name, so two datums are never one grid. The text itself when PROJ has no
    definition for it."""
    return _proj_identity(crs_text) if crs_text else ""


@functools.lru_cache(maxsize=256)
def _proj_identity(text: str) -> str:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_user_input(text)
        proj = crs.to_proj4()
    except CRSError:
        return text
    if not proj:
        return text
    tokens = sorted(proj.split())
    if not any(token.startswith(("+datum=", "+towgs84=")) for token in tokens):
        datum = re.search(r'DATUM\["([^"]*)"', crs.to_wkt())
        if datum:  # compared without case and punctuation: WKT writers spell one datum name differently
            tokens.append("datum:" + re.sub(r"[^a-z0-9]", "", datum.group(1).lower()))
    return " ".join(tokens)


@dataclasses.dataclass(frozen=True)
class SplitGrid:
    """`--split_crs`: the one CRS whose map units cut every georeferenced chip's --split_by
    blocks, so rasters in different CRSs (neighbouring UTM zones) share one grid; for one
    raster, `source` its CRS (`crs_text`), `target` the split CRS's."""

    source: str
    target: str

    @property
    def identity(self) -> str:
        return crs_identity(self.target)

    @property
    def reprojects(self) -> bool:
        return crs_identity(self.source) != self.identity

    def reproject(self, xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
        from rasterio.warp import transform

        return transform(crs_of(self.source), crs_of(self.target), xs, ys)

    def extent(self, affine: Any, width: float, height: float) -> tuple[list[tuple[float, float]], tuple[float, float]]:
        """(x intervals, y interval) in the split CRS that hold the whole footprint of a width x
        height pixel rectangle under `affine`, erring larger: its outline reprojected at
        RING_STEPS points an edge, widened on each axis by the largest bow a midpoint shows against
        its neighbours' chord, with a pole inside the footprint added, and split in two where a
        geographic split CRS has it cross the antimeridian."""
        ring = ring_points(affine, width, height, RING_STEPS)
        xs, ys = self.reproject([x for x, _ in ring], [y for _, y in ring])
        geographic = crs_of(self.target).is_geographic
        if geographic and max(xs) - min(xs) > 180.0:  # crosses the antimeridian: one side's longitudes + 360
            xs = [x + 360.0 if x < 0 else x for x in xs]
        bow_x, bow_y = _bow(xs), _bow(ys)  # per axis: around a pole the longitudes jump, the latitudes do not
        low_x, high_x, low_y, high_y = min(xs) - bow_x, max(xs) + bow_x, min(ys) - bow_y, max(ys) + bow_y
        for pole in self._poles_inside(affine, width, height):
            if geographic:  # a pole is every longitude at one latitude
                low_x, high_x, low_y, high_y = -180.0, 180.0, min(low_y, pole[1]), max(high_y, pole[1])
            else:
                low_x, high_x, low_y, high_y = min(low_x, pole[0]), max(high_x, pole[0]), min(low_y, pole[1]), max(high_y, pole[1])
        if geographic:
            low_y, high_y = max(low_y, -90.0), min(high_y, 90.0)
            if high_x > 180.0:
                return [(low_x, 180.0), (-180.0, high_x - 360.0)], (low_y, high_y)
        return [(low_x, high_x)], (low_y, high_y)

    def _poles_inside(self, affine: Any, width: float, height: float) -> list[tuple[float, float]]:
        """The split CRS's coordinates of each geographic pole the footprint holds (a polar
        stereographic chip around the pole: its outline alone never reaches the pole's latitude)."""
        if crs_of(self.source).is_geographic:  # a pole there is a whole edge of the outline
            return []
        found = []
        for source_pole, target_pole in zip(_poles(self.source), _poles(self.target), strict=True):
            if source_pole is None or target_pole is None:
                continue
            col, row = ~affine @ source_pole
            if 0.0 <= col <= width and 0.0 <= row <= height:
                found.append(target_pole)
        return found

    def check_covers(self, geo: Sequence[float], shape: tuple[int, int]) -> None:
        """Rejected (`outside_split_crs`) unless PROJ places the raster's whole outline (`geo`:
        its transform, a..f) in the split CRS: checked once per raster, before any chip."""
        from affine import Affine

        xs, ys = outline(Affine(*geo[:6]), shape[1], shape[0], steps=16)
        try:
            out_x, out_y = self.reproject(xs, ys)
        except Exception as err:  # noqa: BLE001 - PROJ's refusal is the answer
            out_x, out_y, why = [math.nan], [math.nan], f": {err}"
        else:
            why = ""
        if not all(map(math.isfinite, [*out_x, *out_y])):
            raise Rejected("outside_split_crs", f"--split_crs {self.target}: PROJ cannot place this raster ({self.source}) in that CRS{why}")


def mixed_crs_refusal(raster: Mapping[str, Any] | None) -> str | None:
    """Why a `--split_by` dataset (`raster`: cropshard.json's raster section) must not be published
    when its rasters are in several CRSs and no `--split_crs` names one grid: each CRS's blocks
    are a grid of their own, so overlapping chips of two rasters (neighbouring UTM zones overlap)
    could land in different splits. None when one CRS (however spelt) holds every grid."""
    if not raster or not raster.get("split_by") or raster.get("split_crs"):
        return None
    groups: dict[str, list[str]] = {}
    for text in raster.get("crs_seen") or ():
        if text:
            groups.setdefault(crs_identity(text), []).append(text)
    if len(groups) < 2:
        return None
    names = [_crs_name(texts[0]) for texts in groups.values()]
    example = next((name for name in names if name.startswith("EPSG:")), "EPSG:6933")
    return (f"--split_by {raster['split_by']}: the rasters are in {len(groups)} CRSs ({'; '.join(names)}), whose blocks do not"
            f" line up, so overlapping chips of two rasters could land in different splits: rebuild with --split_crs naming the"
            f" one CRS every block is cut in (e.g. --split_crs {example})")


def _crs_name(text: str) -> str:
    """`EPSG:n` as it is; a WKT by the name it gives its CRS."""
    found = re.match(r'\s*\w+\["([^"]*)"', text)
    return f'"{found.group(1)}"' if found and not text.startswith("EPSG:") else text[:80]


def _bow(values: Sequence[float]) -> float:
    """The largest gap between a ring's odd points and the middle of their neighbours, on one axis."""
    n = len(values)
    return max(abs(values[i] - (values[i - 1] + values[(i + 1) % n]) / 2) for i in range(1, n, 2))


RING_STEPS = 16  # outline points per chip edge for --split_crs (every other one measures the bow)


def ring_points(affine: Any, width: float, height: float, steps: int) -> list[tuple[float, float]]:
    """`steps` points per edge around a width x height pixel rectangle under `affine`, in order
    around it, from its top-left corner."""
    edges = (((0, 0), (width, 0)), ((width, 0), (width, height)), ((width, height), (0, height)), ((0, height), (0, 0)))
    pixels = [(a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps) for a, b in edges for i in range(steps)]
    return [affine @ pixel for pixel in pixels]


@functools.lru_cache(maxsize=64)
def _poles(text: str) -> tuple[tuple[float, float] | None, ...]:
    """The north and south poles in the CRS `text` (None where PROJ places one nowhere finite)."""
    from rasterio.warp import transform

    try:
        xs, ys = transform("EPSG:4326", crs_of(text), [0.0, 0.0], [90.0, -90.0])
    except Exception:  # noqa: BLE001 - no pole in this CRS
        return (None, None)
    return tuple((x, y) if math.isfinite(x) and math.isfinite(y) else None for x, y in zip(xs, ys, strict=True))


@functools.lru_cache(maxsize=64)
def crs_of(text: str) -> Any:
    """The rasterio CRS of a chip's CRS text, parsed once."""
    from rasterio.crs import CRS

    return CRS.from_user_input(text)


def outline(affine: Any, width: float, height: float, steps: int) -> tuple[list[float], list[float]]:
    """Map x and y of points around a width x height pixel rectangle under `affine`: its corners,
    and `steps - 1` more along each edge (a reprojected edge bows)."""
    ticks = [i / steps for i in range(steps + 1)]
    pixels = {(u * width, v * height) for u in ticks for v in ticks if u in (0.0, 1.0) or v in (0.0, 1.0)}
    points = [affine @ pixel for pixel in sorted(pixels)]
    return [p[0] for p in points], [p[1] for p in points]


def chip_blocks(chip: Chip, box: Box, block: float, crs: str, fallback_key: str, grid: SplitGrid | None = None) -> set[str]:
    """Keys of the N x N blocks the chip's footprint touches. With a CRS (`crs`: its
    `crs_identity`) the blocks are a grid in map units shared by every raster in that CRS (so
    overlapping rasters agree): the chip's transform over `box`'s height and width; with `grid`
    (--split_crs), in the split CRS's map units, the footprint's outline reprojected there.
    Without a CRS, in source pixels of this one raster: the chip's source window, whatever
    units the raster's geotransform has."""
    from affine import Affine

    if crs:
        transform, height, width, prefix = chip.transform, box[2], box[3], f"crs:{crs}"
    else:
        y, x, height, width = chip.source_box
        transform, prefix = (float(x), 1.0, 0.0, float(y), 0.0, 1.0), f"pixels:{fallback_key}"
    affine = Affine.from_gdal(*transform)
    if crs and grid is not None:
        prefix = f"crs:{grid.identity}"
    if crs and grid is not None and grid.reprojects:
        x_spans, (low_y, high_y) = grid.extent(affine, width, height)
    else:
        xs, ys = outline(affine, width, height, steps=1)
        x_spans, (low_y, high_y) = [(min(xs), max(xs))], (min(ys), max(ys))
    return {
        f"{prefix}|{bx}|{by}"
        for low_x, high_x in x_spans
        for bx in _block_range(low_x, high_x, block)
        for by in _block_range(low_y, high_y, block)
    }


def _block_range(low: float, high: float, block: float) -> range:
    first = math.floor(low / block)
    last = max(first, math.ceil(high / block) - 1)  # a chip ending exactly on an edge stays out of the next block
    return range(first, last + 1)


def block_split(blocks: set[str], fractions: Sequence[tuple[str, float]]) -> str | None:
    """The split of a chip touching `blocks`: theirs when they agree, else None (the chip
    straddles blocks of different splits and is skipped, so no two chips in different splits
    can overlap: any shared point lies in one block, whose split both chips would have)."""
    splits = {hash_split(key, fractions) for key in blocks}
    return splits.pop() if len(splits) == 1 else None
