"""The read stage of `reader.load`: shard files -> this worker's stream of serialized records.

1. cropshard.json names every shard with its record count, so nothing is globbed: a missing
   file is reported by name before anything is read, and gs:// needs no listing per shard.
2. Multi-worker sharding happens first, on the fixed metadata order, so workers agree on the
   partition even without a seed (`assign_files`).
3. The worker's files are shuffled with the seed and read with a parallel `interleave` of
   `TFRecordDataset`s, each capped/padded to its listed count so that a damaged shard is named
   (corruption.py).
4. Records are shuffled as serialized strings (cheap to move).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from . import corruption, fileio
from .config import ReadConfig
from .metadata import COMPRESSION_GZIP, DatasetError, ShardInfo, join

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FileAssignment:
    """The shard files (indices into the split's list) one worker reads, and how it shares them."""

    files: tuple[int, ...]
    by_record: bool  # True: every worker reads every file in a fixed order and keeps every n-th record


def assign_files(num_files: int, workers: int, worker: int) -> FileAssignment:
    """Whole files per worker (`files[worker::workers]`) when there are enough, else by record.

    With fewer files than workers every worker reads every file and keeps every workers-th
    record: correct, but each worker pays the full I/O (write more shards than you have workers).
    """
    if workers > 1 and num_files < workers:
        return FileAssignment(tuple(range(num_files)), by_record=True)
    return FileAssignment(tuple(range(worker, num_files, workers)), by_record=False)


def check_shards_exist(path: str, shards: Sequence[ShardInfo]) -> None:
    """One listing for the whole directory (one request on gs://), then name what is missing."""
    fs = fileio.get()
    flat = [shard.file for shard in shards if "/" not in shard.file]
    present = set(fs.listdir(path)) if flat else set()
    missing = [shard.file for shard in shards if shard.file not in present and not fs.exists(join(path, shard.file))]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DatasetError(
            f"shard file {join(path, missing[0])!r}{more} listed in cropshard.json is missing"
            " (the dataset was moved or partly deleted)"
        )


def check_shard_sizes(names: Sequence[str], shards: Sequence[ShardInfo], on_corrupt: str) -> None:
    """DatasetError naming a shard file whose size is not the one cropshard.json lists.

    Each shard is read as its listed record count, so a longer file (another split's or
    dataset's shard copied over it) would be cut without a word: refused under either
    `on_corrupt`. A shorter one is damage: refused here under 'raise' (before any record is
    read), read as far as it goes under 'skip'. One stat per file, in parallel for remote storage.
    """
    from concurrent.futures import ThreadPoolExecutor

    fs = fileio.get()
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(names)))) as pool:
        sizes = list(pool.map(fs.size, names))
    for name, shard, size in zip(names, shards, sizes, strict=True):
        if size > shard.num_bytes:
            raise DatasetError(
                f"shard file {name!r} is {size} bytes, {size - shard.num_bytes} more than cropshard.json lists for its"
                f" {shard.num_records} records: it is not the file the build wrote (another split's or dataset's shard"
                " copied over it?); rebuild or restore it. reader.verify(path) checks every shard"
            )
        if size < shard.num_bytes and on_corrupt == "raise":
            raise DatasetError(
                f"shard file {name!r} is {size} bytes, cropshard.json lists {shard.num_bytes}: cut short (an interrupted"
                " copy?) or replaced. reader.verify(path) names its first bad record; on_corrupt='skip' reads the records"
                " it holds"
            )


def shuffle_depth(buffer: int, file_records: Sequence[int], sharing_workers: int = 1) -> int:
    """The shuffle buffer: `buffer`, but no deeper than the records this worker reads (its files'
    records, split `sharing_workers` ways when it shares them by record). A deeper buffer of a
    repeated stream holds several copies of a record: in a stretch of one pass's length some came
    6 times, others once."""
    return max(1, min(buffer, sum(file_records) // sharing_workers))


def record_stream(path: str, shards: Sequence[ShardInfo], compression: str, read: ReadConfig) -> Any:
    """This worker's serialized records of `shards`: sharded, interleaved, checked, shuffled."""
    import tensorflow as tf

    fs = fileio.get()
    names = [join(path, shard.file) for shard in shards]
    workers, worker = read.workers
    share = assign_files(len(names), workers, worker)
    if share.by_record:
        log.info("%d shard files for %d workers: sharding by record (every worker reads every file)", len(names), workers)
    keep = share.files
    if compression != COMPRESSION_GZIP:  # a gzip file's size depends on its compressor, not only its records
        check_shard_sizes([names[i] for i in keep], [shards[i] for i in keep], read.on_corrupt)
    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([fs.tf_path(names[i]) for i in keep], tf.string, shape=[len(keep)]),
            tf.constant([shards[i].num_records for i in keep], tf.int64, shape=[len(keep)]),
            tf.constant([corruption.marker(i, names[i]) for i in keep], tf.string, shape=[len(keep)]),
        )
    )
    if read.shuffle and not share.by_record and len(keep) > 1:
        files = files.shuffle(len(keep), seed=read.seed, reshuffle_each_iteration=True)
    if read.repeat and read.shuffle:
        files = files.repeat()  # passes stream back to back; unshuffled, each pass is repeated whole (below)
    tf_compression = "GZIP" if compression == COMPRESSION_GZIP else ""

    @tf.autograph.experimental.do_not_convert
    def read_shard(filename: Any, num_records: Any, shard_marker: Any) -> Any:
        records = tf.data.TFRecordDataset(filename, compression_type=tf_compression, buffer_size=read.read_buffer_bytes)
        return corruption.exactly_listed(records, num_records, shard_marker, read.on_corrupt)

    records = files.interleave(
        read_shard,
        cycle_length=max(1, min(read.cycle_length, len(keep))),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True if share.by_record else read.ordered,
    )
    if share.by_record:
        records = records.shard(workers, worker)
    if read.on_corrupt == "skip":
        records = records.filter(corruption.skip_filter(read.corruption_report or corruption.CorruptionReport(), names))
    if read.shuffle:
        depth = shuffle_depth(read.shuffle_buffer, [shards[i].num_records for i in keep], workers if share.by_record else 1)
        records = records.shuffle(depth, seed=read.seed, reshuffle_each_iteration=True)
    elif read.repeat:
        records = records.repeat()  # pass after pass: each record once per pass
    return records
