"""Which inputs are rasters, and opening them with GDAL kept to the input's own bytes.

GDAL follows references: a VRT (an XML file, whatever its name) reads other files, sidecars
(.ovr, .msk, .aux.xml, .tfw, .j2w) are looked up next to a file, and /vsicurl/-style names reach
the network. cropshard therefore opens a raster only with the one driver its first bytes call
for, GeoTIFF (which covers COG) for a TIFF and JP2OpenJPEG for JPEG 2000 (Sentinel-2's band
files, many national orthophotos), never lists the input's folder (so no sidecar is found),
reads georeferencing only from the file itself (GeoTIFF tags; GeoJP2 and GMLJP2 boxes, whose
srsName GDAL resolves from EPSG codes, URNs or the file's own dictionary box, never a URL), and
serves remote inputs (gs://) to GDAL through one Python file object from Beam's FileSystems
that answers for that one object only: GDAL never opens a URL itself.
The options are scoped (`rasterio.Env`) to each open, so nothing global is set. (A class map's
`.aux.xml` category table is read by categories.py as data, never handed to GDAL.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
from cropshard.transforms.rejects import Rejected

TIFF_EXTENSIONS = (".tif", ".tiff", ".gtif", ".gtiff")
JPEG2000_EXTENSIONS = (".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx")
RASTER_EXTENSIONS = TIFF_EXTENSIONS + JPEG2000_EXTENSIONS
GTIFF, JP2 = "GTiff", "JP2OpenJPEG"  # GeoTIFF / Cloud-Optimized GeoTIFF; JPEG 2000 (JP2 boxes or a bare codestream)
FORMAT_NAMES = {GTIFF: "GeoTIFF", JP2: "JPEG 2000"}

# Bytes: rasterio hands an int straight to GDALSetCacheMax64 (GDAL reads small numbers as MiB
# only in its string form, which rasterio does not accept), so 128 here was a 128-byte cache.
GDAL_CACHE_BYTES = 128 * 2**20

# GDAL configuration for every open (see the module docstring for why).
SAFE_GDAL_OPTIONS: dict[str, str | int] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no folder listing, so no sidecar file is found
    "GDAL_PAM_ENABLED": "NO",  # no .aux.xml read or written
    # Georeferencing from the file's own tags, never a world file (.tfw/.j2w); PAM is listed but
    # disabled above, so no .aux.xml is read either. With INTERNAL alone, a JPEG 2000 without
    # georeferencing left GDAL's geotransform unset and rasterio returned stale memory as its
    # transform; listing PAM lets GDAL fall back to the pixel grid as it does for TIFFs.
    "GDAL_GEOREF_SOURCES": "INTERNAL,PAM",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".cropshard-no-network",  # /vsicurl/ would match nothing
    "GDAL_HTTP_MAX_RETRY": "0",
    "GTIFF_REPORT_COMPD_CS": "NO",
    "CHECK_DISK_FREE_SPACE": "NO",
    # GDAL's block cache defaults to 5% of RAM and fills with every tile read, so a process's
    # memory would grow with the raster up to that share; a grid pass re-reads a tile row only
    # while its chips are cut, which 128 MiB holds for rows of 512-pixel tiles 16000 columns
    # wide in 16 bands (or 250000 columns in one). Without the cache every chip smaller than a
    # tile decodes its whole tile again (a single-tile JPEG 2000 once per chip).
    "GDAL_CACHEMAX": GDAL_CACHE_BYTES,
}

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # the JP2 signature box (ISO 15444-1 I.5.1)
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"  # SOC then SIZ: a bare JPEG 2000 codestream
SNIFF_BYTES = len(_JP2_SIGNATURE)


# GDAL's sidecar files of a raster `x.tif`: `x.tif.ovr` is a TIFF of downsampled copies of its
# pixels (gdaladdo -ro), `x.tif.msk` a TIFF of its mask, `x.tif.aux.xml` its PAM metadata.
# cropshard's GDAL reads none of them with the raster (SAFE_GDAL_OPTIONS); nor are they inputs.
GDAL_SIDECARS = {".ovr": "external overviews", ".msk": "mask", ".aux.xml": "PAM metadata"}


def refuse_sidecar(path: str) -> None:
    """Rejected('gdal_sidecar') for a GDAL sidecar beside its raster: decoded as an image of its
    own, an .ovr would add lower-resolution copies of the raster's area (hashed into any split:
    leakage) and an .msk its mask as a photo."""
    from apache_beam.io.filesystems import FileSystems

    lower = path.lower()
    for suffix, kind in GDAL_SIDECARS.items():
        if lower.endswith(suffix) and len(path) > len(suffix):
            raster = path[: -len(suffix)]
            if FileSystems.exists(raster):
                raise Rejected("gdal_sidecar", f"GDAL's {kind} of {raster}: part of that raster, not an image of its own")


def is_raster_path(path: str) -> bool:
    """Inputs that may be rasters: by extension, so that photos are never opened twice."""
    return path.lower().endswith(RASTER_EXTENSIONS)


def raster_driver(head: bytes) -> str | None:
    """The one GDAL driver a file is opened with, from its first SNIFF_BYTES bytes: GTIFF for
    TIFF and BigTIFF, JP2 for JPEG 2000; None for anything else (a photo for Pillow)."""
    if head[:4] in _TIFF_MAGICS:
        return GTIFF
    if head.startswith(_JP2_SIGNATURE) or head.startswith(_J2K_CODESTREAM):
        return JP2
    return None


def refuse_references(head: bytes) -> None:
    """Reject files GDAL would treat as references to other files (a VRT named .tif)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:11].lower() == b"<vrtdataset" or text[:5].lower() == b"<?xml":
        raise Rejected(
            "raster_reference",
            "the file is GDAL XML (a VRT), which reads other files or URLs; cropshard opens only GeoTIFF/COG and JPEG 2000 bytes",
        )


