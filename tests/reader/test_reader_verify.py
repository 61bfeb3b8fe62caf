"""Corrupt, truncated and short shards: errors name the shard, skip counts, verify finds the offset."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct

import numpy as np
import pytest

from tests import reader_fixtures as fx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from cropshard import reader  # noqa: E402
from cropshard.reader import crc32c, schema  # noqa: E402
from cropshard.reader.metadata import DatasetError  # noqa: E402

SHARD = "train-00001-of-00003.tfrecord"


# PNG goes through the batched parse_example path, raw through the per-record decode_raw path:
# both must name the damaged shard.
@pytest.fixture(scope="module", params=[schema.FORMAT_PNG, schema.FORMAT_RAW])
def clean(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[str, dict]:
    path = str(tmp_path_factory.mktemp("clean"))
    return path, fx.precropped_dataset(path, request.param, counts={"train": 18}, shards=3)


@pytest.fixture()
def copy(clean: tuple[str, dict], tmp_path: os.PathLike) -> str:
    target = str(tmp_path / "ds")
    shutil.copytree(clean[0], target)
    return target


def record_offsets(data: bytes) -> list[int]:
    """Start offset of every record in an intact TFRecord byte string."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        pos += 16 + length
    return offsets


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def read_all(path: str, **kwargs: object) -> int:
    return sum(len(batch[0]) for batch in reader.as_numpy(path, batch_size=4, **kwargs))


def test_clean_dataset_verifies(clean: tuple[str, dict]) -> None:
    report = reader.verify(clean[0])
    assert report.ok and report.lost_records == 0
    assert len(report.shards) == 3 and sum(s.good_records for s in report.shards) == 18
    assert reader.verify(clean[0], "train", check_data=False).ok


def test_corrupt_record_error_names_the_shard_and_verify_names_the_offset(copy: str) -> None:
    shard = os.path.join(copy, SHARD)
    with open(shard, "rb") as handle:
        offsets = record_offsets(handle.read())
    assert len(offsets) == 6
    flip_byte(shard, offsets[3] + 12 + 30)  # inside record 3's data

    with pytest.raises(tf.errors.OpError, match=SHARD):
        read_all(copy)

    report = reader.verify(copy, "train")
    assert not report.ok and [s.file for s in report.bad_shards] == [shard]
    bad = report.bad_shards[0]
    assert (bad.offset, bad.good_records, bad.lost_records) == (offsets[3], 3, 3)
    assert "data CRC mismatch" in bad.error and f"byte offset {offsets[3]}" in str(report)
    assert re.search(f"{SHARD}.*byte offset {offsets[3]}", bad.describe())


def test_skip_drops_and_counts_what_verify_reports_lost(copy: str) -> None:
    shard = os.path.join(copy, SHARD)
    with open(shard, "rb") as handle:
        offsets = record_offsets(handle.read())
    flip_byte(shard, offsets[1] + 4)  # the length CRC of record 1

    counted = reader.CorruptionReport()
    images, _, meta = [], [], []
    for batch in reader.as_numpy(copy, batch_size=4, on_corrupt="skip", corruption_report=counted, with_metadata=True):
        images.extend(batch[0])
        meta.extend(batch[2]["filename"])
    lost = reader.verify(copy, "train").lost_records
    assert lost == 5 and len(images) == 18 - lost
    assert counted.skipped_records == lost and counted.by_shard == {shard: lost}
    assert len(set(meta)) == len(meta)  # nothing read twice
    assert "length CRC" in reader.verify(copy, "train").bad_shards[0].error


def test_truncated_shard(copy: str) -> None:
    shard = os.path.join(copy, SHARD)
    with open(shard, "rb") as handle:
        data = handle.read()
    offsets = record_offsets(data)
    with open(shard, "wb") as handle:
        handle.write(data[: offsets[4] + 20])  # cut inside record 4
    with pytest.raises(DatasetError, match=f"{SHARD}.* is {offsets[4] + 20} bytes, cropshard.json lists {len(data)}: cut short"):
        read_all(copy)  # named by its size before a record is read
    bad = reader.verify(copy, "train").bad_shards[0]
    assert bad.offset == offsets[4] and bad.good_records == 4 and "truncated" in bad.error


