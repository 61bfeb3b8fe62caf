"""plan_shards and its estimates, without running anything."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.pipeline.options import build_config
from cropshard.pipeline.shards import estimated_record_bytes, plan_shards, records_per_image, shards_for

MIB = 2**20


def config(*args: str):
    return build_config(PipelineOptions(["--output=/out", "--input=/in/**", *args]))


def test_shards_for_rounds_up_and_gives_at_least_one() -> None:
    assert shards_for(0, 128) == 1
    assert shards_for(1, 128) == 1
    assert shards_for(128 * MIB, 128) == 1
    assert shards_for(128 * MIB + 1, 128) == 2
    assert shards_for(10 * MIB, 0.5) == 20


def test_num_shards_wins_on_every_runner() -> None:
    built = config("--size=32", "--split=train=0.9,test=0.1", "--num_shards=7")
    assert plan_shards(built, (1000, 10**9)) == {"train": 7, "test": 7}
    assert plan_shards(built, None, local=True) == {"train": 7, "test": 7}


def test_local_runner_lets_workers_choose() -> None:
    built = config("--size=32", "--split=train=0.9,test=0.1")
    assert plan_shards(built, (1000, 10**9), local=True) == {"train": 0, "test": 0}


def test_size_estimate_per_split_fraction() -> None:
    # 100 images -> one 128x128x3 raw record each: 4,915,200 bytes; 0.8 of it is 3.75 MiB, 0.2 is 0.94.
    built = config("--size=128x128", "--split=train=0.8,test=0.2", "--target_shard_mb=1")
    assert estimated_record_bytes(built, 50_000) == 128 * 128 * 3
    assert plan_shards(built, (100, 100 * 50_000)) == {"train": 4, "test": 1}


def test_random_crops_multiply_the_records() -> None:
    # 1000 images x 3 crops x (96*96*3 * 0.1 for JPEG) = 8,294,400 bytes = 7.9 MiB.
    built = config("--crop=random", "--crops_per_image=3", "--size=96", "--encoding=jpeg", "--target_shard_mb=1")
    assert records_per_image(built, 200_000) == 3
    assert plan_shards(built, (1000, 1000 * 200_000)) == {"train": 8}


def test_splits_from_the_input_share_evenly() -> None:
    # --encoding original: a record is a source file; 10 x 3 MB, half per split = 1.43 x 10 MiB.
    built = config("--crop=none", "--encoding=original", "--split=train,test", "--target_shard_mb=10")
    assert estimated_record_bytes(built, 3_000_000) == 3_000_000
    assert plan_shards(built, (10, 10 * 3_000_000)) == {"train": 2, "test": 2}


def test_unknown_sizes_assume_a_megabyte_source() -> None:
    # A manifest counts rows, not bytes: 50 rows x 1 MB sources, whole images decoded (x10) and
    # re-encoded as JPEG (x0.1) = 50 MB = 4.8 x 10 MiB.
    built = config("--crop=none", "--encoding=jpeg", "--target_shard_mb=10")
    assert estimated_record_bytes(built, 1_000_000) == pytest.approx(1_000_000)
    assert plan_shards(built, (50, 0)) == {"train": 5}
    assert plan_shards(built, None) == {"train": 1}  # nothing counted: still one shard per split


def test_resize_without_crop_estimates_a_4_by_3_image() -> None:
    built = config("--crop=none", "--resize=256", "--encoding=png")
    assert estimated_record_bytes(built, 123) == pytest.approx(256 * 256 * 4 / 3 * 3 * 0.5)


def test_grid_tiles_a_typical_decoded_image() -> None:
    built = config("--crop=grid", "--size=200")
    # 200 kB JPEG -> ~2 MB RGB -> ~667k pixels -> 16.7 tiles of 200x200
    assert records_per_image(built, 200_000) == pytest.approx(200_000 * 10 / 3 / 40_000)
    assert records_per_image(built, 10) == 1.0  # never fewer than one
    strided = config("--crop=grid", "--size=200", "--stride=100")
    assert records_per_image(strided, 200_000) == pytest.approx(4 * records_per_image(built, 200_000))
    assert records_per_image(config("--size=200"), 200_000) == 1.0
