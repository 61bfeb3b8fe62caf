"""Corrupt, truncated and short shards: reported by file name, or skipped and counted.

TensorFlow's own DataLossError names only a byte offset, and `ignore_errors` alone would hide
the loss. So every shard is read as exactly the number of records cropshard.json lists for
it: its readable records, then, for any it failed to deliver, a marker that names the shard.
With `on_corrupt='raise'` the marker is one element that fails, when pulled, with an error
naming the shard (no per-record check on intact data); with 'skip' it is marker records that a
filter drops and counts per shard (`CorruptionReport`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

# A marker stands in for each record a shard failed to deliver; it cannot be a valid Example
# (protobuf field number 0 is illegal) so it can never be confused with data.
_MARKER_PREFIX = b"\x00cropshard-unreadable-record:"
_MARKER_INDEX_DIGITS = 8


class CorruptionReport:
    """Counts what `load(..., on_corrupt='skip')` skipped, per shard file.

    Pass one to `load` and read it while or after iterating; the counts are cumulative over
    every iteration (epoch) of the dataset. A corrupt record makes the rest of its shard
    unreadable (TFRecord framing cannot be resynchronised), so "skipped" counts all records of
    that shard from the first bad one on; `reader.verify` gives the exact byte offset.
    """

    def __init__(self) -> None:
        self._files: tuple[str, ...] = ()
        self._counts: Any = None

    def _bind(self, files: Sequence[str]) -> Any:
        import tensorflow as tf

        self._files = tuple(files)
        self._counts = tf.Variable(tf.zeros([max(len(files), 1)], tf.int64), trainable=False, name="cropshard_skipped")
        return self._counts

    @property
    def skipped_records(self) -> int:
        return 0 if self._counts is None else int(self._counts.numpy().sum())

    @property
    def by_shard(self) -> dict[str, int]:
        """Shard file -> records skipped, for shards that lost any."""
        if self._counts is None:
            return {}
        return {name: int(count) for name, count in zip(self._files, self._counts.numpy(), strict=False) if count}

    def __repr__(self) -> str:
        return f"CorruptionReport(skipped_records={self.skipped_records}, by_shard={self.by_shard})"


def marker(index: int, name: str) -> bytes:
    """The stand-in record for shard number `index` (of the split) named `name`."""
    return _MARKER_PREFIX + b"%0*d:" % (_MARKER_INDEX_DIGITS, index) + name.encode("utf-8")


def exactly_listed(records: Any, num_records: Any, shard_marker: Any, on_corrupt: str) -> Any:
    """A shard's records, then markers for any it did not deliver: always `num_records` elements."""
    import tensorflow as tf

    plain = tf.autograph.experimental.do_not_convert
    if on_corrupt == "raise":
        missing = tf.data.Dataset.from_tensors(shard_marker).map(plain(_fail_unreadable_shard))
    else:
        missing = tf.data.Dataset.from_tensors(shard_marker).repeat()
    return records.ignore_errors().concatenate(missing).take(num_records)


def _fail_unreadable_shard(shard_marker: Any) -> Any:
    """Raise, when pulled, the error naming the shard whose records ran out early."""
    import tensorflow as tf

    shard = tf.strings.substr(shard_marker, len(_MARKER_PREFIX) + _MARKER_INDEX_DIGITS + 1, -1)
    check = tf.debugging.Assert(
        tf.strings.length(shard_marker) < 0,  # always false, but only known when it runs
        [
            "cropshard reader: shard file is corrupted, truncated or unreadable (it yielded fewer records"
            " than cropshard.json lists; reader.verify(path) gives the byte offset,"
            " on_corrupt='skip' reads past it):",
            shard,
        ],
        summarize=1,
    )
    with tf.control_dependencies([check]):
        return tf.identity(shard_marker)


def skip_filter(report: CorruptionReport, names: Sequence[str]) -> Any:
    """A `Dataset.filter` predicate that drops markers, counting them per shard in `report`."""
    import tensorflow as tf

    counts = report._bind(names)
    prefix_len = len(_MARKER_PREFIX)

    @tf.autograph.experimental.do_not_convert
    def keep(record: Any) -> Any:
        def skip() -> Any:
            index = tf.strings.to_number(tf.strings.substr(record, prefix_len, _MARKER_INDEX_DIGITS), tf.int64)
            updated = counts.assign_add(tf.one_hot(index, tf.shape(counts)[0], dtype=tf.int64))
            shard = tf.strings.substr(record, prefix_len + _MARKER_INDEX_DIGITS + 1, -1)

            def warn() -> Any:  # once per shard: on its first skipped record
                tf.print("cropshard reader: skipping unreadable records of shard", shard, output_stream=sys.stderr)
                return tf.constant(False)

            return tf.cond(tf.gather(updated, index) == 1, warn, lambda: tf.constant(False))

        is_marker = tf.strings.substr(record, 0, prefix_len) == _MARKER_PREFIX
        return tf.cond(is_marker, skip, lambda: tf.constant(True))

    return keep
