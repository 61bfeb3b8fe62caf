"""`cropshard inspect OUT --leakage`: examples of different splits that share ground or content.

Spatial leakage (neighbouring or overlapping chips in train and test) is how land-cover accuracy
gets overstated; for photos, the same file in two splits does the same. This reads every
record's metadata (no pixels) and reports:

- footprint overlaps across splits: georeferenced chips by their map footprint (from
  `image/geo/transform` and the chip size, per CRS), other chips by their box in the source
  (`image/crop/box`, per source file); touching edges are not an overlap;
- identical sources across splits: the same `image/key/sha256` in two splits (chips of one
  raster file legitimately share it under `--split_by`; copies of it under other names do not).

Map footprints are compared per CRS as `crs_identity` names it (the writer's `--split_by` grid),
so rasters whose WKTs spell one CRS differently are compared with each other; footprints in
different CRSs (rasters in neighbouring UTM zones, which overlap) are compared too, those of one
CRS reprojected by PROJ into the other's, in pieces small enough to be straight-edged
(reproject_footprints).

A map footprint is the parallelogram the chip's affine transform maps its pixel rectangle to
(rotated or sheared rasters included); two overlap when their interiors meet, by more than a
millionth of a pixel (TOUCH_TOLERANCE), so tiles sharing an edge after floating-point rounding
are not reported. Candidate pairs come from a uniform grid hash of the bounding boxes (cells as
large as the largest box), so the cost is linear in the number of chips for chip-sized
footprints; only pairs whose boxes meet get the exact test (separating axes, vectorised).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
from cropshard.reader import fileio, schema
from cropshard.reader.metadata import COMPRESSION_GZIP, DatasetInfo, join
from cropshard.transforms.raster.chips import crs_identity

Box = tuple[float, float, float, float]  # (min x, min y, max x, max y)
Corners = tuple[tuple[float, float], ...]  # (x, y) of a convex footprint's vertices, in order around it

# Overlaps no deeper than this fraction of a pixel count as touching: float64 transforms of
# adjacent tiles (A * translation(512, 0)) rarely share an edge to the last bit, and a
# millionth of a pixel is far above that rounding yet far below any real overlap.
TOUCH_TOLERANCE = 1e-6
# Across CRSs a reprojected footprint's pieces stand in for a curved shape, to within a thousandth
# of a pixel (reproject_footprints), so overlaps no deeper than that count as touching.
CROSS_CRS_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class Footprint:
    split: str
    space: str  # 'crs:<CRS>' for map footprints, 'source:<file>' for pixel boxes
    box: Box  # bounding box; the footprint itself when `corners` is None
    filename: str
    corners: Corners | None = None  # a map footprint's parallelogram (rotation and shear included)
    pixel: float = 0.0  # shorter pixel side in map units: scales TOUCH_TOLERANCE (0: exact test)
    crs: str = ""  # a map footprint's CRS as its record names it (what PROJ reprojects from)


@dataclasses.dataclass
class LeakReport:
    examples: int
    overlaps: list[tuple[Footprint, Footprint]]  # pairs in different splits
    shared_sources: dict[str, set[str]]  # sha256 -> the splits holding it (photos)
    uncompared: int = 0  # map footprints PROJ could not place in another CRS present, so not compared with its chips

    @property
    def clean(self) -> bool:
        return not self.overlaps and not self.shared_sources

    def summary(self, limit: int = 5) -> str:
        lines = [f"leakage: {self.examples} examples checked across splits"]
        lines.append(f"  footprints overlapping across splits: {len(self.overlaps)} pairs")
        for a, b in self.overlaps[:limit]:
            space = a.space if a.space == b.space else f"{a.space} x {b.space}"
            lines.append(f"    {a.split} {a.filename} {_box_text(a.box)} x {b.split} {b.filename} {_box_text(b.box)} ({space})")
        if self.uncompared:
            lines.append(f"  footprints PROJ could not reproject into another CRS of the dataset (not compared across CRSs): {self.uncompared}")
        lines.append(f"  identical sources (sha256) in several splits: {len(self.shared_sources)}")
        for digest, splits in list(self.shared_sources.items())[:limit]:
            lines.append(f"    {digest[:16]}... in {', '.join(sorted(splits))}")
        lines.append("  no leakage found" if self.clean else "  LEAKAGE: the splits are not independent")
        return "\n".join(lines)


def _box_text(box: Box) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in box) + "]"


def footprint_box(transform: tuple[float, ...], height: int, width: int) -> Box:
    """Map bounding box of a height x width chip with GDAL-order affine `transform`."""
    x0, a, b, y0, d, e = transform
    xs = [x0 + a * col + b * row for col, row in ((0, 0), (width, 0), (0, height), (width, height))]
    ys = [y0 + d * col + e * row for col, row in ((0, 0), (width, 0), (0, height), (width, height))]
    return min(xs), min(ys), max(xs), max(ys)


def footprint_corners(transform: tuple[float, ...], height: int, width: int) -> Corners:
    """Map corners of a height x width chip with GDAL-order affine `transform`, in order around it."""
    x0, a, b, y0, d, e = transform
    return tuple((x0 + a * col + b * row, y0 + d * col + e * row) for col, row in ((0, 0), (width, 0), (width, height), (0, height)))


def map_footprint(split: str, crs: str, transform: tuple[float, ...], height: int, width: int, filename: str, crs_text: str = "") -> Footprint:
    """The footprint of a georeferenced chip: its parallelogram, bounding box and pixel size
    (`crs`: its `crs_identity`; `crs_text`: the record's own CRS text, for reprojecting it)."""
    _, a, b, _, d, e = transform
    pixel = min(math.hypot(a, d), math.hypot(b, e))  # lengths of one pixel's column and row steps
    return Footprint(split, f"crs:{crs}", footprint_box(transform, height, width), filename,
                     footprint_corners(transform, height, width), pixel, crs_text or crs)


def _records(path: str, info: DatasetInfo) -> Iterator[tuple[str, dict[str, Any]]]:
    import tensorflow as tf

    spec = schema.feature_spec()
    keys = (schema.FILENAME, schema.SOURCE_SHA256, schema.CROP_BOX, schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH, schema.GEO_CRS, schema.GEO_TRANSFORM)
    spec = {key: spec[key] for key in keys}
    compression = "GZIP" if info.compression == COMPRESSION_GZIP else ""
    fs = fileio.get()
    for name, split in sorted(info.splits.items()):
        files = [fs.tf_path(join(path, shard.file)) for shard in split.shards]
        if not files:
            continue
        batches = tf.data.TFRecordDataset(files, compression_type=compression).batch(1024).map(lambda b: tf.io.parse_example(b, spec))
        for batch in batches.as_numpy_iterator():
            for i in range(len(batch[schema.FILENAME])):
                yield name, {key: batch[key][i] for key in keys}


def footprints(path: str, info: DatasetInfo) -> tuple[list[Footprint], dict[str, set[str]], int]:
    """(footprints, sha256 -> splits of sources in several splits, examples read). One source
    file's chips in several splits are `--split_by`'s doing, and its footprints are checked; the
    same bytes under two names in two splits are leakage, georeferenced or not."""
    found, digests, count = [], defaultdict(set), 0
    for split, record in _records(path, info):
        count += 1
        filename = record[schema.FILENAME].decode("utf-8")
        transform = record[schema.GEO_TRANSFORM]
        crs_text = record[schema.GEO_CRS].decode("utf-8")
        crs = crs_identity(crs_text)
        digests[record[schema.SOURCE_SHA256].decode("ascii")].add((split, filename))
        if transform and crs:
            height, width = int(record[schema.IMAGE_HEIGHT]), int(record[schema.IMAGE_WIDTH])
            found.append(map_footprint(split, crs, struct.unpack("<6d", transform), height, width, filename, crs_text))
            continue
        y, x, h, w = (int(v) for v in record[schema.CROP_BOX])
        found.append(Footprint(split, f"source:{filename}", (x, y, x + w, y + h), filename))
    split_by = bool((info.raster or {}).get("split_by"))
    shared = {}
    for digest, holders in digests.items():
        splits = {split for split, _ in holders}
        if len(splits) > 1 and not (split_by and len({name for _, name in holders}) == 1):
            shared[digest] = splits
    return found, shared, count


def overlapping_pairs(items: list[Footprint]) -> list[tuple[Footprint, Footprint]]:
    """Pairs of footprints in the same space and different splits whose interiors intersect."""
    pairs = []
    by_space: dict[str, list[Footprint]] = defaultdict(list)
    for item in items:
        by_space[item.space].append(item)
    for group in by_space.values():
        if len({item.split for item in group}) < 2:
            continue
        candidates = _box_candidates(group)
        if not candidates:
            continue
        first, second = (np.array(side) for side in zip(*candidates, strict=True))
        corners = np.array([_corners_of(item) for item in group], dtype=np.float64)
        pixel = np.array([item.pixel for item in group], dtype=np.float64)
        meet = interiors_meet(corners[first], corners[second], TOUCH_TOLERANCE * np.minimum(pixel[first], pixel[second]))
        pairs += [(group[i], group[j]) for i, j, hit in zip(first, second, meet, strict=True) if hit]
    return pairs


def cross_crs_pairs(items: list[Footprint]) -> tuple[list[tuple[Footprint, Footprint]], int]:
    """(pairs of map footprints in different CRSs and different splits whose ground overlaps,
    footprints PROJ could not reproject into some other CRS present). For each two CRSs, one's
    footprints are reprojected into the other's (a projected CRS's rather than a geographic one's)
    and tested there."""
    groups: dict[str, list[Footprint]] = defaultdict(list)
    for item in items:
        if item.space.startswith("crs:"):
            groups[item.space].append(item)
    if len(groups) < 2 or len({item.split for group in groups.values() for item in group}) < 2:
        return [], 0
    pairs, lost = [], set()
    spaces = sorted(groups)
    for i, first in enumerate(spaces):
        for second in spaces[i + 1 :]:
            stay, move = groups[first], groups[second]
            if _geographic(stay[0].crs) and not _geographic(move[0].crs):  # no antimeridian in the common ground
                stay, move = move, stay
            moved, failed = reproject_footprints(move, stay[0])
            lost.update(failed)
            pairs += _pairs_between(stay, moved)
    return pairs, len(lost)


def _geographic(crs_text: str) -> bool:
    from cropshard.transforms.raster.chips import crs_of

    return bool(crs_of(crs_text).is_geographic)


MAX_PIECES = 32  # per side: a reprojected footprint is cut into at most 32 x 32 pieces


def reproject_footprints(items: list[Footprint], onto: Footprint) -> tuple[list[tuple[Footprint, list[Footprint]]], list[int]]:
    """([(item, its pieces reprojected into `onto`'s CRS)], ids of items PROJ gave no finite place).

    A reprojected footprint is curved (a geographic chip's parallels are arcs in a conic
    projection: ~700 m of sag over 2.5 degrees), so it is cut into k x k pieces whose reprojected
    corners stand in for them, k doubling until the bow of a piece's edge is under a thousandth of
    a pixel (chip-sized footprints between UTM zones: k = 1). In a geographic CRS, a footprint
    across the antimeridian is unwrapped and also tested shifted by 360 degrees."""
    moved, failed = [], []
    for item in items:
        try:
            pieces = _reprojected_pieces(item, onto)
        except Exception:  # noqa: BLE001 - PROJ refusing the pair, or no finite place: not compared, and counted
            failed.append(id(item))
            continue
        moved.append((item, pieces))
    return moved, failed


def _reprojected_pieces(item: Footprint, onto: Footprint) -> list[Footprint]:
    from rasterio.warp import transform as reproject

    (x0, y0), (x1, y1), _, (x3, y3) = item.corners
    k, geographic = 1, _geographic(onto.crs)
    while True:
        u = [i / (2 * k) for i in range(2 * k + 1)]  # piece corners (even) and edge midpoints (odd)
        grid = [(a, b) for b in u for a in u]
        xs, ys = reproject(item.crs, onto.crs, [x0 + (x1 - x0) * a + (x3 - x0) * b for a, b in grid],
                           [y0 + (y1 - y0) * a + (y3 - y0) * b for a, b in grid])
        if not all(map(math.isfinite, [*xs, *ys])):
            raise ValueError("no finite place")
        if geographic and max(xs) - min(xs) > 180.0:
            xs = [x + 360.0 if x < 0 else x for x in xs]
        points = np.array([xs, ys], dtype=np.float64).T.reshape(2 * k + 1, 2 * k + 1, 2)  # [row b][column a]
        corners = points[::2, ::2]
        scale = np.hypot(*(corners[0, 1] - corners[0, 0])) / max(math.dist(item.corners[0], item.corners[1]) / k, 1e-300)
        pixel = item.pixel * scale
        bow = max(np.abs(points[::2, 1::2] - (points[::2, :-1:2] + points[::2, 2::2]) / 2).max(),
                  np.abs(points[1::2, ::2] - (points[:-1:2, ::2] + points[2::2, ::2]) / 2).max())
        if bow <= CROSS_CRS_TOLERANCE * pixel or k >= MAX_PIECES:
            break
        k *= 2
    pieces = []
    for shift in (0.0, -360.0) if geographic and corners[..., 0].max() > 180.0 else (0.0,):
        for r in range(k):
            for c in range(k):
                quad = tuple((float(x + shift), float(y)) for x, y in (corners[r, c], corners[r, c + 1], corners[r + 1, c + 1], corners[r + 1, c]))
                box = (min(x for x, _ in quad), min(y for _, y in quad), max(x for x, _ in quad), max(y for _, y in quad))
                pieces.append(dataclasses.replace(item, space=onto.space, box=box, corners=quad, pixel=pixel))
    return pieces


def _pairs_between(first: list[Footprint], moved: list[tuple[Footprint, list[Footprint]]]) -> list[tuple[Footprint, Footprint]]:
    """Pairs (a of `first`, original b) in different splits where a meets a piece of b reprojected into a's CRS."""
    owners = [index for index, (_, pieces) in enumerate(moved) for _ in pieces]
    if not first or not owners:
        return []
    group = first + [piece for _, pieces in moved for piece in pieces]
    candidates = [(i, j) if i < len(first) else (j, i) for i, j in _box_candidates(group) if (i < len(first)) != (j < len(first))]
    if not candidates:
        return []
    a_index, b_index = (np.array(side) for side in zip(*candidates, strict=True))
    corners = np.array([_corners_of(item) for item in group], dtype=np.float64)
    pixel = np.array([item.pixel for item in group], dtype=np.float64)
    meet = interiors_meet(corners[a_index], corners[b_index], CROSS_CRS_TOLERANCE * np.minimum(pixel[a_index], pixel[b_index]))
    found: dict[tuple[int, int], tuple[Footprint, Footprint]] = {}
    for i, j, hit in zip(a_index, b_index, meet, strict=True):
        owner = owners[j - len(first)]
        if hit and (i, owner) not in found:
            found[(int(i), owner)] = (group[i], moved[owner][0])
    return list(found.values())


def _box_candidates(group: list[Footprint]) -> list[tuple[int, int]]:
    """(i, j) index pairs in different splits whose bounding boxes' interiors intersect, each once."""
    cell = max(max(f.box[2] - f.box[0], f.box[3] - f.box[1]) for f in group) or 1.0
    grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, item in enumerate(group):
        x0, y0, x1, y1 = item.box
        for cx in range(math.floor(x0 / cell), math.floor(x1 / cell) + 1):
            for cy in range(math.floor(y0 / cell), math.floor(y1 / cell) + 1):
                grid[(cx, cy)].append(index)
    seen: set[tuple[int, int]] = set()
    found = []
    for members in grid.values():
        for i, first in enumerate(members):
            for second in members[i + 1 :]:
                a, b = group[first], group[second]
                key = (min(first, second), max(first, second))
                if a.split != b.split and key not in seen and _intersect(a.box, b.box):
                    seen.add(key)
                    found.append((first, second))
    return found


def _corners_of(item: Footprint) -> Corners:
    if item.corners is not None:
        return item.corners
    x0, y0, x1, y1 = item.box
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def interiors_meet(first: np.ndarray, second: np.ndarray, tolerance: np.ndarray | float = 0.0) -> np.ndarray:
    """Per pair, whether two convex polygons ((n, k, 2) vertices in order) share positive area.

    Separating-axis test: convex interiors are disjoint exactly when, along some edge normal of
    either polygon, their projections overlap by nothing; an overlap of at most `tolerance` (map
    units, per pair) counts as touching. Degenerate (zero-area) footprints meet nothing.
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    # Relative to one vertex: projecting raw ~1e6 m coordinates would cost digits the tolerance needs.
    origin = first[:, :1, :]
    first, second = first - origin, second - origin
    tolerance = np.broadcast_to(np.asarray(tolerance, np.float64), first.shape[:1])
    meet = (_area(first) > 0) & (_area(second) > 0)
    for polygon in (first, second):
        edges = np.roll(polygon, -1, axis=1) - polygon
        length = np.hypot(edges[..., 0], edges[..., 1])
        normals = np.stack([-edges[..., 1], edges[..., 0]], axis=-1) / np.where(length > 0, length, 1.0)[..., None]
        for k in range(polygon.shape[1]):
            axis = normals[:, k, None, :]
            p, q = (first * axis).sum(-1), (second * axis).sum(-1)
            depth = np.minimum(p.max(1), q.max(1)) - np.maximum(p.min(1), q.min(1))
            meet &= (depth > tolerance) | (length[:, k] == 0)  # a zero-length edge has no normal to test
    return meet


def _area(polygon: np.ndarray) -> np.ndarray:
    x, y = polygon[..., 0], polygon[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))


def _intersect(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def find_leaks(path: str, info: DatasetInfo) -> LeakReport:
    items, shared, count = footprints(path, info)
    across, uncompared = cross_crs_pairs(items)
    return LeakReport(count, overlapping_pairs(items) + across, shared, uncompared)
