"""Label rasters: a class map per image (`--label_raster PATTERN`), aligned onto the image's grid.

The class map is opened as safely as the image (open_raster) and read window by window, the
same windows as the image's chips. When its grid differs from the image's (another CRS, origin
or pixel size), GDAL warps it onto the image's grid with nearest-neighbour resampling (a
`WarpedVRT` built here over the opened class map, not read from any file); with no overlap, or
without CRSs to align different grids by, the image is rejected (`label_raster_mismatch`).

Class values map to 0-based ids in value order, named by `--label_names` (a CSV `value,name`)
or else by the class maps' own category table (categories.py); pixels with another value, the
class map's nodata, or outside it have no class (`NO_CLASS`). `--label_mode majority` gives each
chip its majority class, skipping chips whose majority covers less than `--min_label_fraction`
of the chip; `mask` stores the id map itself.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import posixpath
from typing import Any

import numpy as np
from cropshard.transforms.crop import Box
from cropshard.transforms.listing import normalized_url
from cropshard.transforms.raster.chips import inside_box, source_window
from cropshard.transforms.rejects import Rejected

LABEL_MODES = ("majority", "mask")
NO_CLASS = 255  # id of pixels without a class, in masks and before the majority vote
MAX_CLASSES = 255


@dataclasses.dataclass(frozen=True)
class LabelRasterSpec:
    pattern: str | None  # path template: {dir} {stem} {name} {ext} of the image, e.g. {dir}/../labels/{stem}.tif; None: the manifest's label_raster column
    mode: str = "majority"
    min_fraction: float = 0.0
    classes: tuple[tuple[int, str], ...] = ()  # (raster value, name), sorted by value: id = position
    names_from: str = ""  # where the names came from: the --label_names file, or a class map's category table
    names_from_tables: bool = False  # no --label_names: every class map's own table must equal `classes`
    table_conflict: str = ""  # --label_names given: how the first class map's own table differs from it

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.classes)

    def to_dict(self) -> dict:
        return {
            "pattern": self.pattern, "mode": self.mode, "min_fraction": self.min_fraction,
            "classes": [{"id": i, "value": v, "name": n} for i, (v, n) in enumerate(self.classes)], "no_class_id": NO_CLASS,
            "names_from": self.names_from, **({"category_table_conflict": self.table_conflict} if self.table_conflict else {}),
        }


def label_raster_path(image_path: str, pattern: str) -> str:
    """The class map for `image_path`: `pattern` with {dir} {stem} {name} {ext} filled in."""
    remote = "://" in image_path
    paths = posixpath if remote else os.path
    folder, name = paths.split(image_path)
    stem, ext = paths.splitext(name)
    path = pattern.format(dir=folder, stem=stem, name=name, ext=ext)
    return normalized_url(path) if remote else os.path.normpath(path)


def parse_label_names(text: str, source: str) -> tuple[tuple[int, str], ...]:
    """A `value,name` CSV (header optional) -> ((value, name), ...) sorted by value."""
    rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # a header
    classes = []
    for row in rows:
        if len(row) < 2 or not row[0].strip().lstrip("-").isdigit():
            raise ValueError(f"{source}: each row must be value,name (an integer class value and its name); got {row}")
        classes.append((int(row[0]), row[1].strip()))
    return checked_classes(classes, source)


def checked_classes(classes: list[tuple[int, str]], source: str) -> tuple[tuple[int, str], ...]:
    """(value, name) pairs sorted by value; ValueError unless 1..MAX_CLASSES distinct values."""
    values = [value for value, _ in classes]
    if not classes or len(set(values)) != len(values) or len(classes) > MAX_CLASSES:
        raise ValueError(f"{source}: needs 1..{MAX_CLASSES} classes with distinct values, got {len(classes)}")
    return tuple(sorted(classes))


class LabelGrid:
    """A class map aligned to one image's grid, read window by window as class ids."""

    def __init__(self, labels: Any, image: Any, spec: LabelRasterSpec, stack: Any) -> None:
        self.spec = spec
        self.source = _aligned(labels, image, stack)
        self._lookup = {value: index for index, (value, _) in enumerate(spec.classes)}

    def read_ids(self, box: Box, work_shape: tuple[int, int]) -> np.ndarray:
        """Class ids (uint8, NO_CLASS where none) of `box`, nearest-sampled like the image chip."""
        from rasterio.enums import Resampling

        y, x, h, w = box
        inside = inside_box(box, work_shape)
        window = source_window(inside, work_shape, self.source.shape)
        values = self.source.read(1, window=window, out_shape=(inside[2], inside[3]), resampling=Resampling.nearest)
        valid = self.source.read_masks(1, window=window, out_shape=(inside[2], inside[3]), resampling=Resampling.nearest) > 0
        ids = np.full(values.shape, NO_CLASS, np.uint8)
        for value, index in self._lookup.items():
            ids[(values == value) & valid] = index
        out = np.full((h, w), NO_CLASS, np.uint8)
        out[inside[0] - y : inside[0] - y + inside[2], inside[1] - x : inside[1] - x + inside[3]] = ids
        return out