def test_shard_shorter_than_its_metadata_is_named(copy: str) -> None:
    """Cut exactly at a record boundary: TensorFlow sees no error at all, the count check does."""
    shard = os.path.join(copy, SHARD)
    with open(shard, "rb") as handle:
        data = handle.read()
    with open(shard, "wb") as handle:
        handle.write(data[: record_offsets(data)[5]])
    with pytest.raises(DatasetError, match=f"{SHARD}.*cut short"):
        read_all(copy)
    counted = reader.CorruptionReport()
    assert read_all(copy, on_corrupt="skip", corruption_report=counted) == 17
    assert counted.skipped_records == 1
    bad = reader.verify(copy, "train").bad_shards[0]
    assert "has 5 records but cropshard.json lists 6" in bad.error


@pytest.mark.parametrize("on_corrupt", ["raise", "skip"])
def test_a_shard_longer_than_listed_is_refused_not_cut(copy: str, on_corrupt: str) -> None:
    """Another split's longer shard copied over one of train's: every record is intact, so no
    read error ever came; the reader took the listed count and dropped the rest silently."""
    info = reader.info(copy)
    longest = max((shard for split in info.splits.values() for shard in split.shards), key=lambda s: s.num_bytes)
    target = min(info.split("train").shards, key=lambda s: s.num_bytes)
    assert longest.num_bytes > target.num_bytes
    shutil.copy(os.path.join(copy, longest.file), os.path.join(copy, target.file))
    with pytest.raises(DatasetError, match=f"{target.file}.* bytes, {longest.num_bytes - target.num_bytes} more than cropshard.json"
                                           f" lists for its {target.num_records} records: it is not the file the build wrote"):
        read_all(copy, on_corrupt=on_corrupt)


def test_corrupt_gzip_shard(tmp_path: os.PathLike) -> None:
    path = str(tmp_path)
    fx.precropped_dataset(path, schema.FORMAT_RAW, counts={"train": 12}, shards=2, compression="gzip")
    shard = os.path.join(path, "train-00000-of-00002.tfrecord.gz")
    with gzip.open(shard, "rb") as handle:
        plain = bytearray(handle.read())
    offsets = record_offsets(bytes(plain))
    plain[offsets[2] + 100] ^= 0xFF  # valid gzip, corrupt record inside
    with gzip.open(shard, "wb") as handle:
        handle.write(bytes(plain))
    with pytest.raises(tf.errors.OpError, match="train-00000-of-00002.tfrecord.gz"):
        read_all(path)
    bad = reader.verify(path).bad_shards[0]
    assert (bad.file, bad.offset, bad.good_records) == (shard, offsets[2], 2)

    other = os.path.join(path, "train-00001-of-00002.tfrecord.gz")
    with open(other, "rb") as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 0xFF  # broken deflate stream
    with open(other, "wb") as handle:
        handle.write(bytes(data))
    with pytest.raises(tf.errors.OpError, match="tfrecord.gz"):
        read_all(path)
    assert {s.file for s in reader.verify(path).bad_shards} == {shard, other}


def test_crc32c_numpy_fallback_matches_reference(monkeypatch: pytest.MonkeyPatch, copy: str) -> None:
    assert crc32c.crc32c(b"123456789", force_python=True) == 0xE3069283  # the standard check value
    assert crc32c.crc32c(b"", force_python=True) == 0
    rng = np.random.default_rng(0)
    for size in (1, 7, 1023, 1024, 2047, 2048, 2049, 4096 + 5, 150_529):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        expected = _bitwise_crc32c(data) if size < 5000 else crc32c.crc32c(data)
        assert crc32c.crc32c(data, force_python=True) == expected, size
    # The masked CRCs TensorFlow wrote into a real shard.
    with open(os.path.join(copy, SHARD), "rb") as handle:
        data = handle.read()
    (length,) = struct.unpack("<Q", data[:8])
    assert crc32c.masked_crc32c(data[:8], force_python=True) == struct.unpack("<I", data[8:12])[0]
    body = data[12 : 12 + length]
    assert crc32c.masked_crc32c(body, force_python=True) == struct.unpack("<I", data[12 + length : 16 + length])[0]
    # verify() without google-crc32c still finds the bad record.
    monkeypatch.setattr(crc32c, "_NATIVE", None)
    flip_byte(os.path.join(copy, SHARD), 16 + length + 12 + 50)
    report = reader.verify(copy, "train")
    assert report.crc_implementation == "numpy" and report.bad_shards[0].good_records == 1


def _bitwise_crc32c(data: bytes) -> int:
    """Textbook bit-at-a-time CRC-32C, independent of the module's tables."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
