"""The pure parts of what compare says pre-cropping costs: window counts, context, the training plan's checks, the verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cropshard.reader import fileio
from cropshard.reader.metadata import DatasetError, DatasetInfo, ShardInfo, SplitInfo
from cropshard.tools.compare.costs import Trainee, TrainSettings, coverages, plan_training, reference_variant
from cropshard.tools.compare.coverage import (
    StoredImage,
    random_resized_share,
    random_resized_windows,
    reachable_windows,
    source_coverage,
    summarize_coverage,
    union_area,
    variant_coverage,
    window_positions,
)
from cropshard.tools.compare.plan import crop_label, training_crop
from cropshard.tools.compare.recommend import recommend, share_text, within_spread
from cropshard.tools.compare.scan import SplitScan, read_source_size, whole_source_sizes
from cropshard.tools.compare.train import TrainPlan, TrainRun, summarize_training
from PIL import Image

from tests.tools import storage
from tests.tools.compare_rows import measured_row

WINDOW = (32, 32)
SOURCE = (96, 128)  # (height, width) of the source in these tests
FULL_POSITIONS = (96 - 32 + 1) * (128 - 32 + 1)


def test_union_area_counts_overlaps_once() -> None:
    assert union_area([]) == 0 and union_area([(0, 0, 0, 5)]) == 0
    assert union_area([(0, 0, 2, 3)]) == 6
    assert union_area([(0, 0, 2, 2), (1, 1, 3, 3)]) == 7  # 4 + 4 - the shared 1
    assert union_area([(0, 0, 4, 4), (1, 1, 2, 2)]) == 16  # one inside the other
    assert union_area([(0, 0, 1, 1), (5, 5, 6, 7)]) == 3  # apart
    assert union_area([(0, 0, 2, 5), (0, 5, 2, 8)]) == 16  # touching edges


def test_window_positions() -> None:
    assert window_positions(96, 128, WINDOW) == FULL_POSITIONS == 65 * 97
    assert window_positions(32, 32, WINDOW) == 1
    assert window_positions(20, 40, WINDOW) == 9  # smaller than the window in height: only the padded centre row


def test_a_single_centre_pre_crop_is_one_window_and_its_share_of_the_area() -> None:
    centre = StoredImage((32, 48, 32, 32), 32, 32)
    cov = source_coverage([centre], SOURCE, WINDOW, None)
    assert (cov.windows, cov.full_windows, cov.resolution) == (1, FULL_POSITIONS, 1.0)
    assert cov.context == 32 * 32 / (96 * 128)
    assert source_coverage([centre], SOURCE, WINDOW, "center").windows == 1


def test_n_random_pre_crops_are_n_windows_and_their_union_of_area() -> None:
    crops = [StoredImage((0, 0, 32, 32), 32, 32), StoredImage((16, 16, 32, 32), 32, 32), StoredImage((64, 96, 32, 32), 32, 32),
             StoredImage((0, 0, 32, 32), 32, 32)]  # the last repeats the first: the same window
    cov = source_coverage(crops, SOURCE, WINDOW, None)
    assert cov.windows == 3
    assert cov.context == (32 * 32 * 3 - 16 * 16) / (96 * 128)


def test_full_and_downscaled_full_images_reach_every_position() -> None:
    full = source_coverage([StoredImage((0, 0, 96, 128), 96, 128)], SOURCE, WINDOW, "random")
    assert (full.windows, full.full_windows, full.context, full.resolution) == (FULL_POSITIONS, FULL_POSITIONS, 1.0, 1.0)
    half = source_coverage([StoredImage((0, 0, 96, 128), 48, 64)], SOURCE, WINDOW, "random")
    assert (half.windows, half.full_windows, half.context, half.resolution) == (17 * 33, 17 * 33, 1.0, 0.5)


def test_random_crops_of_larger_pre_crops_are_the_union_of_their_positions() -> None:
    # Two 48x48 pre-crops 8 columns apart: a 32x32 window has 17x17 positions in each, 17 rows x 9 columns of them shared.
    crops = [StoredImage((0, 0, 48, 48), 48, 48), StoredImage((0, 8, 48, 48), 48, 48)]
    assert reachable_windows(crops, WINDOW, "random") == 17 * 17 * 2 - 17 * 9
    assert reachable_windows(crops, WINDOW, None) == 2
    # 16 columns apart the overlap (32 columns) still fits one column of positions; 32 apart it fits none.
    assert reachable_windows([crops[0], StoredImage((0, 16, 48, 48), 48, 48)], WINDOW, "random") == 17 * 17 * 2 - 17
    assert reachable_windows([crops[0], StoredImage((0, 32, 48, 48), 48, 48)], WINDOW, "random") == 17 * 17 * 2


def test_random_resized_windows_follow_the_readers_rule_and_stay_inside() -> None:
    windows = random_resized_windows(96, 128, 5000, seed=3)
    y, x, h, w = windows.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 96).all() and (x + w <= 128).all() and (h >= 1).all() and (w >= 1).all()
    area = h * w / (96 * 128)
    # Rounding moves an area a little off its draw; draws too tall or too wide for the image are tried again.
    assert area.min() >= 0.07 and area.max() <= 1.0 and (area < 0.2).mean() > 0.1 and (area > 0.8).mean() > 0.02
    assert (random_resized_windows(96, 128, 50, seed=3) == random_resized_windows(96, 128, 50, seed=3)).all()
    # Nothing fits a 1-pixel-high image within the aspect range: the centred fallback, clamped to 4:3.
    assert random_resized_windows(1, 300, 4, seed=0).tolist() == [[0, 149, 1, 1]] * 4


def test_random_resized_share_matches_the_exact_share_for_one_scale_and_ratio() -> None:
    # One scale and ratio: every window is a 50x50 square (area 0.25 of 100x100), uniform over 51x51 positions;
    # a centred 70x70 pre-crop holds 21x21 of those positions.
    windows = random_resized_windows(100, 100, 20000, seed=1, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    assert (windows[:, 2:] == 50).all()
    inside = ((windows[:, 0] >= 15) & (windows[:, 1] >= 15) & (windows[:, 0] + 50 <= 85) & (windows[:, 1] + 50 <= 85)).mean()
    assert inside == pytest.approx((21 / 51) ** 2, abs=0.01)
    # With the default ranges: a whole image keeps all of them, a centre crop some, two halves more.
    whole = [StoredImage((0, 0, 96, 128), 96, 128)]
    assert random_resized_share(whole, SOURCE) == 1.0
    centre = random_resized_share([StoredImage((16, 32, 64, 64), 64, 64)], SOURCE)
    assert 0 < centre < 0.2
    halves = [StoredImage((0, 0, 96, 64), 96, 64), StoredImage((0, 64, 96, 64), 96, 64)]
    assert centre < random_resized_share(halves, SOURCE) < 1.0
    assert source_coverage(whole, SOURCE, WINDOW, "random").rrc_share == 1.0
    assert source_coverage(whole, None, WINDOW, "random").rrc_share is None


def test_unknown_crop_modes_and_sizes() -> None:
    with pytest.raises(ValueError, match="no window count for crop mode 'sideways'"):
        reachable_windows([StoredImage((0, 0, 32, 32), 32, 32)], WINDOW, "sideways")
    unknown = source_coverage([StoredImage((0, 0, 32, 32), 32, 32)], None, WINDOW, None)
    assert (unknown.windows, unknown.full_windows, unknown.context) == (1, None, None)
    known = source_coverage([StoredImage((32, 48, 32, 32), 32, 32)], SOURCE, WINDOW, None)
    summary = summarize_coverage([unknown, known])
    assert (summary.images, summary.images_sized, summary.windows_per_image) == (2, 1, 1.0)
    assert summary.window_share == 1 / FULL_POSITIONS and summary.context_kept == known.context
    assert summarize_coverage([unknown]).window_share is None
    by_source = {"a": [StoredImage((32, 48, 32, 32), 32, 32)], "b": [StoredImage((0, 0, 32, 32), 32, 32)] * 2}
    assert variant_coverage(by_source, {"a": SOURCE}, WINDOW, None).images_sized == 1


def test_whole_source_sizes_come_from_full_image_scans_only() -> None:
    full = SplitScan({"a": [StoredImage((0, 0, 96, 128), 48, 64)]}, {"a": "a.jpg"}, {"a": 0}, whole_sources=True)
    pre = SplitScan({"a": [StoredImage((32, 48, 32, 32), 32, 32)]}, {"a": "a.jpg"}, {"a": 0}, whole_sources=False)
    assert whole_source_sizes([pre, full]) == {"a": SOURCE} and whole_source_sizes([pre]) == {}


def info(crop: dict, splits: dict[str, int], labels: tuple[str, ...] = ("cat", "dog"), shape: tuple[int, int, int] | None = None) -> DatasetInfo:
    split_infos = {name: SplitInfo(name, n, (ShardInfo(f"{name}-0.tfrecord", n, 100 * n),)) for name, n in splits.items()}
    return DatasetInfo("1.0", "jpeg", ("jpeg",), 3, shape, crop, labels, split_infos, "none", sum(splits.values()), {}, {})


PRE = info({"strategy": "center", "size": [32, 32]}, {"train": 8, "validation": 2}, shape=(32, 32, 3))
FULL = info({"strategy": "none"}, {"train": 8, "validation": 2})
RESIZED = info({"strategy": "none", "resize": 64}, {"train": 8, "validation": 2})


def test_training_crop_is_random_wherever_the_stored_images_are_larger_than_the_window() -> None:
    assert training_crop(PRE, (32, 32)) is None and training_crop(PRE, (24, 32)) == "random"
    assert training_crop(FULL, (32, 32)) == "random" == training_crop(RESIZED, (32, 32))
    assert crop_label(None, None) == "plain read" and crop_label("random", (24, 32)) == "random crop 24x32"


def scan(keys: list[str], labels: list[int] | None = None, whole: bool = False) -> SplitScan:
    labels = labels or [0] * len(keys)
    return SplitScan({k: [StoredImage((0, 0, 32, 32), 32, 32)] for k in keys}, {k: f"{k}.jpg" for k in keys},
                     dict(zip(keys, labels, strict=True)), whole_sources=whole)


def test_the_training_plan_and_what_makes_it_refuse() -> None:
    trainees = [Trainee("precrop-jpeg", "/p", PRE, "train"), Trainee("resized64-jpeg", "/r", RESIZED, "train"),
                Trainee("full-jpeg", "/f", FULL, "train")]
    reference = reference_variant(trainees, "validation")
    assert reference.name == "full-jpeg"  # the resized variant is not at source resolution
    scans = [scan(["a", "b"]), scan(["a", "b"]), scan(["a", "b"], whole=True)]
    settings = TrainSettings(seeds=(0, 1, 2), budget_seconds=90, max_steps=None, batch_size=16)
    plan = plan_training(trainees, scans, reference, scan(["c"]), (32, 32), settings)
    assert [(t.variant, t.crop, t.crop_size, t.eval_resize) for t in plan.targets] == [
        ("precrop-jpeg", None, None, None), ("resized64-jpeg", "random", (32, 32), 64), ("full-jpeg", "random", (32, 32), None)]
    assert (plan.eval_path, plan.eval_split, plan.seconds, plan.num_classes, plan.batch_size) == ("/f", "validation", 30, 2, 16)
    assert TrainPlan.from_json(plan.to_json()) == plan
    with pytest.raises(DatasetError, match="precrop-jpeg trains on 1 of the held-out images"):
        plan_training(trainees, scans, reference, scan(["b", "c"]), (32, 32), settings)
    with pytest.raises(DatasetError, match="needs labelled images; resized64-jpeg"):
        plan_training(trainees, [scans[0], scan(["a", "b"], [0, -1]), scans[2]], reference, scan(["c"]), (32, 32), settings)
    other_labels = dataclasses.replace(trainees[1], info=dataclasses.replace(RESIZED, labels=("dog", "cat")))
    with pytest.raises(DatasetError, match="the same labels in every variant"):
        plan_training([trainees[0], other_labels, trainees[2]], scans, reference, scan(["c"]), (32, 32), settings)
    with pytest.raises(DatasetError, match="none has examples in split 'test'"):
        reference_variant(trainees, "test")
    with pytest.raises(DatasetError, match="a full-image variant"):
        reference_variant(trainees[:2], "validation")


def test_training_summary_mean_spread_and_rates() -> None:
    runs = [TrainRun("v", 1, 50, 1600, 20.0, 0.5, 40), TrainRun("v", 0, 60, 2000, 30.0, 0.7, 40)]
    summary = summarize_training(runs)
    assert summary.accuracies == (0.7, 0.5) and summary.steps == (60, 50)  # seed order
    assert summary.accuracy == pytest.approx(0.6) and summary.accuracy_sd == pytest.approx(0.1414, abs=1e-4)
    assert summary.seconds == 25.0 and summary.images_per_second == pytest.approx(3600 / 50)
    assert summary.accuracy_per_minute == pytest.approx(0.6 / (25 / 60)) and summary.eval_images == 40
    assert summarize_training(runs[:1]).accuracy_sd == 0.0
    with pytest.raises(ValueError):
        summarize_training([])


def trained(name: str, layout: str, accuracies: tuple[float, ...], sd: float, **fields: object) -> object:
    mean = sum(accuracies) / len(accuracies)
    return measured_row(name=name, layout=layout, train_seeds=tuple(range(len(accuracies))), train_accuracies=accuracies,
                        train_accuracy=mean, train_accuracy_sd=sd, train_steps=(100,) * len(accuracies), train_seconds=30.0,
                        train_images_per_second=100.0, accuracy_per_minute=mean * 2, eval_images=40, **fields)


def test_within_spread_is_the_two_deviations_together_or_one_image() -> None:
    a = trained("a", "precrop", (0.50, 0.60), 0.05)
    assert within_spread(a, trained("b", "full", (0.58, 0.62), 0.02))  # means 0.05 apart <= 0.05 + 0.02
    assert not within_spread(a, trained("b", "full", (0.68, 0.72), 0.02))  # means 0.15 apart > 0.05 + 0.02
    exact = trained("c", "precrop", (1.0, 1.0), 0.0)
    assert within_spread(exact, trained("d", "full", (0.975, 0.975), 0.0))  # one held-out image of 40
    assert not within_spread(exact, trained("d", "full", (0.95, 0.95), 0.0))
    with pytest.raises(ValueError):
        within_spread(a, measured_row())


def test_recommendation_uses_the_training_numbers_and_says_when_they_are_within_the_spread() -> None:
    pre = trained("precrop-jpeg", "precrop", (0.20, 0.30), 0.07, windows_per_image=1.0, window_share=1 / 6305,
                  context_kept=0.0833, resolution=1.0, coverage_crop="plain read")
    full = trained("full-jpeg", "full", (0.90, 0.94), 0.03, windows_per_image=6305.0, window_share=1.0, context_kept=1.0,
                   resolution=1.0, coverage_crop="random crop 32x32", reader_crop="random crop 32x32")
    close = dataclasses.replace(pre, name="precrop-png", train_accuracies=(0.88, 0.92), train_accuracy=0.90)
    text = recommend([pre, full, close])
    coverage = next(s for s in text if s.startswith("For training"))
    assert "precrop-jpeg keeps 1 training window per source image, 0.016% of those the full images allow, 8.3% of each" in coverage
    assert "full-jpeg keeps every position of the random crop 32x32, 100% of each source image's area at 1.00x resolution" in coverage
    assert "precrop-jpeg 25% ± 7%, full-jpeg 92% ± 3%, precrop-png 90% ± 7%" in next(s for s in text if s.startswith("Trained"))
    assert "Precrop-jpeg scores 67 points below full-jpeg, beyond the seed spread: on these images it costs accuracy." in text
    assert any(s.startswith("Precrop-png and full-jpeg agree within the seed spread (2 points apart)") for s in text)
    assert text[-1].startswith("Limits: a small proxy model") and not any(s.startswith("One seed only") for s in text)
    single = [dataclasses.replace(r, train_seeds=(0,), train_accuracies=r.train_accuracies[:1]) for r in (pre, full)]
    assert any(s.startswith("One seed only: no spread was measured") for s in recommend(single))
    assert not any(s.startswith(("Trained", "For training")) for s in recommend([measured_row()]))


def test_share_text() -> None:
    assert [share_text(v) for v in (1.0, 0.25, 0.0833, 0.000918, 0.0, 1 / 864_374)] == [
        "100%", "25%", "8.3%", "0.092%", "0%", "1 in 864,374"]


# ---- source sizes of gs:// sources: read through the reader's filesystem, or the '?' explained --------


def precrop_scan(filename: str) -> SplitScan:
    return SplitScan({"a": [StoredImage((32, 48, 32, 32), 32, 32)]}, {"a": filename}, {"a": 0}, whole_sources=False)


def write_source(path: Path, **save: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SOURCE[1], SOURCE[0]), (90, 120, 30)).save(path, "JPEG", **save)


def test_gs_source_sizes_are_read_through_the_reader_filesystem(tmp_path: Path) -> None:
    # Sizes were read from local files only: gs:// sources gave '?' for window share, RRC share and context kept.
    write_source(tmp_path / "src" / "a.jpg")
    write_source(tmp_path / "src" / "icc.jpg", icc_profile=bytes(300 * 1024))  # a header longer than the first bytes read
    bucket = storage.BucketOnDisk(str(tmp_path))
    with fileio.use(bucket):
        (cov,), note = coverages([Trainee("precrop-jpeg", "gs://bucket/ds", PRE, "train")], [precrop_scan("gs://bucket/src/a.jpg")], WINDOW)
    assert note is None
    assert cov.window_share == 1 / FULL_POSITIONS and cov.context_kept == 32 * 32 / (96 * 128) and cov.rrc_share is not None
    with fileio.use(bucket):
        assert read_source_size("gs://bucket/src/icc.jpg") == SOURCE


def test_unknown_source_sizes_are_explained_under_the_costs_table(tmp_path: Path) -> None:
    # The '?' came with no reason; now the note names how many sources, the first failure and its cause.
    trainees = [Trainee("precrop-jpeg", "gs://bucket/ds", PRE, "train")]
    with fileio.use(storage.unreachable()):
        (cov,), note = coverages(trainees, [precrop_scan("gs://bucket/src/a.jpg")], WINDOW)
    assert cov.window_share is None and note is not None
    assert note.startswith("window share, RRC share and context kept leave out 1 source image of unknown size ('?' where no size")
    assert "(gs://bucket/src/a.jpg: UnavailableError: connection refused by the storage service)" in note
    (cov,), note = coverages(trainees, [precrop_scan(str(tmp_path / "moved.jpg"))], WINDOW)
    assert cov.context_kept is None and f"{tmp_path / 'moved.jpg'}: FileNotFoundError" in str(note)
