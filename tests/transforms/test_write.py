"""The pure parts of transforms/write.py: shard names and the cropshard.json assembly and checks."""

from __future__ import annotations

import json

import pytest
from cropshard.reader import metadata, schema
from cropshard.transforms import write
from cropshard.transforms.rejects import REASONS, REMEDIES, rejection_summary
from cropshard.transforms.types import unicode_twins
from cropshard.transforms.write import (
    SHARD_TEMPLATE,
    DatasetFacts,
    check_publishable,
    dataset_info,
    group_splits,
    refusal,
    shard_file_name,
    shard_suffix,
)

FACTS = DatasetFacts(
    cropshard_version="9.9", encoding="raw", image_formats=("raw",), channels=3, image_shape=(8, 8, 3),
    crop={"strategy": "center", "size": [8, 8]}, compression="none", split_names=("train", "test"), command_line=("cropshard", "build"),
)


def shard(name: str, records: int, size: int = 100) -> metadata.ShardInfo:
    return metadata.ShardInfo(name, records, size)


def test_shard_names() -> None:
    assert shard_suffix("none") == ".tfrecord"
    assert shard_suffix("gzip") == ".tfrecord.gz"
    assert SHARD_TEMPLATE == "-SSSSS-of-NNNNN"  # train-00000-of-00004.tfrecord, as the reader expects
    assert shard_file_name("gs://bucket/ds/train-00001-of-00004.tfrecord") == "train-00001-of-00004.tfrecord"
    assert shard_file_name("/data/ds/test-00000-of-00001.tfrecord.gz") == "test-00000-of-00001.tfrecord.gz"
    assert shard_file_name(r"C:\ds\train-00000-of-00001.tfrecord") == "train-00000-of-00001.tfrecord"


def test_group_splits_sorts_shards_and_keeps_empty_splits() -> None:
    shards = [("train", shard("train-00001-of-00002.tfrecord", 3)), ("train", shard("train-00000-of-00002.tfrecord", 4))]
    splits = group_splits(("train", "test"), shards)
    assert list(splits) == ["train", "test"]
    assert splits["train"] == metadata.SplitInfo(
        "train", 7, (shard("train-00000-of-00002.tfrecord", 4), shard("train-00001-of-00002.tfrecord", 3))
    )
    assert splits["test"] == metadata.SplitInfo("test", 0, ())


def test_dataset_info_from_facts_and_counts() -> None:
    splits = group_splits(FACTS.split_names, [("train", shard("train-00000-of-00001.tfrecord", 5)), ("test", shard("test-00000-of-00001.tfrecord", 1))])
    info = dataset_info(FACTS, splits, ["a", "b"], {"too_small": 2}, num_inputs=8, images_written=6, created="2024-01-01T00:00:00+00:00")
    body = json.loads(info.to_json())
    assert body["cropshard_version"] == "9.9" and body["created"] == "2024-01-01T00:00:00+00:00"
    assert (body["encoding"], body["image_formats"], body["channels"], body["image_shape"]) == ("raw", ["raw"], 3, [8, 8, 3])
    assert body["crop"] == {"strategy": "center", "size": [8, 8]}
    assert (body["labels"], body["compression"], body["command_line"]) == (["a", "b"], "none", ["cropshard", "build"])
    assert (body["num_inputs"], body["num_images_written"], body["num_examples"]) == (8, 6, 6)
    assert body["rejected"] == {"count": 2, "by_reason": {"too_small": 2}, "file": metadata.REJECTED_FILENAME}
    assert {name: split["num_examples"] for name, split in body["splits"].items()} == {"train": 5, "test": 1}
    assert info.schema == schema.schema_description()
    info.crop["size"] = [1, 1]  # the info holds its own copy of the crop: the facts stay as built
    assert FACTS.crop["size"] == [8, 8]


def test_check_publishable() -> None:
    splits = group_splits(("train",), [("train", shard("train-00000-of-00001.tfrecord", 2))])

    def info(num_inputs: int, written: int, rejected: dict[str, int]) -> metadata.DatasetInfo:
        return dataset_info(FACTS, splits, [], rejected, num_inputs, written, created="")

    check_publishable(info(3, 2, {"truncated": 1}))
    with pytest.raises(RuntimeError, match=r"do not reconcile: 3 inputs != 2 written \+ 0 rejected"):
        check_publishable(info(3, 2, {}))
    with pytest.raises(RuntimeError, match="shards describe 2 records but 3 images were written; the shard list is incomplete"):
        check_publishable(info(3, 3, {}))
    with pytest.raises(RuntimeError, match=r"undocumented rejection reasons \['no_such_reason'\]"):
        check_publishable(info(3, 2, {"no_such_reason": 1}))


def test_refusal_of_an_empty_or_mostly_rejected_dataset() -> None:
    written = group_splits(("train",), [("train", shard("train-00000-of-00001.tfrecord", 8))])
    empty = group_splits(("train",), [])

    def info(splits: dict, num_inputs: int, written_images: int, rejected: dict[str, int]) -> metadata.DatasetInfo:
        return dataset_info(FACTS, splits, [], rejected, num_inputs, written_images, created="")

    assert refusal(info(written, 10, 8, {"truncated": 2}), None) is None
    assert refusal(info(written, 10, 8, {"truncated": 2}), 0.2) is None  # 20% is not over 0.2
    assert refusal(info(written, 10, 8, {"truncated": 1, "too_small": 1}), 0.1) == (
        "2 of 10 inputs rejected (20.0%), over --max_rejected_fraction 0.1: too_small 1, truncated 1 (try: --small pad|upscale, or a smaller --size)")
    assert refusal(info(empty, 5, 0, {"too_small": 4, "not_an_image": 1}), None) == (
        "no example was written: all 5 inputs were rejected: too_small 4, not_an_image 1 (try: --small pad|upscale, or a smaller --size)")
    assert refusal(info(empty, 2, 0, {"truncated": 2}), None) == "no example was written: all 2 inputs were rejected: truncated 2"


