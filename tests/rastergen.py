"""Test rasters made with rasterio: tiled, compressed, with overviews, nodata, CRSs and NBITS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

UTM13 = "EPSG:32613"


def write_raster(
    path: Path,
    data: np.ndarray,
    nodata: float | None = None,
    overviews: tuple[int, ...] = (),
    block: int = 64,
    compress: str = "deflate",
    tiled: bool = True,
    **profile,
) -> Path:
    """Write `data` (bands, height, width) as a GeoTIFF of `block`² tiles (`tiled=False`: strips,
    `blockysize` rows each), georeferenced as `profile`'s crs, origin and pixel say (see
    `_create`); returns `path`."""
    from rasterio.enums import Resampling

    options = dict(driver="GTiff", tiled=tiled, compress=compress, nodata=nodata)
    if tiled:
        options.update(blockxsize=block, blockysize=block)
    with _create(path, data, **options, **profile) as dataset:
        dataset.write(data)
        if overviews:
            dataset.build_overviews(list(overviews), Resampling.average)
    return path


def write_jp2(path: Path, data: np.ndarray, block: int = 64, **profile) -> Path:
    """Write `data` (bands, height, width) as a lossless, tiled JPEG 2000 with GDAL's
    JP2OpenJPEG driver (GeoJP2 and GMLJP2 boxes when georeferenced), as Sentinel-2 band files
    come; returns `path`. GDAL's .aux.xml of the write is removed: inputs have none."""
    with _create(path, data, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES", BLOCKXSIZE=block, BLOCKYSIZE=block, **profile) as dataset:
        dataset.write(data)
    Path(f"{path}.aux.xml").unlink(missing_ok=True)
    return path


def _create(
    path: Path,
    data: np.ndarray,
    crs: str | None = UTM13,
    origin: tuple[float, float] = (487548.0, 4443554.0),
    pixel: float = 2.0,
    **options,
) -> Any:
    """A rasterio dataset open for writing `data`'s shape and type at `path`, in `crs` with its
    top-left corner at `origin` and square pixels of `pixel` map units (no CRS: none)."""
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    if crs is not None:
        options.update(crs=crs, transform=from_origin(*origin, pixel, pixel))
    return rasterio.open(path, "w", width=width, height=height, count=count, dtype=str(data.dtype), **options)


def multispectral(height: int, width: int, bands: int = 8, high: int = 2048, seed: int = 0) -> np.ndarray:
    """uint16 bands with spatial structure (gradients plus noise) in 0..high-1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    layers = [
        (high - 1) * (0.5 + 0.25 * np.sin(xx / (7 + b) + b) * np.cos(yy / (11 + b))) + rng.normal(0, high / 50, (height, width))
        for b in range(bands)
    ]
    return np.clip(np.stack(layers), 0, high - 1).astype(np.uint16)


def write_category_table(
    path: Path, names: list[str] | None = None, table: list[tuple[int, str]] | None = None, binned: list[str] | None = None
) -> Path:
    """Give band 1 of the GeoTIFF `path` a category table the way GDAL does, by GDAL itself (the
    C API of the libgdal rasterio ships; rasterio has no call for it): `names` through
    GDALSetRasterCategoryNames (entry i names value i, '' none), `table` as a thematic raster
    attribute table (Value/MinMax + Class_Name/Name columns), `binned` as one with only a name
    column and linear binning from 0. GDAL writes them to the PAM sidecar; returns its path."""
    import ctypes
    import glob
    import os

    import rasterio

    (library,) = glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs", "libgdal-*.so*"))
    gdal = ctypes.CDLL(library)  # the copy rasterio already loaded
    pointer, text = ctypes.c_void_p, ctypes.c_char_p
    for name, args, result in (
        ("GDALOpen", [text, ctypes.c_int], pointer), ("GDALGetRasterBand", [pointer, ctypes.c_int], pointer), ("GDALClose", [pointer], None),
        ("GDALSetRasterCategoryNames", [pointer, ctypes.POINTER(text)], ctypes.c_int), ("GDALCreateRasterAttributeTable", [], pointer),
        ("GDALRATCreateColumn", [pointer, text, ctypes.c_int, ctypes.c_int], ctypes.c_int), ("GDALRATSetRowCount", [pointer, ctypes.c_int], None),
        ("GDALRATSetValueAsInt", [pointer, ctypes.c_int, ctypes.c_int, ctypes.c_int], None),
        ("GDALRATSetValueAsString", [pointer, ctypes.c_int, ctypes.c_int, text], None),
        ("GDALRATSetLinearBinning", [pointer, ctypes.c_double, ctypes.c_double], ctypes.c_int),
        ("GDALSetDefaultRAT", [pointer, pointer], ctypes.c_int), ("GDALDestroyRasterAttributeTable", [pointer], None),
    ):
        function = getattr(gdal, name)
        function.argtypes, function.restype = args, result
    gdal.GDALAllRegister()
    with rasterio.Env(GDAL_PAM_ENABLED="YES"):  # GDAL reads the environment rasterio sets
        dataset = gdal.GDALOpen(str(path).encode(), 1)  # GA_Update
        assert dataset, f"GDAL cannot open {path}"
        band = gdal.GDALGetRasterBand(dataset, 1)
        if names is not None:
            entries = (text * (len(names) + 1))(*[name.encode() for name in names], None)
            assert gdal.GDALSetRasterCategoryNames(band, entries) == 0
        rows = table if table is not None else list(enumerate(binned)) if binned is not None else None
        if rows is not None:
            rat = gdal.GDALCreateRasterAttributeTable()
            if binned is None:
                gdal.GDALRATCreateColumn(rat, b"Value", 0, 5)  # GFT_Integer, GFU_MinMax
            else:
                gdal.GDALRATSetLinearBinning(rat, 0.0, 1.0)
            gdal.GDALRATCreateColumn(rat, b"Class_Name" if binned is None else b"Name", 2, 2)  # GFT_String, GFU_Name
            gdal.GDALRATSetRowCount(rat, len(rows))
            for row, (value, name) in enumerate(rows):
                if binned is None:
                    gdal.GDALRATSetValueAsInt(rat, row, 0, value)
                gdal.GDALRATSetValueAsString(rat, row, 0 if binned is not None else 1, name.encode())
            assert gdal.GDALSetDefaultRAT(band, rat) == 0  # GDAL copies the table
            gdal.GDALDestroyRasterAttributeTable(rat)
        gdal.GDALClose(dataset)
    sidecar = path.with_name(path.name + ".aux.xml")
    assert sidecar.exists(), f"GDAL wrote no {sidecar.name}"
    return sidecar


def damage_tile(path: Path, out: Path, row: int = 0, col: int = 0) -> Path:
    """A copy of the tiled GeoTIFF `path` at `out` whose band-1 tile (row, col) holds bytes
    deflate cannot inflate; header, georeferencing and every other tile intact."""
    import rasterio

    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset : offset + 64] = b"\xff" * 64
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(data))
    return out
