"""plan_shards: which shard layout each split gets, without running anything."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.pipeline.options import build_config
from cropshard.pipeline.shards import plan_shards
from cropshard.transforms.write import ShardLayout

MIB = 2**20


def config(*args: str):
    return build_config(PipelineOptions(["--output=/out", "--input=/in/**", *args]))


def gcs_config(*args: str):
    return build_config(PipelineOptions(["--input=/in/**", *args, "--output=gs://bucket/out"]))


def test_num_shards_wins_on_every_runner() -> None:
    built = config("--size=32", "--split=train=0.9,test=0.1", "--num_shards=7")
    stable = ShardLayout(num_shards=7, stable=True)
    assert plan_shards(built) == plan_shards(built, local=True) == {"train": stable, "test": stable}
    on_gcs = gcs_config("--size=32", "--num_shards=7")
    assert plan_shards(on_gcs) == plan_shards(on_gcs, local=True) == {"train": ShardLayout(num_shards=7)}


def test_local_outputs_get_stable_shards_near_the_target_on_every_runner() -> None:
    built = config("--size=32", "--split=train=0.9,test=0.1", "--target_shard_mb=0.5")
    stable = ShardLayout(target_bytes=MIB // 2, stable=True)
    assert plan_shards(built) == plan_shards(built, local=True) == {"train": stable, "test": stable}
    assert plan_shards(config("--size=32"))["train"].target_bytes == 128 * MIB


def test_object_store_outputs_let_the_runner_choose() -> None:
    # The local runner streams one shard per worker bundle; remote runners roll parts at the target.
    assert plan_shards(gcs_config("--size=32"), local=True) == {"train": ShardLayout()}
    assert plan_shards(gcs_config("--size=32", "--target_shard_mb=0.5")) == {"train": ShardLayout(target_bytes=MIB // 2)}


def test_layouts_describe_themselves_for_the_log() -> None:
    assert str(ShardLayout(num_shards=3)) == "3 shards"
    assert str(ShardLayout(target_bytes=128 * MIB)) == "shards near 128 MiB"
    assert str(ShardLayout(num_shards=2, stable=True)) == "2 shards, stable contents"
    assert str(ShardLayout()) == "one shard per worker bundle"


def test_stable_contents_need_a_count_or_a_size() -> None:
    with pytest.raises(ValueError, match="need a shard count or a target size"):
        ShardLayout(stable=True)


def test_shard_contents_can_be_asked_for() -> None:
    assert plan_shards(config("--size=32", "--shard_contents=runner-chosen"), local=True) == {"train": ShardLayout()}
    assert plan_shards(config("--size=32", "--shard_contents=runner-chosen", "--num_shards=3")) == {"train": ShardLayout(num_shards=3)}
    assert plan_shards(config("--size=32", "--shard_contents=stable"))["train"].stable
    with pytest.raises(ValueError, match="--shard_contents stable needs a local or mounted --output"):
        plan_shards(gcs_config("--size=32", "--shard_contents=stable"))
