"""The pure parts of the descriptions other readers open: TFDS's features.json / dataset_info.json
(transforms/tfds_info.py) and croissant.json (transforms/croissant.py), checked with TFDS's and
mlcroissant's own parsers. Full builds read by those libraries: tests/pipeline/test_other_readers.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from cropshard.reader import metadata, schema
from cropshard.transforms import croissant, tfds_info
from cropshard.transforms.write import written_files

SHARDS = (metadata.ShardInfo("train-00000-of-00002.tfrecord", 3, 300, "train-00000-of-00002.tfrecord.idx"),
          metadata.ShardInfo("train-00001-of-00002.tfrecord", 2, 200, "train-00001-of-00002.tfrecord.idx"))
INFO = metadata.DatasetInfo(
    cropshard_version="0.3.0",
    encoding="jpeg",
    image_formats=("jpeg",),
    channels=3,
    image_shape=(32, 40, 3),
    crop={"strategy": "center", "size": [32, 40]},
    labels=("cat", "dog"),
    splits={"train": metadata.SplitInfo("train", 5, SHARDS), "test": metadata.SplitInfo("test", 0, ())},
    compression="none",
    num_inputs=5,
    rejected={},
    schema=schema.schema_description(),
    num_images_written=5,
)


def tfds_features(info: metadata.DatasetInfo):  # noqa: ANN201 - a tfds FeaturesDict
    import tensorflow_datasets as tfds

    return tfds.features.FeatureConnector.from_json(json.loads(tfds_info.features_json(info)))


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}/") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize(
    ("encoding", "shape", "image_class"),
    [("jpeg", (32, 40, 3), "Image"), ("png", None, "Image"), ("original", None, "Image"), ("raw", (32, 40, 3), "Tensor"), ("raw", None, "Scalar")],
)
def test_features_json_parses_in_tfds_and_covers_every_stored_key(encoding: str, shape: tuple | None, image_class: str) -> None:
    info = dataclasses.replace(INFO, encoding=encoding, image_shape=shape)
    features = tfds_features(info)
    serialized = flat(features.get_serialized_info())
    assert sorted(serialized) == sorted(schema.FEATURE_KEYS)
    for key, (dtype, dims) in schema.FEATURE_TYPES.items():
        assert serialized[key].dtype.name == {"bytes": "string", "int64": "int64"}[dtype], key
        assert tuple(serialized[key].shape) == tuple(dims or ()), key
    assert type(features["image"]["encoded"]).__name__ == image_class
    assert features["image"]["class"]["label"].num_classes == 2


def test_unlabeled_datasets_get_a_plain_integer_label() -> None:
    features = tfds_features(dataclasses.replace(INFO, labels=()))
    assert type(features["image"]["class"]["label"]).__name__ == "Scalar"
    assert "labels" not in {r["@id"] for r in json.loads(croissant.croissant_json(dataclasses.replace(INFO, labels=())))["recordSet"]}


def test_tfds_dataset_info_lists_shards_and_leaves_out_empty_splits() -> None:
    from google.protobuf import json_format
    from tensorflow_datasets.core.proto import dataset_info_pb2

    proto = json_format.Parse(tfds_info.dataset_info_json(INFO), dataset_info_pb2.DatasetInfo())
    assert [split.name for split in proto.splits] == ["train"]
    assert list(proto.splits[0].shard_lengths) == [3, 2]
    assert proto.splits[0].num_bytes == 500
    assert proto.splits[0].filepath_template == "{SPLIT}-{SHARD_X_OF_Y}.tfrecord"
    assert proto.file_format == "tfrecord"


def test_gzip_datasets_get_no_tfds_files_but_a_croissant_description() -> None:
    gz_shards = tuple(dataclasses.replace(s, file=s.file + ".gz", index=s.file + ".gz.idx") for s in SHARDS)
    info = dataclasses.replace(INFO, compression="gzip", splits={"train": metadata.SplitInfo("train", 5, gz_shards)})
    names = written_files(info)
    assert metadata.TFDS_INFO_FILENAME not in names and metadata.TFDS_FEATURES_FILENAME not in names
    assert {"train-00000-of-00002.tfrecord.gz", "train-00000-of-00002.tfrecord.gz.idx", metadata.CROISSANT_FILENAME} <= set(names)
    shards = next(d for d in json.loads(croissant.croissant_json(info))["distribution"] if d["@id"] == "shards")
    assert shards["includes"] == "*-?????-of-?????.tfrecord.gz"


def test_croissant_validates_under_mlcroissant(tmp_path) -> None:  # noqa: ANN001
    import mlcroissant as mlc

    path = tmp_path / "croissant.json"
    path.write_text(croissant.croissant_json(INFO))
    issues = mlc.Dataset(jsonld=str(path)).metadata.issues
    assert not issues.errors
    assert {field["name"] for field in croissant.example_fields(INFO)} == {"split", *schema.FEATURE_KEYS}
