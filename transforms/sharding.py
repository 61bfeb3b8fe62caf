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

Stable contents (`stable=True`, local and mounted filesystems): the shard a record lands in and its
place there are a function of the records alone, so identical builds give identical shard files on
every runner. Parts then note each record's sort key (its CRC32C, already computed for the framing,
and its length) and offset; the keys of a split (8 bytes per record) meet in one plan that cuts the
key order into `num_shards` equal-count or target-size ranges; each shard gathers its records'
locations (GroupByKey of small locator arrays, never records) and copies the frames in key order
from the parts by offset:

    records ─ WriteParts (+ locators) ─┬─ keys ─ ToList ─ cut points ───────────────┐ (side input)
                                       └─ route each part's locators to its shards ─┴─ GroupByKey ─ AssembleSortedShard
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from cropshard.reader.crc32c import crc32c, mask, masked_crc32c

_LOGGER = logging.getLogger(__name__)
FRAME_OVERHEAD = 16  # TFRecord framing per record: 8-byte length, 4-byte length CRC, 4-byte data CRC
COPY_CHUNK = 1 << 20
# Per record of a part written for stable contents: sort key (CRC32C << 32 | length), frame offset.
LOCATOR = np.dtype([("key", "<u8"), ("offset", "<u8")])
OPEN_PARTS = 32  # part files an assembler keeps open at once


@dataclasses.dataclass(frozen=True, order=True)
class PartInfo:
    """One part file a bundle wrote: its path, records, and record bytes (framing included, before
    compression); for stable contents also every record's LOCATOR, packed."""

    path: str
    num_records: int
    num_bytes: int
    locators: bytes = dataclasses.field(default=b"", compare=False, repr=False)

    def located(self) -> np.ndarray:
        return np.frombuffer(self.locators, dtype=LOCATOR)


def frame_record(record: bytes) -> tuple[bytes, bytes, int]:
    """(header, footer, crc32c of the record): a TFRecord frame is header + record + footer."""
    length = struct.pack("<Q", len(record))
    crc = crc32c(record)
    return length + struct.pack("<I", masked_crc32c(length)), struct.pack("<I", mask(crc)), crc


def sort_key(crc: int, length: int) -> int:
    """A record's place in stable shards: its CRC32C, then its length (ties: its bytes)."""
    if length >= (1 << 32) - 1:
        raise ValueError(f"a record of {length} bytes is too large for a TFRecord shard")
    return crc << 32 | length


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


def shard_count(total_bytes: int, num_shards: int, target_bytes: int) -> int:
    """Exactly `num_shards` if > 0, else as many shards as keep each at most `target_bytes` (at
    least one, so every split has a file)."""
    return num_shards if num_shards > 0 else max(1, math.ceil(total_bytes / target_bytes))


def cut_points(key_arrays: Iterable[bytes], num_shards: int, target_bytes: int) -> np.ndarray:
    """The sort keys of a split's records (packed uint64 arrays, any order) -> the N-1 cut keys of
    N stable shards: shard i holds the records with cuts[i-1] <= key < cuts[i]. With `num_shards`
    the shards hold equal counts, else equal bytes (each at most `target_bytes` plus one record).
    Records with the same key never straddle a cut (an exact tie costs balance, not stability)."""
    keys = np.sort(np.concatenate([np.frombuffer(b, dtype="<u8") for b in key_arrays] or [np.zeros(0, "<u8")]))
    frames = (keys & np.uint64(0xFFFFFFFF)) + np.uint64(FRAME_OVERHEAD)
    total = int(frames.sum())
    count = shard_count(total, num_shards, target_bytes)
    if num_shards > 0:
        ranks = np.arange(1, count) * len(keys) // count
    else:  # a record goes where its frame ends: shard i ends at or before byte (i + 1) * total / N
        ranks = np.searchsorted(np.cumsum(frames), np.arange(1, count) * total / count, side="right")
    padded = np.append(keys, np.uint64(np.iinfo(np.uint64).max))  # past the end: empty last shards
    return padded[ranks]


