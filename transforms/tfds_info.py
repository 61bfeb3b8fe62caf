"""TFDS's description of a cropshard dataset: `dataset_info.json` and `features.json`, so that
`tfds.builder_from_directory(out).as_dataset(split=...)` reads the shards as they are.

Both files are written by hand (the writer does not depend on tensorflow_datasets), in the JSON
form TFDS itself writes: dataset_info.json is the `DatasetInfo` proto as protobuf JSON (int64
fields as strings), features.json a `FeaturesDict`'s `to_json()`. The feature dict mirrors the
stored keys: TFDS joins nested names with "/", so {"image": {"encoded": ...}} reads the
"image/encoded" feature. The image is an `Image` (jpeg, png; `original` mixes both and decodes by
content) of the stored sample type (uint8, or uint16 PNG), or, for raw pixels, a `Tensor` of the
stored type kept as bytes, which needs a fixed shape. The schema's optional keys are declared when
every record of the dataset has them (TFDS fails on a record without a declared key).
Pure functions of `DatasetInfo`; the tests open the result with TFDS.
"""

from __future__ import annotations

import json
from typing import Any

from cropshard.reader import metadata, schema

DATASET_NAME = "cropshard_dataset"
DATASET_VERSION = "1.0.0"  # TFDS wants a semantic version; the cropshard version is in the description
FILE_TEMPLATE = "{SPLIT}-{SHARD_X_OF_Y}.tfrecord"  # what WriteSplit names the shards
# ClassLabel keeps its names in "<feature path with - for />.labels.txt" next to features.json.
LABEL_NAMES_FILENAME = "image-class-label.labels.txt"

_FEATURES = "tensorflow_datasets.core.features"
_DICT = f"{_FEATURES}.features_dict.FeaturesDict"
_TENSOR = f"{_FEATURES}.tensor_feature.Tensor"
_SCALAR = f"{_FEATURES}.scalar.Scalar"
_TEXT = f"{_FEATURES}.text_feature.Text"
_IMAGE = f"{_FEATURES}.image_feature.Image"
_CLASS_LABEL = f"{_FEATURES}.class_label_feature.ClassLabel"


def dataset_info_json(info: metadata.DatasetInfo) -> str:
    """TFDS's dataset_info.json: name, version, file format, and per split its shard lengths,
    bytes and file template. Splits without examples are left out: TFDS has no empty split
    (`as_dataset` of one fails "Instruction [] corresponds to no data!")."""
    splits = [
        {
            "name": name,
            "numBytes": str(split.num_bytes),
            "shardLengths": [str(shard.num_records) for shard in split.shards],
            "filepathTemplate": FILE_TEMPLATE,
        }
        for name, split in sorted(info.splits.items())
        if split.num_examples
    ]
    body = {
        "name": DATASET_NAME,
        "description": (
            f"Written by cropshard {info.cropshard_version}; encoding {info.encoding}, crop {info.crop.get('strategy')}."
            f" cropshard's own metadata is in {metadata.INFO_FILENAME}."
        ),
        "version": DATASET_VERSION,
        "fileFormat": "tfrecord",
        "splits": splits,
    }
    return json.dumps(body, indent=2) + "\n"


def _dict(features: dict[str, Any]) -> dict[str, Any]:
    return {"pythonClassName": _DICT, "featuresDict": {"features": features}}


def _tensor(shape: list[int], dtype: str, encoding: str = "none") -> dict[str, Any]:
    return {
        "pythonClassName": _TENSOR if shape else _SCALAR,
        "tensor": {"shape": {"dimensions": [str(v) for v in shape]} if shape else {}, "dtype": dtype, "encoding": encoding},
    }


def _text() -> dict[str, Any]:
    return {"pythonClassName": _TEXT, "text": {}}


