"""cropshard.json: the self-description written next to the shards.

The writer writes it last, after every shard is final, so its presence means the dataset
is complete. This module is pure (JSON in, JSON out); `load_info` adds the file access
through `tf.io.gfile` so it works for local paths and every filesystem TensorFlow knows.

The same directory also holds TFDS's `dataset_info.json` + `features.json` and a Croissant
`croissant.json` (cropshard.transforms.tfds_info, .croissant), so other readers open it too. Datasets built
before cropshard 0.3 kept cropshard's metadata in `dataset_info.json` (format version 1);
`load_info` still reads them and says how to get the new layout.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
from typing import Any

FORMAT_VERSION = 2  # 2: own file name, shard index files, shard_contents
SUPPORTED_FORMAT_VERSIONS = (1, 2)
INFO_FILENAME = "cropshard.json"
LEGACY_INFO_FILENAME = "dataset_info.json"  # where format version 1 kept it; now TFDS's file
TFDS_INFO_FILENAME = "dataset_info.json"
TFDS_FEATURES_FILENAME = "features.json"
CROISSANT_FILENAME = "croissant.json"
LABELS_FILENAME = "labels.txt"
REJECTED_FILENAME = "rejected.jsonl"

# Which records each shard file holds, and in what order. "stable": a function of the records alone
# (sorted by their CRC32C and length, then cut into equal ranges), so identical builds give
# identical shard files on every runner. "runner-chosen": the runner's bundles decide (outputs on
# object stores such as gs://, where copying records by offset is not affordable); two builds of
# the same inputs then give the same records per split, not the same shard files. The index files
# always describe the shards as written.
SHARD_CONTENTS_STABLE = "stable"
SHARD_CONTENTS_RUNNER_CHOSEN = "runner-chosen"

_LOG = logging.getLogger(__name__)

COMPRESSION_NONE = "none"
COMPRESSION_GZIP = "gzip"


class DatasetError(ValueError):
    """A dataset directory or its metadata is unusable; the message names the problem."""


class IncompleteDatasetError(DatasetError):
    """Shards exist but cropshard.json does not: the build was interrupted or is still running."""


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    file: str  # file name, relative to the dataset directory
    num_records: int
    num_bytes: int
    index: str | None = None  # its record index file (reader.shard_index); None in format-1 datasets


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
    shard_contents: str = SHARD_CONTENTS_RUNNER_CHOSEN
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
    def chips_skipped(self) -> dict[str, int]:
        """Raster chips not written, by reason (nodata, split_boundary, label_fraction), most first."""
        skipped = (self.raster or {}).get("chips_skipped") or {}
        return dict(sorted(((str(reason), int(count)) for reason, count in skipped.items()), key=lambda kv: (-kv[1], kv[0])))

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
            "shard_contents": self.shard_contents,
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
                    shards=tuple(
                        ShardInfo(str(s["file"]), int(s["num_records"]), int(s["num_bytes"]), s.get("index"))
                        for s in split["shards"]
                    ),
                )
                for name, split in body["splits"].items()
            }
            _check_split_counts(splits, source)
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
                shard_contents=str(body.get("shard_contents", SHARD_CONTENTS_RUNNER_CHOSEN)),
            )
        except DatasetError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{source} is missing or has a malformed field: {err!r}") from err


def _check_split_counts(splits: dict[str, SplitInfo], source: str) -> None:
    """A split's example count is the sum of its shards' record counts (the writer makes both
    from the same shards): anything else is an edited or mixed-up cropshard.json."""
    for name, split in splits.items():
        counts = [shard.num_records for shard in split.shards]
        if any(count < 0 for count in counts) or split.num_examples != sum(counts):
            raise DatasetError(
                f"{source}: split {name!r} lists {split.num_examples} examples but its shards {sum(counts)}"
                f" ({', '.join(map(str, counts)) or 'no shards'}); the file was edited or mixed up with another dataset's"
            )


def labels_text(labels: tuple[str, ...] | list[str]) -> str:
    """labels.txt's contents: one name a line, line i is label id i."""
    return "".join(f"{name}\n" for name in labels)


def join(directory: str, name: str) -> str:
    """Join for local paths and URLs alike (gs://bucket/dir + name)."""
    return posixpath.join(directory, name) if "://" in directory else _os_join(directory, name)


def _os_join(directory: str, name: str) -> str:
    import os

    return os.path.join(directory, name)


def load_info(path: str) -> DatasetInfo:
    """Read `path`/cropshard.json (or a format-1 dataset's dataset_info.json); a clear error if the
    dataset is absent, incomplete, or not cropshard's.

    File access goes through `reader.fileio` (tf.io.gfile by default) so local paths, gs:// and a
    test's substitute filesystem all take the same route as the shard reads.
    """
    from . import fileio

    fs = fileio.get()
    info_path = join(path, INFO_FILENAME)
    if fs.exists(info_path):
        with fs.open(info_path, "r") as handle:
            return DatasetInfo.from_json(handle.read(), source=info_path)
    if not fs.exists(path):
        raise DatasetError(f"no dataset at {path!r}: the directory does not exist")
    legacy_path = join(path, LEGACY_INFO_FILENAME)
    if fs.exists(legacy_path):
        with fs.open(legacy_path, "r") as handle:
            text = handle.read()
        if is_legacy_info(text):
            _LOG.warning(
                "dataset at %r has the format-1 layout (cropshard's metadata in %s, no %s): it reads as before;"
                " rebuild it with cropshard >= 0.3 for TFDS, Croissant and shard index files",
                path, LEGACY_INFO_FILENAME, INFO_FILENAME,
            )
            return DatasetInfo.from_json(text, source=legacy_path)
    try:
        names = fs.listdir(path)
    except Exception as err:  # tf.io.gfile raises NotFoundError ("Could not find directory") when `path` is a file
        raise DatasetError(
            f"{path!r} cannot be listed as a directory ({str(err).strip() or type(err).__name__}): pass the dataset directory,"
            f" the one that holds {INFO_FILENAME}, not a shard or other file in it"
        ) from err
    leftovers = [name for name in names if ".tfrecord" in name or name.startswith("beam-temp-")]
    tfds_only = fs.exists(legacy_path)  # TFDS's file without cropshard's: written by TFDS, or a build cut short
    if leftovers:
        other = ", or a dataset written by TFDS (read it with tfds.builder_from_directory)" if tfds_only else ""
        raise IncompleteDatasetError(
            f"dataset at {path!r} is incomplete: it has {len(leftovers)} shard or temp files but no {INFO_FILENAME}"
            f" (the build was interrupted or is still running; rebuild with --overwrite{other})"
        )
    if tfds_only:
        raise DatasetError(f"{path!r} has a TFDS {LEGACY_INFO_FILENAME} but no {INFO_FILENAME}: it is not a cropshard dataset")
    raise DatasetError(f"{path!r} is not a cropshard dataset: it has no {INFO_FILENAME}")


def is_legacy_info(text: str) -> bool:
    """Whether a dataset_info.json is cropshard's own of format version 1 (not TFDS's)."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("format_version") == 1 and "cropshard_version" in body
