"""Write the dataset: one `WriteToTFRecord` per split, each shard described, then labels.txt and
dataset_info.json last; and `prepare_output`, which clears --output before a build.

The metadata step takes every shard's final file name (the output of WriteToTFRecord's
finalize) as a side input, so it cannot run before all shards are renamed into place: the
presence of dataset_info.json means the dataset is complete.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from cropshard.reader import integrity, metadata, schema
from cropshard.transforms.rejects import REASONS
from cropshard.transforms.sharding import WriteShardsWithoutGrouping, unique_temp_dir
from cropshard.transforms.worker import setup_worker

SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
# Part size when only a shard count is given: parts are then split by records anyway.
DEFAULT_PART_BYTES = 128 * 2**20
_LOGGER = logging.getLogger(__name__)


def shard_suffix(compression: str) -> str:
    return ".tfrecord.gz" if compression == metadata.COMPRESSION_GZIP else ".tfrecord"


def shard_file_name(path: str) -> str:
    """The file name of a written shard, from its local or gs:// path (as dataset_info.json lists it)."""
    return re.split(r"[/\\]", path)[-1]


def beam_compression(compression: str) -> str:
    return CompressionTypes.GZIP if compression == metadata.COMPRESSION_GZIP else CompressionTypes.UNCOMPRESSED


def join(directory: str, name: str) -> str:
    return FileSystems.join(directory, name)


def count_records(path: str, compression: str) -> int:
    """Records in one shard, each checked against its CRCs by the reader's TFRecord scanner (the
    project's one framing parser), reading through Beam's filesystems so gs:// works on workers."""
    with FileSystems.open(path, compression_type=beam_compression(compression)) as handle:
        count, error, offset = integrity.scan_records(handle)
    if error is not None:
        raise ValueError(f"shard {path} just written is damaged: {error} at byte offset {offset} (record index {count})")
    return count


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """How one split's records become shard files: exactly `num_shards` if > 0; else shards near
    `target_bytes` if > 0; else one shard per worker bundle (Beam's runner-chosen sharding)."""

    num_shards: int = 0
    target_bytes: int = 0

    def __str__(self) -> str:
        if self.num_shards:
            return f"{self.num_shards} shards"
        if self.target_bytes:
            return f"shards near {self.target_bytes / 2**20:g} MiB"
        return "one shard per worker bundle"


class WriteSplit(beam.PTransform):
    """Serialized examples -> `<output>/<split>-SSSSS-of-NNNNN.tfrecord[.gz]`; outputs final file names.

    A fixed count or a target size goes through `WriteShardsWithoutGrouping` (part files per
    bundle, then renamed or concatenated): no runner ever holds a shard's records as one grouped
    value, which is what Beam's `WriteToTFRecord(num_shards=N)` does. Runner-chosen sharding is
    Beam's own per-bundle write (the local DirectRunner: one shard per worker and split)."""

    def __init__(self, output: str, split: str, layout: ShardLayout, compression: str) -> None:
        super().__init__()
        self._output = output
        self._prefix = join(output, split)
        self._split = split
        self._layout = layout
        self._compression = compression

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        suffix = shard_suffix(self._compression)
        if self._layout.num_shards or self._layout.target_bytes:
            return examples | WriteShardsWithoutGrouping(
                self._prefix,
                suffix,
                unique_temp_dir(self._output, self._split),
                beam_compression(self._compression),
                self._layout.num_shards,
                self._layout.target_bytes or DEFAULT_PART_BYTES,
            )
        return examples | beam.io.WriteToTFRecord(
            self._prefix,
            file_name_suffix=suffix,
            num_shards=0,
            shard_name_template=SHARD_TEMPLATE,
            compression_type=beam_compression(self._compression),
        )


class _ShardInfo(beam.DoFn):
    def __init__(self, split: str, compression: str) -> None:
        self._split = split
        self._compression = compression

    def setup(self) -> None:
        setup_worker()  # the fast CRC32C for the shard check

    def process(self, path: str) -> Iterator[tuple[str, metadata.ShardInfo]]:
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        yield self._split, metadata.ShardInfo(shard_file_name(path), count_records(path, self._compression), size)


class DescribeShards(beam.PTransform):
    """Final shard file names of one split -> (split, ShardInfo) with record counts and bytes."""

    def __init__(self, split: str, compression: str) -> None:
        super().__init__()
        self._split = split
        self._compression = compression

    def expand(self, files: beam.PCollection) -> beam.PCollection:
        return files | beam.Reshuffle() | beam.ParDo(_ShardInfo(self._split, self._compression))


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """The dataset_info.json fields the launcher knows before any image is read."""

    cropshard_version: str
    encoding: str
    image_formats: tuple[str, ...]
    channels: int
    image_shape: tuple[int, int, int] | None  # None when image sizes vary
    crop: Mapping[str, Any]  # CropSpec.to_dict()
    compression: str
    split_names: tuple[str, ...]
    command_line: tuple[str, ...]


def group_splits(split_names: Sequence[str], shards: Iterable[tuple[str, metadata.ShardInfo]]) -> dict[str, metadata.SplitInfo]:
    """(split, ShardInfo) pairs -> SplitInfo per split, shards sorted by file name; every named
    split is present, even one that received no shard."""
    by_split: dict[str, list[metadata.ShardInfo]] = {name: [] for name in split_names}
    for split, shard in shards:
        by_split.setdefault(split, []).append(shard)
    return {
        name: metadata.SplitInfo(name, sum(s.num_records for s in files), tuple(sorted(files, key=lambda s: s.file)))
        for name, files in by_split.items()
    }


