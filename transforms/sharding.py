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
and its length) and offset; the parts of a split with their locators (16 bytes per record) meet in
one plan (`stable_layout`, a StableLayout side input) that cuts the
key order into `num_shards` equal-count or target-size ranges; each shard gathers its records'
locations (GroupByKey of small locator arrays, never records) and copies the frames in key order
from the parts by offset:

    records ─ WriteParts (+ locators) ─┬─ ToList ─ StableLayout (cut points) ────────┐ (side input)
                                       └─ route each part's locators to its shards ─┴─ GroupByKey ─ AssembleSortedShard

Raster chips need no second copy: a raster task (transforms/raster/tasks.py) is already a unit
that is the same on every runner, so with stable contents ImagesToExamples emits its chips as
`RunRecord`s (run = the task, position = the chip's place in it). WriteParts gives every run
parts of its own, rolled at the target size; the run's shards are its records in position order
cut by that same rule (`plan_run_shards`), so a part that already holds exactly one such piece
(the fused local and Flink case: one task, one bundle, in order) is renamed, and only a run whose
records were split over bundles is copied. Pieces far below the target (a task of small chips)
are packed with the next runs' into target-size shards, copied, rather than each made a shard. A split's run shards come first, ordered by run, then
the shards of its photos:

    parts ─ ToList ─ StableLayout (run shards; cut points of the photos' keys) ─ RunShards ─ AssembleRunShard (rename, or copy)
                                 └─ (side input: the photo parts' route and AssembleSortedShard, as above)
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
# A raster task's chip written with stable contents: (run, position, serialized example), where
# the run names the task and the position is the chip's place among the task's chips.
RunRecord = tuple[str, int, bytes]


@dataclasses.dataclass(frozen=True, order=True)
class PartInfo:
    """One part file a bundle wrote: its path, records, and record bytes (framing included, before
    compression); for stable contents also every record's LOCATOR, packed."""

    path: str
    num_records: int
    num_bytes: int
    locators: bytes = dataclasses.field(default=b"", compare=False, repr=False)
    run: str = ""  # the raster task whose chips these are (locator keys: position, length); "" for photos

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


def rename_into_place(part: str, final: str) -> None:
    """Rename a whole part to its final shard name; retry-safe: a retry after the rename finds the
    shard in place and the part gone."""
    if FileSystems.exists(part) or not FileSystems.exists(final):
        FileSystems.rename([part], [final])


def copy_whole(source: BinaryIO, target: BinaryIO) -> None:
    while chunk := source.read(COPY_CHUNK):
        target.write(chunk)


class _OpenPart:
    """One part file being written: its records framed back to back, and (`locate`) their LOCATORs."""

    def __init__(self, temp_dir: str, compression_type: str, locate: bool, run: str = "") -> None:
        self.path = FileSystems.join(temp_dir, f"part-{uuid.uuid4().hex}")
        self.run = run
        self.num_bytes = 0
        self._handle = FileSystems.create(self.path, compression_type=compression_type)
        self._locate = locate
        self._records = 0
        self._located: list[tuple[int, int]] = []

    def write(self, record: bytes, position: int | None = None) -> None:
        """Append one record; its sort key is its CRC32C, or its `position` in a run."""
        header, footer, crc = frame_record(record)
        if self._locate:
            self._located.append((sort_key(crc if position is None else position, len(record)), self.num_bytes))
        self._handle.write(header)
        self._handle.write(record)
        self._handle.write(footer)
        self._records += 1
        self.num_bytes += len(record) + FRAME_OVERHEAD

    def close(self) -> PartInfo:
        self._handle.close()
        locators = np.array(self._located, dtype=LOCATOR).tobytes() if self._locate else b""
        return PartInfo(self.path, self._records, self.num_bytes, locators, self.run)


class WriteParts(beam.DoFn):
    """Serialized examples -> PartInfo of the part files this bundle wrote under `temp_dir`, each
    rolled over once it holds `part_bytes` (memory is one record, plus 16 bytes per record with
    `locate`). `RunRecord`s (stable contents only) go to parts of their run: one open at a time,
    closed when the next run starts or at the target size, so a run's parts are its records cut
    as `plan_run_shards` cuts them whenever they arrive in order."""

    def __init__(self, temp_dir: str, compression_type: str, part_bytes: int, locate: bool = False) -> None:
        if locate and compression_type != CompressionTypes.UNCOMPRESSED:
            raise ValueError("parts read back by offset (stable contents) must be uncompressed")
        self._temp_dir = temp_dir
        self._compression_type = compression_type
        self._part_bytes = part_bytes
        self._locate = locate
        self._photos: _OpenPart | None = None
        self._run: _OpenPart | None = None

    def start_bundle(self) -> None:
        self._photos = self._run = None

    def process(self, element: bytes | RunRecord) -> Iterator[PartInfo]:
        if isinstance(element, tuple):
            if not self._locate:
                raise ValueError("run records are written for stable contents only")
            run, position, record = element
            if self._run is not None and self._run.run != run:
                yield self._run.close()
                self._run = None
            if self._run is None:
                self._run = _OpenPart(self._temp_dir, self._compression_type, True, run)
            self._run.write(record, position)
            if self._run.num_bytes >= self._part_bytes:
                yield self._run.close()
                self._run = None
            return
        if self._photos is None:
            self._photos = _OpenPart(self._temp_dir, self._compression_type, self._locate)
        self._photos.write(element)
        if self._photos.num_bytes >= self._part_bytes:
            yield self._photos.close()
            self._photos = None

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for part in (self._photos, self._run):
            if part is not None:
                yield WindowedValue(part.close(), GlobalWindow().max_timestamp(), [GlobalWindow()])
        self._photos = self._run = None


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
            rename_into_place(spec.segments[0].part.path, final)
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

    def __enter__(self) -> _PartFiles:
        return self

    def __exit__(self, *unused: object) -> None:
        self.close()


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


Span = tuple[str, int, int]  # (part path, offset, frame size): one record's frame in a part


@dataclasses.dataclass(frozen=True)
class RunShard:
    """Stable shard `piece` of raster task `run` (for packed short pieces: the run and piece it
    starts with): `part` when one part file holds exactly its records' frames in order (then
    renamed, not copied), else those frames as `spans` to copy (kept only then: the layout is a
    side input of every assembler)."""

    run: str
    piece: int
    spans: tuple[Span, ...]
    part: str | None = None


def whole_part_of(spans: Sequence[Span], parts: dict[str, PartInfo]) -> str | None:
    """The part that is exactly these frames back to back, if one is."""
    path = spans[0][0]
    offset = 0
    for span_path, span_offset, size in spans:
        if span_path != path or span_offset != offset:
            return None
        offset += size
    return path if parts[path].num_records == len(spans) else None


# A run's piece shorter than this share of the target is packed with the next runs' short pieces
# (copied): a raster task of small chips (256 JPEG chips of 64x64: under 1 MB) would otherwise
# be a shard of its own, and a large raster thousands of them. Longer pieces stay shards of their
# own, renamed from their part when it holds them in order (a task of 256x256 RGB chips: ~50 MB).
PACKED_PIECE_FRACTION = 4


def plan_run_shards(parts: Sequence[PartInfo], part_bytes: int) -> list[RunShard]:
    """The stable shards of the run parts of one split, ordered by run then piece: each run's
    records in position order, cut after the record that brings a piece to `part_bytes` (WriteParts'
    rule), whichever parts and bundles the records arrived in. A run's last piece, when under
    part_bytes / PACKED_PIECE_FRACTION, is packed with the following runs' short last pieces, in
    run order, into shards cut by the same rule."""
    by_run: dict[str, list[PartInfo]] = collections.defaultdict(list)
    for part in parts:
        by_run[part.run].append(part)
    every_part = {part.path: part for part in parts}
    shards: list[RunShard] = []
    packed = _Piece()
    for run in sorted(by_run):
        # Equal positions only come from one task listed twice: identical chips, so any order of them gives the same bytes.
        entries = sorted((int(key), part.path, int(offset)) for part in by_run[run] for key, offset in part.located())
        piece, pieces = _Piece(), 0
        for key, path, offset in entries:
            if piece.add(run, pieces, (path, offset, frame_size(key))) >= part_bytes:
                shards.append(piece.shard(every_part))
                piece, pieces = _Piece(), pieces + 1
        if not piece.spans:
            continue
        if piece.size >= part_bytes // PACKED_PIECE_FRACTION:
            shards.append(piece.shard(every_part))
            continue
        for span in piece.spans:
            if packed.add(run, pieces, span) >= part_bytes:
                shards.append(packed.shard(every_part))
                packed = _Piece()
    if packed.spans:
        shards.append(packed.shard(every_part))
    return shards


class _Piece:
    """The frames of one run shard being planned; named after the run and piece it starts with."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.size = 0
        self.first: tuple[str, int] = ("", 0)

    def add(self, run: str, piece: int, span: Span) -> int:
        if not self.spans:
            self.first = (run, piece)
        self.spans.append(span)
        self.size += span[2]
        return self.size

    def shard(self, parts: dict[str, PartInfo]) -> RunShard:
        part = whole_part_of(self.spans, parts)
        return RunShard(*self.first, () if part else tuple(self.spans), part)


@dataclasses.dataclass(frozen=True)
class StableLayout:
    """A split's stable shards: the run shards first (indices 0..), then `photo_shards` shards of
    the photos' records cut at `cuts`."""

    cuts: np.ndarray
    photo_shards: int
    runs: tuple[RunShard, ...]

    @property
    def total(self) -> int:
        return len(self.runs) + self.photo_shards


def stable_layout(parts: Sequence[PartInfo], num_shards: int, target_bytes: int) -> StableLayout:
    """The layout of a split from all its parts: its run shards (`plan_run_shards`), then the cut
    points of its photos' keys; photo shards only when there are photos, or nothing at all (one
    empty shard, so every split has a file)."""
    runs = plan_run_shards([part for part in parts if part.run], target_bytes)
    if runs and num_shards > 0:
        raise ValueError(f"raster run records cannot make exactly {num_shards} shards (write.writes_runs sends none then)")
    keys = [part.located()["key"].tobytes() for part in parts if not part.run]
    if keys or not runs:
        cuts = cut_points(keys, num_shards, target_bytes)
        return StableLayout(cuts, len(cuts) + 1, tuple(runs))
    return StableLayout(np.zeros(0, "<u8"), 0, tuple(runs))


def route_photo_part(part: PartInfo, layout: StableLayout) -> Iterator[tuple[int, tuple[str, bytes]]]:
    """`route_part` for the photos' parts; run parts have shards of their own."""
    return iter(()) if part.run else route_part(part, layout.cuts)


def copy_spans(spans: Iterable[Span], parts: _PartFiles, final: str, compression_type: str) -> None:
    """Write the frames `spans` name, in order, as the shard `final`."""
    if compression_type == CompressionTypes.UNCOMPRESSED:
        with open(final, "wb", buffering=0) as target:
            for span in spans:
                parts.copy(*span, target.fileno())
    else:
        with FileSystems.create(final, compression_type=compression_type) as compressed:
            for span in spans:
                compressed.write(parts.read(*span))


class AssembleRunShard(beam.DoFn):
    """(shard index, RunShard, shards in the split) -> the final shard's path: its part renamed
    when one holds it (or copied whole, compressed), else its spans copied."""

    def __init__(self, prefix: str, suffix: str, compression_type: str) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._compression_type = compression_type

    def process(self, element: tuple[int, RunShard, int]) -> Iterator[str]:
        index, shard, total = element
        final = shard_path(self._prefix, self._suffix, index, total)
        if shard.part is None:
            with _PartFiles() as parts:
                copy_spans(shard.spans, parts, final, self._compression_type)
        elif self._compression_type == CompressionTypes.UNCOMPRESSED:
            rename_into_place(shard.part, final)
        else:
            with FileSystems.open(shard.part, compression_type=CompressionTypes.UNCOMPRESSED) as source, \
                    FileSystems.create(final, compression_type=self._compression_type) as target:
                copy_whole(source, target)
        yield final


class AssembleSortedShard(beam.DoFn):
    """(photo shard index, [(part path, locators) | None]) -> the final shard's path, its records
    copied from the parts in key order (None: the seed that makes an empty shard exist); its
    place among the split's shards comes after the run shards (the StableLayout side input)."""

    def __init__(self, prefix: str, suffix: str, compression_type: str) -> None:
        self._prefix = prefix
        self._suffix = suffix
        self._compression_type = compression_type

    def process(self, element: tuple[int, Iterable[tuple[str, bytes] | None]], layout: StableLayout) -> Iterator[str]:
        index, pieces = element
        final = shard_path(self._prefix, self._suffix, len(layout.runs) + index, layout.total)
        with _PartFiles() as parts:
            copy_spans(ordered_spans((piece for piece in pieces if piece is not None), parts), parts, final, self._compression_type)
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
    else equal-size shards of at most `target_bytes`; RunRecords (by size only) as their runs' own
    shards, first. Needs a filesystem with cheap reads by offset (local or mounted; on object
    stores every record would be a ranged read)."""

    def __init__(self, prefix: str, suffix: str, temp_dir: str, compression_type: str, num_shards: int, target_bytes: int) -> None:
        if "://" in prefix or "://" in temp_dir:
            raise ValueError(f"stable shards are written to local or mounted filesystems, not {prefix}")
        super().__init__(prefix, suffix, temp_dir, compression_type, num_shards, target_bytes)

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        parts = examples | "WriteParts" >> beam.ParDo(WriteParts(self._temp_dir, CompressionTypes.UNCOMPRESSED, self._target_bytes, locate=True))
        layout = (
            parts
            | "AllParts" >> beam.combiners.ToList()
            | "Layout" >> beam.Map(stable_layout, self._num_shards, self._target_bytes)
        )
        layout_side = beam.pvalue.AsSingleton(layout)
        seeds = layout | "EveryShard" >> beam.FlatMap(lambda plan: ((index, None) for index in range(plan.photo_shards)))
        photo_finals = (
            (parts | "Route" >> beam.FlatMap(route_photo_part, layout_side), seeds)
            | "Pieces" >> beam.Flatten()
            | "ByShard" >> beam.GroupByKey()
            | "Assemble" >> beam.ParDo(AssembleSortedShard(self._prefix, self._suffix, self._compression_type), layout_side)
        )
        run_finals = (
            layout
            | "RunShards" >> beam.FlatMap(lambda plan: ((index, shard, plan.total) for index, shard in enumerate(plan.runs)))
            | "AssembleRuns" >> beam.ParDo(AssembleRunShard(self._prefix, self._suffix, self._compression_type))
        )
        finals = (photo_finals, run_finals) | "Finals" >> beam.Flatten()
        return self._remove_parts(examples.pipeline, finals)


def unique_temp_dir(output: str, split: str) -> str:
    """A temp dir under `output` named like Beam's (`beam-temp-*`), so `--overwrite` clears one an
    interrupted build left behind."""
    return FileSystems.join(output, f"beam-temp-{split}-{uuid.uuid4().hex}")

