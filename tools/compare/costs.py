"""What each variant costs the model: its coverage from its own records, and the `--train` plan.

Both start from one scan per variant of the split the model trains on (scan.py). The training
plan checks what would make the comparison meaningless before any training starts: unlabelled
records, variants whose label ids differ, no full-image variant to take the held-out images from,
and held-out images that a variant also trains on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cropshard.reader.metadata import DatasetError, DatasetInfo
from cropshard.reader.schema import UNLABELED
from cropshard.tools.compare.coverage import Coverage, variant_coverage
from cropshard.tools.compare.plan import training_crop
from cropshard.tools.compare.scan import SplitScan, file_sizes, scan_split, unknown_sizes_note, whole_source_sizes
from cropshard.tools.compare.train import TrainPlan, TrainTarget


@dataclasses.dataclass(frozen=True)
class Trainee:
    """One variant as `compare --train` and the coverage see it."""

    name: str
    path: str
    info: DatasetInfo
    split: str  # the split it trains on: its train split, else its first non-empty one


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    seeds: tuple[int, ...] = (0, 1, 2)
    budget_seconds: float = 180.0  # per variant, shared by its seeds
    max_steps: int | None = None  # per run; None: the budget alone ends a run
    batch_size: int = 32
    eval_split: str = "validation"


def scan_all(trainees: Sequence[Trainee]) -> list[SplitScan]:
    return [scan_split(t.path, t.info, t.split) for t in trainees]


def coverages(trainees: Sequence[Trainee], scans: Sequence[SplitScan], size: tuple[int, int]) -> tuple[list[Coverage], str | None]:
    """Each variant's coverage of a training window of `size`, and a note on why any source size is
    unknown. Sizes come from the full-image variants' scans, else from the source files (each read
    once, whichever variants share it)."""
    known = whole_source_sizes(scans)
    files = {key: scan.filenames[key] for scan in scans for key in scan.by_source if key not in known}
    read = file_sizes(files)
    sizes = {**read.sizes, **known}
    result = [variant_coverage(scan.by_source, sizes, size, training_crop(t.info, size)) for t, scan in zip(trainees, scans, strict=True)]
    return result, unknown_sizes_note(read.failures)


def reference_variant(trainees: Sequence[Trainee], eval_split: str) -> Trainee:
    """The first full-image variant at source resolution with held-out images: they are read whole, like photos at inference."""
    for t in trainees:
        if not t.info.is_precropped and not t.info.crop.get("resize") and t.info.splits.get(eval_split) \
                and t.info.splits[eval_split].num_examples:
            return t
    raise DatasetError(
        f"--train scores every variant on the whole held-out images of a full-image variant: none has examples in split"
        f" {eval_split!r} (build with --layouts including full and --split such as train=0.8,{eval_split}=0.2, or set --eval-split)"
    )


def _check_labels(trainees: Sequence[Trainee], scans: Sequence[SplitScan]) -> None:
    labels = trainees[0].info.labels
    for t, scan in zip(trainees, scans, strict=True):
        if not t.info.labels or any(label == UNLABELED for label in scan.labels.values()):
            raise DatasetError(f"--train needs labelled images; {t.name} has unlabelled records (build with folder labels or a manifest)")
        if t.info.labels != labels:
            raise DatasetError(f"--train needs the same labels in every variant; {t.name} has {list(t.info.labels)}, not {list(labels)}")


def plan_training(trainees: Sequence[Trainee], scans: Sequence[SplitScan], reference: Trainee, held_out: SplitScan,
                  size: tuple[int, int], settings: TrainSettings) -> TrainPlan:
    """The child's plan: every variant, the seeds, the held-out set (`held_out`: the scan of `reference`'s
    evaluation split) and each run's budget; raises DatasetError for what would make the comparison meaningless."""
    if not trainees:
        raise ValueError("--train: no variants to train on")
    _check_labels(trainees, scans)
    for t, scan in zip(trainees, scans, strict=True):
        leaked = len(held_out.by_source.keys() & scan.by_source.keys())
        if leaked:
            remedy = (f"{t.name} has no train split with examples, so it trains on {t.split!r}: build it with a --split"
                      f" that has both, such as train=0.8,{settings.eval_split}=0.2" if t.split == settings.eval_split
                      else "build every variant with the same --split (and --split_by) from the same inputs")
            raise DatasetError(f"{t.name} trains on {leaked} of the held-out images (split {t.split!r} overlaps"
                               f" {reference.name}'s {settings.eval_split!r}): {remedy}")
    targets = []
    for t in trainees:
        crop = training_crop(t.info, size)
        targets.append(TrainTarget(t.name, t.path, t.split, crop, size if crop else None, t.info.crop.get("resize")))
    return TrainPlan(
        targets=tuple(targets), seeds=settings.seeds, eval_path=reference.path, eval_split=settings.eval_split,
        num_classes=len(reference.info.labels), channels=reference.info.channels, batch_size=settings.batch_size,
        seconds=settings.budget_seconds / len(settings.seeds), max_steps=settings.max_steps,
    )


def training_plan(trainees: Sequence[Trainee], scans: Sequence[SplitScan], size: tuple[int, int], settings: TrainSettings) -> TrainPlan:
    """plan_training with the held-out images found and scanned."""
    reference = reference_variant(trainees, settings.eval_split)
    return plan_training(trainees, scans, reference, scan_split(reference.path, reference.info, settings.eval_split), size, settings)
