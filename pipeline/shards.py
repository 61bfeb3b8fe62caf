"""Launcher-side shard planning: how each split's records become shard files."""

from __future__ import annotations

from cropshard.pipeline.options import BuildConfig
from cropshard.transforms.write import ShardLayout

MIB = 2**20


def stable_contents_affordable(output: str) -> bool:
    """Stable shards copy each record from its part by offset: cheap on local and mounted
    filesystems, one ranged request per record on object stores (gs://)."""
    return "://" not in output


def stable_contents(requested: str, output: str) -> bool:
    """--shard_contents auto|stable|runner-chosen for this output; stable on gs:// is an error."""
    if requested == "stable" and not stable_contents_affordable(output):
        raise ValueError(f"--shard_contents stable needs a local or mounted --output (it copies every record by offset), not {output}; "
                         "use --shard_contents runner-chosen or auto")
    return requested == "stable" or (requested == "auto" and stable_contents_affordable(output))


def plan_shards(config: BuildConfig, local: bool = False) -> dict[str, ShardLayout]:
    """Per split: --num_shards; else shards near --target_shard_mb, sized from the bytes actually
    written (no estimate, no listing). On local and mounted outputs the shard contents are stable
    (the same inputs and options give the same shard files on every runner, transforms/sharding.py)
    unless --shard_contents runner-chosen.

    On object stores the contents are the runner's choice. There the local DirectRunner writes one
    shard per worker bundle (it hands each worker a fixed share of the inputs, so one streaming
    writer per worker and split keeps memory flat at the fewest files); remote runners (Flink,
    Dataflow) cut bundles their own way, so their parts are rolled at the target size and the
    remainders packed together."""
    names = config.split_names
    stable = stable_contents(config.shard_contents, config.output)
    if config.num_shards:
        return {name: ShardLayout(num_shards=config.num_shards, stable=stable) for name in names}
    if local and not stable:
        return {name: ShardLayout() for name in names}
    return {name: ShardLayout(target_bytes=int(config.target_shard_mb * MIB), stable=stable) for name in names}
