"""dataset_info.json: the self-description written next to the shards.

The writer writes it last, after every shard is final, so its presence means the dataset
is complete. This module is pure (JSON in, JSON out); `load_info` adds the file access
through `tf.io.gfile` so it works for local paths and every filesystem TensorFlow knows.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
INFO_FILENAME = "dataset_info.json"
LABELS_FILENAME = "labels.txt"
REJECTED_FILENAME = "rejected.jsonl"

COMPRESSION_NONE = "none"
COMPRESSION_GZIP = "gzip"


class DatasetError(ValueError):
    """A dataset directory or its metadata is unusable; the message names the problem."""


class IncompleteDatasetError(DatasetError):
    """Shards exist but dataset_info.json does not: the build was interrupted or is still running."""


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    file: str  # file name, relative to the dataset directory
    num_records: int
    num_bytes: int


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    name: str
    num_examples: int
    shards: tuple[ShardInfo, ...]

    @property
    def num_bytes(self) -> int:
        return sum(shard.num_bytes for shard in self.shards)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Everything a reader needs to interpret the shards, and what a person needs to trust them."""

    cropshard_version: str
    encoding: str  # the --encoding the dataset was built with: raw | jpeg | png | original
    image_formats: tuple[str, ...]  # formats present in image/format (several only for `original`)
    channels: int
    image_shape: tuple[int, int, int] | None  # fixed [h, w, c] of every image, or None if sizes vary
    crop: dict[str, Any]  # the crop spec: strategy, size, resize, small, ...
    labels: tuple[str, ...]  # label id i has name labels[i]
    splits: dict[str, SplitInfo]
    compression: str
    num_inputs: int  # matched files plus manifest rows: every input is written or rejected
    rejected: dict[str, int]  # reason -> count
    schema: dict[str, Any]
    command_line: tuple[str, ...] = ()
    created: str = ""
    num_images_written: int = 0  # source images with at least one example; + num_rejected == num_inputs
    format_version: int = FORMAT_VERSION
    # Raster datasets only (None otherwise): bands, dtype, the uint8 rule, CRSs seen, chips
    # skipped by reason, --split_by. See transforms/raster.
    raster: dict[str, Any] | None = None

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def num_examples(self) -> int:
        return sum(split.num_examples for split in self.splits.values())

    @property
    def dtype(self) -> str:
        """Sample type of the stored pixels: uint8 unless a raster dataset kept another."""
        return str((self.raster or {}).get("dtype") or "uint8")

    @property
    def label_mode(self) -> str | None:
        """'majority' or 'mask' for datasets labelled by class-map rasters, else None."""
        labels = (self.raster or {}).get("labels")
        return str(labels["mode"]) if labels else None

    @property
    def is_precropped(self) -> bool:
        return self.crop.get("strategy") != "none"

    def split(self, name: str) -> SplitInfo:
        if name not in self.splits:
            raise DatasetError(f"split {name!r} does not exist; this dataset has splits {sorted(self.splits)}")
        return self.splits[name]

    def to_json(self) -> str:
        body = {
            "format_version": self.format_version,
            "cropshard_version": self.cropshard_version,
            "created": self.created,
            "encoding": self.encoding,
            "image_formats": list(self.image_formats),
            "channels": self.channels,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "crop": self.crop,
            "labels": list(self.labels),
            "compression": self.compression,
            "num_inputs": self.num_inputs,
            "num_images_written": self.num_images_written,
            "num_examples": self.num_examples,
            "rejected": {"count": self.num_rejected, "by_reason": dict(sorted(self.rejected.items())), "file": REJECTED_FILENAME},
            "splits": {
                name: {
                    "num_examples": split.num_examples,
                    "num_bytes": split.num_bytes,
                    "shards": [dataclasses.asdict(shard) for shard in split.shards],
                }
                for name, split in sorted(self.splits.items())
            },
            "schema": self.schema,
            "command_line": list(self.command_line),
        }
        if self.raster is not None:
            body["raster"] = self.raster
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = INFO_FILENAME) -> DatasetInfo:
        try:
            body = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{source} is not valid JSON: {err}") from err
        if not isinstance(body, dict):
            raise DatasetError(f"{source} does not hold a JSON object")
        version = body.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise DatasetError(
                f"{source} has format_version {version!r}; this reader supports {list(SUPPORTED_FORMAT_VERSIONS)}"
                " (upgrade cropshard to read newer datasets)"
            )
        try:
            splits = {
                name: SplitInfo(
                    name=name,
                    num_examples=int(split["num_examples"]),
                    shards=tuple(ShardInfo(str(s["file"]), int(s["num_records"]), int(s["num_bytes"])) for s in split["shards"]),
                )
                for name, split in body["splits"].items()
            }
            shape = body.get("image_shape")
            return cls(
                format_version=int(version),
                cropshard_version=str(body["cropshard_version"]),
                created=str(body.get("created", "")),
                encoding=str(body["encoding"]),
                image_formats=tuple(body["image_formats"]),
                channels=int(body["channels"]),
                image_shape=tuple(int(v) for v in shape) if shape else None,
                crop=dict(body["crop"]),
                labels=tuple(body["labels"]),
                splits=splits,
                compression=str(body.get("compression", COMPRESSION_NONE)),
                num_inputs=int(body["num_inputs"]),
                num_images_written=int(body.get("num_images_written", 0)),
                rejected={str(k): int(v) for k, v in body["rejected"]["by_reason"].items()},
                schema=dict(body.get("schema", {})),
                command_line=tuple(body.get("command_line", ())),
                raster=dict(body["raster"]) if body.get("raster") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{source} is missing or has a malformed field: {err!r}") from err


def join(directory: str, name: str) -> str:
    """Join for local paths and URLs alike (gs://bucket/dir + name)."""
    return posixpath.join(directory, name) if "://" in directory else _os_join(directory, name)


def _os_join(directory: str, name: str) -> str:
    import os

    return os.path.join(directory, name)


def load_info(path: str) -> DatasetInfo:
    """Read `path`/dataset_info.json; a clear error if the dataset is absent or incomplete.

    File access goes through `reader.fileio` (tf.io.gfile by default) so local paths, gs:// and a
    test's substitute filesystem all take the same route as the shard reads.
    """
    from . import fileio

    fs = fileio.get()
    info_path = join(path, INFO_FILENAME)
    if not fs.exists(info_path):
        if not fs.exists(path):
            raise DatasetError(f"no dataset at {path!r}: the directory does not exist")
        leftovers = [name for name in fs.listdir(path) if ".tfrecord" in name or name.startswith("beam-temp-")]
        if leftovers:
            raise IncompleteDatasetError(
                f"dataset at {path!r} is incomplete: it has {len(leftovers)} shard or temp files but no {INFO_FILENAME}"
                " (the build was interrupted or is still running; rebuild with --overwrite)"
            )
        raise DatasetError(f"{path!r} is not a cropshard dataset: it has no {INFO_FILENAME}")
    with fs.open(info_path, "r") as handle:
        return DatasetInfo.from_json(handle.read(), source=info_path)