def route_part(part: PartInfo, cuts: np.ndarray) -> Iterator[tuple[int, tuple[str, bytes]]]:
    """One part's records by stable shard: (shard index, (part path, their packed LOCATORs))."""
    located = part.located()
    shards = np.searchsorted(cuts, located["key"], side="right")
    for shard in np.unique(shards):
        yield int(shard), (part.path, located[shards == shard].tobytes())


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
    rolled over once it holds `part_bytes` (one open file per bundle: memory is one record, plus
    16 bytes per record with `locate`)."""

    def __init__(self, temp_dir: str, compression_type: str, part_bytes: int, locate: bool = False) -> None:
        if locate and compression_type != CompressionTypes.UNCOMPRESSED:
            raise ValueError("parts read back by offset (stable contents) must be uncompressed")
        self._temp_dir = temp_dir
        self._compression_type = compression_type
        self._part_bytes = part_bytes
        self._locate = locate
        self._handle: BinaryIO | None = None

    def start_bundle(self) -> None:
        self._handle = None

    def _open(self) -> None:
        self._path = FileSystems.join(self._temp_dir, f"part-{uuid.uuid4().hex}")
        self._handle = FileSystems.create(self._path, compression_type=self._compression_type)
        self._records = self._bytes = 0
        self._located: list[tuple[int, int]] = []

    def _close(self) -> PartInfo:
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        locators = np.array(self._located, dtype=LOCATOR).tobytes() if self._locate else b""
        return PartInfo(self._path, self._records, self._bytes, locators)

    def process(self, record: bytes) -> Iterator[PartInfo]:
        if self._handle is None:
            self._open()
        header, footer, crc = frame_record(record)
        if self._locate:
            self._located.append((sort_key(crc, len(record)), self._bytes))
        self._handle.write(header)
        self._handle.write(record)
        self._handle.write(footer)
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


class _PartFiles:
    """Local part files read by offset, at most OPEN_PARTS open at once (least recently used closed
    first). Stable shards live on local or mounted filesystems only (see WriteStableShards)."""

    def __init__(self) -> None:
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()

    def _fd(self, path: str) -> int:
        fd = self._fds.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
        self._fds[path] = fd
        while len(self._fds) > OPEN_PARTS:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def read(self, path: str, offset: int, size: int) -> bytes:
        """`size` bytes of part `path` from `offset` (a whole frame)."""
        data = os.pread(self._fd(path), size, offset)
        if len(data) != size:
            raise ValueError(f"part {path} ends inside the record at byte offset {offset}")
        return data

    def copy(self, path: str, offset: int, size: int, target: int) -> None:
        """Append `size` bytes of part `path` from `offset` to the file descriptor `target` (the frame
        as it is). os.copy_file_range measured the same as this here, and is Linux-only."""
        view = memoryview(self.read(path, offset, size))
        while view:
            view = view[os.write(target, view):]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def frame_size(key: int) -> int:
    """A record's whole TFRecord frame, from its sort key (whose low 32 bits are its length)."""
    return (key & 0xFFFFFFFF) + FRAME_OVERHEAD


def ordered_spans(pieces: Iterable[tuple[str, bytes]], parts: _PartFiles) -> Iterator[tuple[str, int, int]]:
    """(part path, offset, frame size) of one stable shard's records in key order; records with the
    same key by their bytes (the only frames read here)."""
    entries = sorted((int(key), path, int(offset)) for path, packed in pieces for key, offset in np.frombuffer(packed, dtype=LOCATOR))
    start = 0
    while start < len(entries):
        stop = start + 1
        while stop < len(entries) and entries[stop][0] == entries[start][0]:
            stop += 1
        spans = [(path, offset, frame_size(key)) for key, path, offset in entries[start:stop]]
        if len(spans) > 1:
            spans.sort(key=lambda span: parts.read(*span)[12:-4])
        yield from spans
        start = stop


