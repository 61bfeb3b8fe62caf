"""Large rasters as tasks (transforms/raster/tasks.py, plan.py): bands of block rows covering every
chip once, the same records as one job over the whole raster, and one verdict per source on
Beam's TestPipeline (written once, or rejected once when no task kept a chip)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from cropshard.pipeline.assemble import EncodeSources
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.examples import IMAGES_WRITTEN, ExampleSpec
from cropshard.transforms.raster.plan import plan_source
from cropshard.transforms.raster.records import HEAD_BYTES, RasterSpec, open_job
from cropshard.transforms.raster.tasks import (
    RASTER_FACTS,
    SOURCES_WRITTEN,
    TASK_OUTCOMES,
    TaskOutcome,
    chip_task,
    sum_outcomes,
    task_ranges,
    verdict,
)
from cropshard.transforms.rejects import REJECTED, Rejected, Rejection
from cropshard.transforms.types import ImageSource

from tests import imagegen, rastergen
from tests.beam_local import local_test_pipeline

SPLITS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))
SPEC = ExampleSpec(
    crop=CropSpec("grid", size=(16, 16)), channels=4, encoding="raw", split_fractions=SPLITS, split_names=("train", "validation", "test"),
    raster=RasterSpec(bands=(1, 2, 3, 4), dtype="uint16", max_nodata=0.25, split_block=64.0),
)


def source(path: Path) -> ImageSource:
    return ImageSource(str(path), path.name, "", None)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tasks")
    data = rastergen.multispectral(400, 400, bands=4, seed=7)
    data[:, 40:150, 30:300] = 0  # nodata across several tasks
    return {
        "big": rastergen.write_raster(root / "big.tif", data, nodata=0, block=32),  # 625 chips in bands of 2 chip rows
        "empty": rastergen.write_raster(root / "empty.tif", np.zeros((4, 320, 320), np.uint16), nodata=0, block=32),  # 400 chips, all nodata
        "small": rastergen.write_raster(root / "small.tif", rastergen.multispectral(48, 64, bands=4, seed=8), nodata=0),
        "photo": imagegen.save(root / "photo.jpg", imagegen.photo(40, 40)),
    }


def whole_job_records(path: Path, skipped: collections.Counter | None = None) -> list[tuple[str, bytes]]:
    """The unsplit path: one RasterJob over every box of the raster (its skip counts added to `skipped`)."""
    src = source(path)
    with open_job(src, path.read_bytes()[:HEAD_BYTES], SPEC.crop, SPEC.raster, SPEC.channels, SPEC.max_pixels) as job:
        records = list(job.records(-1, "train", SPLITS, "raw", 90, hashlib.sha256(path.read_bytes()).hexdigest()))
        if skipped is not None:
            skipped.update(job.skipped)
        return records


def test_task_ranges_are_whole_block_rows_covering_every_box_once() -> None:
    boxes = [(y, x, 16, 16) for y in range(0, 400, 16) for x in range(0, 400, 16)]  # 25 x 25
    ranges = task_ranges(boxes, band_height=32, target=256)
    assert ranges == [(0, 300), (300, 600), (600, 625)]  # 12 chip rows = 6 block rows, twice; then the rest
    covered = [i for start, stop in ranges for i in range(start, stop)]
    assert covered == list(range(len(boxes)))
    for start, _ in ranges[1:]:  # a task starts on a new block row
        assert boxes[start][0] % 32 == 0 and boxes[start - 1][0] // 32 != boxes[start][0] // 32
    assert task_ranges(boxes[:10], 32, 256) == [(0, 10)] and task_ranges([], 32) == []
    assert task_ranges(boxes, band_height=400, target=1) == [(0, 625)]  # one block row: one task


def test_tasks_chip_every_box_once_with_the_records_of_the_whole_job(rasters) -> None:
    tasks = plan_source(source(rasters["big"]), SPEC, None)
    assert len(tasks) == 3 and {task.tasks for task in tasks} == {3} and [t.index for t in tasks] == [0, 1, 2]
    assert sum(len(t.boxes) for t in tasks) == 625 and len({box for t in tasks for box in t.boxes}) == 625
    chips, outcomes = [], []
    for task in tasks:
        for tag, element in chip_task(task, SPEC.crop, SPEC.raster, 4, SPEC.max_pixels, None, "train", -1, SPLITS, "raw", 90):
            (outcomes if tag == TASK_OUTCOMES else chips).append((tag, element))
    chips = [(tag, record) for tag, record in chips if tag in ("train", "validation", "test")]
    expected = whole_job_records(rasters["big"])
    assert sorted(chips) == sorted(expected)
    summed = [outcome for _, (_, outcome) in outcomes]
    assert sum(o.kept for o in summed) == len(expected) and sum(o.boxes for o in summed) == 625
    skipped = sum(count for o in summed for _, count in o.skipped)
    assert len(expected) + skipped == 625
    assert plan_source(source(rasters["photo"]), SPEC, None) is None  # photos go on to ImagesToExamples


def test_a_read_error_rejects_a_lone_task_and_stops_a_split_source(rasters, tmp_path: Path) -> None:
    lone = rastergen.damage_tile(rasters["small"], tmp_path / "lone.tif")
    (task,) = plan_source(source(lone), SPEC, None)  # planning reads no tile of it
    outcomes = list(chip_task(task, SPEC.crop, SPEC.raster, 4, SPEC.max_pixels, None, "train", -1, SPLITS, "raw", 90))
    assert [tag for tag, _ in outcomes] == [TASK_OUTCOMES]
    rejection = Rejection.from_json(outcomes[0][1][1].rejection)
    assert (rejection.reason, rejection.stage) == ("decode_error", "decode")

    split = rastergen.damage_tile(rasters["big"], tmp_path / "split.tif")
    first = plan_source(source(split), SPEC, None)[0]
    # The message has GDAL's own words (rasterio's error only says "Read failed").
    with pytest.raises(RuntimeError, match=r"split.tif: task 1 of 3 \(rows 0-192\) failed after 0 chips: .*\(cause: .*\)"):
        list(chip_task(first, SPEC.crop, SPEC.raster, 4, SPEC.max_pixels, None, "train", -1, SPLITS, "raw", 90))


def test_planning_rejects_before_any_task(rasters, tmp_path: Path) -> None:
    three = rastergen.write_raster(tmp_path / "three.tif", rastergen.multispectral(64, 64, bands=3))
    with pytest.raises(Rejected, match="band_mismatch"):
        plan_source(source(three), SPEC, None)


def test_gdal_sidecars_beside_their_raster_are_rejected_and_alone_are_inputs(rasters, tmp_path: Path) -> None:
    scene = rastergen.write_raster(tmp_path / "scene.TIF", rastergen.multispectral(64, 64, bands=4))
    for suffix in (".ovr", ".msk", ".aux.xml", ".OVR"):
        sidecar = tmp_path / f"scene.TIF{suffix}"
        sidecar.write_bytes(scene.read_bytes())  # a TIFF, as .ovr and .msk are
        with pytest.raises(Rejected, match=f"of {scene}: part of that raster") as err:
            plan_source(source(sidecar), SPEC, None)
        assert err.value.reason == "gdal_sidecar"
    alone = tmp_path / "other.tif.ovr"  # no other.tif: an input like any other file
    alone.write_bytes(scene.read_bytes())
    assert plan_source(source(alone), SPEC, None) is None  # not a raster extension: on to the photo path


@pytest.mark.parametrize("spread", ["tasks", "all", "none"])  # local raster builds, Flink and Dataflow, local photo builds
def test_encode_sources_on_beam_one_verdict_per_source_and_counts_reconcile(rasters, tmp_path: Path, spread: str) -> None:
    three = rastergen.write_raster(tmp_path / "three.tif", rastergen.multispectral(64, 64, bands=3))
    sources = [source(rasters[name]) for name in ("big", "empty", "small", "photo")] + [source(three)]
    assert len(plan_source(source(rasters["empty"]), SPEC, None)) == 2
    expected, skipped = {split: [] for split in ("train", "validation", "test")}, collections.Counter()
    for name in ("big", "small", "empty"):
        for split, record in whole_job_records(rasters[name], skipped):
            expected[split].append(record)
    assert skipped["nodata"] > 400 and skipped["split_boundary"] > 0

    def reasons(lines):
        return sorted((Path(r.path).name, r.reason, r.message.split(" (")[0]) for r in map(Rejection.from_json, lines))

    with local_test_pipeline() as p:
        ids = p | "Labels" >> beam.Create([{}])
        out = p | beam.Create(sources) | EncodeSources(SPEC, ids, spread=spread)
        for split, records in expected.items():
            assert_that(out[split], equal_to(records), label=f"Records[{split}]")
        assert_that(out[IMAGES_WRITTEN] | "SumWritten" >> beam.CombineGlobally(sum), equal_to([2]), label="Written")  # counts: summed
        assert_that(out[REJECTED] | beam.combiners.ToList() | beam.Map(reasons), equal_to([[
            ("empty.tif", "no_valid_chips", "all 400 chips were skipped"),  # once, though planned as 2 tasks
            ("photo.jpg", "band_mismatch", "photos are decoded to 1 or 3 channels of uint8; this dataset stores 4 bands of uint16"),
            ("three.tif", "band_mismatch", "--bands 1,2,3,4 asks for band 4; the raster has 3 bands"),
        ]]), label="Rejected")
        counts = (
            (out[IMAGES_WRITTEN] | "SumW" >> beam.CombineGlobally(sum), out[REJECTED] | "CountR" >> beam.combiners.Count.Globally())
            | beam.Flatten() | beam.CombineGlobally(sum)
        )
        assert_that(counts, equal_to([len(sources)]), label="Reconciled")
        facts = out[RASTER_FACTS] | beam.CombinePerKey(sum)
        expected_facts = [(("crs", "EPSG:32613"), 2)] + [(("chips_skipped", reason), count) for reason, count in skipped.items()]
        assert_that(facts, equal_to(expected_facts), label="Facts")


def test_outcomes_sum_per_source_and_a_missing_task_fails_loudly() -> None:
    first = TaskOutcome("train", "EPSG:32613", 300, 0, 2, (("nodata", 300),))
    second = TaskOutcome("train", "EPSG:32613", 100, 0, 2, (("nodata", 90), ("split_boundary", 10)))
    summed = sum_outcomes([first, second])
    assert (summed.boxes, summed.kept, summed.tasks, summed.skipped) == (400, 0, 2, (("nodata", 390), ("split_boundary", 10)))
    assert sum_outcomes([sum_outcomes([first]), second]) == summed  # partial sums combine alike
    (facts_nodata, facts_boundary, (tag, line)) = verdict("/in/a.tif", summed)
    assert facts_nodata == (RASTER_FACTS, (("chips_skipped", "nodata"), 390)) and facts_boundary[1][1] == 10
    assert tag == REJECTED and Rejection.from_json(line).message == "all 400 chips were skipped (390 nodata, 10 split_boundary)"
    kept = sum_outcomes([first, dataclasses.replace(second, kept=5)])
    assert list(verdict("/in/a.tif", kept))[-2:] == [(RASTER_FACTS, (("crs", "EPSG:32613"), 1)), (SOURCES_WRITTEN, "train")]
    with pytest.raises(RuntimeError, match="1 of its 2 raster tasks reported"):
        list(verdict("/in/a.tif", first))


def test_a_raster_rejected_while_planning_counts_in_the_build_progress(tmp_path: Path) -> None:
    """Progress counted only the sources ImagesToExamples saw: a build whose rasters were
    rejected while planning ended its progress at 1/3 although every input was done."""
    from cropshard.transforms.progress import read_done
    from cropshard.transforms.raster.plan import PlanRasters

    one_band = rastergen.write_raster(tmp_path / "pan.tif", rastergen.multispectral(32, 32, bands=1, high=255).astype(np.uint8), crs="EPSG:32633")
    spec = ExampleSpec(crop=CropSpec("grid", size=(16, 16)), encoding="raw")  # 3 channels: pan.tif is band_mismatch
    progress = tmp_path / "progress"
    progress.mkdir()
    with local_test_pipeline() as pipeline:
        out = (pipeline | beam.Create([ImageSource(str(one_band), "pan.tif", "", None)])
               | beam.ParDo(PlanRasters(spec, progress_dir=str(progress))).with_outputs("photos", "raster_tasks", REJECTED))
        assert_that(out[REJECTED] | beam.Map(lambda row: Rejection.from_json(row).reason), equal_to(["band_mismatch"]))
    assert read_done(str(progress)) == 1
