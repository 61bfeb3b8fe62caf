"""The geometry of every stored image of a split, read from the records (no pixels decoded), and the
source image sizes the coverage needs.

A full-image variant's records are whole oriented sources, so its boxes are the source sizes; the
other variants of the same comparison look their sources up there by the source file's SHA-256.
Sources no full-image variant holds are measured from their files when those are still where the
build read them (only their header is read; gs:// through the reader's filesystem, tf.io.gfile);
otherwise their size stays unknown and the costs table says why under its '?'.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
from collections.abc import Iterable, Mapping
from typing import IO

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


@dataclasses.dataclass(frozen=True)
class FileSizes:
    """Source sizes read from the source files, and why the others could not be."""

    sizes: dict[str, tuple[int, int]]  # source key -> (height, width)
    failures: dict[str, str]  # source key -> "path: cause"


_HEADER_BYTES = 256 * 1024  # a remote source's first bytes: enough for a JPEG/PNG header with its EXIF
_READERS = 16  # files read at once: a remote header costs a round trip, so latency, not bandwidth, bounds this


def _oriented_size(handle: IO[bytes] | str) -> tuple[int, int]:
    from cropshard.transforms.orientation import exif_orientation, oriented_shape
    from PIL import Image

    with Image.open(handle) as img:  # reads the header only
        return oriented_shape(img, exif_orientation(img))


def read_source_size(filename: str) -> tuple[int, int]:
    """(height, width) of a source image as displayed (EXIF orientation applied). Remote sources
    (gs://) are read through the reader's filesystem, first bytes only, whole only if the header
    lies further in (a large ICC profile, a TIFF directory at the end)."""
    if "://" not in filename:
        return _oriented_size(filename)
    with fileio.get().open(filename, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
        try:
            return _oriented_size(io.BytesIO(head))
        except (OSError, SyntaxError):  # PIL's errors for a header it could not finish
            if len(head) < _HEADER_BYTES:
                raise
        return _oriented_size(io.BytesIO(head + handle.read()))


def source_file_size(filename: str) -> tuple[int, int] | str:
    """read_source_size, or why it failed ("path: cause")."""
    try:
        return read_source_size(filename)
    except Exception as err:  # noqa: BLE001 - any failure leaves the size unknown; the cause is shown, not raised
        return f"{filename}: {type(err).__name__}: {' '.join(str(getattr(err, 'message', err)).split())[:200]}"


def file_sizes(filenames: Mapping[str, str]) -> FileSizes:
    """The sizes of the sources `filenames` (source key -> path the build read), from their files."""
    with concurrent.futures.ThreadPoolExecutor(_READERS) as pool:
        results = dict(zip(filenames, pool.map(source_file_size, filenames.values()), strict=True))
    return FileSizes({key: r for key, r in results.items() if isinstance(r, tuple)},
                     {key: r for key, r in results.items() if isinstance(r, str)})


def unknown_sizes_note(failures: Mapping[str, str]) -> str | None:
    """The footnote under the costs table when some sources have no size (`failures`: source key ->
    why its file could not be read): window share, RRC share and context kept leave them out."""
    if not failures:
        return None
    count = f"{len(failures)} source image{'s' if len(failures) > 1 else ''}"
    return (f"window share, RRC share and context kept leave out {count} of unknown size ('?' where no size is known):"
            f" no full-image variant of this run holds them and their files could not be read ({next(iter(failures.values()))});"
            " a full-image variant of the same images (--layouts with full) supplies the sizes from its records")
