"""features.json of raster datasets, parsed by TFDS itself: the stored sample type, and the
schema's optional keys exactly when every record has them. Real builds read through TFDS (pixels,
masks, georeferencing against reader.load): tests/pipeline/test_other_readers.py."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from cropshard.reader import metadata, schema
from cropshard.transforms import tfds_info

from tests.transforms.test_descriptions import INFO as PHOTO_INFO

GEO = {schema.GEO_CRS, schema.GEO_TRANSFORM}
# A raster dataset: the description tests' photo dataset with raw uint16 chips of two rasters.
INFO = dataclasses.replace(
    PHOTO_INFO, encoding="raw", image_formats=("raw",), channels=1, image_shape=(16, 16, 1), crop={"strategy": "grid", "size": [16, 16]},
    labels=(), splits={}, num_inputs=2, schema={}, num_images_written=2, raster={"dtype": "uint16", "num_rasters": 2, "labels": None},
)


def raster_info(dtype: str = "uint16", encoding: str = "raw", **changes: Any) -> metadata.DatasetInfo:
    raster = {**INFO.raster, "dtype": dtype, **changes.pop("raster", {})}
    return dataclasses.replace(INFO, encoding=encoding, image_formats=(encoding,), raster=raster, **changes)


def serialized(info: metadata.DatasetInfo) -> dict[str, Any]:
    """Stored key -> TFDS's TensorInfo for it, as TFDS parses the records."""
    import tensorflow_datasets as tfds

    features = tfds.features.FeatureConnector.from_json(json.loads(tfds_info.features_json(info)))
    return flatten(features.get_serialized_info())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}/") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize(("dtype", "encoding", "feature"), [
    ("uint16", "raw", "Tensor"), ("int16", "raw", "Tensor"), ("float32", "raw", "Tensor"), ("uint16", "png", "Image"), ("uint8", "png", "Image"),
])
def test_the_image_feature_has_the_stored_sample_type(dtype: str, encoding: str, feature: str) -> None:
    import tensorflow_datasets as tfds

    info = raster_info(dtype, encoding)
    features = tfds.features.FeatureConnector.from_json(json.loads(tfds_info.features_json(info)))
    image = features["image"]["encoded"]
    assert type(image).__name__ == feature and image.np_dtype.name == dtype and image.shape == (16, 16, 1)


@pytest.mark.parametrize(("changes", "optional"), [
    ({}, {schema.IMAGE_DTYPE, *GEO}),
    ({"encoding": "png", "dtype": "uint8"}, GEO),  # uint8 records carry no image/dtype
    ({"encoding": "png", "dtype": "uint8", "raster": {"labels": {"mode": "mask"}}}, {schema.SEGMENTATION, *GEO}),
    ({"encoding": "png", "dtype": "uint8", "raster": {"labels": {"mode": "majority"}}}, GEO),
    ({"encoding": "png", "dtype": "uint8", "num_images_written": 3}, set()),  # a photo beside the rasters: no geo keys
    ({"encoding": "png", "dtype": "uint8", "raster": {"num_rasters": None}}, set()),  # no count of rasters: not declared
], ids=["raw-uint16", "png-uint8", "mask", "majority", "photo-beside-rasters", "no-raster-count"])
def test_optional_keys_are_declared_when_every_record_has_them(changes: dict[str, Any], optional: set[str]) -> None:
    info = raster_info(**changes)
    keys = serialized(info)
    assert set(keys) == set(schema.FEATURE_KEYS) | optional
    assert all(keys[key].dtype.name == "string" for key in optional)  # bytes in the records, decoded by TFDS


def test_a_split_without_examples_is_left_out_of_dataset_info() -> None:
    """All of a raster's chips can fall in one split: the others get one 0-record shard, which
    TFDS cannot read ("Instruction [] corresponds to no data!"), so they are not TFDS splits."""
    shard = metadata.ShardInfo("train-00000-of-00001.tfrecord", 4, 400)
    empty = metadata.ShardInfo("test-00000-of-00001.tfrecord", 0, 0)
    info = dataclasses.replace(INFO, splits={"train": metadata.SplitInfo("train", 4, (shard,)), "test": metadata.SplitInfo("test", 0, (empty,))})
    body = json.loads(tfds_info.dataset_info_json(info))
    assert [split["name"] for split in body["splits"]] == ["train"]
