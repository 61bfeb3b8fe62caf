"""plan_shards: which shard layout each split gets, without running anything."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.pipeline.options import build_config
from cropshard.pipeline.shards import plan_shards
from cropshard.transforms.write import ShardLayout

MIB = 2**20


def config(*args: str):
    return build_config(PipelineOptions(["--output=/out", "--input=/in/**", *args]))


def test_num_shards_wins_on_every_runner() -> None:
    built = config("--size=32", "--split=train=0.9,test=0.1", "--num_shards=7")
    assert plan_shards(built) == {"train": ShardLayout(num_shards=7), "test": ShardLayout(num_shards=7)}
    assert plan_shards(built, local=True) == {"train": ShardLayout(num_shards=7), "test": ShardLayout(num_shards=7)}


def test_local_runner_lets_workers_choose() -> None:
    built = config("--size=32", "--split=train=0.9,test=0.1")
    assert plan_shards(built, local=True) == {"train": ShardLayout(), "test": ShardLayout()}


def test_remote_runners_size_shards_from_what_was_written() -> None:
    built = config("--size=32", "--split=train=0.9,test=0.1", "--target_shard_mb=0.5")
    assert plan_shards(built) == {"train": ShardLayout(target_bytes=MIB // 2), "test": ShardLayout(target_bytes=MIB // 2)}
    assert plan_shards(config("--size=32"))["train"].target_bytes == 128 * MIB


def test_layouts_describe_themselves_for_the_log() -> None:
    assert str(ShardLayout(num_shards=3)) == "3 shards"
    assert str(ShardLayout(target_bytes=128 * MIB)) == "shards near 128 MiB"
    assert str(ShardLayout()) == "one shard per worker bundle"
