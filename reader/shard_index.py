"""Record index files next to each shard, in the format of DALI's and the `tfrecord` package's
`tfrecord2idx`: one text line per record, `<byte offset of its header> <bytes of header + data +
footer>`. DALI's `fn.readers.tfrecord(index_path=...)` and `tfrecord.reader.tfrecord_loader(...,
index_path=...)` need them to split shards between workers; without them the `tfrecord` package's
workers each read every record.

The writer makes them from the same framing scan that counts a shard's records, so an index always
describes its shard file as written. For gzip shards the offsets are into the decompressed stream,
which is what the `tfrecord` package seeks in with `compression_type="gzip"`; DALI reads no gzip
shards. Pure Python, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

INDEX_SUFFIX = ".idx"


def index_file_name(shard_file: str) -> str:
    """`train-00000-of-00002.tfrecord` -> `train-00000-of-00002.tfrecord.idx`."""
    return shard_file + INDEX_SUFFIX


def format_index(spans: Sequence[tuple[int, int]]) -> str:
    """(offset, size) per record -> the index file's text."""
    return "".join(f"{offset} {size}\n" for offset, size in spans)


def parse_index(text: str) -> list[tuple[int, int]]:
    """The index file's text -> (offset, size) per record; ValueError names the first bad line."""
    spans = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) != 2 or not all(field.isdigit() for field in fields):
            raise ValueError(f"line {number} is not '<offset> <size>': {line[:80]!r}")
        spans.append((int(fields[0]), int(fields[1])))
    return spans


def index_problem(index_text: str, spans: Sequence[tuple[int, int]]) -> str | None:
    """None if the index lists exactly the records `spans` found in the shard, else what differs."""
    try:
        listed = parse_index(index_text)
    except ValueError as err:
        return f"index file is malformed ({err})"
    if len(listed) != len(spans):
        return f"index file lists {len(listed)} records, the shard has {len(spans)}"
    for number, (got, want) in enumerate(zip(listed, spans, strict=True)):
        if got != want:
            return f"index entry {number} is offset {got[0]} size {got[1]}, the record is at offset {want[0]} size {want[1]}"
    return None
