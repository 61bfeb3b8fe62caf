"""A large raster as many tasks: bands of block rows chipped on every worker, then one verdict per source.

PlanRasters (plan.py) checks a raster source (`records.open_job`: bands, sample type,
conversion, class map, chip size) and cuts its chip boxes into `RasterTask`s of about
`TASK_CHIPS` chips, whole rows of the file's blocks each (`task_ranges`), so a task decodes its
tiles once. The tasks are redistributed (Reshuffle: a 40000x40000 orthophoto then uses every
core or worker) and chipped by ImagesToExamples (`chip_task`, which reopens the source and reads
only its windows), so photos and raster chips come out of one stage: the local runner
materializes any Flatten, and flattening chips there would hold every pixel in the launcher.
`ReconcileRasters` sums the tasks' `TaskOutcome`s per source into one verdict: written (counted
once, its CRS and skipped chips recorded) or, when no task kept a chip, rejected `no_valid_chips`.

Reading errors after planning: a source of one task is rejected (`decode_error`) as long as the
task has emitted nothing, as before tasks existed. A source of several tasks cannot be rejected
once planned, since its other tasks may already have written chips: a failing task raises, the
runner retries its bundle (a retried bundle emits the same records; a failed attempt's outputs
are discarded), and if it keeps failing the job fails naming the source and rows, so no
dataset is published with a source half written.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.raster.records import PATH_RASTER, RasterJob, RasterSpec, open_planned_job
from cropshard.transforms.rejects import REJECTED, Rejected, Rejection, RejectionCounters
from cropshard.transforms.types import Box, ImageSource

TASK_CHIPS = 256  # chips per task, about: enough to amortize reopening the source, small enough to spread
RASTER_TASKS = "raster_tasks"  # output tag of PlanRasters: RasterTask per task of a raster source
RASTER_FACTS = "raster_facts"  # ((kind, value), count) per raster source, for the metadata
RASTER_STATS = "raster_stats"  # (split, BandStats) per task and split
TASK_OUTCOMES = "raster_task_outcomes"  # (source path, TaskOutcome) per task
SOURCES_WRITTEN = "raster_sources_written"  # the split, once per raster source written


@dataclasses.dataclass(frozen=True)
class RasterTask:
    """Some chips of one checked raster source: `boxes` in the working image, in plan order."""

    source: ImageSource
    digest: str  # sha256 of the source file, recorded in every chip
    boxes: tuple[Box, ...]
    index: int  # 0-based, of `tasks`
    tasks: int


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    """What one task (or, summed, a whole source) did; `rejection` for a source rejected after
    planning (its one task could not read its first chip; its label is not in the label map)."""

    split: str
    crs: str
    boxes: int
    kept: int
    planned: int  # the source's number of tasks
    skipped: tuple[tuple[str, int], ...] = ()  # (reason, chips), sorted
    tasks: int = 1  # tasks summed here
    rejection: str | None = None  # Rejection JSON line


def task_ranges(boxes: Sequence[Box], band_height: float, target: int = TASK_CHIPS) -> list[tuple[int, int]]:
    """[start, stop) ranges over `boxes` covering each exactly once, in order: a range ends only
    where the next box starts in another band of `band_height` rows (a row of the file's blocks)
    and once it holds at least `target` boxes, so tasks are whole block rows."""
    ranges, start = [], 0
    for i in range(1, len(boxes)):
        if i - start >= target and boxes[i][0] // band_height != boxes[i - 1][0] // band_height:
            ranges.append((start, i))
            start = i
    if boxes:
        ranges.append((start, len(boxes)))
    return ranges


def block_band_height(dataset: Any, bands: Sequence[int], work_shape: tuple[int, int]) -> float:
    """The height of one row of the file's blocks, in working-image rows (after --resize)."""
    block_height = dataset.block_shapes[bands[0] - 1][0]
    return block_height * work_shape[0] / dataset.shape[0]


def plan_tasks(job: RasterJob, digest: str, target: int = TASK_CHIPS) -> list[RasterTask]:
    """The tasks of a checked source, covering every box of `job` once."""
    ranges = task_ranges(job.boxes, block_band_height(job.dataset, job.bands, job.work_shape), target)
    return [
        RasterTask(job.source, digest, tuple(job.boxes[start:stop]), index, len(ranges))
        for index, (start, stop) in enumerate(ranges)
    ]


def sum_outcomes(outcomes: Iterable[TaskOutcome]) -> TaskOutcome:
    """The outcomes of a source's tasks as one (a CombinePerKey function: also sums partial sums)."""
    outcomes = list(outcomes)
    skipped: collections.Counter[str] = collections.Counter()
    for outcome in outcomes:
        skipped.update(dict(outcome.skipped))
    rejections = [outcome.rejection for outcome in outcomes if outcome.rejection]
    first = outcomes[0]
    return TaskOutcome(
        first.split, first.crs, sum(o.boxes for o in outcomes), sum(o.kept for o in outcomes), first.planned,
        tuple(sorted(skipped.items())), sum(o.tasks for o in outcomes), min(rejections) if rejections else None,
    )


def verdict(path: str, outcome: TaskOutcome) -> Iterator[tuple[str, Any]]:
    """(tag, element) for one source whose tasks are all summed: its skipped chips, then either
    its rejection or (written) its split and CRS. Every planned task must have reported: a
    missing one would be chips lost without a trace, so it fails the job instead."""
    if outcome.tasks != outcome.planned:
        raise RuntimeError(f"{path}: {outcome.tasks} of its {outcome.planned} raster tasks reported; chips would be missing")
    for reason, count in outcome.skipped:
        yield RASTER_FACTS, (("chips_skipped", reason), count)
    if outcome.rejection:
        yield REJECTED, outcome.rejection
    elif not outcome.kept:
        skipped = ", ".join(f"{count} {reason}" for reason, count in outcome.skipped)
        message = f"all {outcome.boxes} chips were skipped ({skipped})"
        yield REJECTED, Rejection(path, "crop", "no_valid_chips", message).to_json()
    else:
        yield RASTER_FACTS, (("crs", outcome.crs), 1)
        yield SOURCES_WRITTEN, outcome.split


def rejected_task(task: RasterTask, stage: str, err: Rejected) -> tuple[str, TaskOutcome]:
    """The outcome of a task whose source is rejected (chips: none)."""
    rejection = Rejection(task.source.path, stage, err.reason, err.message).to_json()
    return task.source.path, TaskOutcome("", "", len(task.boxes), 0, task.tasks, rejection=rejection)


def with_root_cause(err: BaseException) -> str:
    """'Read failed. See previous exception for details. (cause: TIFFFillTile:Read error at row
    512, ...)': rasterio's read errors say what failed only in the GDAL error they chain."""
    root = err
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    return f"{err}" if root is err else f"{err} (cause: {root})"


def chip_task(
    task: RasterTask, crop: CropSpec, raster: RasterSpec, channels: int, max_pixels: int, ranges: Mapping | None,
    split: str, label_id: int, split_fractions: Sequence[tuple[str, float]] | None, encoding: str, jpeg_quality: int,
) -> Iterator[tuple[str, Any]]:
    """(tag, element) of one task: (split, serialized example) per kept chip, then (raster_stats,
    (split, BandStats)) per split and (raster_task_outcomes, (path, TaskOutcome)) once."""
    emitted = 0
    try:
        with open_planned_job(task.source, task.boxes, crop, raster, channels, max_pixels, ranges) as job:
            for chip_split, record in job.records(label_id, split, split_fractions, encoding, jpeg_quality, task.digest):
                emitted += 1
                yield chip_split, record
    except Exception as err:
        if emitted or task.tasks > 1:
            rows = f"rows {task.boxes[0][0]}-{task.boxes[-1][0] + task.boxes[-1][2]}"
            raise RuntimeError(
                f"{task.source.path}: task {task.index + 1} of {task.tasks} ({rows}) failed after {emitted} chips: {with_root_cause(err)};"
                " the source was planned whole, so the build stops instead of writing it in part"
            ) from err
        yield TASK_OUTCOMES, rejected_task(task, "decode", err if isinstance(err, Rejected) else Rejected("decode_error", f"{type(err).__name__}: {with_root_cause(err)}"))
        return
    for chip_split, stats in job.stats.items():
        yield RASTER_STATS, (chip_split, stats)
    yield TASK_OUTCOMES, (task.source.path, TaskOutcome(split, job.crs, len(task.boxes), emitted, task.tasks, tuple(sorted(job.skipped.items()))))


class SourceVerdicts(beam.DoFn):
    """(path, summed TaskOutcome) -> `verdict`'s elements on their tags, counted like ImagesToExamples counts sources."""

    def __init__(self) -> None:
        self._decoded = beam.metrics.Metrics.counter("cropshard", "images_decoded")
        self._path = beam.metrics.Metrics.counter("cropshard", f"decode_path_{PATH_RASTER}")
        self._rejected = RejectionCounters()

    def process(self, item: tuple[str, TaskOutcome]) -> Iterator[beam.pvalue.TaggedOutput]:
        for tag, element in verdict(*item):
            if tag == SOURCES_WRITTEN:
                self._decoded.inc()
                self._path.inc()
            elif tag == REJECTED:
                self._rejected.inc(Rejection.from_json(element).reason)
            yield beam.pvalue.TaggedOutput(tag, element)


class ReconcileRasters(beam.PTransform):
    """(path, TaskOutcome) per task -> {raster_facts, raster_sources_written, rejected}: one verdict per source."""

    def expand(self, outcomes: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return (
            outcomes
            | "SumPerSource" >> beam.CombinePerKey(sum_outcomes)
            | "Verdicts" >> beam.ParDo(SourceVerdicts()).with_outputs(RASTER_FACTS, SOURCES_WRITTEN, REJECTED)
        )
