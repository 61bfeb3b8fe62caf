"""Each PTransform / DoFn on Beam's TestPipeline, checked with assert_that."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to, is_not_empty
from cropshard.reader import metadata, schema, shard_index
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.dedup import DropDuplicates
from cropshard.transforms.examples import IMAGES_WRITTEN, ExampleSpec, ImagesToExamples
from cropshard.transforms.globs import ListLabelNames, MatchImages
from cropshard.transforms.manifest import ReadManifest
from cropshard.transforms.rejects import REJECTED, Rejection
from cropshard.transforms.types import ImageSource
from cropshard.transforms.write import DatasetFacts, DescribeShards, ShardLayout, WriteDatasetInfo, WriteSplit

from tests import imagegen
from tests.beam_local import local_test_pipeline


def reasons(lines):
    return sorted((Path(r.path).name, r.reason) for r in map(Rejection.from_json, lines))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    imagegen.save(root / "train" / "cat" / "a.jpg", imagegen.photo(40, 50, 1))
    imagegen.save(root / "train" / "dog" / "b.png", imagegen.photo(40, 50, 2))
    imagegen.save(root / "test" / "dog" / "c.jpg", imagegen.photo(40, 50, 3))
    imagegen.save(root / "extra" / "dog" / "d.jpg", imagegen.photo(40, 50, 4))
    return root


def test_match_images_labels_from_parent_folder(tree):
    with local_test_pipeline() as p:
        found = p | MatchImages([f"{tree}/**"])
        assert_that(
            found["sources"] | beam.Map(lambda s: (s.key, s.label, s.split)),
            equal_to([("train/cat/a.jpg", "cat", None), ("train/dog/b.png", "dog", None), ("test/dog/c.jpg", "dog", None), ("extra/dog/d.jpg", "dog", None)]),
        )
        assert_that(found[REJECTED], equal_to([]), label="NoRejections")


def test_match_images_splits_from_folders_rejects_unknown(tree):
    with local_test_pipeline() as p:
        found = p | MatchImages([f"{tree}/**"], split_names=("train", "test"))
        assert_that(
            found["sources"] | beam.Map(lambda s: (s.key, s.label, s.split)),
            equal_to([("train/cat/a.jpg", "cat", "train"), ("train/dog/b.png", "dog", "train"), ("test/dog/c.jpg", "dog", "test")]),
        )
        assert_that(found[REJECTED] | beam.Map(lambda line: reasons([line])[0]), equal_to([("d.jpg", "unknown_split")]), label="Unknown")


def test_match_images_overlapping_globs_read_each_file_once(tree):
    with local_test_pipeline() as p:
        found = p | MatchImages([f"{tree}/**", f"{tree}/train/**/*.jpg"])
        assert_that(found["sources"] | beam.Map(lambda s: s.path) | beam.combiners.Count.Globally(), equal_to([4]))


@pytest.mark.parametrize("buckets", [None, 1, 3, 16])
def test_bucketed_listing_finds_each_file_once_with_its_root(tree, buckets):
    # Overlapping globs whose roots differ: the first pattern's root (and so key and label) wins.
    patterns = [f"{tree}/train/**", f"{tree}/**", f"{tree}/missing.jpg"]
    with local_test_pipeline() as p:
        found = p | MatchImages(patterns, buckets=buckets, split_names=None)
        assert_that(
            found["sources"] | beam.Map(lambda s: (s.key, s.label)),
            equal_to([("cat/a.jpg", "cat"), ("dog/b.png", "dog"), ("test/dog/c.jpg", "dog"), ("extra/dog/d.jpg", "dog")]),
        )
        assert_that(found[REJECTED] | beam.Map(lambda line: reasons([line])[0]), equal_to([("missing.jpg", "not_found")]), label="Missing")
        names = p | ListLabelNames(patterns)
        assert_that(names, equal_to(["cat", "dog", "dog", "dog"]), label="LabelNames")


@pytest.mark.parametrize("buckets", [None, 3])
def test_read_manifest_csv_and_jsonl_with_bad_rows(tree, tmp_path, buckets):
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "path,label,split,box\n"
        f"{tree}/train/cat/a.jpg,cat,train,\"1,2,10,10\"\n"
        "images/train/dog/b.png,dog,test,\n"
        "missing.jpg,dog,train,\"1,2,x,4\"\n"
        "other.jpg,dog,holdout,\n"
        ",dog,train,\n"
    )
    jsonl_path = tmp_path / "m.jsonl"
    jsonl_path.write_text(
        json.dumps({"path": "images/test/dog/c.jpg", "label": 3, "split": "train", "box": [0, 0, 5, 5]}) + "\n" + "{not json\n"
    )
    with local_test_pipeline() as p:
        csv_manifest = ReadManifest(str(csv_path), split_names=("train", "test"), buckets=buckets)
        csv_rows = p | "Csv" >> csv_manifest
        assert_that(p | "CsvLabels" >> csv_manifest.labels_only(), equal_to(["cat", "dog"]), label="CsvLabelNames")
        assert_that(
            csv_rows["sources"] | "CsvKeys" >> beam.Map(lambda s: (s.path, s.label, s.split, s.box)),
            equal_to([(f"{tree}/train/cat/a.jpg", "cat", "train", (1, 2, 10, 10)), (f"{tmp_path}/images/train/dog/b.png", "dog", "test", None)]),
        )
        assert_that(
            csv_rows[REJECTED] | "CsvReasons" >> beam.Map(lambda line: Rejection.from_json(line).reason),
            equal_to(["bad_manifest_row"] * 3),
            label="CsvRejected",
        )
        jsonl_rows = p | "Jsonl" >> ReadManifest(str(jsonl_path), buckets=buckets)
        assert_that(
            jsonl_rows["sources"] | "JsonlKeys" >> beam.Map(lambda s: (s.key, s.label, s.split, s.box)),
            equal_to([("images/test/dog/c.jpg", "3", None, (0, 0, 5, 5))]),
            label="JsonlSources",
        )
        assert_that(jsonl_rows[REJECTED] | "JsonlReasons" >> beam.Map(lambda line: Rejection.from_json(line).reason), equal_to(["bad_manifest_row"]), label="JsonlRejected")


def test_images_to_examples_outputs_per_split_and_rejections(tmp_path):
    good = imagegen.save(tmp_path / "cat" / "good.jpg", imagegen.photo(60, 80, 5))
    small = imagegen.save(tmp_path / "cat" / "small.png", imagegen.photo(10, 10, 6))
    spec = ExampleSpec(crop=CropSpec("center", size=(32, 32)), encoding="png", split_fractions=None, split_names=("train", "test"))
    sources = [
        ImageSource(str(good), "cat/good.jpg", "cat", "test"),
        ImageSource(str(small), "cat/small.png", "cat", "train"),
        ImageSource(str(tmp_path / "cat" / "gone.jpg"), "cat/gone.jpg", "cat", "train"),
        ImageSource(str(good), "bird/good.jpg", "bird", "train"),  # label missing from the map
        ImageSource(str(tmp_path / "stray.jpg"), "stray.jpg", "", "train"),  # beside the class folders: no label
    ]
    expected = imagegen.center_crop(imagegen.reference_pixels(good), 32, 32)

    def check(records):
        assert len(records) == 1
        record = schema.decode_example(records[0])
        assert (record.label, record.label_text, record.format, record.height, record.width) == (0, "cat", "png", 32, 32)
        np.testing.assert_array_equal(np.asarray(__import__("PIL.Image").Image.open(__import__("io").BytesIO(record.encoded))), expected)

    with local_test_pipeline() as p:
        labels = p | "Labels" >> beam.Create([{"cat": 0}])
        out = p | beam.Create(sources) | beam.ParDo(ImagesToExamples(spec), label_ids=beam.pvalue.AsSingleton(labels)).with_outputs(
            "train", "test", REJECTED, IMAGES_WRITTEN
        )
        assert_that(out["test"], check)
        assert_that(out["train"], equal_to([]), label="NoTrain")
        assert_that(out[REJECTED] | beam.Map(lambda line: reasons([line])[0]), equal_to([("small.png", "too_small"), ("gone.jpg", "not_found"), ("good.jpg", "label_not_listed"),
                                                                                     ("stray.jpg", "no_label")]), label="Rejected")
        # Per bundle, the number of images written: however the runner bundles, they sum to 1.
        assert_that(out[IMAGES_WRITTEN] | beam.CombineGlobally(sum), equal_to([1]), label="Written")
    counters = {c.key.metric.name: c.committed for c in p.result.metrics().query()["counters"] if c.key.metric.namespace == "cropshard"}
    assert counters == {
        "images_read": 2,  # the missing file, the unlisted label and the stray unlabelled one: rejected before any read
        "bytes_read": good.stat().st_size + small.stat().st_size,
        "images_decoded": 1,
        "decode_path_window": 1,
        "crops_written": 1,
        "rejected_too_small": 1,
        "rejected_not_found": 1,
        "rejected_label_not_listed": 1,
        "rejected_no_label": 1,
    }


def test_drop_duplicates_keeps_smallest_key(tmp_path):
    first = imagegen.save(tmp_path / "a" / "x.jpg", imagegen.photo(20, 20, 7))
    (tmp_path / "b").mkdir()
    copy = tmp_path / "b" / "y.jpg"
    copy.write_bytes(first.read_bytes())
    other = imagegen.save(tmp_path / "c.jpg", imagegen.photo(20, 20, 8))
    sources = [ImageSource(str(p), str(p.relative_to(tmp_path)), "", None) for p in (copy, first, other)]
    with local_test_pipeline() as p:
        out = p | beam.Create(sources) | DropDuplicates()
        assert_that(out["sources"] | beam.Map(lambda s: s.key), equal_to(["a/x.jpg", "c.jpg"]))
        assert_that(out[REJECTED] | beam.Map(lambda line: reasons([line])[0]), equal_to([("y.jpg", "duplicate")]), label="Dups")


def test_write_split_and_describe_shards(tmp_path):
    records = [schema.encode_example(schema.ImageRecord(bytes([i]), "raw", 1, 1, 1, -1, "", f"f{i}", (0, 0, 1, 1), "0")) for i in range(25)]
    with local_test_pipeline() as p:
        files = p | beam.Create(records) | WriteSplit(str(tmp_path), "train", ShardLayout(num_shards=3), compression="gzip")
        described = files | DescribeShards("train", "gzip")
        assert_that(described | beam.Map(lambda kv: (kv[0], kv[1].file)), equal_to([("train", f"train-0000{i}-of-00003.tfrecord.gz") for i in range(3)]))
        assert_that(described | beam.Map(lambda kv: kv[1].num_records) | beam.CombineGlobally(sum), equal_to([25]), label="Total")
    shards = [f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(shards + [name + ".idx" for name in shards])
    # Each index lists its shard's records (offsets into the decompressed stream for gzip).
    assert sum(len(shard_index.parse_index((tmp_path / (name + ".idx")).read_text())) for name in shards) == 25


def test_write_dataset_info_refuses_counts_that_do_not_reconcile(tmp_path):
    facts = DatasetFacts(cropshard_version="t", encoding="raw", image_formats=("raw",), channels=3, image_shape=(8, 8, 3), crop={"strategy": "center"},
                         compression="none", split_names=("train",), command_line=())

    def build(p, num_inputs, images_written=2):
        return {
            "shards": p | "Shards" >> beam.Create([("train", metadata.ShardInfo("train-00000-of-00001.tfrecord", 2, 100))]),
            "rejected_counts": p | "Rejected" >> beam.Create([("too_small", 1)]),
            "num_inputs": p | "Inputs" >> beam.Create([num_inputs]),
            "images_written": p | "Written" >> beam.Create([images_written]),
            "labels": p | "Labels" >> beam.Create([["a", "b"]]),
            "rejected_files": p | "RejectedFiles" >> beam.Create(["rejected.jsonl"]),
        } | WriteDatasetInfo(str(tmp_path), facts)

    with local_test_pipeline() as p:
        assert_that(build(p, 3), is_not_empty())
    info = metadata.DatasetInfo.from_json((tmp_path / metadata.INFO_FILENAME).read_text())
    assert (info.num_inputs, info.num_images_written, info.rejected, info.labels) == (3, 2, {"too_small": 1}, ("a", "b"))
    assert (tmp_path / "labels.txt").read_text() == "a\nb\n"
    (tmp_path / metadata.INFO_FILENAME).unlink()
    with pytest.raises(Exception, match="do not reconcile"), local_test_pipeline() as p:
        build(p, 4)
    assert not (tmp_path / metadata.INFO_FILENAME).exists()
    # 3 images written but the shard list only describes 2 records: an incomplete shard list
    with pytest.raises(Exception, match="shard list is incomplete"), local_test_pipeline() as p:
        build(p, 4, images_written=3)
    assert not (tmp_path / metadata.INFO_FILENAME).exists()