def test_unicode_twins_are_label_names_equal_once_composed() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert unicode_twins(["tea", composed, decomposed, "Caf\u00e9"]) == [(composed, decomposed)]  # case is another name
    assert unicode_twins(["tea", composed]) == [] and unicode_twins([]) == []


def test_rejection_summary_names_the_top_reasons_and_the_first_remedy() -> None:
    counts = {"decode_error": 1, "truncated": 5, "not_an_image": 3, "too_small": 2}
    assert rejection_summary(counts) == "truncated 5, not_an_image 3, too_small 2 (try: narrow --input to image files, e.g. '**/*.jpg')"
    assert set(REMEDIES) <= set(REASONS)
    # The raster reasons a build can fail on name the options that keep the data.
    assert rejection_summary({"range_collapsed": 1}) == ("range_collapsed 1 (try: --to_uint8 bits:N with the sources' real bit depth"
                                                        " (rejected.jsonl names it), or --dtype keep for rasters)")
    assert "--bands B,B,..." in rejection_summary({"band_mismatch": 2}) and "--max_nodata" in rejection_summary({"no_valid_chips": 1})


def test_publish_text_never_leaves_a_half_written_file_under_its_name(tmp_path, monkeypatch) -> None:
    target = tmp_path / metadata.INFO_FILENAME
    write.publish_text(str(target), '{"complete": true}\n')
    assert json.loads(target.read_text()) == {"complete": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == [metadata.INFO_FILENAME]

    target.unlink()

    def dies_mid_write(path: str, text: str) -> None:
        with open(path, "w") as handle:
            handle.write(text[:5])
        raise OSError("worker killed")

    monkeypatch.setattr(write, "write_text", dies_mid_write)
    with pytest.raises(OSError, match="worker killed"):
        write.publish_text(str(target), '{"complete": true}\n')
    assert list(tmp_path.iterdir()) == []  # neither a truncated cropshard.json nor the partial file


def test_overwrite_removes_a_partial_metadata_file(tmp_path) -> None:
    (tmp_path / (write.PARTIAL_PREFIX + metadata.INFO_FILENAME)).write_text("{")
    (tmp_path / "mine.txt").write_text("not the dataset's")
    assert [p.rsplit("/", 1)[-1] for p in write.dataset_files(str(tmp_path))] == [write.PARTIAL_PREFIX + metadata.INFO_FILENAME]


def test_overwrite_removes_shards_but_not_a_users_own_tfrecord(tmp_path) -> None:
    names = ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord.idx", "test-00000-of-00001.tfrecord.gz",
             metadata.INFO_FILENAME, "my_training_data.tfrecord", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("")
    removed = sorted(p.rsplit("/", 1)[-1] for p in write.dataset_files(str(tmp_path)))
    assert removed == sorted(names[:4])
    write.prepare_output(str(tmp_path), overwrite=True)
    # build_started.json: the new build's first file, until it publishes or fails.
    assert sorted(p.name for p in tmp_path.iterdir()) == [write.STARTED_FILENAME, "my_training_data.tfrecord", "notes.txt"]


def test_overwrite_refuses_another_tools_tfrecords_named_as_beam_names_shards(tmp_path) -> None:
    """WriteToTFRecord names shards `data-00000-of-00002.tfrecord`: a folder of them alone was taken
    for a cropshard build cut short, and --overwrite deleted them."""
    foreign = ["data-00000-of-00002.tfrecord", "data-00001-of-00002.tfrecord"]
    for name in foreign:
        (tmp_path / name).write_text("another tool's records")
    with pytest.raises(FileExistsError, match="holds files that are not a cropshard dataset"):
        write.prepare_output(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == foreign
    # A build of ours cut short (its first file there, then shards) is still replaced.
    (tmp_path / write.STARTED_FILENAME).write_text("{}")
    write.prepare_output(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [write.STARTED_FILENAME]


def test_a_refused_build_removes_the_shards_it_wrote(tmp_path) -> None:
    # A refused build left train-*.tfrecord and .idx beside build_failed.json: a glob over the
    # folder, or a reader that ignores cropshard.json, read the build that failed.
    step = write._WriteDatasetInfo(str(tmp_path), FACTS, max_rejected_fraction=0.1)
    written = metadata.ShardInfo("train-00000-of-00001.tfrecord", 1, 100, "train-00000-of-00001.tfrecord.idx")
    (tmp_path / written.file).write_text("records")
    (tmp_path / written.index).write_text("index")
    (tmp_path / "mine-00000-of-00001.tfrecord").write_text("the user's, not this build's")
    for _ in range(2):  # a retried step finds the shards gone
        outputs = list(step.process(None, shards=[("train", written)], rejected={"truncated": 1}, num_inputs=2, images_written=1,
                                    labels=[], unused_rejected_files=[]))
        assert outputs == [str(tmp_path / write.FAILED_FILENAME)]
        assert sorted(p.name for p in tmp_path.iterdir()) == [write.FAILED_FILENAME, "mine-00000-of-00001.tfrecord"]


def test_remove_shards_without_names_removes_every_shard_named_file(tmp_path) -> None:
    names = ["train-00000-of-00002.tfrecord", "train-00000-of-00002.tfrecord.idx", "test-00000-of-00001.tfrecord.gz",
             write.FAILED_FILENAME, metadata.REJECTED_FILENAME, "my_training_data.tfrecord"]
    for name in names:
        (tmp_path / name).write_text("")
    assert write.remove_shards(str(tmp_path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[3:])

