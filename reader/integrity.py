"""`reader.verify` (this module): scan shard files and name the shard and byte offset of the first bad record.

Why a separate scanner: TensorFlow's TFRecordDataset reports corruption as
"corrupted record at 5092" without saying which file, and `ignore_errors()` drops the error
and the count together. This module walks the TFRecord framing itself, in Python + NumPy so it
runs wherever the reader runs (no TensorFlow ops, no Beam):

    uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

(all little-endian). For a GZIP dataset the same framing is checked on the decompressed
stream and offsets are offsets into that stream. Once framing is lost nothing after the bad
record can be trusted, so a shard's report stops at its first bad record; everything after
it counts as lost. TensorFlow's reader behaves the same way (`on_corrupt='skip'` in
`reader.load` loses exactly the records this scan reports as lost).
"""

from __future__ import annotations

import dataclasses
import gzip
import struct
import zlib
from collections.abc import Callable
from typing import IO, Any

from . import crc32c, fileio, shard_index
from .metadata import COMPRESSION_GZIP, DatasetInfo, join, load_info

_HEADER = 12  # uint64 length + uint32 crc
_FOOTER = 4


@dataclasses.dataclass(frozen=True)
class ShardReport:
    """What scanning one shard found. `error is None` means every listed record is intact."""

    split: str
    file: str  # full path of the shard
    expected_records: int  # from cropshard.json
    good_records: int  # intact records before the first problem
    error: str | None = None
    offset: int | None = None  # byte offset of the first bad record (decompressed stream for gzip)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def lost_records(self) -> int:
        """Records listed in the metadata that a reader cannot get from this shard."""
        return max(self.expected_records - self.good_records, 0)

    def describe(self) -> str:
        if self.ok:
            return f"{self.file}: ok ({self.good_records} records)"
        if 0 <= self.expected_records < self.good_records:  # every record readable, more of them than listed
            return (f"{self.file}: {self.error} ({self.good_records - self.expected_records} more: another file copied over it,"
                    " or an edited cropshard.json)")
        where = f" at byte offset {self.offset}" if self.offset is not None else ""
        return (
            f"{self.file}: {self.error}{where} (record index {self.good_records});"
            f" {self.good_records} of {self.expected_records} records readable, {self.lost_records} lost"
        )


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    """All shards scanned by `verify`; `ok` only if every shard is intact and complete."""

    path: str
    shards: tuple[ShardReport, ...]
    crc_implementation: str

    @property
    def ok(self) -> bool:
        return all(shard.ok for shard in self.shards)

    @property
    def bad_shards(self) -> tuple[ShardReport, ...]:
        return tuple(shard for shard in self.shards if not shard.ok)

    @property
    def lost_records(self) -> int:
        return sum(shard.lost_records for shard in self.shards)

    def __str__(self) -> str:
        lines = [
            f"{self.path}: {len(self.shards)} shards, {len(self.bad_shards)} bad, {self.lost_records} records lost"
        ]
        lines += [shard.describe() for shard in self.bad_shards]
        return "\n".join(lines)


def _read_exactly(stream: IO[bytes], count: int) -> bytes:
    chunks = []
    while count > 0:
        chunk = stream.read(count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def scan_records(
    stream: IO[bytes],
    *,
    check_data: bool = True,
    force_python_crc: bool = False,
    on_record: Callable[[int, int], None] | None = None,
) -> tuple[int, str | None, int | None]:
    """Walk TFRecord framing on a binary stream.

    Returns (number of intact records, error or None, byte offset of the first bad record or None).
    `check_data=False` skips the data CRC (framing and length CRC only) for a faster pass.
    `on_record(offset, size)` is called for each intact record (what a shard index lists).
    """
    count = 0
    offset = 0
    while True:
        try:
            header = _read_exactly(stream, _HEADER)
        except (OSError, EOFError, zlib.error) as err:
            return count, f"unreadable ({type(err).__name__}: {err})", offset
        if not header:
            return count, None, None
        if len(header) < _HEADER:
            return count, f"truncated record header ({len(header)} of {_HEADER} bytes)", offset
        length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
        if crc32c.masked_crc32c(length_bytes, force_python=force_python_crc) != length_crc:
            return count, "corrupted record length (length CRC mismatch)", offset
        (length,) = struct.unpack("<Q", length_bytes)
        try:
            body = _read_exactly(stream, length + _FOOTER)
        except (OSError, EOFError, zlib.error) as err:
            return count, f"unreadable ({type(err).__name__}: {err})", offset
        if len(body) < length + _FOOTER:
            return count, f"truncated record (needs {length + _FOOTER} bytes after the header, got {len(body)})", offset
        if check_data:
            (data_crc,) = struct.unpack("<I", body[length:])
            if crc32c.masked_crc32c(body[:length], force_python=force_python_crc) != data_crc:
                return count, "corrupted record data (data CRC mismatch)", offset
        if on_record is not None:
            on_record(offset, _HEADER + length + _FOOTER)
        count += 1
        offset += _HEADER + length + _FOOTER


def verify_shard(
    path: str,
    *,
    split: str = "",
    expected_records: int = -1,
    compression: str = "none",
    check_data: bool = True,
    index: str | None = None,
) -> ShardReport:
    """Scan one shard file; `expected_records` (from the metadata) also catches short shards, and
    `index` (the path of its record index file) is checked against the records found."""
    fs = fileio.get()
    if not fs.exists(path):
        return ShardReport(split, path, expected_records, 0, "shard file listed in cropshard.json is missing", None)
    spans: list[tuple[int, int]] = []
    with fs.open(path, "rb") as raw:
        stream: IO[Any] = gzip.GzipFile(fileobj=raw, mode="rb") if compression == COMPRESSION_GZIP else raw
        good, error, offset = scan_records(stream, check_data=check_data, on_record=lambda start, size: spans.append((start, size)))
    if error is None and 0 <= expected_records != good:
        error = f"has {good} records but cropshard.json lists {expected_records}"
    if error is None and index is not None:
        error = _index_error(index, spans)
    return ShardReport(split, path, expected_records, good, error, offset)


def _index_error(index: str, spans: list[tuple[int, int]]) -> str | None:
    fs = fileio.get()
    if not fs.exists(index):
        return f"its index file {index} listed in cropshard.json is missing"
    with fs.open(index, "r") as handle:
        problem = shard_index.index_problem(handle.read(), spans)
    return f"{problem} ({index})" if problem else None


def verify(path: str, split: str | None = None, *, check_data: bool = True) -> VerifyReport:
    """Scan every shard of `split` (all splits if None) of the dataset at `path`.

    Reads every byte once, so it costs about one epoch of I/O; run it before training on data
    you do not trust, or after `reader.load(..., on_corrupt='skip')` reported losses to learn
    exactly where they are.
    """
    info: DatasetInfo = load_info(path)
    names = [split] if split is not None else sorted(info.splits)
    reports = []
    for name in names:
        split_info = info.split(name)
        for shard in split_info.shards:
            reports.append(
                verify_shard(
                    join(path, shard.file),
                    split=name,
                    expected_records=shard.num_records,
                    compression=info.compression,
                    check_data=check_data,
                    index=join(path, shard.index) if shard.index else None,
                )
            )
    return VerifyReport(path, tuple(reports), crc32c.implementation())