def dataset_info(
    facts: DatasetFacts,
    splits: Mapping[str, metadata.SplitInfo],
    labels: Sequence[str],
    rejected: Mapping[str, int],
    num_inputs: int,
    images_written: int,
    created: str,
) -> metadata.DatasetInfo:
    return metadata.DatasetInfo(
        cropshard_version=facts.cropshard_version,
        created=created,
        encoding=facts.encoding,
        image_formats=facts.image_formats,
        channels=facts.channels,
        image_shape=facts.image_shape,
        crop=dict(facts.crop),
        labels=tuple(labels),
        splits=dict(splits),
        compression=facts.compression,
        num_inputs=num_inputs,
        num_images_written=images_written,
        rejected={reason: int(count) for reason, count in rejected.items()},
        schema=schema.schema_description(),
        command_line=facts.command_line,
    )


def check_publishable(info: metadata.DatasetInfo) -> None:
    """RuntimeError unless the counts reconcile, the shard list is complete and every rejection
    reason is documented: such a dataset is never published."""
    if info.num_inputs != info.num_images_written + info.num_rejected:
        # A dropped or double-counted input is a bug in cropshard.
        raise RuntimeError(
            f"counts do not reconcile: {info.num_inputs} inputs != {info.num_images_written} written"
            f" + {info.num_rejected} rejected"
        )
    if info.num_examples < info.num_images_written:
        # Every written image has at least one record. Fewer records than images means the
        # shard list arrived incomplete (seen on BundleBasedDirectRunner), not a real dataset.
        raise RuntimeError(
            f"shards describe {info.num_examples} records but {info.num_images_written} images were written;"
            " the shard list is incomplete"
        )
    unknown = set(info.rejected) - set(REASONS)
    if unknown:
        raise RuntimeError(f"undocumented rejection reasons {sorted(unknown)}")


class _WriteDatasetInfo(beam.DoFn):
    def __init__(self, output: str, facts: DatasetFacts) -> None:
        self._output = output
        self._facts = facts

    def process(
        self,
        unused: object,
        shards: Sequence[tuple[str, metadata.ShardInfo]],
        rejected: Mapping[str, int],
        num_inputs: int,
        images_written: int,
        labels: Sequence[str],
        unused_rejected_files: Sequence[str],
    ) -> Iterator[str]:
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        splits = group_splits(self._facts.split_names, shards)
        info = dataset_info(self._facts, splits, labels, rejected, num_inputs, images_written, created)
        check_publishable(info)
        write_text(join(self._output, metadata.LABELS_FILENAME), "".join(f"{name}\n" for name in labels))
        info_path = join(self._output, metadata.INFO_FILENAME)
        write_text(info_path, info.to_json())  # last: its presence marks the dataset complete
        _LOGGER.info("wrote %s", info_path)
        yield info_path


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(text.encode("utf-8"))


class WriteDatasetInfo(beam.PTransform):
    """Waits (through side inputs) for every shard and rejected.jsonl, then writes labels.txt and dataset_info.json."""

    def __init__(self, output: str, facts: DatasetFacts) -> None:
        super().__init__()
        self._output = output
        self._facts = facts

    def expand(self, pcolls: Mapping[str, beam.PCollection]) -> beam.PCollection:
        side = beam.pvalue
        return (
            pcolls["shards"].pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.ParDo(
                _WriteDatasetInfo(self._output, self._facts),
                shards=side.AsList(pcolls["shards"]),
                rejected=side.AsDict(pcolls["rejected_counts"]),
                num_inputs=side.AsSingleton(pcolls["num_inputs"]),
                images_written=side.AsSingleton(pcolls["images_written"]),
                labels=side.AsSingleton(pcolls["labels"]),
                unused_rejected_files=side.AsList(pcolls["rejected_files"]),
            )
        )


def dataset_files(output: str) -> list[str]:
    """Files a previous build left in `output` that `--overwrite` removes (nothing else is touched)."""
    found = []
    for pattern in ("*.tfrecord", "*.tfrecord.gz", metadata.INFO_FILENAME, metadata.LABELS_FILENAME, metadata.REJECTED_FILENAME):
        found.extend(m.path for m in FileSystems.match([join(output, pattern)])[0].metadata_list)
    return found


def remove_temp_dirs(output: str) -> int:
    """Delete Beam's `beam-temp-*` directories left by an interrupted build; returns how many files were in them."""
    files = [m.path for m in FileSystems.match([join(output, "beam-temp-*/**")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if "://" not in output:  # local directories outlive their files
        dirs = glob.glob(join(glob.escape(output), "beam-temp-*"))
        if dirs:
            FileSystems.delete(dirs)
    return len(files)


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuse a non-empty output unless --overwrite; with it, remove the old dataset_info.json
    first (so an interrupted overwrite never looks complete), then old shards and temp dirs."""
    if FileSystems.get_filesystem(output).has_dirs() and not FileSystems.exists(output):
        if "://" not in output:
            os.makedirs(output, exist_ok=True)
        return
    # Object stores (gs://) have no directories: exists(output) is False even when objects sit
    # below it, so the listing below is the only emptiness check there.
    existing = [m.path for m in FileSystems.match([join(output, "**")])[0].metadata_list]
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(f"output {output} is not empty ({len(existing)} files); pass --overwrite to replace the dataset there")
    info = join(output, metadata.INFO_FILENAME)
    if FileSystems.exists(info):
        FileSystems.delete([info])
    stale = [path for path in dataset_files(output) if path != info]
    if stale:
        FileSystems.delete(stale)
    temp_files = remove_temp_dirs(output)
    _LOGGER.info("--overwrite: removed %d old dataset files and %d temp files from %s", len(stale), temp_files, output)
