"""Reader measurement in a fresh child process per run, and one result row per variant.

The parent sends a ReaderSpec as JSON to `python -m cropshard.tools.compare --measure-reader SPEC`;
the child (measure_reader) prints one ReaderRun as JSON. A fresh interpreter per run keeps each
variant's peak RSS its own and stops one variant warming another's caches inside TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cropshard.reader.metadata import DatasetError, DatasetInfo
from cropshard.tools.compare.coverage import Coverage
from cropshard.tools.compare.plan import Variant, crop_label
from cropshard.tools.compare.train import TrainingSummary


@dataclasses.dataclass(frozen=True)
class ReaderSettings:
    """How every variant is read; the JSON document's "reader" object."""

    split: str = "train"  # read this split, else the first non-empty one
    batch_size: int = 32
    batches: int = 50  # timed batches per run, at least
    min_seconds: float = 3.0  # and time for at least this long
    warmup: int = 5  # untimed batches first
    repeats: int = 3  # runs per variant; the fastest counts
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class ReaderSpec:
    """What one child process measures."""

    path: str
    split: str
    batch_size: int
    batches: int
    warmup: int
    min_seconds: float
    crop: str | None  # None: a plain read of pre-crops; "random": random crops of crop_size from full images
    crop_size: tuple[int, int] | None
    seed: int | None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ReaderSpec:
        fields = json.loads(text)
        size = fields.pop("crop_size")
        return cls(**fields, crop_size=tuple(size) if size else None)


@dataclasses.dataclass(frozen=True)
class ReaderRun:
    """One child's measurement."""

    images: int
    batches: int
    seconds: float
    images_per_second: float
    peak_rss_bytes: int
    baseline_rss_bytes: int  # after importing TensorFlow and the reader, before reading
    other_cpu_share: float | None  # share of all CPUs other processes used meanwhile; None without psutil


