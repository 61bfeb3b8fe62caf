"""Record index files (reader.shard_index) and the framing scan that produces them."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import tensorflow as tf
from cropshard import reader
from cropshard.reader import integrity, metadata, shard_index
from cropshard.reader.metadata import DatasetError, IncompleteDatasetError

from tests import reader_fixtures as fx


def test_index_text_round_trips_and_uses_tfrecord2idx_layout() -> None:
    spans = [(0, 30), (30, 1016), (1046, 17)]
    text = shard_index.format_index(spans)
    assert text == "0 30\n30 1016\n1046 17\n"
    assert shard_index.parse_index(text) == spans
    assert shard_index.index_file_name("train-00000-of-00002.tfrecord") == "train-00000-of-00002.tfrecord.idx"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0 30\n30 1016\n", "lists 2 records, the shard has 3"),
        ("0 30\n30 1016\n1046 18\n", "index entry 2 is offset 1046 size 18, the record is at offset 1046 size 17"),
        ("0 30\n30\n1046 17\n", "malformed (line 2"),
        ("0 30\nx y\n1046 17\n", "malformed (line 2"),
    ],
)
def test_index_problem_names_the_difference(text: str, problem: str) -> None:
    found = shard_index.index_problem(text, [(0, 30), (30, 1016), (1046, 17)])
    assert found is not None and problem in found
    assert shard_index.index_problem("0 30\n30 1016\n1046 17\n", [(0, 30), (30, 1016), (1046, 17)]) is None


def test_scan_reports_the_offset_and_size_of_every_record(tmp_path: os.PathLike) -> None:
    path = os.path.join(tmp_path, "a.tfrecord")
    payloads = [b"x" * 5, b"", b"y" * 300]
    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    spans: list[tuple[int, int]] = []
    with open(path, "rb") as handle:
        count, error, _ = integrity.scan_records(handle, on_record=lambda offset, size: spans.append((offset, size)))
    assert (count, error) == (3, None)
    assert spans == [(0, 21), (21, 16), (37, 316)]
    data = Path(path).read_bytes()
    assert [data[o + 12 : o + s - 4] for o, s in spans] == payloads


def with_index(path: str, info: metadata.DatasetInfo) -> metadata.DatasetInfo:
    """Write an index for every shard of a hand-built dataset and list it, as the writer does."""
    splits = {}
    for name, split in info.splits.items():
        shards = []
        for shard in split.shards:
            spans: list[tuple[int, int]] = []
            with open(os.path.join(path, shard.file), "rb") as handle:
                integrity.scan_records(handle, on_record=lambda o, s, spans=spans: spans.append((o, s)))
            index = shard_index.index_file_name(shard.file)
            with open(os.path.join(path, index), "w", encoding="utf-8") as handle:
                handle.write(shard_index.format_index(spans))
            shards.append(metadata.ShardInfo(shard.file, shard.num_records, shard.num_bytes, index))
        splits[name] = metadata.SplitInfo(name, split.num_examples, tuple(shards))
    indexed = dataclasses.replace(info, splits=splits)
    with open(os.path.join(path, metadata.INFO_FILENAME), "w", encoding="utf-8") as handle:
        handle.write(indexed.to_json())
    return indexed


def test_verify_checks_the_index_files(tmp_path: os.PathLike) -> None:
    path = str(tmp_path / "ds")
    fx.precropped_dataset(path, fmt="raw")
    info = with_index(path, reader.info(path))
    assert reader.verify(path).ok
    shard = info.splits["train"].shards[0]
    index_path = os.path.join(path, shard.index)
    lines = Path(index_path).read_text(encoding="utf-8").splitlines()
    with open(index_path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines[:-1]) + "\n")  # one record short
    report = reader.verify(path)
    assert not report.ok
    assert [s.file for s in report.bad_shards] == [os.path.join(path, shard.file)]
    assert f"index file lists {len(lines) - 1} records, the shard has {len(lines)}" in report.bad_shards[0].error
    os.remove(index_path)
    assert "index file" in reader.verify(path).bad_shards[0].error and "is missing" in reader.verify(path).bad_shards[0].error


def legacy_copy(source: str, target: str) -> None:
    """The dataset as cropshard 0.2 wrote it: its metadata (format version 1) in dataset_info.json."""
    shutil.copytree(source, target)
    body = json.loads(Path(target, metadata.INFO_FILENAME).read_text(encoding="utf-8"))
    body["format_version"] = 1
    for split in body["splits"].values():
        for shard in split["shards"]:
            shard.pop("index", None)
    body.pop("shard_contents", None)
    os.remove(os.path.join(target, metadata.INFO_FILENAME))
    with open(os.path.join(target, metadata.LEGACY_INFO_FILENAME), "w", encoding="utf-8") as handle:
        json.dump(body, handle)


def test_format_1_datasets_still_read_with_a_message(tmp_path: os.PathLike, caplog: pytest.LogCaptureFixture) -> None:
    source = str(tmp_path / "new")
    fx.precropped_dataset(source, fmt="raw")
    old = str(tmp_path / "old")
    legacy_copy(source, old)
    with caplog.at_level(logging.WARNING, logger="cropshard.reader.metadata"):
        info = reader.info(old)
    assert info.format_version == 1
    assert "format-1 layout" in caplog.text and "rebuild it with cropshard >= 0.3" in caplog.text
    new_images = [b[0] for b in reader.load(source, shuffle=False, deterministic=True, normalize="none").as_numpy_iterator()]
    old_images = [b[0] for b in reader.load(old, shuffle=False, deterministic=True, normalize="none").as_numpy_iterator()]
    assert len(old_images) == len(new_images) and all((a == b).all() for a, b in zip(old_images, new_images, strict=True))


def test_a_tfds_dataset_info_without_cropshard_json_is_named(tmp_path: os.PathLike) -> None:
    path = str(tmp_path / "ds")
    fx.precropped_dataset(path, fmt="raw")
    os.remove(os.path.join(path, metadata.INFO_FILENAME))
    with open(os.path.join(path, metadata.TFDS_INFO_FILENAME), "w", encoding="utf-8") as handle:
        json.dump({"name": "x", "version": "1.0.0", "splits": []}, handle)  # what TFDS writes has no format_version
    with pytest.raises(IncompleteDatasetError, match="or a dataset written by TFDS"):
        reader.info(path)
    for name in os.listdir(path):
        if ".tfrecord" in name:
            os.remove(os.path.join(path, name))
    with pytest.raises(DatasetError, match="has a TFDS dataset_info.json but no cropshard.json"):
        reader.info(path)


def test_parse_index_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="line 1"):
        shard_index.parse_index(io.StringIO("a b\n").read())
