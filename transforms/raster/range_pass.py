"""The first pass of a `--to_uint8 minmax|percentile:LO,HI` build: the dataset's per-band value
range, by source sample type, from every raster's preview (see convert.py for why previews).

`PreviewStats` yields (source dtype, BandStats of the preview) per raster; `MergeBandStats`
merges them per dtype; `conversion_range` turns each into the (low, high) per band that the
second pass (ImagesToExamples, as a side input) stretches by, and that cropshard.json records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.raster import convert
from cropshard.transforms.raster.open_raster import is_raster_path
from cropshard.transforms.raster.records import HEAD_BYTES, RasterSpec, open_job
from cropshard.transforms.raster.stats import BandStats


class PreviewStats(beam.DoFn):
    def __init__(self, crop: CropSpec, raster: RasterSpec, channels: int, max_pixels: int) -> None:
        self._args = (crop, raster, channels, max_pixels)
        self._used = beam.metrics.Metrics.counter("cropshard", "range_pass_rasters")

    def process(self, source: Any) -> Iterator[tuple[str, BandStats]]:
        if not is_raster_path(source.path):
            return
        try:
            with FileSystems.open(source.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                head = handle.read(HEAD_BYTES)
            with open_job(source, head, *self._args, ranges=None) as job:
                if job is None:
                    return
                stats = job.preview_stats()
        except Exception:  # noqa: BLE001 - the second pass rejects this source with its reason
            return
        self._used.inc()
        yield job.source_dtype, stats


def conversion_range(item: tuple[str, BandStats | None], rule: convert.Uint8Rule) -> Iterator[tuple[str, tuple[list[float], list[float]]]]:
    """(dtype, (low per band, high per band)); nothing for a dtype the rule cannot range (float32 percentiles)."""
    dtype, stats = item
    if stats is None or stats.count == 0:
        return
    try:
        yield dtype, convert.dataset_range(rule, stats.low, stats.high, stats.percentile)
    except ValueError:
        return
