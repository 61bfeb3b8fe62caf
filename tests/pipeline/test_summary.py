"""The text `cropshard build` prints, from a DatasetInfo, without building."""

from __future__ import annotations

import dataclasses
import types

from cropshard.pipeline.build import BuildResult
from cropshard.pipeline.summary import built_summary, dry_run_summary, rejected_lines, split_line, submitted_summary
from cropshard.reader import metadata


def info(rejected: dict[str, int]) -> metadata.DatasetInfo:
    shard = metadata.ShardInfo
    splits = {
        "validation": metadata.SplitInfo("validation", 10, (shard("validation-00000-of-00001.tfrecord", 10, 2**20),)),
        "train": metadata.SplitInfo("train", 90, (shard("train-00000-of-00002.tfrecord", 45, 3 * 2**20), shard("train-00001-of-00002.tfrecord", 45, 2**19))),
    }
    written = 100
    return metadata.DatasetInfo(
        cropshard_version="t", encoding="raw", image_formats=("raw",), channels=3, image_shape=(8, 8, 3), crop={"strategy": "center"},
        labels=("a",), splits=splits, compression="none", num_inputs=written + sum(rejected.values()), rejected=rejected, schema={},
        num_images_written=written,
    )


def test_built_summary_text() -> None:
    text = built_summary("/data/ds", info({"truncated": 2, "duplicate": 2, "too_small": 5}), wall_seconds=4.0)
    assert text == "\n".join([
        "cropshard build -> /data/ds",
        "  inputs 109 = 100 images written + 9 rejected  (reconciled)",
        "  split train               90 examples     2 shards        3.50 MiB",
        "  split validation          10 examples     1 shards        1.00 MiB",
        "  rejected too_small                5",
        "  rejected duplicate                2",
        "  rejected truncated                2",
        "  (details: /data/ds/rejected.jsonl)",
        "  bytes written 4.50 MiB   wall 4.0 s   27.2 inputs/s   25.0 examples/s",
    ])


def test_built_summary_says_which_raster_chips_were_skipped() -> None:
    built = info({})
    assert "skipped" not in built_summary("/data/ds", built, wall_seconds=1.0)
    built = dataclasses.replace(built, raster={"chips_skipped": {"nodata": 4, "split_boundary": 7}})
    lines = built_summary("/data/ds", built, wall_seconds=1.0).splitlines()
    assert lines[-2] == "  raster chips skipped: split_boundary 7, nodata 4"


def test_built_summary_without_rejections_or_time() -> None:
    text = built_summary("/data/ds", info({}), wall_seconds=0.0)
    assert "rejected" not in text.replace("0 rejected", "")
    assert "details" not in text
    assert text.endswith("  bytes written 4.50 MiB   wall 0.0 s   0.0 inputs/s   0.0 examples/s")


def test_summary_lines() -> None:
    split = metadata.SplitInfo("test", 1234567, (metadata.ShardInfo("t", 1234567, 5 * 2**30),))
    assert split_line("test", split) == "  split test           1234567 examples     1 shards     5120.00 MiB"
    assert rejected_lines({"b": 1, "a": 1, "c": 3}) == ["  rejected c                        3", "  rejected a                        1", "  rejected b                        1"]


def test_summaries_of_jobs_not_waited_for() -> None:
    assert dry_run_summary("gs://b/ds", "cropshard-job") == "cropshard build -> gs://b/ds\n  dry run: built job 'cropshard-job', not submitted"
    assert submitted_summary("gs://b/ds", "2024_01_01-123") == (
        "cropshard build -> gs://b/ds\n  submitted job 2024_01_01-123, not waiting; cropshard.json appears there when it succeeds"
    )


def test_build_result_picks_the_summary() -> None:
    job = types.SimpleNamespace(job=types.SimpleNamespace(proto=types.SimpleNamespace(name="cropshard-x")))
    assert "built job 'cropshard-x'" in BuildResult(None, 1.0, "gs://b/ds", job, dry_run=True).summary()
    assert "built job '?'" in BuildResult(None, 1.0, "gs://b/ds", None, dry_run=True).summary()
    running = types.SimpleNamespace(job_id=lambda: "job-7")
    assert "submitted job job-7," in BuildResult(None, 1.0, "gs://b/ds", running).summary()
    assert "submitted job (unknown id)," in BuildResult(None, 1.0, "gs://b/ds", object()).summary()
    assert BuildResult(info({}), 2.0, "/data/ds").summary() == built_summary("/data/ds", info({}), 2.0)
