"""PlanRasters: every raster source checked whole and cut into tasks, before any chip is cut.

ImageSource -> photos on `photos` (unchanged, for ImagesToExamples), raster sources as
`RasterTask`s on `raster_tasks` (transforms/raster/tasks.py), or one rejection: everything that
can reject a raster source (unsafe or mismatching file, conversion that collapses, chip size,
class map) happens here, so a source is rejected whole or planned whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import apache_beam as beam
from cropshard.transforms.examples import ExampleSpec, read_bytes
from cropshard.transforms.progress import ProgressWriter
from cropshard.transforms.raster.open_raster import is_raster_path, refuse_sidecar
from cropshard.transforms.raster.records import HEAD_BYTES, file_sha256, open_job
from cropshard.transforms.raster.tasks import RASTER_TASKS, RasterTask, plan_tasks, with_root_cause
from cropshard.transforms.rejects import REJECTED, Rejected, Rejection, RejectionCounters, rejection_stage
from cropshard.transforms.types import ImageSource
from cropshard.transforms.worker import setup_worker

PHOTOS = "photos"  # output tag: the sources that are not raster sources


def plan_source(source: ImageSource, spec: ExampleSpec, ranges: Mapping | None) -> list[RasterTask] | None:
    """The tasks of a raster source, None for a photo (not a raster path, not a TIFF, or a
    photo-like TIFF without raster options); Rejected with the reason it cannot be chipped, and
    for a GDAL sidecar (every source passes here first)."""
    refuse_sidecar(source.path)
    if not is_raster_path(source.path):
        return None
    head = read_bytes(source.path, HEAD_BYTES)
    if spec.raster.to_uint8.needs_dataset_range:
        ranges = ranges or {}  # never None here: None means the statistics pass
    try:
        with open_job(source, head, spec.crop, spec.raster, spec.channels, spec.max_pixels, ranges) as job:
            return None if job is None else plan_tasks(job, file_sha256(source.path))
    except Rejected:
        raise
    except Exception as err:  # noqa: BLE001 - one bad file must never fail a long job
        raise Rejected("decode_error", f"{type(err).__name__}: {with_root_cause(err)}") from err


class PlanRasters(beam.DoFn):
    """ImageSource -> photos on `photos_tag` (PHOTOS, or RASTER_TASKS to spread them with the
    tasks), raster tasks on RASTER_TASKS, or a rejection."""

    def __init__(self, spec: ExampleSpec, photos_tag: str = PHOTOS, progress_dir: str | None = None) -> None:
        self._spec = spec
        self._photos_tag = photos_tag
        self._progress_dir = progress_dir  # local runs: a source rejected here is done (transforms/progress.py)
        self._progress: ProgressWriter | None = None
        self._planned = beam.metrics.Metrics.counter("cropshard", "raster_sources_planned")
        self._tasks = beam.metrics.Metrics.counter("cropshard", "raster_tasks")
        self._rejected = RejectionCounters()

    def setup(self) -> None:
        setup_worker(self._spec.max_pixels)
        if self._progress_dir:
            self._progress = ProgressWriter(self._progress_dir)

    def finish_bundle(self) -> None:
        if self._progress:
            self._progress.flush()

    def process(self, source: ImageSource, ranges: Mapping | None = None) -> Iterator[beam.pvalue.TaggedOutput]:
        try:
            tasks = plan_source(source, self._spec, ranges)
        except Rejected as err:
            stage = "read" if err.reason in ("not_found", "unreadable", "gdal_sidecar") else rejection_stage(err.reason)
            self._rejected.inc(err.reason)
            if self._progress:  # ImagesToExamples counts every other source
                self._progress.add()
            yield beam.pvalue.TaggedOutput(REJECTED, Rejection(source.path, stage, err.reason, err.message).to_json())
            return
        if tasks is None:
            yield beam.pvalue.TaggedOutput(self._photos_tag, source)
            return
        self._planned.inc()
        self._tasks.inc(len(tasks))
        for task in tasks:
            yield beam.pvalue.TaggedOutput(RASTER_TASKS, task)
