"""The pure parts of the pipeline assembly: what cropshard.json records about the options, and
the label map and rejection-reason steps."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.pipeline.assemble import dataset_facts, label_ids, rejection_reason, sorted_labels
from cropshard.pipeline.options import build_config
from cropshard.reader.version import __version__
from cropshard.transforms.rejects import Rejection
from cropshard.transforms.write import DatasetFacts, ShardLayout


def config(*args: str):
    return build_config(PipelineOptions(["--output=/out", "--input=/in/**", *args]))


def test_dataset_facts_of_a_fixed_size_build() -> None:
    built = config("--size=128x96", "--channels=1", "--encoding=png", "--compression=gzip", "--split=train=0.5,test=0.5")
    facts = dataset_facts(built, ["cropshard", "build", "--size=128x96"], [ShardLayout(target_bytes=1, stable=True)] * 2)
    assert facts == DatasetFacts(
        cropshard_version=__version__,
        encoding="png",
        image_formats=("png",),
        channels=1,
        image_shape=(128, 96, 1),
        crop=built.example.crop.to_dict(),
        compression="gzip",
        split_names=("train", "test"),
        command_line=("cropshard", "build", "--size=128x96"),
        raster={**built.example.raster.to_dict(), "requested": False, "channels": 1},  # the defaults: no raster option given
        shard_contents="stable",
    )
    # One split with runner-chosen shards makes the dataset's contents runner-chosen.
    mixed = dataset_facts(built, [], [ShardLayout(target_bytes=1, stable=True), ShardLayout()])
    assert mixed.shard_contents == "runner-chosen"


def test_dataset_facts_of_original_whole_images() -> None:
    facts = dataset_facts(config("--crop=none", "--encoding=original"), (), [])
    assert (facts.encoding, facts.image_formats, facts.image_shape, facts.crop["strategy"]) == ("original", ("jpeg", "png"), None, "none")
    assert facts.command_line == ()


def test_dataset_facts_are_frozen() -> None:
    facts = dataset_facts(config("--size=32"), (), [])
    with pytest.raises(AttributeError):
        facts.encoding = "jpeg"


def test_label_steps() -> None:
    assert sorted_labels(["cat", "", "dog", "cat"]) == ["cat", "dog"]  # unlabeled ("") gets no id
    assert sorted_labels(["10", "9", "-1"]) == ["-1", "9", "10"]  # integer names sort numerically
    assert label_ids(["cat", "dog"]) == {"cat": 0, "dog": 1}


def test_rejection_reason() -> None:
    line = Rejection("/in/a.jpg", "decode", "truncated", "image file is truncated").to_json()
    assert rejection_reason(line) == "truncated"


def test_spread_mode_by_runner_and_build() -> None:
    from cropshard.pipeline.assemble import spread_mode

    photos, grid, bands = config("--size=32"), config("--crop=grid", "--size=32"), config("--size=32", "--bands=1,2,3")
    assert [spread_mode(c.example, None) for c in (photos, grid, bands)] == ["all"] * 3  # Flink, Dataflow
    assert [spread_mode(c.example, 8) for c in (photos, grid, bands)] == ["none", "tasks", "tasks"]  # the local runner