@dataclasses.dataclass(frozen=True)
class VariantRow:
    """One variant's line of the results: sizes from its metadata, reader numbers from its runs."""

    name: str
    layout: str
    encoding: str
    path: str
    reused: bool
    stored_shape: str  # "HxWxC", or "varies" for full images
    resize: int | None
    num_images: int
    num_examples: int
    total_bytes: int
    bytes_per_image: float
    build_seconds: float | None  # None: reused, not built
    reader_split: str
    reader_crop: str
    reader_batch_size: int
    reader_batches: int
    reader_images: int
    reader_seconds: float
    reader_images_per_second: float
    reader_runs_images_per_second: tuple[float, ...]
    reader_peak_rss_bytes: int
    reader_baseline_rss_bytes: int
    other_cpu_share: float | None
    # What the variant keeps for training (coverage.py), from its training split's records:
    coverage_crop: str | None = None  # the training crop the windows are counted for
    coverage_images: int | None = None  # source images the means are over
    windows_per_image: float | None = None  # distinct training windows per source image
    window_share: float | None = None  # of the windows the same crop has on the full images
    context_kept: float | None = None  # share of each source image's area stored
    resolution: float | None = None  # stored pixels per source pixel, linear
    rrc_window_share: float | None = None  # of the full images' random-resized windows (scale 0.08-1), inside a stored image
    # compare --train (train.py); empty/None without it:
    train_seeds: tuple[int, ...] = ()
    train_accuracies: tuple[float, ...] = ()  # one per seed, on the held-out images
    train_accuracy: float | None = None  # mean over the seeds
    train_accuracy_sd: float | None = None  # sample standard deviation over the seeds
    train_steps: tuple[int, ...] = ()
    train_seconds: float | None = None  # training wall seconds of one run, mean
    train_images_per_second: float | None = None
    accuracy_per_minute: float | None = None  # mean accuracy / training minutes of one run
    eval_images: int | None = None
    # The build's reconciliation: inputs = num_images written + rejected; compared images are a subset otherwise.
    num_inputs: int | None = None
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> count

    def to_json(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        for name in TUPLE_FIELDS:
            row[name] = list(row[name])
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> VariantRow:
        fields = {name: row[name] for name in ROW_FIELDS if name in row}  # rows written before a field existed lack it
        for name in TUPLE_FIELDS:
            fields[name] = tuple(fields[name])
        return cls(**fields)


ROW_FIELDS = tuple(field.name for field in dataclasses.fields(VariantRow))
TUPLE_FIELDS = ("reader_runs_images_per_second", "train_seeds", "train_accuracies", "train_steps")


def with_coverage(row: VariantRow, coverage: Coverage, crop: str) -> VariantRow:
    """`row` with a variant's coverage (see coverage.py); `crop` names the training crop it is counted for."""
    return dataclasses.replace(row, coverage_crop=crop, coverage_images=coverage.images, windows_per_image=coverage.windows_per_image,
                               window_share=coverage.window_share, context_kept=coverage.context_kept, resolution=coverage.resolution,
                               rrc_window_share=coverage.rrc_share)


def with_training(row: VariantRow, seeds: Sequence[int], summary: TrainingSummary) -> VariantRow:
    """`row` with a variant's `compare --train` results."""
    return dataclasses.replace(
        row, train_seeds=tuple(sorted(seeds)), train_accuracies=summary.accuracies, train_accuracy=summary.accuracy,
        train_accuracy_sd=summary.accuracy_sd, train_steps=summary.steps, train_seconds=summary.seconds,
        train_images_per_second=summary.images_per_second, accuracy_per_minute=summary.accuracy_per_minute,
        eval_images=summary.eval_images,
    )


def pick_split(variant: Variant, info: DatasetInfo, wanted: str, required: bool) -> str:
    """`wanted` if it has examples, else (unless `required`: the user named it) the first non-empty split."""
    if wanted in info.splits and info.splits[wanted].num_examples:
        return wanted
    if required:
        state = "is empty" if wanted in info.splits else "does not exist"
        raise DatasetError(f"--read-split {wanted!r}: in {variant.name} ({variant.path}) that split {state};"
                           f" its splits: {', '.join(f'{n} ({s.num_examples})' for n, s in sorted(info.splits.items()))}")
    split = next((name for name, s in sorted(info.splits.items()) if s.num_examples), None)
    if split is None:
        raise DatasetError(f"{variant.name} ({variant.path}) has no examples to read")
    return split


def reader_spec(variant: Variant, info: DatasetInfo, settings: ReaderSettings, size: tuple[int, int],
                split_given: bool = False) -> ReaderSpec:
    """A plain read of pre-crops, random crops of `size` from full images. `split_given`: the user named
    --read-split, so a missing or empty one is an error rather than silently another split."""
    split = pick_split(variant, info, settings.split, split_given)
    crop = None if info.is_precropped else "random"
    return ReaderSpec(variant.path, split, settings.batch_size, settings.batches, settings.warmup, settings.min_seconds,
                      crop, tuple(size) if crop else None, settings.seed)


def summarize(variant: Variant, info: DatasetInfo, build_seconds: float | None, spec: ReaderSpec, runs: Sequence[ReaderRun]) -> VariantRow:
    """Reader numbers from the fastest run (other load only ever slows a run down, so the best of several
    is the least disturbed); peak RSS the largest of any run."""
    best = max(runs, key=lambda run: run.images_per_second)
    total = sum(s.num_bytes for s in info.splits.values())
    return VariantRow(
        name=variant.name,
        layout=variant.layout,
        encoding=info.encoding,
        path=variant.path,
        reused=build_seconds is None,
        stored_shape="x".join(map(str, info.image_shape)) if info.image_shape else "varies",
        resize=info.crop.get("resize"),
        num_images=info.num_images_written,
        num_examples=info.num_examples,
        total_bytes=total,
        bytes_per_image=total / info.num_examples if info.num_examples else 0.0,
        build_seconds=build_seconds,
        reader_split=spec.split,
        reader_crop=crop_label(spec.crop, spec.crop_size),
        reader_batch_size=spec.batch_size,
        reader_batches=best.batches,
        reader_images=best.images,
        reader_seconds=best.seconds,
        reader_images_per_second=best.images_per_second,
        reader_runs_images_per_second=tuple(run.images_per_second for run in runs),
        reader_peak_rss_bytes=max(run.peak_rss_bytes for run in runs),
        reader_baseline_rss_bytes=best.baseline_rss_bytes,
        other_cpu_share=best.other_cpu_share,
        num_inputs=info.num_inputs,
        rejected=dict(sorted(info.rejected.items())),
    )


# ---- the child ----------------------------------------------------------------------------------


def _max_rss_bytes() -> int:
    """This process's own peak RSS. On Linux, VmHWM: ru_maxrss survives fork+exec, so a child
    started by a large parent reported the parent's peak, the same for every variant."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    import resource

    times = psutil.cpu_times()
    # guest time is already counted in user time on Linux; idle and iowait are not work.
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def other_cpu_share(before: tuple[float, float] | None, after: tuple[float, float] | None, seconds: float, cpus: int) -> float | None:
    """The share of all `cpus` that the rest of the machine kept busy between two _cpu_seconds() readings:
    machine busy time minus this process's own, clamped to [0, 1]; None when either reading is missing."""
    if not before or not after or seconds <= 0:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return round(min(max(others / (seconds * cpus), 0.0), 1.0), 3)


def measure_reader(spec: ReaderSpec) -> ReaderRun:
    """Run in the child: images/s of reader.load over the timed batches after `spec.warmup` untimed ones."""
    import tensorflow as tf  # noqa: F401 - imported before the baseline so it counts as baseline
    from cropshard import reader

    baseline = _max_rss_bytes()
    ds = reader.load(spec.path, spec.split, batch_size=spec.batch_size, crop=spec.crop, crop_size=spec.crop_size,
                     shuffle=True, repeat=True, seed=spec.seed)
    batches = iter(ds)
    for _ in range(spec.warmup):
        next(batches)
    # Time at least `batches` batches and at least `min_seconds`: a fast variant finishes 50 batches
    # in a tenth of a second, far too short to measure.
    images = count = 0
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    while count < spec.batches or time.perf_counter() - start < spec.min_seconds:
        images += int(next(batches)[0].shape[0])
        count += 1
    seconds = time.perf_counter() - start
    cpu_after = _cpu_seconds()
    return ReaderRun(
        images=images,
        batches=count,
        seconds=seconds,
        images_per_second=images / seconds if seconds else 0.0,
        peak_rss_bytes=_max_rss_bytes(),
        baseline_rss_bytes=baseline,
        other_cpu_share=other_cpu_share(cpu_before, cpu_after, seconds, os.cpu_count() or 1),
    )


def run_reader_subprocess(spec: ReaderSpec, timeout: float = 1800) -> ReaderRun:
    """Measure in a fresh interpreter (the same one, so it imports the same installed cropshard)."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, "-m", "cropshard.tools.compare", "--measure-reader", spec.to_json()],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"reader measurement of {spec.path} failed (exit {proc.returncode}):\n{tail}")
    return ReaderRun(**json.loads(lines[-1]))
