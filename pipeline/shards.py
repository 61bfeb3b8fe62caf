"""Launcher-side shard planning: how each split's records become shard files."""

from __future__ import annotations

from cropshard.pipeline.options import BuildConfig
from cropshard.transforms.write import ShardLayout

MIB = 2**20


def plan_shards(config: BuildConfig, local: bool = False) -> dict[str, ShardLayout]:
    """Per split: --num_shards; else one shard per worker bundle on the local DirectRunner; else
    shards near --target_shard_mb, sized from the bytes actually written (no estimate, no listing).

    Why per bundle locally: the in-process runner hands each worker a fixed share of the inputs, so
    one streaming writer per worker and split keeps memory flat at the fewest files. Remote runners
    (Flink, Dataflow) cut bundles their own way; there the parts are rolled at the target size and
    the remainders packed together (transforms/sharding.py)."""
    names = config.split_names
    if config.num_shards:
        return {name: ShardLayout(num_shards=config.num_shards) for name in names}
    if local:
        return {name: ShardLayout() for name in names}
    return {name: ShardLayout(target_bytes=int(config.target_shard_mb * MIB)) for name in names}