def _image(shape: list[int], dtype: str, encoding: str | None) -> dict[str, Any]:
    image: dict[str, Any] = {"shape": {"dimensions": [str(v) for v in shape]}, "dtype": dtype}
    if encoding in (schema.FORMAT_JPEG, schema.FORMAT_PNG):
        image["encodingFormat"] = encoding
    return {"pythonClassName": _IMAGE, "image": image}


def image_feature(info: metadata.DatasetInfo) -> dict[str, Any]:
    """The "image/encoded" feature: Image for jpeg/png/original, a bytes-encoded Tensor of the
    stored dtype for raw of a fixed shape; raw images of varying sizes stay bytes (reshape with
    image/height, width, channels), since TFDS cannot reshape bytes of an unknown shape."""
    shape = list(info.image_shape) if info.image_shape else [-1, -1, info.channels]
    if info.encoding == schema.FORMAT_RAW:
        # TFDS decodes bytes with tf.io.decode_raw, little-endian by default: the byte order of
        # cropshard's raw samples, so uint16/int16/float32 come back as reader.load gives them.
        return _tensor(shape, info.dtype, encoding="bytes") if info.image_shape else _tensor([], "string")
    # Image decodes with tf.image.decode_image(dtype=...): uint8 would scale a 16-bit PNG down
    # (>> 8); uint16 keeps its samples. The writer stores PNG as uint8 or uint16 only, JPEG as uint8.
    return _image(shape, info.dtype, info.encoding)


def _every_record_is_a_raster_chip(info: metadata.DatasetInfo) -> bool:
    """Raster chips carry image/geo/*; photos built beside rasters (uint8 datasets) do not, and
    TFDS cannot declare the transform optional (its default for a bytes-encoded Tensor is a float
    array, which parsing refuses). `num_rasters` counts the raster sources written."""
    return info.raster is not None and info.raster.get("num_rasters") == info.num_images_written


def optional_features(info: metadata.DatasetInfo) -> dict[str, Any]:
    """The schema's optional keys that every record of this dataset has, under "image":
    image/dtype (every record of a non-uint8 dataset: photos, uint8 only, are refused there),
    image/geo/crs and transform (6 little-endian float64, decoded as such), and the
    --label_mode mask class-id mask (8-bit PNG, as big as the image)."""
    features: dict[str, Any] = {}
    if info.dtype != "uint8":
        features["dtype"] = _text()
    if _every_record_is_a_raster_chip(info):
        features["geo"] = _dict({"crs": _text(), "transform": _tensor([6], "float64", encoding="bytes")})
    if info.label_mode == "mask":
        shape = [*info.image_shape[:2], 1] if info.image_shape else [-1, -1, 1]
        features["segmentation"] = _dict({"encoded": _image(shape, "uint8", schema.FORMAT_PNG)})
    return features


def label_feature(info: metadata.DatasetInfo) -> dict[str, Any]:
    """ClassLabel (its names: LABEL_NAMES_FILENAME); a plain int64 when the dataset has no labels."""
    if not info.labels:
        return _tensor([], "int64")
    return {"pythonClassName": _CLASS_LABEL, "classLabel": {"numClasses": str(len(info.labels))}}


def features_json(info: metadata.DatasetInfo) -> str:
    """TFDS's features.json for every stored key (the optional ones this dataset's records have)."""
    scalar = _tensor([], "int64")
    image = {
        "encoded": image_feature(info),
        "format": _text(),
        "height": scalar,
        "width": scalar,
        "channels": scalar,
        "filename": _text(),
        "class": _dict({"label": label_feature(info), "text": _text()}),
        "crop": _dict({"box": _tensor([4], "int64")}),
        "key": _dict({"sha256": _text()}),
        **optional_features(info),
    }
    # The top level has the newer `to_json()` layout; TFDS reads nested features in the older one.
    top = {"type": _DICT, "content": {"features": {"image": _dict(image)}}, "proto_cls": "tensorflow_datasets.FeaturesDict"}
    return json.dumps(top, indent=2) + "\n"

