"""End to end: cropshard build on a real DirectRunner, read back with plain tf.data using only the
documented feature keys, pixels compared with an independent Pillow reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from cropshard.pipeline.build import run
from cropshard.reader import metadata

from tests import imagegen

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
CROP = (96, 112)


def parse_with_tf(shard_paths: list[str], compression: str = "") -> list[dict]:
    """Plain tf.data, nothing from cropshard: what any training script would write."""
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/channels": tf.io.FixedLenFeature([], tf.int64),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/text": tf.io.FixedLenFeature([], tf.string),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/crop/box": tf.io.FixedLenFeature([4], tf.int64),
        "image/key/sha256": tf.io.FixedLenFeature([], tf.string),
    }
    out = []
    for record in tf.data.TFRecordDataset(shard_paths, compression_type=compression):
        ex = tf.io.parse_single_example(record, spec)
        fmt = ex["image/format"].numpy().decode()
        h, w, c = (int(ex[k]) for k in ("image/height", "image/width", "image/channels"))
        if fmt == "raw":
            pixels = tf.reshape(tf.io.decode_raw(ex["image/encoded"], tf.uint8), (h, w, c)).numpy()
        elif fmt == "png":
            pixels = tf.io.decode_png(ex["image/encoded"], channels=c).numpy()
        else:
            pixels = tf.io.decode_jpeg(ex["image/encoded"], channels=c).numpy()
        out.append(
            {
                "pixels": pixels,
                "format": fmt,
                "label": int(ex["image/class/label"]),
                "label_text": ex["image/class/text"].numpy().decode(),
                "filename": ex["image/filename"].numpy().decode(),
                "box": tuple(int(v) for v in ex["image/crop/box"].numpy()),
                "sha256": ex["image/key/sha256"].numpy().decode(),
            }
        )
    return out


def shard_paths(out: Path, info: metadata.DatasetInfo, split: str) -> list[str]:
    return [str(out / shard.file) for shard in info.split(split).shards]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("photos")
    imagegen.class_tree(root, per_class=5, size=(180, 240))
    # EXIF-rotated sources: the crop must come from the image as displayed.
    for orientation in (3, 6, 8):
        imagegen.save(root / "dog" / f"rotated_{orientation}.jpg", imagegen.photo(200, 260, seed=orientation), orientation=orientation, quality=95)
    broken = imagegen.broken_files(root / "cat")
    return root, broken


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_build_and_read_back_with_plain_tf_data(photos, tmp_path, encoding):
    root, broken = photos
    out = tmp_path / "ds"
    result = run(
        [f"--input={root}/**", f"--output={out}", "--crop=center", f"--size={CROP[0]}x{CROP[1]}", f"--encoding={encoding}",
         "--split=train=0.7,test=0.3", "--num_shards=2", *IN_PROCESS],
        command_line=["test"],
    )
    info = result.info
    assert (out / metadata.INFO_FILENAME).exists()
    assert info.image_shape == (*CROP, 3)
    assert info.labels == ("cat", "dog")
    assert (out / "labels.txt").read_text() == "cat\ndog\n"
    matched = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert info.num_inputs == len(matched)
    assert info.num_rejected == len(broken)
    assert info.num_images_written == len(matched) - len(broken)

    records = []
    for split in ("train", "test"):
        assert len(info.split(split).shards) == 2
        got = parse_with_tf(shard_paths(out, info, split))
        assert len(got) == info.split(split).num_examples == sum(s.num_records for s in info.split(split).shards)
        records += got
    assert sorted(r["filename"] for r in records) == sorted(set(matched) - set(broken))

    for rec in records:
        reference = imagegen.center_crop(imagegen.reference_pixels(rec["filename"]), *CROP)
        assert rec["pixels"].shape == reference.shape
        if encoding == "jpeg":
            assert psnr(rec["pixels"], reference) >= 35, rec["filename"]
        else:
            np.testing.assert_array_equal(rec["pixels"], reference, err_msg=rec["filename"])
        assert rec["format"] == encoding
        label_text = Path(rec["filename"]).parent.name
        assert rec["label_text"] == label_text and rec["label"] == info.labels.index(label_text)
        assert rec["sha256"] == __import__("hashlib").sha256(imagegen.file_bytes(rec["filename"])).hexdigest()
        full = imagegen.reference_pixels(rec["filename"])
        assert rec["box"] == ((full.shape[0] - CROP[0]) // 2, (full.shape[1] - CROP[1]) // 2, *CROP)

    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert {r["path"]: r["reason"] for r in rejected} == broken
    assert all(r["message"] and r["stage"] for r in rejected)
    assert info.rejected == {reason: list(broken.values()).count(reason) for reason in set(broken.values())}


@pytest.mark.slow  # multi-process runner
def test_multiprocess_build_writes_the_same_records_as_in_process(photos, tmp_path):
    root, _ = photos
    common = [f"--input={root}/**", "--crop=random", "--size=64x64", "--crops_per_image=3", "--split=train=0.5,validation=0.5"]
    one = run([*common, f"--output={tmp_path / 'one'}", *IN_PROCESS], command_line=[])
    two = run([*common, f"--output={tmp_path / 'two'}", "--direct_running_mode=multi_processing", "--direct_num_workers=2"], command_line=[])
    for split in ("train", "validation"):
        first = sorted(r.numpy() for r in tf.data.TFRecordDataset(shard_paths(tmp_path / "one", one.info, split)))
        second = sorted(r.numpy() for r in tf.data.TFRecordDataset(shard_paths(tmp_path / "two", two.info, split)))
        assert first and first == second
    assert one.info.num_rejected == two.info.num_rejected == 3


def test_refuses_non_empty_output_without_overwrite(photos, tmp_path):
    root, _ = photos
    out = tmp_path / "ds"
    out.mkdir()
    (out / "something.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run([f"--input={root}/cat/*.png", f"--output={out}", "--size=32", *IN_PROCESS])


@pytest.mark.parametrize("local", [True, False])
def test_local_runner_lists_in_buckets_instead_of_reshuffling_sources(photos, tmp_path, local):
    """The memory design (bench/RESULTS.md, scale): locally no Reshuffle of the listed sources."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from cropshard.pipeline.assemble import build_pipeline
    from cropshard.pipeline.build import listing_buckets, with_runner_defaults
    from cropshard.pipeline.options import build_config
    from cropshard.transforms.write import ShardLayout

    options = PipelineOptions(with_runner_defaults([f"--input={photos}/**", f"--output={tmp_path / 'out'}", "--size=32x32"]))
    config = build_config(options)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, {name: ShardLayout() for name in config.split_names}, listing_buckets=listing_buckets(options) if local else None)
    labels = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    assert ("Spread" in labels) is not local
    assert ("MatchImages/SpreadListings" in labels) is local
    assert ("ListLabelNames" in labels) is local
    assert listing_buckets(options) == 4 * options.view_as(beam.options.pipeline_options.DirectOptions).direct_num_workers


