"""Shards written without grouping records: every worker bundle streams its records into part
files that roll over at a byte size, and a second step turns the parts into the final shards.

Why not `WriteToTFRecord(num_shards=N)`: it groups every record of a shard under one key, and on
Flink (and Dataflow) that group crosses the Fn API data plane as one value, so worker memory grows
with the shard and the dataset (a TaskManager died with `OutOfMemoryError: Direct buffer memory` at
~4,400 ImageNet-sized crops). Here nothing is grouped but part descriptions (a few per worker):

    records ─ WriteParts (per bundle, roll at part_bytes) ─ PartInfo ─ ToList ─ plan ─ ShardSpec
            ─ Reshuffle ─ AssembleShard (rename a whole part, or copy parts / record ranges) ─ final names

A shard made of exactly one whole part is renamed (no copy); only the others are copied, record
frame by record frame, so memory stays one read buffer. The planning functions are pure.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import uuid
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from cropshard.transforms.worker import setup_worker

_LOGGER = logging.getLogger(__name__)
FRAME_OVERHEAD = 16  # TFRecord framing per record: 8-byte length, 4-byte length CRC, 4-byte data CRC
COPY_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True, order=True)
class PartInfo:
    """One part file a bundle wrote: its path, records, and record bytes (framing included, before
    compression)."""

    path: str
    num_records: int
    num_bytes: int


@dataclasses.dataclass(frozen=True)
class Segment:
    """Records [first, first + count) of one part."""

    part: PartInfo
    first: int
    count: int

    @property
    def whole(self) -> bool:
        return self.first == 0 and self.count == self.part.num_records


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """Final shard `index` of `total`, made of `segments` in order (none: an empty shard)."""

    index: int
    total: int
    segments: tuple[Segment, ...]


def whole(part: PartInfo) -> Segment:
    return Segment(part, 0, part.num_records)


def plan_by_size(parts: Sequence[PartInfo], target_bytes: int) -> list[ShardSpec]:
    """Shards near `target_bytes`: a part of at least half the target is a shard by itself (renamed,
    not copied); smaller parts (the last part of each bundle) are packed first-fit-decreasing into
    shards of at most the target. No parts: one empty shard, so every split has a file."""
    ordered = sorted(parts, key=lambda p: (-p.num_bytes, p.path))
    alone = [[part] for part in ordered if 2 * part.num_bytes >= target_bytes]
    bins: list[list[PartInfo]] = []
    for part in (p for p in ordered if 2 * p.num_bytes < target_bytes):
        fitting = next((b for b in bins if sum(p.num_bytes for p in b) + part.num_bytes <= target_bytes), None)
        if fitting is None:
            bins.append([part])
        else:
            fitting.append(part)
    groups = alone + bins or [[]]
    return [ShardSpec(i, len(groups), tuple(whole(p) for p in group)) for i, group in enumerate(groups)]


def plan_by_count(parts: Sequence[PartInfo], num_shards: int) -> list[ShardSpec]:
    """Exactly `num_shards` shards with record counts differing by at most one: shard i takes
    records [i*R//N, (i+1)*R//N) of the parts laid end to end in path order."""
    ordered = sorted(parts)
    total = sum(p.num_records for p in ordered)
    specs = []
    for index in range(num_shards):
        start, stop = index * total // num_shards, (index + 1) * total // num_shards
        segments, offset = [], 0
        for part in ordered:
            first, last = max(start, offset), min(stop, offset + part.num_records)
            if first < last:
                segments.append(Segment(part, first - offset, last - first))
            offset += part.num_records
        specs.append(ShardSpec(index, num_shards, tuple(segments)))
    return specs


def plan_shard_specs(parts: Sequence[PartInfo], num_shards: int, target_bytes: int) -> list[ShardSpec]:
    """Exactly `num_shards` shards if > 0, else shards near `target_bytes`."""
    return plan_by_count(parts, num_shards) if num_shards > 0 else plan_by_size(parts, target_bytes)


def shard_path(prefix: str, suffix: str, index: int, total: int) -> str:
    """`<prefix>-SSSSS-of-NNNNN<suffix>`, Beam's default shard name template."""
    return f"{prefix}-{index:05d}-of-{total:05d}{suffix}"


def copy_frames(source: BinaryIO, target: BinaryIO, skip: int, count: int) -> None:
    """Copy records [skip, skip + count) of a TFRecord stream, frames as they are (their CRCs are
    checked when the finished shard is described)."""
    for index in range(skip + count):
        header = source.read(12)
        if len(header) != 12:
            raise ValueError(f"part ended after {index} records, {skip + count} expected")
        (length,) = struct.unpack("<Q", header[:8])
        body = source.read(length + 4)
        if len(body) != length + 4:
            raise ValueError(f"part truncated in record {index}")
        if index >= skip:
            target.write(header)
            target.write(body)


def copy_whole(source: BinaryIO, target: BinaryIO) -> None:
    while chunk := source.read(COPY_CHUNK):
        target.write(chunk)


class WriteParts(beam.DoFn):
    """Serialized examples -> PartInfo of the part files this bundle wrote under `temp_dir`, each
    rolled over once it holds `part_bytes` (one open file per bundle: memory is one record)."""

    def __init__(self, temp_dir: str, compression_type: str, part_bytes: int) -> None:
        self._temp_dir = temp_dir
        self._compression_type = compression_type
        self._part_bytes = part_bytes
        self._handle: BinaryIO | None = None

    def setup(self) -> None:
        setup_worker()  # the fast CRC32C for the record framing

    def start_bundle(self) -> None:
        self._handle = None

    def _open(self) -> None:
        self._path = FileSystems.join(self._temp_dir, f"part-{uuid.uuid4().hex}")
        self._handle = FileSystems.create(self._path, compression_type=self._compression_type)
        self._records = self._bytes = 0

    def _close(self) -> PartInfo:
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        return PartInfo(self._path, self._records, self._bytes)

    def process(self, record: bytes) -> Iterator[PartInfo]:
        if self._handle is None:
            self._open()
        _TFRecordUtil.write_record(self._handle, record)
        self._records += 1
        self._bytes += len(record) + FRAME_OVERHEAD
        if self._bytes >= self._part_bytes:
            yield self._close()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._handle is not None:
            yield WindowedValue(self._close(), GlobalWindow().max_timestamp(), [GlobalWindow()])


class AssembleShard(beam.DoFn):
    """ShardSpec -> the final shard's path: a shard of one whole part is renamed, any other is
    copied from its segments. Retry-safe: parts are only read or renamed here, never deleted."""

    def __init__(self, prefix: str, suffix: str, compression_type: str) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._compression_type = compression_type

    def process(self, spec: ShardSpec) -> Iterator[str]:
        final = shard_path(self._prefix, self._suffix, spec.index, spec.total)
        if len(spec.segments) == 1 and spec.segments[0].whole:
            source = spec.segments[0].part.path
            if FileSystems.exists(source) or not FileSystems.exists(final):  # a retry after the rename is done
                FileSystems.rename([source], [final])
            yield final
            return
        with FileSystems.create(final, compression_type=self._compression_type) as target:
            for segment in spec.segments:
                with FileSystems.open(segment.part.path, compression_type=self._compression_type) as source:
                    if segment.whole:
                        copy_whole(source, target)
                    else:
                        copy_frames(source, target, segment.first, segment.count)
        yield final


class _RemoveTempDir(beam.DoFn):
    """Deletes the parts' directory once every shard is in place (the side input), then passes the
    final names on; parts of retried bundles that no plan used go with it."""

    def __init__(self, temp_dir: str) -> None:
        self._temp_dir = temp_dir

    def process(self, unused: object, finals: Sequence[str]) -> Iterator[str]:
        leftovers = [m.path for m in FileSystems.match([FileSystems.join(self._temp_dir, "*")])[0].metadata_list]
        if leftovers:
            FileSystems.delete(leftovers)
        if FileSystems.get_filesystem(self._temp_dir).has_dirs() and FileSystems.exists(self._temp_dir):
            FileSystems.delete([self._temp_dir])
        _LOGGER.info("%d shards in place; removed %d leftover parts", len(finals), len(leftovers))
        yield from sorted(finals)


class WriteShardsWithoutGrouping(beam.PTransform):
    """Serialized examples -> final shard names `<prefix>-SSSSS-of-NNNNN<suffix>`: exactly
    `num_shards` if > 0, else shards near `target_bytes` (parts roll at `target_bytes` in both
    modes). Parts go to `temp_dir`, which must be unique to this transform (deleted at the end)."""

    def __init__(self, prefix: str, suffix: str, temp_dir: str, compression_type: str, num_shards: int, target_bytes: int) -> None:
        super().__init__()
        if target_bytes <= 0:
            raise ValueError(f"target_bytes must be positive, not {target_bytes}")
        self._prefix, self._suffix, self._temp_dir = prefix, suffix, temp_dir
        self._compression_type = compression_type
        self._num_shards = num_shards
        self._target_bytes = target_bytes

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        # Parts roll at the target size in both modes: by size, most shards are then renamed parts.
        parts = examples | "WriteParts" >> beam.ParDo(WriteParts(self._temp_dir, self._compression_type, self._target_bytes))
        finals = (
            parts
            | "AllParts" >> beam.combiners.ToList()
            | "Plan" >> beam.FlatMap(plan_shard_specs, self._num_shards, self._target_bytes)
            | "Spread" >> beam.Reshuffle()
            | "Assemble" >> beam.ParDo(AssembleShard(self._prefix, self._suffix, self._compression_type))
        )
        return (
            examples.pipeline
            | "Once" >> beam.Create([None])
            | "RemoveParts" >> beam.ParDo(_RemoveTempDir(self._temp_dir), finals=beam.pvalue.AsList(finals))
        )


def unique_temp_dir(output: str, split: str) -> str:
    """A temp dir under `output` named like Beam's (`beam-temp-*`), so `--overwrite` clears one an
    interrupted build left behind."""
    return FileSystems.join(output, f"beam-temp-{split}-{uuid.uuid4().hex}")

