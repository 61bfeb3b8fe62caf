"""Launcher-side resolution, before the job starts, of what every worker needs first:

- `--dtype keep`: a dataset has one sample type, and the reader needs it before reading any
  record, so `keep` becomes the type of the first raster input (in path order) whose bands fit;
  sources of another type are `band_mismatch` (RasterSpec.kept: none is converted, even to uint8).
- `--label_raster` without `--label_names`: the class names (the label map is a side input and
  the metadata's label list) are the category table of the first raster input's class map (in
  path order); class maps whose own table differs are `label_names_mismatch` (categories.py).
  With `--label_names`, that first table is compared with the file and a difference reported.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import posixpath
from collections.abc import Iterator
from typing import Any

from cropshard.transforms.raster import categories, labels
from cropshard.transforms.raster.open_raster import is_raster_path, open_raster
from cropshard.transforms.raster.records import select_bands
from cropshard.transforms.rejects import Rejected

_LOGGER = logging.getLogger(__name__)
_PROBE_LIMIT = 1000  # inputs looked at before giving up: keep must find a raster early


def candidate_paths(config: Any) -> Iterator[tuple[str, str | None]]:
    """(raster input path, its manifest label_raster or None), in listing or manifest order."""
    from cropshard.transforms.listing import iter_matches
    from cropshard.transforms.manifest import csv_delimiter, manifest_kind, parse_manifest_row, read_manifest_header

    if not config.manifest:
        for pattern in config.inputs:
            for entry in iter_matches(pattern):
                if is_raster_path(entry.path):
                    yield entry.path, None
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
                yield source.path, source.label_raster


def first_raster_dtype(config: Any) -> str:
    """Sample type of the first band the build would store from the first raster input, in path
    order among the first `_PROBE_LIMIT` listed (listing order is not stable on local disks)."""
    mismatch = None  # the first raster refused for its bands: why, when none sets the type
    for path, _ in sorted(itertools.islice(candidate_paths(config), _PROBE_LIMIT), key=lambda candidate: candidate[0]):
        try:
            with open_raster(path) as dataset:  # Rejected when its first bytes are neither TIFF nor JPEG 2000
                # The build's own band check: a raster it would reject for its bands does not set the type.
                bands = select_bands(dataset, config.example.raster.bands, config.example.channels)
                return dataset.dtypes[bands[0] - 1]
        except Rejected as err:
            if err.reason == "band_mismatch" and mismatch is None:
                mismatch = f"{path}: {err.message}"
        except OSError:
            continue
    if mismatch:  # the bands are the problem, not the type: naming one would fail again
        raise ValueError(f"--dtype keep takes the sample type of the first raster input whose bands fit the dataset, and none does: {mismatch}")
    raise ValueError(f"--dtype keep takes the sample type of the first raster input, but none of the first {_PROBE_LIMIT} inputs is a readable GeoTIFF or JPEG 2000; name the type (--dtype uint16)")


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
    example = dataclasses.replace(config.example, raster=dataclasses.replace(raster, dtype=dtype, kept=True))
    return dataclasses.replace(config, example=example)


def first_class_map(config: Any, spec: labels.LabelRasterSpec) -> str | None:
    """The class map of the first raster input (path order, among the first `_PROBE_LIMIT`) that
    has one on disk; None when no such class map exists."""
    from apache_beam.io.filesystems import FileSystems

    for path, column in sorted(itertools.islice(candidate_paths(config), _PROBE_LIMIT), key=lambda candidate: candidate[0]):
        class_map = column or (labels.label_raster_path(path, spec.pattern) if spec.pattern else None)
        if class_map and FileSystems.exists(class_map):
            return class_map
    return None


def resolve_label_names(config: Any) -> Any:
    """`config` with the class names of --label_raster taken from the first class map's category
    table when --label_names is not given (ValueError without a usable one); with --label_names,
    a difference from that table is logged and recorded (`table_conflict`); unchanged otherwise."""
    spec = config.example.raster.labels
    if spec is None:
        return config
    class_map = first_class_map(config, spec)
    if spec.names_from_tables:
        resolved = _names_from_table(spec, class_map)
    else:
        resolved = dataclasses.replace(spec, table_conflict=_table_conflict(spec, class_map))
    raster = dataclasses.replace(config.example.raster, labels=resolved)
    return dataclasses.replace(config, example=dataclasses.replace(config.example, raster=raster))


def _names_from_table(spec: labels.LabelRasterSpec, class_map: str | None) -> labels.LabelRasterSpec:
    unless = "give --label_names classes.csv (value,name per class)"
    if class_map is None:
        raise ValueError(f"--label_raster without --label_names takes the class names from the class maps' category tables, but no class map was found for the first raster inputs; {unless}")
    try:
        table = categories.read_category_table(class_map)
    except categories.CategoryTableError as err:
        raise ValueError(f"--label_raster without --label_names: the first class map's category table is unusable: {err}; {unless}") from err
    if table is None:
        raise ValueError(
            f"--label_raster without --label_names takes the class names from the class maps' category tables, but the first class map,"
            f" {class_map}, has none ({categories.sidecar_path(class_map)} with CategoryNames or a raster attribute table for band 1); {unless}"
        )
    return dataclasses.replace(spec, classes=table, names_from=f"category table of {class_map}")


def _table_conflict(spec: labels.LabelRasterSpec, class_map: str | None) -> str:
    """How the first class map's own table differs from --label_names ('' when it agrees or has none)."""
    if class_map is None:
        return ""
    try:
        table = categories.read_category_table(class_map)
    except categories.CategoryTableError as err:
        conflict = f"its category table is unusable ({err})"
    else:
        conflict = categories.difference(spec.classes, table) if table else ""
    if not conflict:
        return ""
    conflict = f"{categories.sidecar_path(class_map)}: {conflict}"
    _LOGGER.warning("--label_names wins over the first class map's own category table, which differs: %s", conflict)
    return conflict
