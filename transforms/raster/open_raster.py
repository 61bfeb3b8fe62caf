"""Which inputs are rasters, and opening them with GDAL kept to the input's own bytes.

GDAL follows references: a VRT (an XML file, whatever its name) reads other files, sidecars
(.ovr, .msk, .aux.xml, .tfw) are looked up next to a file, and /vsicurl/-style names reach the
network. cropshard therefore opens rasters only with the GeoTIFF driver (which covers COG),
never lists the input's folder (so no sidecar is found), reads georeferencing only from the
file itself, and serves remote inputs (gs://) to GDAL through one Python file object from
Beam's FileSystems that answers for that one object only: GDAL never opens a URL itself.
The options are scoped (`rasterio.Env`) to each open, so nothing global is set. (A class map's
`.aux.xml` category table is read by categories.py as data, never handed to GDAL.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from cropshard.transforms.rejects import Rejected

RASTER_EXTENSIONS = (".tif", ".tiff", ".gtif", ".gtiff")
ALLOWED_DRIVER = "GTiff"  # GeoTIFF and Cloud-Optimized GeoTIFF (a GeoTIFF layout)

# GDAL configuration for every open (see the module docstring for why).
SAFE_GDAL_OPTIONS: dict[str, str | int] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no folder listing, so no sidecar file is found
    "GDAL_PAM_ENABLED": "NO",  # no .aux.xml read or written
    "GDAL_GEOREF_SOURCES": "INTERNAL",  # georeferencing from the file's own tags, not .tfw/.aux.xml
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".cropshard-no-network",  # /vsicurl/ would match nothing
    "GDAL_HTTP_MAX_RETRY": "0",
    "GTIFF_REPORT_COMPD_CS": "NO",
    "CHECK_DISK_FREE_SPACE": "NO",
    # GDAL's block cache defaults to 5% of RAM and fills with every tile read, so a process's
    # memory would grow with the raster up to that share; a grid pass re-reads a tile row only
    # while its chips are cut, which 128 MiB holds for rows of 512-pixel tiles 16000 columns
    # wide in 16 bands (or 250000 columns in one).
    "GDAL_CACHEMAX": 128,  # MiB (rasterio passes it to GDALSetCacheMax, so an int)
}

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF


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


def is_tiff(head: bytes) -> bool:
    return head[:4] in _TIFF_MAGICS


def refuse_references(head: bytes) -> None:
    """Reject files GDAL would treat as references to other files (a VRT named .tif)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:11].lower() == b"<vrtdataset" or text[:5].lower() == b"<?xml":
        raise Rejected(
            "raster_reference",
            "the file is GDAL XML (a VRT), which reads other files or URLs; cropshard opens only GeoTIFF/COG bytes",
        )


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
def open_raster(path: str) -> Iterator[Any]:
    """A rasterio dataset for `path` (local or gs://), opened only as GeoTIFF; `Rejected`
    (`decode_error`) when GDAL cannot open it as one."""
    import rasterio
    from rasterio.errors import RasterioError

    with rasterio.Env(**SAFE_GDAL_OPTIONS):
        try:
            if "://" in path:
                dataset = rasterio.open(path, driver=ALLOWED_DRIVER, opener=_only_this_object(path))
            else:
                dataset = rasterio.open(os.path.abspath(path), driver=ALLOWED_DRIVER)
        except RasterioError as err:
            raise Rejected("decode_error", f"GDAL cannot open it as GeoTIFF: {err}") from err
        with dataset:
            yield dataset