def majority(ids: np.ndarray, num_classes: int) -> tuple[int, float]:
    """(majority class id, its share of all the chip's pixels); (-1, 0.0) with no class at all."""
    counts = np.bincount(ids[ids != NO_CLASS].ravel(), minlength=num_classes)
    if not counts.sum():
        return -1, 0.0
    winner = int(np.argmax(counts))  # ties: the lowest id
    return winner, float(counts[winner]) / ids.size


def _same_grid(labels: Any, image: Any) -> bool:
    """The image's pixel grid: same shape and transform, and the same CRS or none stated on one
    side (a mask exported without its CRS tag still lies pixel for pixel on the image)."""
    same_crs = labels.crs == image.crs or labels.crs is None or image.crs is None
    return labels.shape == image.shape and labels.transform.almost_equals(image.transform) and same_crs


def _crs_name(dataset: Any) -> str:
    return "no CRS" if dataset.crs is None else (f"EPSG:{dataset.crs.to_epsg()}" if dataset.crs.to_epsg() else "a CRS")


def _ordered(bounds: Any) -> tuple[float, float, float, float]:
    """(min x, min y, max x, max y) of rasterio bounds (left, bottom, right, top), whichever way
    the grid runs: rasterio keeps a bottom-up raster's (positive y pixel size) bottom > top."""
    left, bottom, right, top = (float(v) for v in bounds)
    return min(left, right), min(bottom, top), max(left, right), max(bottom, top)


def _rounded(bounds: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(v, 3) for v in bounds)


def _aligned(labels: Any, image: Any, stack: Any) -> Any:
    """`labels` itself on the image's grid, or a nearest-neighbour WarpedVRT onto it."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform_bounds

    if _same_grid(labels, image):
        return labels
    if labels.crs is None or image.crs is None:
        differs = "size" if labels.shape != image.shape else "transform"
        raise Rejected(
            "label_raster_mismatch",
            f"the class map ({labels.shape[0]}x{labels.shape[1]}, {_crs_name(labels)}, transform {tuple(labels.transform)[:6]}) and"
            f" the image ({image.shape[0]}x{image.shape[1]}, {_crs_name(image)}, transform {tuple(image.transform)[:6]}) differ in"
            f" {differs}, and without a CRS on both there is nothing to align them by",
        )
    # Both as (min x, min y, max x, max y): a bottom-up raster's bounds have bottom > top.
    left, bottom, right, top = _ordered(transform_bounds(labels.crs, image.crs, *_ordered(labels.bounds)))
    ileft, ibottom, iright, itop = _ordered(image.bounds)
    if left >= iright or right <= ileft or bottom >= itop or top <= ibottom:
        raise Rejected(
            "label_raster_mismatch",
            f"the class map (bounds {_rounded((left, bottom, right, top))} in the image's CRS) does not overlap the image"
            f" {_rounded((ileft, ibottom, iright, itop))}",
        )
    # Without a nodata value, an alpha band marks where the class map has no coverage.
    vrt = WarpedVRT(
        labels, crs=image.crs, transform=image.transform, width=image.width, height=image.height,
        resampling=Resampling.nearest, add_alpha=labels.nodata is None,
    )
    return stack.enter_context(vrt)
