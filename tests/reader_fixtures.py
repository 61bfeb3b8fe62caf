"""Hand-built cropshard datasets for the reader tests.

This is also the executable reference for what the writer must produce:

    DIR/<split>-SSSSS-of-NNNNN.tfrecord[.gz]  tf.train.Examples from schema.encode_example
    DIR/labels.txt                              one label name per line, line i = label id i
    DIR/rejected.jsonl                          one JSON object per rejected input
    DIR/cropshard.json                          DatasetInfo.to_json(), written last (the build also writes
                                                shard indexes, TFDS and Croissant files: tests/pipeline/test_other_readers.py)

Pixels are kept next to each record (`Stored.pixels`) so tests can compare what the reader
returns with what was stored. Pillow is used here only (never in reader/).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import sys
from collections.abc import Sequence

import numpy as np

try:
    from cropshard import reader  # noqa: F401
except ImportError:  # running pytest without the repository root on sys.path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cropshard.reader import schema  # noqa: E402
from cropshard.reader.metadata import (  # noqa: E402
    COMPRESSION_GZIP,
    COMPRESSION_NONE,
    INFO_FILENAME,
    LABELS_FILENAME,
    REJECTED_FILENAME,
    DatasetInfo,
    ShardInfo,
    SplitInfo,
)
from cropshard.reader.version import __version__  # noqa: E402

LABELS = ("cat", "dog", "fish")


@dataclasses.dataclass(frozen=True)
class Stored:
    """One example as written: its record, and the uint8 HWC pixels a decoder must return."""

    record: schema.ImageRecord
    pixels: np.ndarray


def synthetic_pixels(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: compressible like a photo, but every pixel distinct enough to find windows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(yy * (3 + c) + xx * (5 + 2 * c) + 40 * c) % 256 for c in range(channels)], axis=-1)
    noise = rng.integers(0, 32, size=(height, width, channels))
    return ((base + noise) % 256).astype(np.uint8)


def encode_pixels(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    if fmt == schema.FORMAT_RAW:
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode)
    buffer = io.BytesIO()
    if fmt == schema.FORMAT_JPEG:
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def decoded_pixels(encoded: bytes, fmt: str, shape: Sequence[int]) -> np.ndarray:
    """What TensorFlow's decoders make of `encoded` (JPEG is lossy: compare with this, not the
    source), with the accurate IDCT the writer and `reader.load` use by default."""
    if fmt == schema.FORMAT_RAW:
        return np.frombuffer(encoded, np.uint8).reshape(shape)
    import tensorflow as tf

    channels = int(shape[2])
    if fmt == schema.FORMAT_JPEG:
        return tf.io.decode_jpeg(encoded, channels=channels, dct_method="INTEGER_ACCURATE").numpy()
    return tf.io.decode_png(encoded, channels=channels).numpy()


def make_example(
    pixels: np.ndarray, fmt: str, label: int, filename: str, crop_box: tuple[int, int, int, int] | None = None
) -> Stored:
    encoded = encode_pixels(pixels, fmt)
    height, width, channels = pixels.shape
    record = schema.ImageRecord(
        encoded=encoded,
        format=fmt,
        height=height,
        width=width,
        channels=channels,
        label=label,
        label_text=LABELS[label] if label >= 0 else "",
        filename=filename,
        crop_box=crop_box or (0, 0, height, width),
        sha256=hashlib.sha256(filename.encode()).hexdigest(),
    )
    return Stored(record, decoded_pixels(encoded, fmt, pixels.shape))


def shard_name(split: str, index: int, count: int, compression: str) -> str:
    suffix = ".tfrecord.gz" if compression == COMPRESSION_GZIP else ".tfrecord"
    return f"{split}-{index:05d}-of-{count:05d}{suffix}"


def write_dataset(
    path: str,
    splits: dict[str, list[Stored]],
    *,
    shards: int | dict[str, int] = 3,
    compression: str = COMPRESSION_NONE,
    encoding: str,
    channels: int,
    image_shape: tuple[int, int, int] | None,
    crop: dict,
    write_info: bool = True,
) -> DatasetInfo:
    """Write shards (records dealt round-robin), labels.txt, rejected.jsonl and, last, cropshard.json."""
    import tensorflow as tf

    os.makedirs(path, exist_ok=True)
    split_infos = {}
    for split, examples in splits.items():
        count = shards if isinstance(shards, int) else shards[split]
        shard_infos = []
        for index in range(count):
            name = shard_name(split, index, count, compression)
            options = tf.io.TFRecordOptions(compression_type="GZIP" if compression == COMPRESSION_GZIP else "")
            members = examples[index::count]
            with tf.io.TFRecordWriter(os.path.join(path, name), options=options) as writer:
                for example in members:
                    writer.write(schema.encode_example(example.record))
            shard_infos.append(ShardInfo(name, len(members), os.path.getsize(os.path.join(path, name))))
        split_infos[split] = SplitInfo(split, len(examples), tuple(shard_infos))
    formats = sorted({example.record.format for examples in splits.values() for example in examples})
    num = sum(len(examples) for examples in splits.values())
    info = DatasetInfo(
        cropshard_version=__version__,
        encoding=encoding,
        image_formats=tuple(formats),
        channels=channels,
        image_shape=image_shape,
        crop=crop,
        labels=LABELS,
        splits=split_infos,
        compression=compression,
        num_inputs=num,
        num_images_written=num,
        rejected={},
        schema=schema.schema_description(),
        command_line=("cropshard", "build", "(hand-built by tests/reader_fixtures.py)"),
        created="2026-01-01T00:00:00Z",
    )
    with open(os.path.join(path, LABELS_FILENAME), "w", encoding="utf-8") as handle:
        handle.write("".join(label + "\n" for label in LABELS))
    with open(os.path.join(path, REJECTED_FILENAME), "w", encoding="utf-8"):
        pass
    if write_info:
        with open(os.path.join(path, INFO_FILENAME), "w", encoding="utf-8") as handle:
            handle.write(info.to_json())
    return info


def precropped_dataset(
    path: str,
    fmt: str = schema.FORMAT_RAW,
    *,
    size: tuple[int, int] = (24, 20),
    channels: int = 3,
    counts: dict[str, int] | None = None,
    shards: int | dict[str, int] = 3,
    compression: str = COMPRESSION_NONE,
) -> dict[str, list[Stored]]:
    """A pre-cropped (strategy 'center') dataset of fixed-size images; returns what was stored per split."""
    counts = counts or {"train": 30, "validation": 8}
    splits: dict[str, list[Stored]] = {}
    for split_number, (split, count) in enumerate(sorted(counts.items())):
        splits[split] = [
            make_example(
                synthetic_pixels(size[0], size[1], channels, seed=1000 * split_number + i),
                fmt,
                label=i % len(LABELS),
                filename=f"{split}/img_{i:04d}.jpg",
                crop_box=(i % 7, i % 5, size[0], size[1]),
            )
            for i in range(count)
        ]
    write_dataset(
        path,
        splits,
        shards=shards,
        compression=compression,
        encoding=fmt,
        channels=channels,
        image_shape=(size[0], size[1], channels),
        crop={"strategy": "center", "size": list(size)},
    )
    return splits


def full_image_dataset(
    path: str,
    fmts: Sequence[str] = (schema.FORMAT_JPEG,),
    *,
    sizes: Sequence[tuple[int, int]] = ((40, 56), (64, 48), (33, 80), (20, 26), (48, 48)),
    channels: int = 3,
    counts: dict[str, int] | None = None,
    shards: int | dict[str, int] = 3,
    compression: str = COMPRESSION_NONE,
) -> dict[str, list[Stored]]:
    """A full-image (strategy 'none') dataset of varying sizes; formats cycle through `fmts`."""
    counts = counts or {"train": 20, "validation": 5}
    splits: dict[str, list[Stored]] = {}
    for split_number, (split, count) in enumerate(sorted(counts.items())):
        examples = []
        for i in range(count):
            height, width = sizes[i % len(sizes)]
            fmt = fmts[i % len(fmts)]
            pixels = synthetic_pixels(height, width, channels, seed=5000 + 1000 * split_number + i)
            examples.append(make_example(pixels, fmt, label=i % len(LABELS), filename=f"{split}/photo_{i:04d}.{fmt}"))
        splits[split] = examples
    write_dataset(
        path,
        splits,
        shards=shards,
        compression=compression,
        encoding="original" if len(fmts) > 1 else fmts[0],
        channels=channels,
        image_shape=None,
        crop={"strategy": "none"},
    )
    return splits


def by_filename(examples: Sequence[Stored]) -> dict[str, Stored]:
    return {example.record.filename: example for example in examples}
