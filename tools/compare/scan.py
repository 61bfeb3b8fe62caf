"""The geometry of every stored image of a split, read from the records (no pixels decoded), and the
source image sizes the coverage needs.

A full-image variant's records are whole oriented sources, so its boxes are the source sizes; the
other variants of the same comparison look their sources up there by the source file's SHA-256.
Sources no full-image variant holds are measured from their files when those are still where the
build read them (only their header is read); otherwise their size stays unknown.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping

from cropshard.reader import fileio, schema
from cropshard.reader.metadata import COMPRESSION_GZIP, DatasetInfo, join
from cropshard.tools.compare.coverage import StoredImage


@dataclasses.dataclass(frozen=True)
class SplitScan:
    """The stored images of one split grouped by source (SHA-256 of the source file), with its labels."""

    by_source: dict[str, list[StoredImage]]
    filenames: dict[str, str]  # source key -> the source path the build read
    labels: dict[str, int]  # source key -> label id (UNLABELED = -1)
    whole_sources: bool  # every record is a whole source image (crop strategy 'none')

    @property
    def num_records(self) -> int:
        return sum(len(images) for images in self.by_source.values())


_KEYS = (schema.CROP_BOX, schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH, schema.SOURCE_SHA256, schema.FILENAME, schema.LABEL)


def scan_split(path: str, info: DatasetInfo, split: str) -> SplitScan:
    """Every record of `split`, parsed for its geometry, source key, file name and label only."""
    import tensorflow as tf

    fs = fileio.get()
    files = [fs.tf_path(join(path, shard.file)) for shard in info.split(split).shards]
    spec = {key: value for key, value in schema.feature_spec().items() if key in _KEYS}
    records = tf.data.TFRecordDataset(files, compression_type="GZIP" if info.compression == COMPRESSION_GZIP else "")
    parsed = records.batch(512).map(lambda batch: tf.io.parse_example(batch, spec))
    by_source: dict[str, list[StoredImage]] = {}
    filenames: dict[str, str] = {}
    labels: dict[str, int] = {}
    for batch in parsed.as_numpy_iterator():
        rows = zip(batch[schema.CROP_BOX], batch[schema.IMAGE_HEIGHT], batch[schema.IMAGE_WIDTH], batch[schema.SOURCE_SHA256],
                   batch[schema.FILENAME], batch[schema.LABEL], strict=True)
        for box, height, width, sha, filename, label in rows:
            key = sha.decode("ascii")
            by_source.setdefault(key, []).append(StoredImage(tuple(int(v) for v in box), int(height), int(width)))
            filenames.setdefault(key, filename.decode("utf-8"))
            labels.setdefault(key, int(label))
    return SplitScan(by_source, filenames, labels, whole_sources=not info.is_precropped)


def whole_source_sizes(scans: Iterable[SplitScan]) -> dict[str, tuple[int, int]]:
    """Source key -> (height, width), from the scans of full-image variants (their boxes are whole sources)."""
    sizes: dict[str, tuple[int, int]] = {}
    for scan in scans:
        if scan.whole_sources:
            for key, images in scan.by_source.items():
                box = images[0].box
                sizes.setdefault(key, (box[0] + box[2], box[1] + box[3]))
    return sizes


def source_file_size(filename: str) -> tuple[int, int] | None:
    """(height, width) of a local source image as displayed (EXIF orientation applied); None if it is gone or unreadable."""
    from cropshard.transforms.orientation import exif_orientation, oriented_shape
    from PIL import Image, UnidentifiedImageError

    if "://" in filename or not os.path.isfile(filename):
        return None
    try:
        with Image.open(filename) as img:
            return oriented_shape(img, exif_orientation(img))
    except (OSError, UnidentifiedImageError):
        return None


def source_sizes(scan: SplitScan, known: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """The sizes of `scan`'s sources: from `known` (full-image variants), else from the source files."""
    sizes = {}
    for key in scan.by_source:
        size = known.get(key) or source_file_size(scan.filenames[key])
        if size is not None:
            sizes[key] = size
    return sizes