def refuse_truncated(dataset: Any, path: str) -> None:
    """Rejected('truncated') for a raster cut short (an interrupted download or copy), before it is
    chipped: GDAL opens such a file and reads its header and preview without complaint, and the
    missing tiles would only show while chipping, by then failing the whole build
    (docs/BAD_INPUTS.md)."""
    if dataset.driver == JP2:
        refuse_truncated_jpeg2000(path)
    else:
        refuse_truncated_tiff(dataset, path)


def refuse_truncated_tiff(dataset: Any, path: str) -> None:
    """Rejected('truncated') for a TIFF one of whose full-resolution tiles or strips (its
    TileOffsets/StripOffsets and byte counts, which GDAL reports as BLOCK_OFFSET/BLOCK_SIZE, a few
    microseconds a block) ends past the end of the file; sparse blocks (offset 0) are absent by design."""
    from apache_beam.io.filesystems import FileSystems

    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    refuse_damaged_block_index(path)
    for band, row, col, offset, length in tiff_blocks(dataset):
        if offset and offset + length > size:
            raise Rejected(
                "truncated",
                f"band {band}'s block (row {row}, column {col}) of the TIFF lies at bytes {offset}..{offset + length},"
                f" past the end of the file ({size} bytes): the file is cut short",
            )


def tiff_blocks(dataset: Any) -> Iterator[tuple[int, int, int, int, int]]:
    """(band, row, column, offset, byte count) of every full-resolution tile or strip of a TIFF
    (GDAL's BLOCK_OFFSET/BLOCK_SIZE, a few microseconds a block); offset 0 is a sparse block."""
    from rasterio.enums import Interleaving

    bands = [1] if dataset.count == 1 or dataset.interleaving == Interleaving.pixel else range(1, dataset.count + 1)
    for band in bands:
        block_height, block_width = dataset.block_shapes[band - 1]
        for row in range(-(-dataset.height // block_height)):
            for col in range(-(-dataset.width // block_width)):
                offset = int(dataset.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band) or 0)
                length = int(dataset.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band) or 0)
                yield band, row, col, offset, length


# TIFF tags of the first (full-resolution) image's layout and block index.
_WIDTH, _LENGTH, _SAMPLES, _ROWS_PER_STRIP, _PLANAR = 256, 257, 277, 278, 284
_TILE_WIDTH, _TILE_LENGTH = 322, 323
_INDEX_TAGS = {324: "TileOffsets", 325: "TileByteCounts", 273: "StripOffsets", 279: "StripByteCounts"}
_MAX_IFD_ENTRIES = 4096
_INT_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8 (BigTIFF)


def refuse_damaged_block_index(path: str) -> None:
    """Rejected('decode_error') when the first IFD's TileOffsets/TileByteCounts (or strip
    equivalents) list fewer entries than it has blocks, or a block with an offset but no bytes:
    libtiff ignores a short list ("Incorrect count ... tag ignored") and GDAL takes an empty
    entry for a sparse block, so both served zeros, a black chip. A sparse block proper has
    offset 0 as well."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        try:
            index = _block_index(handle)
        except (ValueError, OSError, OverflowError, struct.error):  # offsets beyond any file
            index = None
    if index is None:
        return  # not a TIFF this walk reads (GDAL judges it)
    blocks, (offsets_name, offsets), (counts_name, counts) = index
    for name, values in ((offsets_name, offsets), (counts_name, counts)):
        if len(values) < blocks:  # libtiff trims a longer list
            raise Rejected("decode_error", f"the TIFF's {name} lists {len(values)} entries for its {blocks} blocks: the file's block index is damaged")
    empty = np.flatnonzero((offsets[:blocks] != 0) & (counts[:blocks] == 0))
    if empty.size:
        raise Rejected(
            "decode_error",
            f"block {int(empty[0])} of the TIFF's {blocks} has an offset ({int(offsets[empty[0]])}) but 0 bytes in its {counts_name}:"
            " the file's block index is damaged",
        )


@dataclasses.dataclass(frozen=True)
class FirstIfd:
    """The integer tags of a TIFF's first IFD: single values, and the block index lists as
    (type, count, value field) to read on demand."""

    order: str  # struct byte order, "<" or ">"
    field: int  # bytes of an entry's value field: 4 (classic) or 8 (BigTIFF)
    tags: dict[int, int]
    arrays: dict[int, tuple[int, int, bytes]]


def first_ifd(handle: Any) -> FirstIfd | None:
    """The first IFD of a classic or BigTIFF file; None when the header or IFD cannot be read."""
    head = _read_at(handle, 0, 16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 16:
        return None
    big = struct.unpack(order + "H", head[2:4])[0] == 43
    offset = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
    count_format, entry_size, field = (order + "Q", 20, 8) if big else (order + "H", 12, 4)
    raw_count = _read_at(handle, offset, struct.calcsize(count_format))
    if len(raw_count) < struct.calcsize(count_format):
        return None
    table = _read_at(handle, offset + len(raw_count), min(struct.unpack(count_format, raw_count)[0], _MAX_IFD_ENTRIES) * entry_size)
    tags, arrays = {}, {}
    for at in range(0, len(table) - entry_size + 1, entry_size):
        tag, kind = struct.unpack(order + "HH", table[at : at + 4])
        count = struct.unpack(order + ("Q" if big else "I"), table[at + 4 : at + entry_size - field])[0]
        value = table[at + entry_size - field : at + entry_size]
        if kind in _INT_TYPES and count >= 1 and tag in _INDEX_TAGS:
            arrays[tag] = (kind, count, value)
        elif kind in _INT_TYPES and count >= 1 and struct.calcsize(_INT_TYPES[kind]) <= field:
            tags[tag] = struct.unpack(order + _INT_TYPES[kind], value[: struct.calcsize(_INT_TYPES[kind])])[0]
    return FirstIfd(order, field, tags, arrays)


_ORIENTATION = 274


def tiff_orientation(path: str) -> int:
    """The first IFD's Orientation tag (1, the stored order, when absent or unreadable): GDAL
    ignores it and reads the stored grid, which is right for a georeferenced raster only."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        try:
            ifd = first_ifd(handle)
        except (ValueError, OSError, OverflowError, struct.error):
            return 1
    return ifd.tags.get(_ORIENTATION, 1) if ifd is not None else 1


def _block_index(handle: Any) -> tuple[int, tuple[str, np.ndarray], tuple[str, np.ndarray]] | None:
    """(blocks the first IFD's layout has, (name, offsets), (name, byte counts)) of a classic or
    BigTIFF file, the arrays at most `blocks` long; None when the header or IFD cannot be read."""
    ifd = first_ifd(handle)
    if ifd is None:
        return None
    order, field, tags, arrays = ifd.order, ifd.field, ifd.tags, ifd.arrays
    width, height = tags.get(_WIDTH, 0), tags.get(_LENGTH, 0)
    planes = tags.get(_SAMPLES, 1) if tags.get(_PLANAR, 1) == 2 else 1
    if _TILE_WIDTH in tags and _TILE_LENGTH in tags:
        blocks, names = -(-width // max(tags[_TILE_WIDTH], 1)) * -(-height // max(tags[_TILE_LENGTH], 1)) * planes, (324, 325)
    else:
        blocks, names = -(-height // max(min(tags.get(_ROWS_PER_STRIP, height), height), 1)) * planes, (273, 279)
    if not all(name in arrays for name in names):
        return None
    read = [_index_array(handle, order, field, blocks, *arrays[name]) for name in names]
    return blocks, (_INDEX_TAGS[names[0]], read[0]), (_INDEX_TAGS[names[1]], read[1])


def _index_array(handle: Any, order: str, field: int, blocks: int, kind: int, count: int, value: bytes) -> np.ndarray:
    """An offsets or byte-counts array: inline in its entry's value field, else at the offset there."""
    dtype = np.dtype(order + _INT_TYPES[kind])
    wanted = min(count, blocks)
    if count * dtype.itemsize <= field:
        raw = value[: wanted * dtype.itemsize]
    else:
        raw = _read_at(handle, struct.unpack(order + ("Q" if field == 8 else "I"), value)[0], wanted * dtype.itemsize)
    return np.frombuffer(raw[: len(raw) // dtype.itemsize * dtype.itemsize], dtype)


_SOT = b"\xff\x90"  # start of a tile-part, whose header gives the tile-part's length (Psot)
_EOC = b"\xff\xd9"  # end of the codestream


def refuse_truncated_jpeg2000(path: str) -> None:
    """Rejected('truncated') for a JPEG 2000 file cut short: a box, a header marker segment or a
    tile-part whose declared length runs past the end of the file. A JP2 whose
    codestream box declares its length needs only the box headers read; a bare codestream, or a
    box that runs to the end of the file, has its tile-part headers walked (12 bytes each)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        size = handle.seek(0, os.SEEK_END)
        start, declared = 0, False
        if _read_at(handle, 0, len(_JP2_SIGNATURE)) == _JP2_SIGNATURE:
            start, declared = _codestream_box(handle, size)
        if not declared:
            _walk_tile_parts(handle, start, size)


def jp2_header(path: str) -> tuple[int, int | None] | None:
    """(components, enumerated colour space or None) from a JP2 file's header box (jp2h: its
    ihdr and first colr box, ISO 15444-1 I.5.3), or None for a bare codestream or a file whose
    header box is missing or malformed (the decoder then judges it). A colour space given as an
    ICC profile (colr method 2) is None. Reads the box headers before jp2h and jp2h itself."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        size = handle.seek(0, os.SEEK_END)
        if _read_at(handle, 0, len(_JP2_SIGNATURE)) != _JP2_SIGNATURE:
            return None
        for kind, offset, skip, length, _ in _top_level_boxes(handle, size):
            if kind == b"jp2h":
                return _parse_jp2h(_read_at(handle, offset + skip, min(length - skip, _JP2H_MAX_BYTES))) if length > skip else None
            if kind == b"jp2c" or length < skip:  # the codestream, or a box length this walk does not follow
                return None
    return None


_JP2H_MAX_BYTES = 1 << 20  # a header box carries an ICC profile at most; never read a codestream's worth


def _parse_jp2h(content: bytes) -> tuple[int, int | None] | None:
    components, colour_space, offset = None, None, 0
    while offset + 8 <= len(content):
        length, kind = int.from_bytes(content[offset : offset + 4], "big"), content[offset + 4 : offset + 8]
        body = content[offset + 8 : offset + length] if length >= 8 else b""
        if kind == b"ihdr" and len(body) >= 10:
            components = int.from_bytes(body[8:10], "big")
        elif kind == b"colr" and colour_space is None and len(body) >= 7 and body[0] == 1:
            colour_space = int.from_bytes(body[3:7], "big")
        if length < 8:
            break
        offset += length
    return None if components is None else (components, colour_space)


def _read_at(handle: Any, offset: int, count: int) -> bytes:
    handle.seek(offset)
    return handle.read(count)


def _cut_short(what: str, offset: int, length: int, size: int) -> Rejected:
    return Rejected("truncated", f"the JPEG 2000 {what} at byte {offset} ({length} bytes) runs past the end of the file ({size} bytes): the file is cut short")


def _codestream_box(handle: Any, size: int) -> tuple[int, bool]:
    """(where the JP2 file's codestream box's contents start, whether the box declares its
    length), every top-level box before it checked to fit in the file's `size` bytes."""
    for kind, offset, skip, length, declared in _top_level_boxes(handle, size):
        if length < skip or offset + length > size:
            raise _cut_short(f"box {kind.decode('latin-1')!r}", offset, length, size)
        if kind == b"jp2c":
            return offset + skip, declared
    raise Rejected("truncated", f"the JPEG 2000 file ({size} bytes) ends before its codestream box (jp2c): the file is cut short")


def _top_level_boxes(handle: Any, size: int) -> Iterator[tuple[bytes, int, int, int, bool]]:
    """(type, offset, header size, length, whether the length is declared) of a JP2 file's
    top-level boxes, by their lengths: an extended length (XLBox) when LBox is 1, and to the end
    of the file when it is 0. Stops at a length shorter than its header, after yielding it."""
    offset = 0
    while offset + 8 <= size:
        header = _read_at(handle, offset, 16)
        length, kind, skip = int.from_bytes(header[:4], "big"), header[4:8], 8
        if length == 1:
            length, skip = int.from_bytes(header[8:16], "big"), 16
        declared = length != 0
        length = length if declared else size - offset  # 0: the last box, to the end of the file
        yield kind, offset, skip, length, declared
        if length < skip:
            return
        offset += length


def _walk_tile_parts(handle: Any, offset: int, size: int) -> None:
    """Follow a codestream's main header marker segments, then its tile-parts, by their lengths."""
    offset += 2  # SOC
    while True:  # the main header, up to the first tile-part
        header = _read_at(handle, offset, 4)
        if len(header) < 4:
            raise _cut_short("main header", offset, 4, size)
        if header[:2] == _SOT:
            break
        length = int.from_bytes(header[2:4], "big")
        if offset + 2 + length > size:
            raise _cut_short(f"marker segment {header[:2].hex()}", offset, 2 + length, size)
        offset += 2 + length
    while True:
        header = _read_at(handle, offset, 12)
        if not header:  # openjpeg fails on the last tile without it
            raise Rejected("truncated", f"the JPEG 2000 codestream ends at byte {size}, after a whole tile-part, without its end marker (EOC): the file is cut short")
        if header[:2] != _SOT:
            return  # EOC, or other bytes after the last tile-part: the decoder judges those
        if len(header) < 12:
            raise _cut_short("tile-part header", offset, 12, size)
        length = int.from_bytes(header[6:10], "big")  # Psot; 0: this last tile-part runs to EOC
        if length == 0:
            if _read_at(handle, size - len(_EOC), len(_EOC)) != _EOC:
                raise Rejected("truncated", "the JPEG 2000 codestream's last tile-part runs to its end marker (EOC), which is missing: the file is cut short")
            return
        if offset + length > size:
            raise _cut_short("tile-part", offset, length, size)
        offset += length


def _only_this_object(path: str) -> Any:
    """A rasterio opener that serves `path` and nothing else (no sidecars, no other objects)."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    def opener(name: str, mode: str = "rb") -> Any:
        if name != path:
            raise FileNotFoundError(f"{name}: only the input {path} may be read")
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)

    return opener


@contextlib.contextmanager
def open_raster(path: str, driver: str | None = None) -> Iterator[Any]:
    """A rasterio dataset for `path` (local or gs://), opened only with `driver` (by default the
    one its first bytes call for, see `raster_driver`); `Rejected` (`decode_error`) when GDAL
    cannot open it so, or the file is no raster cropshard reads."""
    import rasterio
    from rasterio.errors import RasterioError

    driver = driver or _sniffed_driver(path)
    with rasterio.Env(**SAFE_GDAL_OPTIONS):
        try:
            if "://" in path:
                dataset = rasterio.open(path, driver=driver, opener=_only_this_object(path))
            else:
                dataset = rasterio.open(os.path.abspath(path), driver=driver)
        except RasterioError as err:
            raise Rejected("decode_error", f"GDAL cannot open it as {FORMAT_NAMES[driver]}: {err}") from err
        with dataset:
            yield dataset


def _sniffed_driver(path: str) -> str:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        driver = raster_driver(handle.read(SNIFF_BYTES))
    if driver is None:
        raise Rejected("decode_error", f"neither TIFF nor JPEG 2000: the rasters cropshard reads are {', '.join(FORMAT_NAMES.values())}")
    return driver
