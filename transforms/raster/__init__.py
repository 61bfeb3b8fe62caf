"""Aerial and satellite rasters (GeoTIFF / COG, JPEG 2000) through rasterio: every band and sample type,
windowed reads, georeferenced chips and spatial-block splits. Pure functions, no Beam.

    open_raster.py  which files take this path, and opening them safely (GDAL kept to the input's bytes)
    convert.py      sample types: --dtype keep|uint8, the --to_uint8 rule and its collapse check
    chips.py        windows -> chips: windowed reads, nodata share, chip transforms, split blocks
    records.py      one raster -> tf.train.Examples (split per chip)
"""
