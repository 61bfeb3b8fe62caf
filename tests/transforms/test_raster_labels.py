"""Class maps on other grids than the image's: bottom-up (positive y pixel size) and rotated grids
on either side, warped onto the image's grid (nearest), against independent references."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from cropshard.reader import schema
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.raster.labels import NO_CLASS, LabelRasterSpec
from cropshard.transforms.raster.records import HEAD_BYTES, RasterSpec, open_job
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import ImageSource
from PIL import Image
from rasterio.enums import Resampling
from rasterio.warp import reproject

CLASSES = ((10, "water"), (20, "forest"), (30, "urban"))
CRS = "EPSG:32631"
SIZE = 64  # image pixels a side, 1 m each: 530000..530064 E, 4999000..4999064 N
NORTH_UP = Affine(1, 0, 530000, 0, -1, 4999064)
BOTTOM_UP = Affine(1, 0, 530000, 0, 1, 4999000)  # row 0 is the southern edge
LABELS_NORTH_UP = Affine(2, 0, 530000, 0, -2, 4999064)  # 2 m, the same area
LABELS_BOTTOM_UP = Affine(2, 0, 530000, 0, 2, 4999000)
# 2 m pixels turned 20 degrees about the image's centre: covers most of the image, not its corners.
LABELS_ROTATED = Affine.translation(530032, 4999032) @ Affine.rotation(20) @ Affine.translation(-32, 32) @ Affine.scale(2, -2)


def _write(path: Path, data: np.ndarray, transform: Affine, nodata: float | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[-1], height=data.shape[-2], count=1, dtype=str(data.dtype),
                       crs=CRS, transform=transform, nodata=nodata) as dataset:
        dataset.write(data, 1)
    return path


def _class_values(side: int, seed: int) -> np.ndarray:
    """Blocky classes 10/20/30 and a few 99s (no class), 4-pixel blocks."""
    coarse = np.random.default_rng(seed).choice([10, 20, 30, 99], size=(side // 4, side // 4), p=[0.3, 0.3, 0.3, 0.1])
    return np.kron(coarse, np.ones((4, 4), np.int64)).astype(np.uint8)


def _ids(values: np.ndarray) -> np.ndarray:
    ids = np.full(values.shape, NO_CLASS, np.uint8)
    for index, (value, _) in enumerate(CLASSES):
        ids[values == value] = index
    return ids


def _stored_mask(image: Path) -> np.ndarray:
    """The image's class-id mask as the raster path stores it, chip by chip (16x16 grid)."""
    spec = RasterSpec(dtype="uint16", labels=LabelRasterSpec("{dir}/labels.tif", "mask", 0.0, CLASSES))
    src = ImageSource(path=str(image), key=image.name, label="", split=None)
    mask = np.full((SIZE, SIZE), 254, np.uint8)  # 254: no chip covered the pixel
    with open_job(src, image.read_bytes()[:HEAD_BYTES], CropSpec("grid", size=(16, 16)), spec, 1, 10**9) as job:
        for _, serialized in job.records(3, "train", (("train", 1.0),), "raw", 90, "digest"):
            record = schema.decode_example(serialized)
            y, x, h, w = record.crop_box
            mask[y : y + h, x : x + w] = np.asarray(Image.open(io.BytesIO(record.segmentation)))
    return mask


def _warped_reference(labels: Path, image_transform: Affine) -> np.ndarray:
    """GDAL's own reproject (nearest) of the class map onto the image's grid, 0 where it has none."""
    with rasterio.open(labels) as src:
        out = np.zeros((SIZE, SIZE), np.uint8)
        reproject(src.read(1), out, src_transform=src.transform, src_crs=src.crs, src_nodata=0, dst_transform=image_transform,
                  dst_crs=CRS, dst_nodata=0, resampling=Resampling.nearest)
    return _ids(out)


def _centre_reference(values: np.ndarray, labels_transform: Affine, image_transform: Affine) -> np.ndarray:
    """Without GDAL: the class-map pixel under each image pixel's centre (affine maths only)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    x, y = image_transform @ (cols + 0.5, rows + 0.5)
    col, row = ~labels_transform @ (x, y)
    col, row = np.floor(col).astype(int), np.floor(row).astype(int)
    inside = (row >= 0) & (row < values.shape[0]) & (col >= 0) & (col < values.shape[1])
    sampled = np.zeros((SIZE, SIZE), np.uint8)
    sampled[inside] = values[row[inside], col[inside]]
    return _ids(sampled)


@pytest.mark.parametrize(
    ("image_transform", "labels_transform"),
    [(BOTTOM_UP, LABELS_NORTH_UP), (NORTH_UP, LABELS_BOTTOM_UP), (NORTH_UP, LABELS_ROTATED), (BOTTOM_UP, LABELS_ROTATED)],
    ids=["bottom_up_image", "bottom_up_class_map", "rotated_class_map", "bottom_up_image_rotated_class_map"],
)
def test_class_maps_on_bottom_up_and_rotated_grids_give_the_warped_labels(tmp_path: Path, image_transform: Affine, labels_transform: Affine) -> None:
    """A bottom-up grid's rasterio bounds have bottom > top: the overlap test must not read that
    as no overlap, and the warp onto the image's grid must put every class where it lies."""
    image = _write(tmp_path / "image.tif", np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE), image_transform)
    values = _class_values(SIZE // 2, seed=3)
    labels = _write(tmp_path / "labels.tif", values, labels_transform, nodata=0)
    mask = _stored_mask(image)
    np.testing.assert_array_equal(mask, _warped_reference(labels, image_transform))
    np.testing.assert_array_equal(mask, _centre_reference(values, labels_transform, image_transform))
    assert len(np.unique(mask)) == 4  # three classes and no class: the comparison is not vacuous


def test_a_bottom_up_class_map_elsewhere_is_rejected_with_ordered_bounds(tmp_path: Path) -> None:
    image = _write(tmp_path / "image.tif", np.zeros((SIZE, SIZE), np.uint16), BOTTOM_UP)
    _write(tmp_path / "labels.tif", _class_values(SIZE // 2, seed=3), Affine(2, 0, 600000, 0, 2, 4999000), nodata=0)
    with pytest.raises(Rejected) as err:
        _stored_mask(image)
    assert err.value.reason == "label_raster_mismatch"
    # Both as (min x, min y, max x, max y).
    assert "(600000.0, 4999000.0, 600064.0, 4999064.0)" in err.value.message
    assert "the image (530000.0, 4999000.0, 530064.0, 4999064.0)" in err.value.message
