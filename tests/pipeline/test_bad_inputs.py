"""Every kind of broken or odd input a 500k-image crawl of real cameras and scanners produces,
made by code and run through real builds: each one is either written (pixels checked against
a Pillow reference) or rejected exactly once with a specific reason, and the counts reconcile.

The folder build runs `cropshard build` as a subprocess under an unprivileged uid (tests run as
root, and root reads a chmod-000 file anyway), so "unreadable" is a real EACCES from the kernel.

The outcomes observed here are rendered as the table in docs/BAD_INPUTS.md; a test fails when
the file is out of date. Regenerate it with `python -m tests.pipeline.test_bad_inputs`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from cropshard.pipeline.build import run
from cropshard.reader import metadata, schema
from cropshard.transforms.rejects import text_of_path
from PIL import Image

from tests import imagegen

pytestmark = pytest.mark.slow  # builds over hundreds of hostile files

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "BAD_INPUTS.md"
JPEG_FIXTURES = REPO / "tests" / "data" / "jpeg"
CROPSHARD = REPO / ".venv" / "bin" / "cropshard"
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
CROP = (64, 64)
SIZE = (120, 160)  # (height, width) of the ordinary test images: larger than the crop
NOBODY = 65534  # uid/gid the folder build drops to when the tests run as root
WRITTEN = "written"

# --- making the inputs ------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def photo_img(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    return Image.fromarray(imagegen.photo(*size, seed=seed))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_from_parts(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG assembled chunk by chunk, for what Pillow cannot write (16-bit RGB, lying headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def rgb16_png(path: Path) -> np.ndarray:
    """A 16-bit-per-channel RGB PNG with every bit used; returns the 16-bit pixels."""
    wide = (imagegen.photo(*SIZE, seed=16).astype(np.uint16) * 257 + np.random.default_rng(16).integers(0, 256, (*SIZE, 3))).astype(">u2")
    rows = b"".join(b"\0" + wide[y].tobytes() for y in range(SIZE[0]))  # filter type 0 per row
    write(path, png_from_parts(SIZE[1], SIZE[0], 16, 2, zlib.compress(rows)))
    return wide.astype(np.uint16)


def gray16_png(path: Path) -> np.ndarray:
    y, x = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    wide = ((x * 409 + y * 131 + (x * y) % 257) % 65536).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(wide).save(path, format="PNG")  # Pillow writes mode I;16 as a 16-bit grey PNG
    return wide


KEY16 = 40000  # the tRNS key of the 16-bit grey PNG below


def gray16_keyed_png(path: Path) -> None:
    wide = np.asarray(Image.open(io.BytesIO(encode(photo_img(43).convert("L"), "PNG")))).astype(np.uint16) * 257
    wide[::3, ::5] = KEY16
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(wide).save(path, format="PNG", transparency=KEY16)


def keyed_center(path: Path) -> np.ndarray:
    """Reference for a transparency key: Pillow's pixels, those equal to the key black (16-bit
    grey: the top byte; Pillow's own I;16 -> RGBA conversion makes every pixel transparent)."""
    img = Image.open(path)
    if img.mode == "I;16":
        wide = np.asarray(img).astype(np.uint16)
        grey = np.where(wide == img.info["transparency"], 0, wide >> 8).astype(np.uint8)
        return imagegen.center_crop(np.repeat(grey[..., None], 3, axis=2), *CROP)
    rgba = np.asarray(img.convert("RGBA")).astype(np.uint32)
    return imagegen.center_crop(((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8), *CROP)


def bomb_png() -> bytes:
    """A PNG whose header claims 60000x60000 RGB (10.8 GB decoded) over a few bytes of data."""
    return png_from_parts(60000, 60000, 8, 2, zlib.compress(b"\0" * 64))


def bomb_jpeg() -> bytes:
    """A small JPEG with its SOF0 frame header patched to claim 60000x60000."""
    data = bytearray(encode(photo_img(60, (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def cmyk_jpeg(path: Path) -> None:
    write(path, encode(photo_img(20).convert("CMYK"), "JPEG", quality=95))


def ycck_jpeg(path: Path) -> np.ndarray:
    """A real YCCK JPEG (Adobe APP14 transform=2), which Pillow cannot write directly.

    libjpeg decodes YCCK to CMYK as C,M,Y = 255 - YCbCr->RGB(Y,Cb,Cr), K unchanged, and Pillow
    inverts Adobe CMYK on read and on write. So: store YCbCr of the wanted C,M,Y (inverted,
    because Pillow's writer inverts) plus the wanted K, write that as a "CMYK" JPEG and patch
    the transform byte from 0 to 2. Returns the CMYK pixels the file is meant to hold."""
    height, width = SIZE
    cmy = imagegen.photo(height, width, seed=21).astype(np.float64)
    k = np.tile(np.linspace(0, 200, width), (height, 1))
    wanted = np.dstack([cmy, k]).round().astype(np.uint8)
    r, g, b = (cmy[..., i] for i in range(3))
    ycc = np.dstack([0.299 * r + 0.587 * g + 0.114 * b, -0.168736 * r - 0.331264 * g + 0.5 * b + 128, 0.5 * r - 0.418688 * g - 0.081312 * b + 128])
    stored = np.dstack([255 - ycc.round().clip(0, 255), k.round()]).astype(np.uint8)
    data = bytearray(encode(Image.frombytes("CMYK", (width, height), stored.tobytes()), "JPEG", quality=100, subsampling=0))
    adobe = data.index(b"Adobe")
    assert data[adobe + 11] == 0, "expected Pillow's Adobe marker with transform 0"
    data[adobe + 11] = 2
    write(path, bytes(data))
    return wanted


def animated_gif(path: Path) -> list[np.ndarray]:
    frames = [photo_img(30 + i).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(3)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return [np.asarray(frame.convert("RGB")) for frame in frames]


def multipage_tiff(path: Path) -> list[np.ndarray]:
    pages = [imagegen.photo(*SIZE, seed=40 + i) for i in range(3)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pages[0]).save(path, format="TIFF", save_all=True, append_images=[Image.fromarray(p) for p in pages[1:]])
    return pages


def with_alpha(seed: int) -> Image.Image:
    rgba = np.dstack([imagegen.photo(*SIZE, seed=seed), np.tile(np.linspace(0, 255, SIZE[1]), (SIZE[0], 1)).astype(np.uint8)])
    return Image.fromarray(rgba, "RGBA")


def palette_with_transparency(path: Path) -> None:
    img = photo_img(50).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", transparency=5)  # palette entry 5 is fully transparent


# --- the cases ------------------------------------------------------------------------------


def pillow_center(path: Path) -> np.ndarray:
    """The reference: Pillow open -> exif_transpose -> alpha on black -> RGB, centre crop."""
    return imagegen.center_crop(imagegen.reference_pixels(path), *CROP)


def top_byte_center(path: Path) -> np.ndarray:
    # Pillow's own I;16 -> L conversion saturates (every value > 255 becomes 255); cropshard
    # keeps the top byte, as Pillow itself does for 16-bit RGB. Reference: Pillow's decoded
    # 16-bit values >> 8.
    wide = np.asarray(Image.open(path)).astype(np.uint16)
    grey = (wide >> 8).astype(np.uint8)
    return imagegen.center_crop(np.repeat(grey[..., None], 3, axis=2), *CROP)


# --- rasters (GeoTIFF through rasterio) -------------------------------------------------------


def _geotiff(data: np.ndarray, **profile) -> Callable[[Path], None]:
    """A tiled, deflate-compressed GeoTIFF in UTM zone 13 holding `data` (bands, height, width)."""
    from tests import rastergen

    return lambda path: rastergen.write_raster(path, data, **profile)


def _jpeg2000(data: np.ndarray, **options) -> Callable[[Path], None]:
    """A lossless, tiled, georeferenced JPEG 2000 (GDAL's JP2OpenJPEG, as Sentinel-2 band files) holding `data`."""
    from tests import rastergen

    return lambda path: rastergen.write_jp2(path, data, **options)


def _palette_geotiff(path: Path) -> None:
    """A georeferenced class map: one uint8 band of indices with a colour table (as land-cover products ship)."""
    import rasterio

    classes = (_photo_bands(46)[:1] // 64).astype(np.uint8)
    _geotiff(classes)(path)
    with rasterio.open(path, "r+") as dataset:
        dataset.write_colormap(1, {0: (0, 90, 0, 255), 1: (200, 200, 0, 255), 2: (0, 0, 200, 255), 3: (160, 160, 160, 255)})


def _cut_short(make: Callable[[Path], None], share: float) -> Callable[[Path], None]:
    """The file `make` writes, of which only the first `share` of the bytes arrived (an interrupted download)."""

    def cut(path: Path) -> None:
        make(path)
        whole = path.read_bytes()
        path.write_bytes(whole[: int(len(whole) * share)])
    return cut


def _photo_bands(seed: int) -> np.ndarray:
    return np.moveaxis(imagegen.photo(*SIZE, seed=seed), -1, 0)


def raster_center(shift: int = 0) -> Callable[[Path], np.ndarray]:
    """Reference: rasterio's read of the centre window, bands as channels, >> `shift` (the bits rule)."""

    def reference(path: Path) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(path) as ds:
            y, x = (ds.height - CROP[0]) // 2, (ds.width - CROP[1]) // 2
            window = ds.read(window=Window(x, y, CROP[1], CROP[0]))
        return np.moveaxis(window >> shift, 0, -1).astype(np.uint8)

    return reference


def _vrt_named_tif(path: Path) -> None:
    write(path, b'<VRTDataset rasterXSize="160" rasterYSize="120"><VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
                b'<SourceFilename relativeToVRT="0">/etc/hostname</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>\n')


def _twelve_bit_grey_png(path: Path) -> None:
    values = (imagegen.photo(*SIZE, seed=29)[:, :, 0].astype(np.uint16) * 16)  # 0..4080: 12 bits in a 16-bit PNG
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path, format="PNG")


def _gdal_sidecar(suffix: str) -> Callable[[Path], None]:
    """A sidecar GDAL writes beside a GeoTIFF (gdaladdo -ro: .ovr; an external mask: .msk), made for
    a copy of the GeoTIFF and moved to `path` (beside the case's own rasters/rgb_utm.tif)."""

    def make(path: Path) -> None:
        import rasterio
        from rasterio.enums import Resampling

        from tests import rastergen

        with tempfile.TemporaryDirectory() as folder:
            base = rastergen.write_raster(Path(folder) / "base.tif", _photo_bands(21))
            with rasterio.Env(TIFF_USE_OVR=True, GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(base, "r+") as ds:
                if suffix == ".ovr":
                    ds.build_overviews([2], Resampling.average)
                else:
                    ds.write_mask(np.full((ds.height, ds.width), 255, np.uint8))
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f"{base}{suffix}", path)
    return make


def _float_pfm(scale: float, nan: bool = False) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        values = imagegen.photo(*SIZE, seed=30)[:, :, 0].astype(np.float32) / 255 * scale
        if nan:
            values[::7, ::5] = np.nan
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(values, "F").save(path, format="PPM")  # mode F: Pillow writes a PFM
    return make


@dataclasses.dataclass(frozen=True)
class Case:
    """One input: what it is, how the test makes it, and what must come out."""

    input: str  # table column: the kind of input
    how: str  # table column: how the test produces it
    rel: str  # path below the build root
    expect: str  # WRITTEN or a rejection reason
    make: Callable[[Path], object]  # make(path) creates the input at `path`
    reference: Callable[[Path], np.ndarray] | None = None  # expected crop pixels, for WRITTEN
    extra: Callable[[Path, np.ndarray], None] | None = None  # further checks: extra(path, record pixels)
    check: str = "Pillow reference"  # table text: what the record's pixels were compared with
    records: int = 1


def _save_photo(seed: int, fmt: str, size: tuple[int, int] = SIZE, **kwargs) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        write(path, encode(photo_img(seed, size), fmt, **kwargs))

    return make


def _fixture(name: str) -> Callable[[Path], None]:
    """Copy a file of tests/data/jpeg (made by tools this project does not install: its README)."""
    return lambda path: write(path, (JPEG_FIXTURES / name).read_bytes())


def _twin_center(name: str) -> Callable[[Path], np.ndarray]:
    """The Pillow reference of a fixture's Huffman twin, which holds the same DCT coefficients."""
    return lambda path: pillow_center(JPEG_FIXTURES / name)


def _bytes(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: write(path, data() if callable(data) else data)


def _orientation(orientation: int) -> Callable[[Path], None]:
    return lambda path: imagegen.save(path, imagegen.photo(*SIZE, seed=70 + orientation), orientation=orientation, quality=95)


def _check_orientation(orientation: int) -> Callable[[Path, np.ndarray], None]:
    def check(path: Path, pixels: np.ndarray) -> None:
        # Independent of Pillow's exif_transpose: the crop must show the image as displayed.
        displayed = imagegen.center_crop(imagegen.photo(*SIZE, seed=70 + orientation), *CROP)
        assert psnr(pixels, displayed) > 30, f"orientation {orientation}: crop does not match the displayed image"

    return check


def _check_first_frame(path: Path, pixels: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        frames = animated_gif(Path(scratch) / "again.gif")  # same frames, recomputed
    assert np.array_equal(pixels, imagegen.center_crop(frames[0], *CROP))
    assert not np.array_equal(pixels, imagegen.center_crop(frames[1], *CROP))


def _check_first_page(path: Path, pixels: np.ndarray) -> None:
    assert np.array_equal(pixels, imagegen.center_crop(imagegen.photo(*SIZE, seed=40), *CROP))


def _check_rgb16(path: Path, pixels: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        wide = rgb16_png(Path(scratch) / "again.png")
    assert np.array_equal(pixels, imagegen.center_crop((wide >> 8).astype(np.uint8), *CROP))


def _check_ycck(path: Path, pixels: np.ndarray) -> None:
    img = Image.open(path)
    assert img.mode == "CMYK", img.mode
    data = path.read_bytes()
    assert data[data.index(b"Adobe") + 11] == 2, "not marked YCCK"
    with tempfile.TemporaryDirectory() as scratch:
        wanted = ycck_jpeg(Path(scratch) / "again.jpg")
    # Decoded through libjpeg's YCCK path the file holds the CMYK it was made from (lossy JPEG).
    assert np.abs(np.asarray(img).astype(int) - wanted).max() <= 6


def _chmod_000(path: Path) -> None:
    write(path, encode(photo_img(90), "JPEG"))
    path.chmod(0)


def _unreadable_dir(path: Path) -> None:
    write(path / "hidden.jpg", encode(photo_img(91), "JPEG"))
    path.chmod(0)


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def _symlink(target: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    return make


def _dir_named_jpg(path: Path) -> None:
    write(path / "inside.png", encode(photo_img(95), "PNG"))


def _truncated_png(path: Path) -> None:
    data = encode(photo_img(96), "PNG")
    write(path, data[: len(data) // 2])


def _flipped_scan_byte(path: Path) -> None:
    data = bytearray(encode(photo_img(98), "JPEG", quality=90))
    data[len(data) * 2 // 3] ^= 0x55  # inside the entropy-coded scan, far from any marker
    write(path, bytes(data))


def _cut_with_end_marker(path: Path) -> None:
    data = encode(photo_img(97), "JPEG", quality=90)
    write(path, data[: len(data) * 3 // 5] + b"\xff\xd9")  # libjpeg: "premature end of data segment"


def _restart_interval_doubled(path: Path) -> None:
    data = encode(photo_img(96), "JPEG", quality=90, restart_marker_blocks=4)
    at = data.index(b"\xff\xdd")  # DRI: 4 MCUs -> 8, every byte of the scans intact
    write(path, data[: at + 4] + (8).to_bytes(2, "big") + data[at + 6 :])


def _marker_in_scan(path: Path) -> None:
    data = bytearray(encode(photo_img(99), "JPEG", quality=90))
    at = len(data) // 2
    data[at : at + 2] = b"\xff\xc4"  # a byte turned 0xFF in the scan reads as a (DHT) marker there
    write(path, bytes(data))


def _taller_png(path: Path) -> None:
    data = bytearray(encode(photo_img(96), "PNG"))
    data[20:24] = struct.pack(">I", SIZE[0] + 40)  # IHDR height: 40 rows more than the IDAT holds
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    write(path, bytes(data))


def _bad_crc_png(path: Path) -> None:
    data = bytearray(encode(photo_img(97), "PNG"))
    data[29] ^= 0xFF  # inside the IHDR chunk's CRC: the header no longer checks out
    write(path, bytes(data))


RASTER_CASES: tuple[Case, ...] = (
    Case("RGB GeoTIFF (uint8, UTM, tiled, deflate)", "rasterio, 3 bands, EPSG:32613", "rasters/rgb_utm.tif", WRITTEN,
         _geotiff(_photo_bands(21)), raster_center(), check="rasterio window read (the raster path, georeferenced)"),
    Case("12-bit GeoTIFF (3 x uint16, NBITS=12)", "rasterio, nbits=12", "rasters/twelve_bit.tif", WRITTEN,
         _geotiff(_photo_bands(22).astype(np.uint16) * 16, nbits=12), raster_center(4), check="rasterio window read >> 4 (`--to_uint8 bits`, 12 bits)"),
    Case("11-bit values in a 16-bit GeoTIFF (WorldView pan-like)", "rasterio, 3 x uint16, values 0..2047, no NBITS", "rasters/eleven_in_sixteen.tif",
         "range_collapsed", _geotiff(_photo_bands(23).astype(np.uint16) * 8)),
    Case("8-band multispectral GeoTIFF (uint16)", "rasterio, 8 bands (dataset: --channels 3, no --bands)", "rasters/eight_band.tif", "band_mismatch",
         _geotiff(np.concatenate([_photo_bands(24), _photo_bands(25), _photo_bands(26)[:2]]).astype(np.uint16))),
    Case("Signed GeoTIFF a quarter below zero (int16, a coastal DEM)", "rasterio, 3 x int16, values -2000..5650", "rasters/dem_int16.tif",
         "band_mismatch", _geotiff(_photo_bands(45).astype(np.int16) * 30 - 2000)),
    Case("Palette GeoTIFF (a land-cover class map) in an RGB build", "rasterio, 1 x uint8 class indices with a colour table, EPSG:32613",
         "rasters/landcover_palette.tif", "band_mismatch", _palette_geotiff),
    Case("float32 GeoTIFF (3 bands)", "rasterio, float32 reflectances", "rasters/reflectance.tif", "band_mismatch",
         _geotiff(_photo_bands(27).astype(np.float32) / 255)),
    Case("External overviews beside their GeoTIFF (gdaladdo -ro)", "rasterio build_overviews with TIFF_USE_OVR: a TIFF at half resolution",
         "rasters/rgb_utm.tif.ovr", "gdal_sidecar", _gdal_sidecar(".ovr")),
    Case("External mask beside its GeoTIFF", "rasterio write_mask with GDAL_TIFF_INTERNAL_MASK=NO: a 1-band TIFF", "rasters/rgb_utm.tif.msk",
         "gdal_sidecar", _gdal_sidecar(".msk")),
    Case("GDAL VRT named .tif", "VRT XML pointing at /etc/hostname", "rasters/innocent.tif", "raster_reference", _vrt_named_tif),
    Case("12-bit georeferenced JPEG 2000 (Sentinel-2-like band file)", "GDAL JP2OpenJPEG, 3 x uint16, NBITS=12, lossless, EPSG:32613",
         "rasters/twelve_bit.jp2", WRITTEN, _jpeg2000(_photo_bands(31).astype(np.uint16) * 16, NBITS=12), raster_center(4),
         check="rasterio window read >> 4 (the raster path: GDAL's JPEG 2000 driver, georeferenced)"),
    Case("3-band JPEG 2000 without georeferencing, bands not marked RGB (GDAL's default)",
         "GDAL JP2OpenJPEG, 3 x uint8, no CRS: a greyscale colour space Pillow cannot decode", "rasters/scan_grey3.jp2", WRITTEN,
         _jpeg2000(_photo_bands(38), crs=None), raster_center(), check="rasterio window read (the raster path, on the pixel grid)"),
    Case("4-band JPEG 2000 without georeferencing (RGB + near-infrared)", "GDAL JP2OpenJPEG, 4 x uint8, no CRS, no band marked alpha",
         "rasters/rgbn.jp2", "band_mismatch", _jpeg2000(np.concatenate([_photo_bands(39), _photo_bands(40)[:1]]), crs=None)),
    Case("GeoTIFF cut short (an interrupted download)", "rasterio, 3 bands, tiled 32, first 70% of its bytes", "rasters/cut.tif", "truncated",
         _cut_short(_geotiff(_photo_bands(37), block=32), 0.7)),
    Case("Georeferenced JPEG 2000 cut short", "GDAL JP2OpenJPEG, 3 x uint8, first 60% of its bytes", "rasters/cut.jp2", "truncated",
         _cut_short(_jpeg2000(_photo_bands(32)), 0.6)),
    Case("Bare JPEG 2000 codestream cut short (no georeferencing: a photo)", "GDAL JP2OpenJPEG CODEC=J2K, 3 x uint16, first 60% of its bytes",
         "rasters/cut.j2k", "decode_error",
         _cut_short(_jpeg2000(_photo_bands(33).astype(np.uint16) * 256, crs=None, CODEC="J2K"), 0.6)),
    Case("16-bit greyscale PNG holding 12-bit values", "Pillow, mode I;16, values 0..4080", "rasters/camera12.png", "range_collapsed", _twelve_bit_grey_png),
    Case("Float PFM with values beyond 255 (radiance)", "Pillow, mode F, values 0..1000", "rasters/radiance.pfm", "band_mismatch", _float_pfm(1000.0)),
    Case("Float PFM with NaN samples", "Pillow, mode F, values 0..1, NaN every 7th row and 5th column", "rasters/holes.pfm", "band_mismatch", _float_pfm(1.0, nan=True)),
)

FOLDER_CASES: tuple[Case, ...] = (
    Case("Baseline JPEG (control)", "Pillow, quality 90", "formats/baseline.jpg", WRITTEN, _save_photo(1, "JPEG", quality=90), pillow_center),
    Case("Progressive JPEG", "Pillow, progressive=True", "formats/progressive.jpg", WRITTEN, _save_photo(2, "JPEG", progressive=True, quality=90), pillow_center),
    Case("Progressive JPEG that ends after 3 of its 10 scans", "Pillow, progressive=True, EOI after the third scan (a legal file)",
         "formats/progressive_ended_early.jpg", WRITTEN,
         lambda p: write(p, imagegen.ended_after(encode(photo_img(41), "JPEG", progressive=True, quality=90), 3)), pillow_center,
         check="Pillow reference (a window decode would differ: libjpeg smooths the missing coefficients from neighbouring blocks)"),
    Case("Greyscale JPEG", "Pillow, mode L", "formats/grey.jpg", WRITTEN, lambda p: write(p, encode(photo_img(3).convert("L"), "JPEG")), pillow_center),
    Case("CMYK JPEG", "Pillow, mode CMYK (Adobe APP14, transform 0)", "formats/cmyk.jpg", WRITTEN, cmyk_jpeg, pillow_center),
    Case("YCCK JPEG", "CMYK JPEG holding YCbCr+K, APP14 transform byte patched to 2; Pillow reads it as CMYK", "formats/ycck.jpg", WRITTEN,
         ycck_jpeg, pillow_center, _check_ycck, "Pillow reference (Pillow reads CMYK within 6 levels of the CMYK it was made from)"),
    Case("Arithmetic-coded JPEG (over 64 KiB, EXIF orientation 6)", "jpegtran -arithmetic of a Pillow JPEG", "formats/arithmetic.jpg", WRITTEN,
         _fixture("arithmetic.jpg"), _twin_center("huffman.jpg"), check="Pillow reference of its Huffman twin (same DCT coefficients)"),
    Case("Progressive arithmetic-coded JPEG", "jpegtran -arithmetic -progressive of a Pillow JPEG", "formats/arithmetic_progressive.jpg", WRITTEN,
         _fixture("arithmetic_progressive.jpg"), _twin_center("huffman.jpg"), check="Pillow reference of its Huffman twin (same DCT coefficients)"),
    Case("Lossless JPEG (SOF3)", "imagecodecs (libjpeg-turbo 3.1), lossless=True", "formats/lossless.jpg", WRITTEN, _fixture("lossless.jpg"), pillow_center),
    Case("12-bit JPEG", "imagecodecs (libjpeg-turbo 3.1), bitspersample=12", "formats/twelve_bit.jpg", "decode_error", _fixture("twelve_bit.jpg")),
    Case("16-bit greyscale PNG", "Pillow, mode I;16", "formats/grey16.png", WRITTEN, gray16_png, top_byte_center,
         check="Pillow's 16-bit values >> 8"),
    Case("16-bit RGB PNG", "assembled chunk by chunk (bit depth 16, colour type 2)", "formats/rgb16.png", WRITTEN, rgb16_png, pillow_center, _check_rgb16,
         "Pillow reference == the 16-bit source >> 8"),
    Case("Palette PNG with transparency", "Pillow, mode P, tRNS entry 5", "formats/palette_trns.png", WRITTEN, palette_with_transparency, pillow_center,
         check="Pillow reference (alpha on black)"),
    Case("1-bit PNG with a transparency key", "Pillow, mode 1, transparency=1 (white is transparent)", "formats/one_bit_keyed.png", WRITTEN,
         lambda p: write(p, encode(photo_img(44).convert("1"), "PNG", transparency=1)), keyed_center,
         check="Pillow's RGBA composited on black (white pixels black: the key had been ignored)"),
    Case("16-bit grey PNG with a transparency key", f"Pillow, mode I;16, transparency={KEY16} on every 3rd row's 5th pixel", "formats/grey16_keyed.png",
         WRITTEN, gray16_keyed_png, keyed_center, check="Pillow's 16-bit values >> 8, key pixels black (the key had been ignored)"),
    Case("LA PNG (grey + alpha)", "Pillow, mode LA, alpha ramp", "formats/la.png", WRITTEN, lambda p: write(p, encode(with_alpha(4).convert("LA"), "PNG")), pillow_center,
         check="Pillow reference (alpha on black)"),
    Case("RGBA PNG", "Pillow, mode RGBA, alpha ramp", "formats/rgba.png", WRITTEN, lambda p: write(p, encode(with_alpha(5), "PNG")), pillow_center,
         check="Pillow reference (alpha on black)"),
    Case("RGBA TIFF", "Pillow, mode RGBA, alpha ramp (GDAL: 4 bands, the last alpha)", "formats/rgba.tif", WRITTEN,
         lambda p: write(p, encode(with_alpha(34), "TIFF")), pillow_center, check="Pillow reference (alpha on black)"),
    Case("LA TIFF (grey + alpha)", "Pillow, mode LA, alpha ramp (GDAL: 2 bands, the last alpha)", "formats/la.tif", WRITTEN,
         lambda p: write(p, encode(with_alpha(35).convert("LA"), "TIFF")), pillow_center, check="Pillow reference (alpha on black)"),
    Case("RGBA JPEG 2000", "Pillow, mode RGBA, alpha ramp", "formats/rgba.jp2", WRITTEN,
         lambda p: write(p, encode(with_alpha(36), "JPEG2000")), pillow_center, check="Pillow reference (alpha on black)"),
    Case("Animated GIF (3 frames)", "Pillow, save_all", "formats/animated.gif", WRITTEN, animated_gif, pillow_center, _check_first_frame,
         "Pillow reference == frame 0 (!= frame 1)"),
    Case("Multi-page TIFF (3 pages)", "Pillow, save_all", "formats/multipage.tif", WRITTEN, multipage_tiff, pillow_center, _check_first_page,
         "Pillow reference == page 0 exactly"),
    Case("1-bit CCITT G4 TIFF (scanner)", "Pillow, mode 1, compression=group4", "formats/scan_g4.tif", WRITTEN,
         lambda p: write(p, encode(photo_img(6).convert("1"), "TIFF", compression="group4")), pillow_center),
    Case("TIFF with EXIF orientation 6", "Pillow TIFF, pixels stored rotated, orientation tag 6", "formats/rotated6.tif", WRITTEN,
         lambda p: imagegen.save(p, imagegen.photo(*SIZE, seed=80), fmt="TIFF", orientation=6), lambda p: imagegen.center_crop(imagegen.photo(*SIZE, seed=80), *CROP),
         check="the image as displayed, exactly (Pillow orients TIFFs itself while loading; was rotated twice)"),
    Case("WebP", "Pillow, quality 90", "formats/photo.webp", WRITTEN, _save_photo(7, "WEBP", quality=90), pillow_center),
    Case("BMP", "Pillow", "formats/photo.bmp", WRITTEN, _save_photo(8, "BMP"), pillow_center),
    Case("AVIF", "Pillow, quality 90", "formats/photo.avif", WRITTEN, _save_photo(42, "AVIF", quality=90), pillow_center),
    Case("HEIC photo (as iPhones save them)", "an ISO media file of brand heic (ftyp, then mdat)", "formats/phone.heic", "decode_error",
         _bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic\x00\x00\x00\x08mdat")),
    Case("JPEG XL", "a JPEG XL codestream's signature and header bytes", "formats/photo.jxl", "decode_error", _bytes(b"\xff\x0a\xfa\x7f\x01\x90" + bytes(40))),
    *(
        Case(f"EXIF orientation {o}", "JPEG with the pixels stored transformed and the tag set", f"orientation/exif_{o}.jpg", WRITTEN,
             _orientation(o), pillow_center, _check_orientation(o), "Pillow reference (exif_transpose); PSNR > 30 vs the image as displayed")
        for o in range(1, 9)
    ),
    Case("Image smaller than the crop (40x50)", "Pillow PNG", "sizes/small_40x50.png", "too_small", _save_photo(9, "PNG", (40, 50))),
    Case("1x1 image", "Pillow PNG", "sizes/one_pixel.png", "too_small", lambda p: write(p, encode(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG"))),
    Case("Wide panorama 20000x200", "Pillow JPEG, 200 rows x 20000 columns", "sizes/panorama_wide.jpg", WRITTEN, _save_photo(10, "JPEG", (200, 20000)), pillow_center),
    Case("Tall panorama 200x20000", "Pillow JPEG, 20000 rows x 200 columns", "sizes/panorama_tall.jpg", WRITTEN, _save_photo(11, "JPEG", (20000, 200)), pillow_center),
    Case("Header claims 60000x60000 (PNG)", "IHDR 60000x60000 over a 100-byte IDAT", "sizes/bomb.png", "too_many_pixels", _bytes(bomb_png)),
    Case("Header claims 60000x60000 (JPEG)", "16x16 JPEG with its SOF0 size patched", "sizes/bomb.jpg", "too_many_pixels", _bytes(bomb_jpeg)),
    Case("Truncated JPEG", "first half of a JPEG's bytes", "broken/truncated.jpg", "truncated", lambda p: imagegen.truncated_jpeg(p)),
    Case("Truncated PNG", "first half of a PNG's bytes", "broken/truncated.png", "truncated", _truncated_png),
    Case("Zero-byte file", "empty file named .jpg", "broken/empty.jpg", "empty_file", _bytes(b"")),
    Case("Text file with an image extension", "UTF-8 text named .jpg", "broken/notes.jpg", "not_an_image", _bytes(b"this is a text file, not a JPEG\n")),
    Case("HTML error page saved as .png", "an HTTP 404 body named .png", "broken/download.png", "not_an_image", _bytes(b"<html><body>404 Not Found</body></html>\n")),
    Case("JPEG with a flipped byte in its scan data", "one byte XOR 0x55 two thirds into the file", "broken/bitflip.jpg", WRITTEN, _flipped_scan_byte,
         pillow_center, check="Pillow reference (garbled there too: libjpeg only warns about corrupt scan data, nothing can tell)"),
    Case("JPEG with a marker inside its scan data", "two bytes halfway through the scan set to 0xFF 0xC4 (Pillow: broken data stream)",
         "broken/marker_in_scan.jpg", "decode_error", _marker_in_scan),
    Case("JPEG whose restart interval does not fit its restart markers", "DRI of 4 MCUs changed to 8, scans intact (libjpeg: premature end of"
         " data segment; Pillow and TensorFlow decode most blocks out of place)", "broken/restart_interval.jpg", "decode_error", _restart_interval_doubled),
    Case("JPEG whose scan data stops early, end marker kept", "first 60% of a JPEG's bytes + EOI (Pillow and TensorFlow decode the rest grey)",
         "broken/cut_with_eoi.jpg", "truncated", _cut_with_end_marker),
    Case("PNG whose header declares more rows than its data holds", "IHDR height + 40, CRC fixed (Pillow loads it with black rows)",
         "broken/taller.png", "truncated", _taller_png),
    Case("PNG with a corrupt header", "valid PNG with its IHDR CRC flipped", "broken/bad_crc.png", "decode_error", _bad_crc_png),
    Case("PNG with corrupt compressed pixels", "16 bytes of the IDAT's zlib stream zeroed, chunk CRC fixed", "broken/bad_zlib.png", "decode_error",
         lambda p: write(p, imagegen.corrupt_png_pixels(encode(photo_img(98), "PNG")))),
    Case("EPS (PostScript) named .jpg", "Pillow, format EPS", "broken/vector.jpg", "decode_error", lambda p: write(p, encode(photo_img(12), "EPS"))),
    Case("Unreadable file (mode 000)", "chmod 000; the build runs as uid nobody", "broken/no_permission.jpg", "unreadable", _chmod_000),
    Case("Unreadable folder (mode 000)", "folder with one JPEG, chmod 000", "broken/locked_folder", "unreadable", _unreadable_dir),
    Case("Named pipe (FIFO) called .jpg", "os.mkfifo; opening it would block forever", "broken/pipe.jpg", "unreadable", _fifo),
    Case("Broken symbolic link", "symlink to a file that does not exist", "broken/dangling.jpg", "not_found", _symlink("does-not-exist.jpg")),
    Case("Symbolic link to a folder", "symlink to ../formats", "broken/linked_folder", "unreadable", _symlink("../formats")),
    Case("Symbolic link to an image", "symlink to ../formats/baseline.jpg", "names/link_to_baseline.jpg", WRITTEN, _symlink("../formats/baseline.jpg"), pillow_center),
    Case("File name with spaces", "Pillow JPEG", "names/with some spaces.jpg", WRITTEN, _save_photo(12, "JPEG"), pillow_center),
    Case("File name that is not UTF-8 (Latin-1 bytes)", "Pillow JPEG named caf\\xe9.jpg", "names/caf\udce9.jpg", "bad_file_name",
         _save_photo(18, "JPEG")),
    Case("File name with a backslash", "Pillow JPEG; label = its folder (names), not part of its name", "names/tabby\\2024.jpg", WRITTEN,
         _save_photo(19, "JPEG"), pillow_center),
    Case("Unicode file name", "Pillow JPEG", "names/ünïcødé 猫 写真.jpg", WRITTEN, _save_photo(13, "JPEG"), pillow_center),
    Case("Upper-case extension .JPG", "Pillow JPEG", "names/SHOUTING.JPG", WRITTEN, _save_photo(14, "JPEG"), pillow_center),
    Case("Mixed-case extension .JpEg", "Pillow JPEG", "names/mixed.JpEg", WRITTEN, _save_photo(15, "JPEG"), pillow_center),
    Case("Upper-case extension .PNG", "Pillow PNG", "names/SCAN.PNG", WRITTEN, _save_photo(16, "PNG"), pillow_center),
    Case("Image beside the class folders (directly in --input)", "Pillow JPEG; the other inputs are labelled by their folders",
         "stray.jpg", "no_label", _save_photo(20, "JPEG")),
    Case("Deeply nested folders", "Pillow JPEG; label = the innermost folder (c)", "names/a/b/c/deep.jpg", WRITTEN, _save_photo(17, "JPEG"), pillow_center),
    Case("A folder named album.jpg", "folder holding inside.png; not an input itself, its file is", "names/album.jpg/inside.png", WRITTEN,
         lambda p: _dir_named_jpg(p.parent), pillow_center),
    Case("Byte-identical duplicate (no --dedup)", "copy of formats/baseline.jpg under another name and label", "dups/copy of baseline.jpg", WRITTEN,
         lambda p: write(p, (p.parent.parent / "formats" / "baseline.jpg").read_bytes()), pillow_center),
) + RASTER_CASES


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def make_folder_inputs(root: Path) -> None:
    # Permission changes go last: they would stop the other makers from reading their folders.
    ordered = sorted(FOLDER_CASES, key=lambda c: c.make in (_chmod_000, _unreadable_dir))
    for case in ordered:
        case.make(root / case.rel)


# --- reading a build back ---------------------------------------------------------------------


@dataclasses.dataclass
class Built:
    out: Path
    info: metadata.DatasetInfo
    records: list[schema.ImageRecord]
    rejected: list[dict]
    stdout: str = ""


def read_records(out: Path, info: metadata.DatasetInfo) -> list[schema.ImageRecord]:
    import tensorflow as tf

    files = [str(out / shard.file) for split in info.splits.values() for shard in split.shards]
    return [schema.decode_example(r.numpy()) for r in tf.data.TFRecordDataset(files)] if files else []


def read_back(out: Path, stdout: str = "") -> Built:
    info = metadata.load_info(str(out))
    rejected_path = out / metadata.REJECTED_FILENAME
    rejected = [json.loads(line) for line in rejected_path.read_text(encoding="utf-8").splitlines()] if rejected_path.exists() else []
    return Built(out, info, read_records(out, info), rejected, stdout)


def pixels_of(record: schema.ImageRecord) -> np.ndarray:
    assert record.format == "raw"
    return np.frombuffer(record.encoded, np.uint8).reshape(record.height, record.width, record.channels)


def outcome(built: Built, path: str, line: str | None = None) -> tuple[list[schema.ImageRecord], list[dict]]:
    """Records and rejection lines that belong to one input (a path, or a manifest line)."""
    records = [r for r in built.records if r.filename == path]
    shown = text_of_path(path)  # a path that is not UTF-8 is written with its bytes as \xNN
    rejected = [r for r in built.rejected if r["path"] == shown or (line is not None and r["path"].endswith(line))]
    return records, rejected


def describe(records: list, rejected: list[dict]) -> str:
    if records and not rejected:
        return f"written: {len(records)} record{'s' * (len(records) != 1)}"
    if len(rejected) == 1 and not records:
        return f"rejected `{rejected[0]['reason']}` (stage {rejected[0]['stage']})"
    return f"UNEXPECTED: {len(records)} records, rejections {[r['reason'] for r in rejected]}"


RECONCILED = re.compile(r"inputs (\d+) = (\d+) images written \+ (\d+) rejected\s+\(reconciled\)")


def assert_reconciled(built: Built) -> None:
    info = built.info
    assert info.num_inputs == info.num_images_written + info.num_rejected
    assert info.num_rejected == len(built.rejected)
    assert info.rejected == {reason: sum(r["reason"] == reason for r in built.rejected) for reason in {r["reason"] for r in built.rejected}}
    assert info.num_examples == len(built.records)


# --- the folder build (subprocess, unprivileged) ----------------------------------------------


def _drop_privileges() -> list[str]:
    """Command prefix that runs the build as an ordinary user when we are root."""
    if os.geteuid() != 0:
        return []  # chmod 000 already denies us
    setpriv = shutil.which("setpriv")
    assert setpriv, "tests run as root need setpriv (util-linux) to run the build unprivileged"
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def cli_build(args: list[str], home: Path, timeout: float = 300) -> str:
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([*_drop_privileges(), str(CROPSHARD), "build", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=home)
    assert proc.returncode == 0, f"cropshard build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def shared_tmp() -> Iterator[Path]:
    # Not pytest's tmp_path: that lives under a root-only 0700 folder the unprivileged build cannot enter.
    base = Path(tempfile.mkdtemp(prefix="cropshard-bad-inputs-"))
    base.chmod(0o755)
    yield base
    for path in base.rglob("*"):  # restore permissions so the tree can be removed
        if not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def folder_build(shared_tmp: Path) -> Built:
    root = shared_tmp / "in"
    make_folder_inputs(root)
    out, home = shared_tmp / "out", shared_tmp / "home"
    for folder in (out, home):
        folder.mkdir()
        if os.geteuid() == 0:
            os.chown(folder, NOBODY, NOBODY)
    stdout = cli_build([f"--input={root}", f"--output={out}", "--crop=center", f"--size={CROP[0]}x{CROP[1]}", "--num_shards=2", *IN_PROCESS], home)
    return read_back(out, stdout)


@pytest.mark.parametrize("case", FOLDER_CASES, ids=lambda c: c.rel)
def test_folder_input(folder_build: Built, case: Case) -> None:
    path = str(folder_build.out.parent / "in" / case.rel)
    records, rejected = outcome(folder_build, path)
    if case.expect != WRITTEN:
        assert not records, f"{case.rel}: expected rejection {case.expect}, got {len(records)} records"
        assert len(rejected) == 1, f"{case.rel}: expected exactly one rejection, got {rejected}"
        assert rejected[0]["reason"] == case.expect, rejected[0]
        assert rejected[0]["message"], rejected[0]
        return
    assert not rejected, f"{case.rel}: expected records, got rejections {rejected}"
    assert len(records) == case.records, f"{case.rel}: {len(records)} records"
    for record in records:
        pixels = pixels_of(record)
        assert case.reference is not None
        np.testing.assert_array_equal(pixels, case.reference(Path(path)), err_msg=case.rel)
        assert record.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert record.label_text == Path(case.rel).parent.name
        if case.extra is not None:
            case.extra(Path(path), pixels)


def test_folder_build_reconciles_and_says_so(folder_build: Built) -> None:
    assert_reconciled(folder_build)
    info = folder_build.info
    match = RECONCILED.search(folder_build.stdout)
    assert match, folder_build.stdout
    assert tuple(map(int, match.groups())) == (info.num_inputs, info.num_images_written, info.num_rejected)
    # Every input is one case; nothing else was written or rejected (nothing silently dropped
    # either: num_inputs counts exactly the cases).
    assert info.num_inputs == len(FOLDER_CASES)
    assert info.num_images_written == sum(c.expect == WRITTEN for c in FOLDER_CASES)


def test_folder_named_like_an_image_is_not_an_input(folder_build: Built) -> None:
    folder = str(folder_build.out.parent / "in" / "names" / "album.jpg")
    assert not [r for r in folder_build.rejected if r["path"] == folder]
    assert not [r for r in folder_build.records if r.filename == folder]
    inside = [r for r in folder_build.records if r.filename == folder + "/inside.png"]
    assert len(inside) == 1 and inside[0].label_text == "album.jpg"


def test_unreadable_file_was_really_unreadable(folder_build: Built) -> None:
    path = str(folder_build.out.parent / "in" / "broken" / "no_permission.jpg")
    (line,) = [r for r in folder_build.rejected if r["path"] == path]
    assert "Permission denied" in line["message"], line  # the kernel's EACCES, not a simulation
    assert line["stage"] == "read"


def test_bomb_is_rejected_before_any_pixel_is_allocated(tmp_path: Path) -> None:
    """With 1 GiB of address space left the 60000x60000 headers are rejected as too_many_pixels;
    with the guard lifted the same process cannot decode them (so the limit is what saves us)."""
    write(tmp_path / "bomb.png", bomb_png())
    write(tmp_path / "bomb.jpg", bomb_jpeg())
    script = f"""
import resource, sys
sys.path.insert(0, {str(REPO)!r})
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.decode import decode_crops
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.worker import setup_worker
# 1 GiB more than the imports already map (Beam 2.77 + numpy 2.4 map ~1.5 GB of address space
# before any image is read; a decoded 60000x60000 bomb would need 10.8 GB).
mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30), mapped + (1 << 30)))
for name in ("bomb.png", "bomb.jpg"):
    data = open({str(tmp_path)!r} + "/" + name, "rb").read()
    for limit in (89_478_485, 10**10):
        setup_worker(limit)  # as on a worker: Pillow's check at the build's --max_pixels
        try:
            decode_crops(data, CropSpec("center", size=(64, 64)), name, max_pixels=limit, allow_window=False)
            print(name, limit, "decoded")
        except Rejected as err:
            print(name, limit, err.reason)
        except MemoryError:
            print(name, limit, "MemoryError")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert "bomb.png 89478485 too_many_pixels" in lines and "bomb.jpg 89478485 too_many_pixels" in lines, proc.stdout
    # Without the guard: no pixels come out (allocation refused or the tiny body runs out).
    for name in ("bomb.png", "bomb.jpg"):
        assert f"{name} 10000000000 decoded" not in lines, proc.stdout


# --- JPEG codings through the whole-image decode ------------------------------------------------


@pytest.mark.parametrize("crop", [("--crop=grid", "--size=64x64"), ("--crop=center", "--size=64x64", "--resize=100")], ids=["grid", "resize"])
def test_jpeg_codings_build_through_the_whole_image_decode(tmp_path: Path, crop: tuple[str, ...]) -> None:
    # Centre crops (the folder build) decode JPEG windows with TensorFlow; grid crops and --resize
    # decode whole images with Pillow, which rejected arithmetic-coded JPEGs over 64 KiB ("broken
    # data stream") and, asked to downscale a lossless JPEG, aborted the worker: the build died.
    names = ("huffman.jpg", "arithmetic.jpg", "arithmetic_progressive.jpg", "lossless_grey.jpg", "twelve_bit.jpg")
    for name in names:
        write(tmp_path / "in" / name, (JPEG_FIXTURES / name).read_bytes())
    run([f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", *crop, "--label_from=none", *IN_PROCESS], command_line=[])
    built = read_back(tmp_path / "out")
    assert_reconciled(built)
    assert [(Path(r["path"]).name, r["reason"]) for r in built.rejected] == [("twelve_bit.jpg", "decode_error")]
    crops = {name: sorted((tuple(r.crop_box), r.encoded) for r in built.records if Path(r.filename).name == name) for name in names[:4]}
    assert len(crops["huffman.jpg"]) == (48 if crop[0] == "--crop=grid" else 1)  # 420x560 displayed: 6 x 8 tiles
    assert crops["arithmetic.jpg"] == crops["huffman.jpg"] == crops["arithmetic_progressive.jpg"]  # same coefficients
    assert crops["lossless_grey.jpg"]


# --- --small pad: the small inputs written instead of rejected ----------------------------------


@pytest.fixture(scope="module")
def pad_build(tmp_path_factory) -> Built:
    base = tmp_path_factory.mktemp("pad")
    for case in FOLDER_CASES:
        if case.expect == "too_small":
            case.make(base / "in" / case.rel)
    run([f"--input={base / 'in'}", f"--output={base / 'out'}", "--crop=center", f"--size={CROP[0]}x{CROP[1]}", "--small=pad", *IN_PROCESS], command_line=[])
    return read_back(base / "out")


def test_small_images_are_zero_padded_with_small_pad(pad_build: Built) -> None:
    assert_reconciled(pad_build)
    assert pad_build.info.num_rejected == 0 and len(pad_build.records) == 2
    for record in pad_build.records:
        source = imagegen.reference_pixels(record.filename)
        h, w = source.shape[:2]
        # Centred, an odd padding row or column after the image (as tf.image.resize_with_crop_or_pad
        # and the reader's centre crop place it); Pillow's crop fills outside with zeros.
        y, x = (CROP[0] - h) // 2, (CROP[1] - w) // 2
        expected = np.zeros((*CROP, 3), np.uint8)
        expected[y : y + h, x : x + w] = source
        np.testing.assert_array_equal(pixels_of(record), expected, err_msg=record.filename)


# --- manifest rows ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    input: str
    line: str  # the CSV line, path relative to the manifest
    expect: str
    records: int = 0


MANIFEST_ROWS: tuple[Row, ...] = (
    Row("Manifest row with a box (control)", 'a.jpg,cat,train,"10,20,48,64"', WRITTEN, 1),
    Row("Two rows for one file, different boxes", 'b.png,dog,test,"0,0,32,40"', WRITTEN, 1),
    Row("(second row of b.png)", 'b.png,dog,test,"50,60,40,32"', WRITTEN, 1),
    Row("Manifest row pointing to a missing file", 'missing.jpg,cat,train,"0,0,8,8"', "not_found"),
    Row("Manifest row with a malformed box", 'c.jpg,cat,train,"1,2,x,4"', "bad_manifest_row"),
    Row("Manifest row with a box of 3 numbers", 'c.jpg,cat,train,"1,2,4"', "bad_manifest_row"),
    Row("Manifest row with an unknown split", 'd.jpg,cat,holdout,"0,0,8,8"', "bad_manifest_row"),
    Row("Manifest row with no split (splits declared)", 'e.jpg,cat,,"0,0,8,8"', "bad_manifest_row"),
    Row("Manifest row with no path", ',cat,train,"0,0,8,8"', "bad_manifest_row"),
    Row("Manifest row with too few columns", "f.jpg,cat", "bad_manifest_row"),
    Row("Manifest row with a box outside the image", 'g.jpg,cat,train,"100,150,64,64"', "box_outside_image"),
    Row("Manifest row with no box (--crop manifest)", "h.jpg,cat,train,", "missing_box"),
    Row("Manifest row pointing to a folder", 'folder,cat,train,"0,0,8,8"', "unreadable"),
    Row("Manifest row pointing to a FIFO", 'pipe.jpg,cat,train,"0,0,8,8"', "unreadable"),
)


@pytest.fixture(scope="module")
def manifest_build(tmp_path_factory) -> tuple[Built, Path]:
    base = tmp_path_factory.mktemp("manifest")
    for seed, name in enumerate(("a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg", "f.jpg", "g.jpg", "h.jpg")):
        write(base / name, encode(photo_img(200 + seed), "PNG" if name.endswith(".png") else "JPEG", quality=92))
    (base / "folder").mkdir()
    os.mkfifo(base / "pipe.jpg")
    manifest = base / "manifest.csv"
    manifest.write_text("path,label,split,box\n" + "".join(row.line + "\n" for row in MANIFEST_ROWS), encoding="utf-8")
    out = base / "out"
    run([f"--manifest={manifest}", f"--output={out}", "--crop=manifest", "--split=train,test", *IN_PROCESS], command_line=[])
    return read_back(out), base


@pytest.mark.parametrize("row", MANIFEST_ROWS, ids=lambda r: r.line)
def test_manifest_row(manifest_build: tuple[Built, Path], row: Row) -> None:
    built, base = manifest_build
    rel = row.line.split(",", 1)[0]
    path = str(base / rel) if rel else ""
    box = tuple(int(v) for v in re.findall(r"\d+", row.line.split('"')[1])) if row.line.count('"') == 2 else None
    records = [r for r in built.records if r.filename == path and tuple(r.crop_box) == box]
    rejected = [r for r in built.rejected if r["path"].endswith(": " + row.line) or (r["path"] == path and row.expect != WRITTEN)]
    if row.expect == WRITTEN:
        assert not rejected and len(records) == row.records, (records, rejected)
        y, x, h, w = box
        np.testing.assert_array_equal(pixels_of(records[0]), imagegen.reference_pixels(path)[y : y + h, x : x + w])
        assert records[0].label_text == row.line.split(",")[1]
    else:
        assert not records, records
        assert len(rejected) == 1 and rejected[0]["reason"] == row.expect, rejected


def test_manifest_build_reconciles(manifest_build: tuple[Built, Path]) -> None:
    built, _ = manifest_build
    assert_reconciled(built)
    assert built.info.num_inputs == len(MANIFEST_ROWS)
    assert set(built.info.splits) == {"train", "test"}


# --- duplicates and --dedup ---------------------------------------------------------------------


def make_duplicates(root: Path) -> dict[str, list[str]]:
    """Groups of byte-identical files under different names, labels and folders; sha256 -> paths."""
    groups: dict[str, list[str]] = {}
    layout = {
        1: ["cat/original.jpg", "dog/copy of original.jpg", "cat/deeper/ORIGINAL.JPG"],
        2: ["dog/twin.png", "cat/twin (1).png"],
        3: ["cat/unique_a.jpg"],
        4: ["dog/unique_b.jpg"],
        5: ["cat/unique_c.png"],
    }
    for seed, names in layout.items():
        data = encode(photo_img(300 + seed), "PNG" if names[0].lower().endswith(".png") else "JPEG", quality=90)
        for name in names:
            write(root / name, data)
        groups[hashlib.sha256(data).hexdigest()] = [str(root / name) for name in names]
    return groups


@pytest.fixture(scope="module")
def dedup_builds(tmp_path_factory) -> tuple[Built, Built, dict[str, list[str]]]:
    """The same tree of duplicates built with --dedup and without; and the groups it holds."""
    base = tmp_path_factory.mktemp("dedup")
    groups = make_duplicates(base / "in")
    common = [f"--input={base / 'in'}", "--crop=center", f"--size={CROP[0]}x{CROP[1]}", "--split=train=0.5,test=0.5", *IN_PROCESS]
    run([*common, f"--output={base / 'dedup'}", "--dedup"], command_line=[])
    run([*common, f"--output={base / 'all'}"], command_line=[])
    return read_back(base / "dedup"), read_back(base / "all"), groups


def splits_of(built: Built) -> dict[str, set[str]]:
    """sha256 of the source -> the splits holding an example of it."""
    found: dict[str, set[str]] = {}
    for name, split in built.info.splits.items():
        for record in read_records(built.out, dataclasses.replace(built.info, splits={name: split})):
            found.setdefault(record.sha256, set()).add(name)
    return found


def test_dedup_keeps_one_per_content_and_reconciles(dedup_builds) -> None:
    built, _, groups = dedup_builds
    assert_reconciled(built)
    assert built.info.num_inputs == sum(len(paths) for paths in groups.values())
    assert built.info.rejected == {"duplicate": sum(len(paths) - 1 for paths in groups.values())}
    by_sha: dict[str, list[schema.ImageRecord]] = {}
    for record in built.records:
        by_sha.setdefault(record.sha256, []).append(record)
    assert set(by_sha) == set(groups)
    where = splits_of(built)
    for digest, paths in groups.items():
        (kept,) = by_sha[digest]
        assert kept.filename == min(paths, key=lambda p: p.split("/in/", 1)[1]), "the survivor is the smallest key"
        assert len(where[digest]) == 1, f"content {digest[:8]} in splits {where[digest]}"
        dropped = sorted(r["path"] for r in built.rejected if r["reason"] == "duplicate" and kept.filename in r["message"])
        assert dropped == sorted(set(paths) - {kept.filename})


def test_without_dedup_every_copy_is_written(dedup_builds) -> None:
    _, every, groups = dedup_builds
    assert_reconciled(every)
    assert every.info.num_rejected == 0
    assert sorted(r.filename for r in every.records) == sorted(p for paths in groups.values() for p in paths)


def test_dedup_keeps_every_box_of_the_surviving_file(tmp_path: Path) -> None:
    """Several manifest rows for one file (one object each) are not duplicates of each other: the
    surviving file keeps all its distinct boxes. The same row twice is a duplicate; so is a row
    of the same file in another split (its content is already in the first), and a row of a
    byte-identical copy under another name."""
    write(tmp_path / "scene.jpg", encode(photo_img(400), "JPEG"))
    write(tmp_path / "z copy.jpg", (tmp_path / "scene.jpg").read_bytes())
    rows = [
        'scene.jpg,car,train,"0,0,40,40"',
        'scene.jpg,person,train,"50,60,40,40"',
        'scene.jpg,car,train,"0,0,40,40"',  # the same row again
        'scene.jpg,tree,test,"70,0,40,40"',  # the same content in another split
        'z copy.jpg,car,train,"10,10,40,40"',  # a copy of the file
    ]
    (tmp_path / "m.csv").write_text("path,label,split,box\n" + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    run([f"--manifest={tmp_path / 'm.csv'}", f"--output={tmp_path / 'out'}", "--crop=manifest", "--split=train,test", "--dedup", *IN_PROCESS], command_line=[])
    built = read_back(tmp_path / "out")
    assert_reconciled(built)
    assert sorted((Path(r.filename).name, tuple(r.crop_box)) for r in built.records) == [("scene.jpg", (0, 0, 40, 40)), ("scene.jpg", (50, 60, 40, 40))]
    assert built.info.split("test").num_examples == 0
    assert sorted(Path(r["path"]).name for r in built.rejected) == ["scene.jpg", "scene.jpg", "z copy.jpg"]
    assert {r["reason"] for r in built.rejected} == {"duplicate"}
    assert built.info.num_images_written == 2 and built.info.num_inputs == 5


# --- the table in docs/BAD_INPUTS.md ---------------------------------------------------------------

WRITE_DOC = "CROPSHARD_WRITE_BAD_INPUTS_DOC"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(folder: Built, manifest: tuple[Built, Path], pad: Built, dedup: tuple[Built, Built, dict]) -> str:
    """The observed outcome of every input, as markdown (deterministic: no paths, no times)."""
    rows = []
    root = folder.out.parent / "in"
    padded = {Path(r.filename).name for r in pad.records}
    for case in FOLDER_CASES:
        path = root / case.rel
        result = describe(*outcome(folder, str(path)))
        if result.startswith("written"):
            result += f"; pixels == {case.check}"
        if path.name in padded:
            result += "; with `--small pad`: written, zero padded (== padded Pillow reference)"
        rows.append((case.input, case.how, f"`{text_of_path(case.rel)}`", result))
    built, base = manifest
    for row in MANIFEST_ROWS:
        rel = row.line.split(",", 1)[0]
        path = str(base / rel) if rel else ""
        records = [r for r in built.records if r.filename == path and ",".join(map(str, r.crop_box)) in row.line]
        rejected = [r for r in built.rejected if r["path"].endswith(": " + row.line) or (r["path"] == path and row.expect != WRITTEN)]
        result = describe(records if row.expect == WRITTEN else [], rejected)
        if result.startswith("written"):
            result += "; pixels == Pillow reference cut at the box"
        rows.append((row.input, "manifest.csv, `--crop manifest --split train,test`", f"`{row.line}`", result))
    kept, every, groups = dedup
    copies = sum(len(paths) for paths in groups.values())
    rows.append((
        "Byte-identical duplicates (6 groups of sizes 3,2,1,1,1 — no `--dedup`)".replace("6 groups", f"{len(groups)} groups"),
        "same bytes under other names, labels, folders", "`dups/...`",
        f"written: {len(every.records)} records from {copies} inputs (each copy is an input)",
    ))
    rows.append((
        "Byte-identical duplicates with `--dedup`", "same tree", "`dups/...`",
        f"written: {len(kept.records)} (smallest key of each group); {kept.info.rejected.get('duplicate', 0)} rejected `duplicate`"
        " (stage dedup); every content in exactly one split",
    ))
    lines = [
        "# Bad and odd inputs: what cropshard does with each",
        "",
        "Generated from the outcomes observed by `tests/pipeline/test_bad_inputs.py` (regenerate: `python -m tests.pipeline.test_bad_inputs`).",
        "Every input is either written (its record checked against the reference named) or rejected exactly once, with",
        "one line in `rejected.jsonl` giving the reason code below; `inputs = images written + rejected` holds for every",
        "build, and `cropshard.json` is not written when it does not.",
        "",
        f"Folder build: `cropshard build --input=<root> --crop=center --size={CROP[0]}x{CROP[1]}`, run as an unprivileged uid;"
        f" {folder.info.num_inputs} inputs = {folder.info.num_images_written} images written + {folder.info.num_rejected} rejected.",
        f"Manifest build: {built.info.num_inputs} rows = {built.info.num_images_written} images written + {built.info.num_rejected} rejected.",
        "",
        "| Input | How the test makes it | Path or manifest row | Outcome |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    lines += ["", NOTES.strip(), ""]
    return "\n".join(lines)


NOTES = """
Notes

- Folder listing is cropshard's own (`transforms/listing.py`, `iter_matches`), not Beam's `LocalFileSystem._list`: Beam's
  drops entries it cannot stat (a broken symlink vanished without a trace) and skips folders it cannot list. Such entries
  are rejected at stage `match` instead: `not_found` (broken link, file removed after listing) or `unreadable` (folder that
  cannot be listed, symlink to a folder, FIFO/device/socket). A folder that cannot be listed counts as one input.
- Symbolic links to folders are not followed (neither does Beam's listing; cycles); symbolic links to files are read.
- A folder is never an input, whatever its name: `album.jpg/` contributes the files inside it.
- Pillow's own 16-bit greyscale to 8-bit conversion saturates; cropshard keeps the top byte (as Pillow does for 16-bit RGB).
- Animated GIF, multi-page TIFF: the first frame/page only.
- TIFF with an EXIF orientation: Pillow's TIFF plugin applies it while loading; cropshard used to apply it a second time.
- Alpha (RGBA, LA, palette transparency) is composited on black.
- `too_many_pixels` is decided from the header before any pixel is decoded (`--max_pixels`, default 89,478,485); the
  test repeats it under a 1 GiB address-space limit. Images nested in another (ICNS) are checked by Pillow at the
  same limit, and so is the size `--resize` or `--small upscale` would scale an image to.
- A named pipe (FIFO) used to hang the build forever (opening it blocks); local paths are now stat'ed before opening and
  anything but a regular file is `unreadable`, from a folder listing (stage `match`) or a manifest row (stage `read`).
- A file with a known signature (JPEG, PNG, GIF, TIFF, WebP) whose header fails to parse is `decode_error`;
  `not_an_image` means no format recognises the bytes.
- Corrupt bytes inside JPEG scan data are usually undetectable: libjpeg warns and decodes garbage, which is written.
  Restart markers are the exception: with a restart interval (DRI) set, a scan must hold one RSTn marker every
  interval, in turn; more markers than the interval allows, or markers out of turn (a changed interval, a lost or
  corrupt marker), confirmed by libjpeg-turbo's warning (simplejpeg), are `decode_error`: the blocks would be decoded
  out of place. Fewer markers in turn is a scan cut short (below).
  A damaged byte that reads as a marker there (0xFF and a marker code) is told: libjpeg would fill the rest of
  the image grey, so such a file never takes the window decode, and the full decode rejects it (`decode_error`).
- A JPEG whose scan data stops early but still ends with an end marker (a cut file "repaired", parts of a download
  stitched together) decodes without an error in Pillow and TensorFlow, grey from the cut down: libjpeg only warns.
  A decode whose last pixel is mid-grey, or a progressive JPEG whose scans leave coefficients short of full precision,
  is checked once more by libjpeg-turbo with warnings raised (simplejpeg), and the warning "premature end of data
  segment" makes it `truncated`. A centre window that ends above the cut is exact and written. Not caught: a
  progressive JPEG cut inside its last scan (its lower rows lose the last refinement bit).
- Arithmetic-coded JPEGs (SOF9/SOF10): Pillow feeds libjpeg 64 KiB at a time, which libjpeg's arithmetic decoder cannot
  take, so every one over 64 KiB failed ("broken data stream") with grid crops, `--resize` or `--crop none` (centre
  crops decode the window with TensorFlow and wrote them). cropshard now hands Pillow the whole file at once; one cut
  short is `truncated`. Lossless JPEGs (SOF3) have no DCT to downscale: `--resize` asked Pillow to, and libjpeg-turbo
  aborted the worker ("double free or corruption"), which failed the whole build; they are now decoded in full. The
  grid and `--resize` builds of these files are `test_jpeg_codings_build_through_the_whole_image_decode`.
- `--encoding original` keeps only Huffman-coded DCT JPEGs verbatim (what every reader decodes): TensorFlow's
  libjpeg-turbo, behind `reader.load` and TFDS, has no lossless mode (a lossless JPEG stored verbatim broke
  `reader.load` at its first batch), and Pillow fails on large arithmetic-coded ones. Those are re-encoded: lossless
  JPEGs as PNG (nothing lost), arithmetic ones as JPEG at `--jpeg_quality`.
- 12-bit JPEGs are `decode_error`: neither Pillow nor TensorFlow here decodes 12-bit samples.
- A PNG whose compressed pixels are corrupt is `decode_error`. It used to be written half decoded: Pillow decodes a PNG
  to look for EXIF after its pixels, the orientation lookup swallowed that error, and the next load returned the rows
  decoded so far.
- EPS is `decode_error` whatever the file's name: Pillow renders PostScript by running Ghostscript, which cropshard never
  runs on an input (hostile PostScript has escaped Ghostscript's sandbox).
- `--dedup` with a manifest: the file with the smallest key survives with all of its rows' distinct boxes (several objects
  in one image are not duplicates), in the split of its first row; repeated rows, rows of that file in another split and
  byte-identical copies are rejected as `duplicate`.
- An explicit local `--input` path that does not exist stops the launcher with an error (a typo, not a rejection).
- `.tif`/`.tiff` inputs that are GeoTIFFs (a CRS, or not 8-bit grey/RGB with or without alpha) and georeferenced
  `.jp2`/`.j2k` inputs go through rasterio, opened only with the driver their first bytes call for (GeoTIFF,
  JP2OpenJPEG) and never reading sidecar files; photo TIFFs (alpha composited on black) and JPEG 2000s without
  georeferencing stay on Pillow (orientation, pages, fax compression as above), except JPEG 2000s Pillow cannot decode
  (over 4 components, or 3 in a greyscale colour space as GDAL writes them) or would misread (a fourth band not
  marked alpha, which Pillow composites as alpha): those take the raster path on the pixel grid instead of being
  rejected `decode_error` or flattened. A JPEG 2000 raster cut short (a box,
  header segment or tile-part that runs past the end of the file, or no end marker after the last tile-part) is
  rejected `truncated` before it is chipped: GDAL reads its header and first resolution levels without complaint, so
  the damage would otherwise show only while chipping. A GDAL VRT is XML that makes GDAL read other files or URLs: rejected `raster_reference`
  whatever its name, before GDAL sees it.
- Wider samples become uint8 by `--to_uint8 bits` (the top 8 of the bits the file declares: NBITS, else the sample
  size). A file that declares 16 bits but holds 11 (WorldView panchromatic) would come out near-black (values 0..7):
  rejected `range_collapsed`, with the options that keep it (`--to_uint8 bits:11`, or `--dtype keep`). The same rule
  and check apply to 16-bit PNG photos, greyscale or RGB, and to 16-bit TIFFs (a 12-bit camera PNG needs `--to_uint8 bits:12`).
- A raster whose bands cannot match the dataset (8 bands for `--channels 3`, float32 for a uint8 dataset) is
  `band_mismatch`, never padded or truncated silently; `--bands` chooses bands, `--dtype keep` stores the source type.
- A class map (`--label_raster`) without `--label_names` names its classes by its own category table: the `.aux.xml`
  GDAL writes next to it (band 1's `CategoryNames`, or a raster attribute table with a name column), read by cropshard
  as data (GDAL itself still reads no sidecar; a DTD in it is refused). The first class map in path order names the
  dataset's classes before the job (the launcher stops when it has no usable table); a class map whose table is
  missing, unusable or names other classes is rejected `label_names_mismatch`. `--label_names` wins over the tables;
  a first table that differs from it is reported (a warning, and `raster.labels.category_table_conflict`).
- A GeoTIFF with a damaged tile (its header and georeferencing intact, one tile's compressed bytes broken): the checks
  before the first chip do not read every tile, so the damage shows while chipping. A raster chipped as one task (up to
  about 256 chips) is rejected `decode_error` if the damaged tile is in its first chip; otherwise, and for any task of a
  raster split into several tasks (whose other tasks may have written chips already), the task fails: the runner
  retries the bundle and then fails the build with the source's path and the rows of the task, rather than publish
  the raster in part (tests/transforms/test_raster_tasks.py). A raster cut short (an interrupted download or copy) is
  not damage of that kind: a full-resolution tile or strip whose recorded bytes end past the end of the file (TIFF), or
  a box or tile-part that does (JPEG 2000), is found from the file's own offsets before the first chip and the source
  is rejected `truncated`.
"""


def test_doc_table_is_current(folder_build: Built, manifest_build, pad_build: Built, dedup_builds) -> None:
    table = render_table(folder_build, manifest_build, pad_build, dedup_builds)
    assert "UNEXPECTED" not in table, table
    if os.environ.get(WRITE_DOC):
        DOC.write_text(table, encoding="utf-8")
    assert DOC.exists() and DOC.read_text(encoding="utf-8") == table, "docs/BAD_INPUTS.md is out of date: python -m tests.pipeline.test_bad_inputs"


if __name__ == "__main__":
    # Regenerate docs/BAD_INPUTS.md from a real run of this module's builds.
    os.environ[WRITE_DOC] = "1"
    sys.exit(pytest.main([__file__, "-q", "-k", "doc_table"]))
