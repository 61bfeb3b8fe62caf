"""One raster source -> serialized tf.train.Examples, one split per chip.

`RasterJob` opens the source (header only), checks it against the dataset (band count and
sample type, `band_mismatch`), checks the uint8 conversion on a preview of the whole raster
(`range_collapsed`), and then `records()` reads, converts and encodes one window at a time, so
memory does not depend on the raster's size. Everything that can reject the source happens in
`open_job`, before the first record: a source is written whole or rejected. A large source is
chipped as several tasks (transforms/raster/tasks.py), each a RasterJob of `open_planned_job`
over its share of the boxes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from cropshard.reader import schema
from cropshard.transforms.crop import Box, CropSpec, plan_boxes, working_shape
from cropshard.transforms.encode import encode_pixels
from cropshard.transforms.raster import categories, chips, convert, labels
from cropshard.transforms.raster.open_raster import (
    GTIFF,
    JP2,
    jp2_header,
    open_raster,
    raster_driver,
    refuse_references,
    refuse_truncated,
    tiff_blocks,
    tiff_orientation,
)
from cropshard.transforms.raster.stats import BandStats
from cropshard.transforms.rejects import Rejected

SKIP_NODATA = "nodata"  # chip skipped: more nodata than --max_nodata
SKIP_SPLIT_BOUNDARY = "split_boundary"  # chip touches blocks of different splits (--split_by)
SKIP_LABEL_FRACTION = "label_fraction"  # majority class below --min_label_fraction (or no class)
SKIP_REASONS = {
    SKIP_NODATA: "the chip's nodata/masked share exceeds --max_nodata",
    SKIP_SPLIT_BOUNDARY: "--split_by: the chip touches spatial blocks assigned to different splits",
    SKIP_LABEL_FRACTION: "--label_mode majority: the majority class covers less than --min_label_fraction of the chip",
}
PATH_RASTER = "rasterio"
HEAD_BYTES = 64  # enough to tell a TIFF or JPEG 2000 from GDAL XML


@dataclasses.dataclass(frozen=True)
class RasterSpec:
    """How raster inputs become chips (the raster options; see pipeline/options.py)."""

    bands: tuple[int, ...] | None = None  # 1-based GDAL band numbers; None: every band, count must equal channels
    dtype: str = "uint8"  # stored sample type; 'keep' until the launcher resolves it
    to_uint8: convert.Uint8Rule = convert.Uint8Rule()
    max_nodata: float | None = None  # skip chips with a larger nodata share
    split_block: float | None = None  # --split_by block:N
    labels: labels.LabelRasterSpec | None = None  # --label_raster and friends
    kept: bool = False  # dtype resolved from --dtype keep: every source stored as it is, none converted
    split_crs: str | None = None  # --split_crs, as crs_text names it: the CRS of every --split_by block

    @property
    def requested(self) -> bool:
        """Raster options given: every TIFF then takes the raster path, photo-like or not."""
        given = (self.bands, self.max_nodata, self.split_block, self.labels)
        return any(value is not None for value in given) or self.dtype != "uint8" or self.kept

    def to_dict(self) -> dict:
        return {
            "bands": list(self.bands) if self.bands else None,
            "dtype": self.dtype,
            "to_uint8": str(self.to_uint8) if self.dtype == "uint8" and not self.kept else None,
            "max_nodata": self.max_nodata,
            "split_by": f"block:{self.split_block:g}" if self.split_block else None,
            "split_block_units": chips.GEO_UNITS_NOTE if self.split_block else None,
            "split_crs": self.split_crs,
            "labels": self.labels.to_dict() if self.labels else None,
        }


def crs_text(crs: Any) -> str:
    """`EPSG:n` when the CRS has an EPSG code, else its WKT; '' without a CRS."""
    if crs is None:
        return ""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def file_sha256(path: str) -> str:
    """The source file's digest, streamed (never the whole raster in memory)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def encode_chip(pixels: np.ndarray, encoding: str, jpeg_quality: int) -> tuple[bytes, str]:
    """HWC pixels of any kept dtype -> (bytes, image/format): raw little-endian, 16-bit PNG, or
    the photo encoders for uint8 with 1 or 3 bands. `original` is PNG: a raster has no source
    bytes a reader decodes, and PNG keeps its chips' samples, as `original` does for the photos
    it cannot store verbatim."""
    if encoding == "original":
        encoding = schema.FORMAT_PNG
    if encoding == schema.FORMAT_RAW:
        return np.ascontiguousarray(pixels, pixels.dtype.newbyteorder("<")).tobytes(), schema.FORMAT_RAW
    if pixels.dtype == np.uint8:
        return encode_pixels(pixels, encoding, jpeg_quality)
    if encoding == schema.FORMAT_PNG and pixels.dtype == np.uint16 and pixels.shape[2] in (1, 3):
        return png16(pixels), schema.FORMAT_PNG
    raise ValueError(f"--encoding {encoding} cannot store {pixels.dtype} x{pixels.shape[2]} (validated by the options)")


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit greyscale or RGB PNG (Pillow writes neither 16-bit RGB nor 16-bit big-endian rows)."""
    height, width, bands = pixels.shape
    rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(height, width * bands * 2)
    body = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([16, 0 if bands == 1 else 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body, 3)) + chunk(b"IEND", b"")


def photo_like(dataset: Any, path: str) -> bool:
    """A file without georeferencing that is a scanned or camera photo, decoded by Pillow as
    before (EXIF orientation, multi-page, 1-bit fax TIFFs, alpha composited on black as for
    PNG): a grey or RGB JPEG 2000, with or without an alpha band, that Pillow decodes
    (`pillow_decodes_jpeg2000`), and an 8-bit grey or RGB TIFF, with or without an alpha band."""
    from rasterio.enums import ColorInterp

    if georeferenced(dataset):
        return False
    # Pillow takes a 2- or 4-band image as grey or RGB plus alpha and composites it on black: a
    # fourth band the file does not mark as alpha (near-infrared) must not be flattened that way.
    alpha = dataset.count in (2, 4) and dataset.colorinterp[-1] == ColorInterp.alpha
    if not (dataset.count in (1, 3) or alpha):
        return False
    if dataset.driver == JP2:
        return pillow_decodes_jpeg2000(dataset.count, jp2_header(path))
    return set(dataset.dtypes) == {"uint8"} and pillow_decodes_tiff(dataset)


# TIFF compressions Pillow's libtiff decodes (checked on Pillow 12): LERC and WEBP it cannot
# ("cannot identify image file", "decoder error -2"), GDAL can.
_PILLOW_TIFF_COMPRESSIONS = frozenset((None, "lzw", "deflate", "packbits", "jpeg", "zstd", "lzma", "ccittrle", "ccittfax3", "ccittfax4"))


def pillow_decodes_tiff(dataset: Any) -> bool:
    """Whether Pillow decodes this 8-bit TIFF as GDAL does: a compression its libtiff has, and no
    sparse block (never written; GDAL reads it as zeros, Pillow filled it with the file's first
    bytes, the TIFF header, and those chips were written as pixels)."""
    compression = dataset.compression.value.lower() if dataset.compression is not None else None
    if compression not in _PILLOW_TIFF_COMPRESSIONS:
        return False
    return all(offset and length for _, _, _, offset, length in tiff_blocks(dataset))


def georeferenced(dataset: Any) -> bool:
    return dataset.crs is not None or bool(dataset.gcps[0])


GCP_TOLERANCE = 1.0  # pixels: how far from a ground control point the fitted affine may fall


def georeferencing(dataset: Any) -> tuple[Any, tuple[float, ...]]:
    """(CRS or None, transform[:6]) of the raster's pixel grid. A raster georeferenced by ground
    control points alone (no geotransform: rasterio's transform is then the pixel grid) gets the
    affine transform GDAL fits to them (`rasterio.transform.from_gcps`) and their CRS, when every
    point lies within GCP_TOLERANCE pixels of it; Rejected('not_rectified') otherwise (a scene
    that needs warping: an affine chip transform would misplace it)."""
    gcps, gcp_crs = dataset.gcps
    if dataset.crs is not None or not gcps:
        return dataset.crs, tuple(dataset.transform)[:6]
    from rasterio.transform import from_gcps

    worst = math.inf
    if len(gcps) >= 3:  # fewer fix no affine transform
        affine = from_gcps(gcps)
        pixel = min(math.hypot(affine.a, affine.d), math.hypot(affine.b, affine.e))
        if pixel > 0:
            worst = max(math.dist(affine * (point.col, point.row), (point.x, point.y)) for point in gcps) / pixel
    if not worst <= GCP_TOLERANCE:
        off = f"{worst:.1f} pixels" if math.isfinite(worst) else "no affine"
        raise Rejected("not_rectified", f"georeferenced by {len(gcps)} ground control points, which an affine transform fits only to"
                       f" {off} (at most {GCP_TOLERANCE:g} kept): warp it onto a grid first (gdalwarp)")
    return gcp_crs, tuple(affine)[:6]


def oriented_tiff_route(dataset: Any, path: str, requested: bool) -> bool:
    """True when a TIFF without georeferencing whose Orientation tag turns or flips it (a camera
    or scanner file) must take the Pillow path, which applies the tag as EXIF orientation is
    applied to every photo: a 16-bit greyscale one without raster options (8-bit ones are
    photo_like already). Rejected when the raster path would have to read it: GDAL reads the
    stored grid and ignores the tag, so its chips would be cut from the unrotated image."""
    if dataset.driver != GTIFF or georeferenced(dataset):
        return False
    orientation = tiff_orientation(path)
    if orientation == 1:
        return False
    if not requested and dataset.count == 1 and dataset.dtypes[0] == "uint16":
        return True
    raise Rejected(
        "decode_error",
        f"the TIFF's Orientation tag is {orientation} (shown turned or flipped), which the raster path (GDAL) does not apply:"
        f" its {dataset.count} band(s) of {dataset.dtypes[0]} would be chipped unrotated. Save it in display order"
        " (e.g. Pillow's ImageOps.exif_transpose) or set Orientation to 1 if the stored grid is what you want",
    )


ENUMCS_GREYSCALE = 17  # a JP2 colr box's enumerated colour space (ISO 15444-1 Table I.10)


def pillow_decodes_jpeg2000(components: int, header: tuple[int, int | None] | None) -> bool:
    """Whether Pillow decodes a JPEG 2000 of `components` components with this JP2 `header`
    (jp2_header; None for a bare codestream). Pillow identifies 1 to 4 components only, and its
    decoder has no unpacker for 3 components in a greyscale colour space: what GDAL writes for
    a 3-band image whose bands are not marked red, green, blue. GDAL reads both, so those go to
    the raster path instead of being rejected."""
    return components <= 4 and header != (3, ENUMCS_GREYSCALE)


class RasterJob:
    """One opened raster source, checked against the dataset; `records()` streams its examples."""

    def __init__(
        self,
        dataset: Any,
        source: Any,
        crop: CropSpec,
        raster: RasterSpec,
        channels: int,
        max_pixels: int,
        label_grid: labels.LabelGrid | None = None,
        ranges: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
        boxes: Sequence[Box] | None = None,
    ) -> None:
        """`ranges`: the dataset's per-band (low, high) by source sample type, for --to_uint8
        minmax/percentile; None in the statistics pass that computes them (nothing converted).
        `boxes`: a task's share of a source already checked whole (transforms/raster/tasks.py);
        the checks on the whole raster (chip size, the conversion's preview) are not repeated."""
        self.dataset = dataset
        self.source = source
        self.crop = crop
        self.raster = raster
        self.bands = select_bands(dataset, raster.bands, channels)
        self.source_dtype = _band_dtype(dataset, self.bands)
        crs, self.geo = georeferencing(dataset)
        self.crs = crs_text(crs)
        self.crs_identity = chips.crs_identity(self.crs)  # the --split_by blocks' grid: one per CRS, however spelt
        self.split_grid = chips.SplitGrid(self.crs, raster.split_crs) if raster.split_crs and self.crs else None
        self.label_grid = label_grid
        self.stats: dict[str, BandStats] = {}  # per split, of the stored chips
        self.skipped: collections.Counter[str] = collections.Counter()
        self.converter = _converter(self.source_dtype, raster, _nbits(dataset, self.bands), ranges)
        self.work_shape = working_shape(crop, *dataset.shape)
        self.boxes = list(boxes) if boxes is not None else self._planned_and_checked(max_pixels)

    def _planned_and_checked(self, max_pixels: int) -> list[Box]:
        """Every chip box of the source, after the checks that can reject it before its first chip."""
        crop = self.crop
        boxes = plan_boxes(crop, *self.work_shape, key=self.source.key, manifest_box=self.source.box)
        largest = max(box[2] * box[3] for box in boxes)
        if largest > max_pixels:  # reads are windowed: the guard applies to what one chip holds
            raise Rejected("too_many_pixels", f"a {crop.strategy} chip of {largest} pixels exceeds --max_pixels {max_pixels}")
        if self.converter is not None:
            self.converter.check(chips.preview(self.dataset, self.bands), self.source_dtype)
        if self.split_grid is not None and self.split_grid.reprojects:
            self.split_grid.check_covers(self.geo, self.dataset.shape)
        return boxes

    def preview_stats(self) -> BandStats:
        """Statistics of the raster's preview in its own sample type (the statistics pass)."""
        stats = BandStats.empty(self.source_dtype, len(self.bands))
        stats.add(chips.preview(self.dataset, self.bands).T)
        return stats

    def records(self, label_id: int, split: str, split_fractions: Sequence[tuple[str, float]] | None, encoding: str, jpeg_quality: int, digest: str) -> Iterator[tuple[str, bytes]]:
        """(split, serialized example) per kept chip, reading one window at a time."""
        max_nodata = self.raster.max_nodata
        geo = self.geo
        dtype = "uint8" if self.converter is not None else self.source_dtype  # what pixels.dtype names, without str() per chip
        # Then every chip's mask is read: the statistics leave nodata out. A float raster converted
        # to uint8 too: its NaN and infinite samples, declared nodata or not, would become 0 and 255.
        masked = chips.has_mask(self.dataset, self.bands) or (self.converter is not None and self.source_dtype.startswith("float"))
        for box in self.boxes:
            chip = chips.read_chip(self.dataset, self.bands, box, self.work_shape, masked, geo)
            if max_nodata is not None and 1.0 - chip.valid_fraction > max_nodata:
                self.skipped[SKIP_NODATA] += 1
                continue
            chip_split = split
            if self.raster.split_block:
                blocks = chips.chip_blocks(chip, box, self.raster.split_block, self.crs_identity, self.source.key, self.split_grid)
                chip_split = chips.block_split(blocks, split_fractions)
                if chip_split is None:
                    self.skipped[SKIP_SPLIT_BOUNDARY] += 1
                    continue
            chip_label, label_text, segmentation = label_id, self.source.label, None
            if self.label_grid is not None:
                chip_label, label_text, segmentation = self._chip_label(box)
                if chip_label is None:
                    self.skipped[SKIP_LABEL_FRACTION] += 1
                    continue
            pixels = self.converter.apply(chip.pixels) if self.converter is not None else chip.pixels
            encoded, image_format = encode_chip(pixels, encoding, jpeg_quality)
            if chip_split not in self.stats:
                self.stats[chip_split] = BandStats.empty(dtype, len(self.bands))
            self.stats[chip_split].add(pixels, chip.valid)
            record = schema.ImageRecord(
                encoded=encoded, format=image_format, height=box[2], width=box[3], channels=len(self.bands),
                label=chip_label, label_text=label_text, filename=self.source.path, crop_box=chip.source_box,
                sha256=digest, dtype=dtype, geo_crs=self.crs, geo_transform=chip.transform, segmentation=segmentation,
            )
            yield chip_split, schema.encode_example(record)

    def _chip_label(self, box: tuple[int, int, int, int]) -> tuple[int | None, str, bytes | None]:
        """(label id, its name, mask PNG) of a chip from the class map; id None: skip the chip."""
        spec = self.label_grid.spec
        ids = self.label_grid.read_ids(box, self.work_shape)
        if spec.mode == "mask":
            return schema.UNLABELED, "", encode_pixels(ids[:, :, None], schema.FORMAT_PNG)[0]
        winner, share = labels.majority(ids, len(spec.classes))
        if winner < 0 or share < spec.min_fraction:
            return None, "", None
        return winner, spec.names[winner], None


def band_count_mismatch(count: int, channels: int, palette: bool = False) -> str:
    """Why a raster of `count` bands does not fit a dataset of `channels`, and what to pass;
    `palette`: its one band holds colour-table indices, which the raster path stores as they are."""
    have = f"the raster has {count} band{'s' if count != 1 else ''} and the dataset {channels} (--channels {channels})"
    if palette and count == 1:
        return (
            f"the raster has 1 band of palette indices (a colour table: a class map or an indexed-colour image) and the dataset"
            f" {channels} (--channels {channels}); --channels 1 stores the indices (a class map also serves as --label_raster),"
            " or expand the colours to RGB first (gdal_translate -expand rgb)"
        )
    if count < channels:
        repeat = ",".join(["1"] * channels) if count == 1 else None
        hint = f"build {count}-band rasters with --channels {count}" if count in (1, 3) else f"build {count}-band rasters with --bands {','.join(str(b) for b in range(1, count + 1))}"
        return f"{have}; {hint}" + (f", or repeat the band with --bands {repeat}" if repeat else "")
    every = ",".join(str(b) for b in range(1, count + 1))
    return (f"{have}; choose {channels} of them with --bands (1-based, e.g. --bands {','.join(str(b) for b in range(1, channels + 1))}),"
            f" or store all {count} with --bands {every}")


def select_bands(dataset: Any, bands: tuple[int, ...] | None, channels: int) -> tuple[int, ...]:
    if bands is None:
        if dataset.count != channels:
            raise Rejected("band_mismatch", band_count_mismatch(dataset.count, channels, _palette(dataset)))
        return tuple(range(1, channels + 1))
    missing = [band for band in bands if band > dataset.count]
    if missing:
        raise Rejected("band_mismatch", f"--bands {','.join(map(str, bands))} asks for band {missing[0]}; the raster has {dataset.count} band{'s' if dataset.count != 1 else ''}")
    return bands


def _palette(dataset: Any) -> bool:
    from rasterio.enums import ColorInterp

    return dataset.count == 1 and dataset.colorinterp[0] == ColorInterp.palette


def _band_dtype(dataset: Any, bands: Sequence[int]) -> str:
    kinds = {dataset.dtypes[band - 1] for band in bands}
    if len(kinds) != 1:
        raise Rejected("band_mismatch", f"the selected bands mix sample types {sorted(kinds)}; a dataset has one")
    return kinds.pop()


def _nbits(dataset: Any, bands: Sequence[int]) -> str | None:
    return dataset.tags(bands[0], ns="IMAGE_STRUCTURE").get("NBITS")


def _converter(source_dtype: str, raster: RasterSpec, nbits: str | None, ranges: Mapping | None) -> convert.Converter | None:
    """How this source becomes the dataset's uint8, or None when samples are stored as they are."""
    if raster.dtype != "uint8" or raster.kept:
        if source_dtype != raster.dtype:
            raise Rejected("band_mismatch", f"the raster's samples are {source_dtype}; this dataset stores {raster.dtype} ({convert.KEPT_NOTE if raster.kept else '--dtype'})")
        return None
    if source_dtype.startswith("complex"):  # a stretch or a shift would keep the real part alone and drop the imaginary one
        raise Rejected("band_mismatch", f"the raster's samples are {source_dtype} (real and imaginary parts), which no --to_uint8"
                                        " rule converts: make them real first (amplitude, phase or a part) with GDAL or rasterio")
    rule = raster.to_uint8
    if rule.needs_dataset_range:
        if ranges is None:
            return None  # the statistics pass
        if source_dtype not in ranges:
            raise Rejected("band_mismatch", f"--to_uint8 {rule}: the dataset has no {rule.kind} range for {source_dtype} samples (percentiles need integer samples; use minmax)")
        low, high = ranges[source_dtype]
        return convert.Converter(rule, low=tuple(low), high=tuple(high))
    bits = convert.conversion_bits(source_dtype, nbits, rule)
    return None if bits == 8 and source_dtype == "uint8" else convert.Converter(rule, bits=bits)


@contextlib.contextmanager
def open_job(
    source: Any, head: bytes, crop: CropSpec, raster: RasterSpec, channels: int, max_pixels: int, ranges: Mapping | None = None
) -> Iterator[RasterJob | None]:
    """A checked RasterJob, or None when the file is a photo for the Pillow path (neither TIFF
    nor JPEG 2000, or a photo-like one without raster options). `head`: the file's first HEAD_BYTES bytes.
    Rejected for unsafe or mismatching rasters."""
    refuse_references(head)
    driver = raster_driver(head)
    if driver is None:
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            dataset = stack.enter_context(open_raster(source.path, driver))
        except Rejected:
            yield None  # a TIFF or JPEG 2000 GDAL cannot open: the Pillow path gives the reason it always gave
            return
        if (photo_like(dataset, source.path) and not raster.requested) or oriented_tiff_route(dataset, source.path, raster.requested):
            yield None
            return
        refuse_truncated(dataset, source.path)
        label_grid = open_label_grid(source, dataset, raster.labels, stack) if raster.labels else None
        yield RasterJob(dataset, source, crop, raster, channels, max_pixels, label_grid, ranges)


@contextlib.contextmanager
def open_planned_job(
    source: Any, boxes: Sequence[Box], crop: CropSpec, raster: RasterSpec, channels: int, max_pixels: int, ranges: Mapping | None = None
) -> Iterator[RasterJob]:
    """The RasterJob of one task of a source `open_job` checked and planned: the same dataset and
    class map, only `boxes` to chip."""
    with contextlib.ExitStack() as stack:
        dataset = stack.enter_context(open_raster(source.path))
        label_grid = open_label_grid(source, dataset, raster.labels, stack, planned=True) if raster.labels else None
        yield RasterJob(dataset, source, crop, raster, channels, max_pixels, label_grid, ranges, boxes)


def open_label_grid(
    source: Any, dataset: Any, spec: labels.LabelRasterSpec, stack: contextlib.ExitStack, *, planned: bool = False
) -> labels.LabelGrid:
    """The image's class map (the manifest row's label_raster, else --label_raster's pattern),
    opened as safely as images and aligned to its grid. `planned`: open_job already found it
    whole for this source, so a task reopening it does not walk its blocks again (as the image's
    own truncation check runs once, in open_job)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    path = source.label_raster or (labels.label_raster_path(source.path, spec.pattern) if spec.pattern else None)
    if path is None:
        raise Rejected("label_raster_missing", "the manifest row has no label_raster and no --label_raster pattern is given")
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            head = handle.read(HEAD_BYTES)
    except Exception as err:  # noqa: BLE001 - local and remote filesystems raise their own types
        raise Rejected("label_raster_missing", f"no class map at {path}: {type(err).__name__}") from err
    refuse_references(head)
    driver = raster_driver(head)
    if driver is None:
        raise Rejected("label_raster_mismatch", f"the class map {path} is neither a GeoTIFF nor a JPEG 2000 file")
    try:
        label_dataset = stack.enter_context(open_raster(path, driver))
        if not planned:
            refuse_truncated(label_dataset, path)
    except Rejected as err:
        raise Rejected("label_raster_mismatch", f"the class map {path}: {err.message}") from err
    categories.check_class_map_table(path, spec)
    return labels.LabelGrid(label_dataset, dataset, spec, stack)


def parse_bands(text: str) -> tuple[int, ...]:
    """'4,3,2' -> (4, 3, 2): 1-based GDAL band numbers, in the order to store them."""
    try:
        bands = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise ValueError(f"--bands takes 1-based band numbers like 1,2,3,4; got {text!r}") from err
    if not bands or min(bands) < 1:
        raise ValueError(f"--bands takes 1-based band numbers like 1,2,3,4; got {text!r}")
    return bands


def parse_split_by(text: str) -> float:
    """'block:N' -> N (map units of the raster's CRS, or pixels without one)."""
    kind, _, size = text.partition(":")
    try:
        block = float(size)
    except ValueError:
        block = 0.0
    if kind.strip() != "block" or not 0 < block < math.inf:  # one infinite block would put every chip in one split
        raise ValueError(f"--split_by must be block:N with a finite N > 0 ({chips.GEO_UNITS_NOTE}); got {text!r}")
    return block


def parse_split_crs(text: str) -> str:
    """--split_crs -> the CRS as the chips name it (`crs_text`: EPSG:n, else its WKT)."""
    if not text.strip():
        raise ValueError(f"--split_crs {text!r} is blank (an unset shell variable?): give a CRS such as EPSG:32632, or drop it")
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_user_input(text.strip())
    except CRSError as err:
        raise ValueError(f"--split_crs {text!r} is not a CRS PROJ knows ({err}): give e.g. EPSG:32632, a WKT or a PROJ string") from None
    return crs_text(crs)
