"""Test rasters made with rasterio: tiled, compressed, with overviews, nodata, CRSs and NBITS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

UTM13 = "EPSG:32613"


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str | None = UTM13,
    origin: tuple[float, float] = (487548.0, 4443554.0),
    pixel: float = 2.0,
    nodata: float | None = None,
    overviews: tuple[int, ...] = (),
    block: int = 64,
    compress: str = "deflate",
    **profile,
) -> Path:
    """Write `data` (bands, height, width) as a tiled GeoTIFF; returns `path`."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    options = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=str(data.dtype), tiled=True,
        blockxsize=block, blockysize=block, compress=compress, nodata=nodata, **profile,
    )
    if crs is not None:
        options.update(crs=crs, transform=from_origin(*origin, pixel, pixel))
    with rasterio.open(path, "w", **options) as dataset:
        dataset.write(data)
        if overviews:
            dataset.build_overviews(list(overviews), Resampling.average)
    return path


def multispectral(height: int, width: int, bands: int = 8, high: int = 2048, seed: int = 0) -> np.ndarray:
    """uint16 bands with spatial structure (gradients plus noise) in 0..high-1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    layers = [
        (high - 1) * (0.5 + 0.25 * np.sin(xx / (7 + b) + b) * np.cos(yy / (11 + b))) + rng.normal(0, high / 50, (height, width))
        for b in range(bands)
    ]
    return np.clip(np.stack(layers), 0, high - 1).astype(np.uint16)
