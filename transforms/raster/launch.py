"""Launcher-side resolution of `--dtype keep`: a dataset has one sample type, and the reader
needs it before reading any record, so `keep` becomes the type of the first raster input (in
listing or manifest order) before the job starts; rasters of another type are `band_mismatch`."""

from __future__ import annotations

import dataclasses
import itertools
import posixpath
from collections.abc import Iterator
from typing import Any

from cropshard.transforms.raster.open_raster import is_raster_path, is_tiff, open_raster
from cropshard.transforms.rejects import Rejected

_PROBE_LIMIT = 1000  # inputs looked at before giving up: keep must find a raster early


def _candidate_paths(config: Any) -> Iterator[str]:
    from cropshard.transforms.listing import iter_matches
    from cropshard.transforms.manifest import csv_delimiter, manifest_kind, parse_manifest_row, read_manifest_header

    if not config.manifest:
        for pattern in config.inputs:
            for entry in iter_matches(pattern):
                if is_raster_path(entry.path):
                    yield entry.path
        return
    from apache_beam.io.filesystems import FileSystems

    kind = manifest_kind(config.manifest)
    header = read_manifest_header(config.manifest) if kind == "csv" else []
    delimiter = csv_delimiter(config.manifest)
    folder = posixpath.dirname(config.manifest)
    with FileSystems.open(config.manifest) as handle:
        for number, line in enumerate(handle):
            text = line.decode("utf-8-sig").rstrip("\r\n")
            if (kind == "csv" and number == 0) or not text.strip():
                continue
            try:
                source = parse_manifest_row(text, kind, header, folder, None, delimiter)
            except Rejected:
                continue
            if is_raster_path(source.path):
                yield source.path


def first_raster_dtype(config: Any) -> str:
    """Sample type of the first band the build would store from the first raster input, in path
    order among the first `_PROBE_LIMIT` listed (listing order is not stable on local disks)."""
    from apache_beam.io.filesystems import FileSystems

    bands = config.example.raster.bands or (1,)
    for path in sorted(itertools.islice(_candidate_paths(config), _PROBE_LIMIT)):
        try:
            with FileSystems.open(path) as handle:
                if not is_tiff(handle.read(8)):
                    continue
            with open_raster(path) as dataset:
                if max(bands) <= dataset.count:
                    return dataset.dtypes[bands[0] - 1]
        except (OSError, Rejected):
            continue
    raise ValueError(f"--dtype keep takes the sample type of the first raster input, but none of the first {_PROBE_LIMIT} inputs is a readable GeoTIFF with those bands; name the type (--dtype uint16)")


def resolve_keep_dtype(config: Any) -> Any:
    """`config` with --dtype keep replaced by the first raster's type (unchanged otherwise)."""
    from cropshard.pipeline.options import check_raster_encoding
    from cropshard.transforms.raster.convert import KEPT_DTYPES

    raster = config.example.raster
    if raster.dtype != "keep":
        return config
    dtype = first_raster_dtype(config)
    if dtype not in KEPT_DTYPES:
        raise ValueError(f"--dtype keep: the first raster stores {dtype}, which cropshard does not store; supported: {list(KEPT_DTYPES)}")
    check_raster_encoding(config.example.encoding, dtype, config.example.channels)
    example = dataclasses.replace(config.example, raster=dataclasses.replace(raster, dtype=dtype))
    return dataclasses.replace(config, example=example)