def test_local_build_runs_on_fnapirunner_without_trying_prism(photos, tmp_path, monkeypatch):
    """Beam's DirectRunner tries PrismRunner first (downloaded from GitHub where that is reachable,
    a runner cropshard's local settings do not apply to); a local build goes straight to the
    FnApiRunner. The control run shows the check sees DirectRunner's try."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability import prism_runner
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    tried = []

    def refuse(self, pipeline, options):
        tried.append(pipeline)
        raise RuntimeError("no Prism in this test")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    root, _ = photos
    result = run([f"--input={root}/cat/*.png", f"--output={tmp_path / 'out'}", "--size=32x32", *IN_PROCESS], command_line=[])
    assert tried == [] and isinstance(result.pipeline_result, fn_runner.RunnerResult)
    assert result.info.num_examples > 0
    with beam.Pipeline(options=PipelineOptions(IN_PROCESS)) as control:
        _ = control | beam.Create([1]) | beam.Map(lambda x: x)
    assert len(tried) == 1


@pytest.mark.parametrize("local", [True, False])
def test_an_unlabeled_build_gathers_no_label_names(photos, tmp_path, local):
    """--label_from none: no listing or grouping of label names (on the local runner a second
    listing of every input); every record is -1 and the label list is empty."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from cropshard.pipeline.assemble import build_pipeline
    from cropshard.pipeline.build import listing_buckets, with_runner_defaults
    from cropshard.pipeline.options import build_config
    from cropshard.transforms.write import ShardLayout

    root, _ = photos
    argv = [f"--input={root}/**", "--size=32x32", "--label_from=none"]
    options = PipelineOptions(with_runner_defaults([*argv, f"--output={tmp_path / 'graph'}"]))
    config = build_config(options)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, {name: ShardLayout() for name in config.split_names}, listing_buckets=listing_buckets(options) if local else None)
    labels = {t.unique_name.split("/")[0] for t in pipeline.to_runner_api().components.transforms.values()}
    assert "NoLabels" in labels and not labels & {"ListLabelNames", "LabelNames", "Labels"}
    out = tmp_path / "out"
    info = run([*argv, f"--output={out}", *IN_PROCESS], command_line=[]).info
    records = parse_with_tf(shard_paths(out, info, "train"))
    assert info.labels == () and (out / "labels.txt").read_text() == ""
    assert records and {(r["label"], r["label_text"]) for r in records} == {(-1, "")}


def test_small_pad_centre_crops_equal_the_readers_centre_crop_of_the_full_image(tmp_path):
    """The two layouts `compare` weighs must give the same pixels: a pre-cropped --small pad
    centre crop, and the reader's centre crop of the full image. The odd padding row and column
    fell before the image in the writer and after it in the reader (a one-pixel shift)."""
    from cropshard import reader
    from PIL import Image

    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(8).integers(0, 256, (63, 61, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "small.png")
    common = [f"--input={tmp_path}/in", "--label_from=none", "--encoding=png", "--progress=off", *IN_PROCESS]
    run([*common, f"--output={tmp_path}/pre", "--crop=center", "--size=64x64", "--small=pad"], command_line=["test"])
    run([*common, f"--output={tmp_path}/full", "--crop=none"], command_line=["test"])
    stored, _ = next(reader.load(str(tmp_path / "pre"), batch_size=None, shuffle=False, normalize="none").as_numpy_iterator())
    cut, _ = next(reader.load(str(tmp_path / "full"), batch_size=None, shuffle=False, normalize="none", crop="center",
                              crop_size=64).as_numpy_iterator())
    expected = np.zeros((64, 64, 3), np.uint8)
    expected[0:63, 1:62] = pixels  # one zero row after the image; columns 1 before, 2 after
    np.testing.assert_array_equal(cut, expected)
    np.testing.assert_array_equal(stored, expected)