class AssembleSortedShard(beam.DoFn):
    """(shard index, [(part path, locators) | None]) -> the final shard's path, its records copied
    from the parts in key order (None: the seed that makes an empty shard exist)."""

    def __init__(self, prefix: str, suffix: str, compression_type: str) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._compression_type = compression_type

    def process(self, element: tuple[int, Iterable[tuple[str, bytes] | None]], cuts: np.ndarray) -> Iterator[str]:
        index, pieces = element
        final = shard_path(self._prefix, self._suffix, index, len(cuts) + 1)
        parts = _PartFiles()
        spans = ordered_spans((piece for piece in pieces if piece is not None), parts)
        try:
            if self._compression_type == CompressionTypes.UNCOMPRESSED:
                with open(final, "wb", buffering=0) as target:
                    for span in spans:
                        parts.copy(*span, target.fileno())
            else:
                with FileSystems.create(final, compression_type=self._compression_type) as compressed:
                    for span in spans:
                        compressed.write(parts.read(*span))
        finally:
            parts.close()
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


class _WriteShards(beam.PTransform):
    """What both shard writers share: their arguments, and deleting the parts at the end."""

    def __init__(self, prefix: str, suffix: str, temp_dir: str, compression_type: str, num_shards: int, target_bytes: int) -> None:
        super().__init__()
        if target_bytes <= 0:
            raise ValueError(f"target_bytes must be positive, not {target_bytes}")
        self._prefix, self._suffix, self._temp_dir = prefix, suffix, temp_dir
        self._compression_type = compression_type
        self._num_shards = num_shards
        self._target_bytes = target_bytes

    def _remove_parts(self, pipeline: beam.Pipeline, finals: beam.PCollection) -> beam.PCollection:
        """The final shard names, once every shard is in place and the parts are deleted."""
        return (
            pipeline
            | "Once" >> beam.Create([None])
            | "RemoveParts" >> beam.ParDo(_RemoveTempDir(self._temp_dir), finals=beam.pvalue.AsList(finals))
        )


class WriteShardsWithoutGrouping(_WriteShards):
    """Serialized examples -> final shard names `<prefix>-SSSSS-of-NNNNN<suffix>`: exactly
    `num_shards` if > 0, else shards near `target_bytes` (parts roll at `target_bytes` in both
    modes). Parts go to `temp_dir`, which must be unique to this transform (deleted at the end)."""

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
        return self._remove_parts(examples.pipeline, finals)


class WriteStableShards(_WriteShards):
    """Serialized examples -> final shard names, each shard's records and their order a function of
    the records alone (see the module docstring): exactly `num_shards` equal-count shards if > 0,
    else equal-size shards of at most `target_bytes`. Needs a filesystem with cheap reads by offset
    (local or mounted; on object stores every record would be a ranged read)."""

    def __init__(self, prefix: str, suffix: str, temp_dir: str, compression_type: str, num_shards: int, target_bytes: int) -> None:
        if "://" in prefix or "://" in temp_dir:
            raise ValueError(f"stable shards are written to local or mounted filesystems, not {prefix}")
        super().__init__(prefix, suffix, temp_dir, compression_type, num_shards, target_bytes)

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        parts = examples | "WriteParts" >> beam.ParDo(WriteParts(self._temp_dir, CompressionTypes.UNCOMPRESSED, self._target_bytes, locate=True))
        cuts = (
            parts
            | "Keys" >> beam.Map(lambda part: part.located()["key"].tobytes())
            | "AllKeys" >> beam.combiners.ToList()
            | "Cut" >> beam.Map(cut_points, self._num_shards, self._target_bytes)
        )
        cuts_side = beam.pvalue.AsSingleton(cuts)
        seeds = cuts | "EveryShard" >> beam.FlatMap(lambda points: ((index, None) for index in range(len(points) + 1)))
        finals = (
            (parts | "Route" >> beam.FlatMap(route_part, cuts_side), seeds)
            | "Pieces" >> beam.Flatten()
            | "ByShard" >> beam.GroupByKey()
            | "Assemble" >> beam.ParDo(AssembleSortedShard(self._prefix, self._suffix, self._compression_type), cuts_side)
        )
        return self._remove_parts(examples.pipeline, finals)


def unique_temp_dir(output: str, split: str) -> str:
    """A temp dir under `output` named like Beam's (`beam-temp-*`), so `--overwrite` clears one an
    interrupted build left behind."""
    return FileSystems.join(output, f"beam-temp-{split}-{uuid.uuid4().hex}")

