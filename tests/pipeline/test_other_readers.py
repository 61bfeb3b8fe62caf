"""One build, every reader: datasets built by the real pipeline opened with TFDS
(`tfds.builder_from_directory`), the `tfrecord` package (PyTorch's usual TFRecord reader, used
here through its torch-free loader) with the shipped index files, and `mlcroissant`; `inspect
--verify` checks the index files; two identical builds hold the same records. Raster builds
(uint16 PNG, raw uint16/int16/float32, class-id masks, georeferencing) read the same through TFDS."""

from __future__ import annotations

import collections
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from cropshard import reader
from cropshard.pipeline.build import run
from cropshard.reader import metadata, shard_index
from cropshard.tools import inspect
from cropshard.transforms.write import written_files
from PIL import Image

from tests import imagegen, rastergen

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]
SPLITS = "--split=train=0.7,test=0.3"
KINDS = {
    "raw": ["--crop=center", "--size=32x40", "--encoding=raw"],
    "jpeg": ["--crop=center", "--size=32x40", "--encoding=jpeg"],
    "original": ["--crop=none", "--encoding=original"],
    "resized": ["--crop=none", "--resize=36", "--encoding=jpeg"],
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    imagegen.class_tree(root, per_class=9, size=(48, 60), classes=("cat", "dog", "fish"))  # JPEG and PNG files
    return root


def build(images: Path, out: Path, kind: str, runner: list[str] = IN_PROCESS, shards: str = "--num_shards=2") -> metadata.DatasetInfo:
    args = [f"--input={images}/**", f"--output={out}", *KINDS[kind], SPLITS, shards, *runner]
    return run(args, command_line=["test"]).info


@pytest.fixture(scope="module")
def datasets(images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, metadata.DatasetInfo]]:
    built = {}
    for kind in KINDS:
        out = tmp_path_factory.mktemp(kind) / "ds"
        built[kind] = (out, build(images, out, kind))
    return built


def cropshard_records(path: Path, split: str, **kwargs: object) -> dict[str, tuple[np.ndarray, int]]:
    """filename -> (uint8 image, label) from reader.load, one image at a time."""
    dataset = reader.load(str(path), split, batch_size=None, shuffle=False, normalize="none", with_metadata=True, **kwargs)
    return {meta["filename"].decode(): (image, int(label)) for image, label, meta in dataset.as_numpy_iterator()}


def test_the_build_writes_every_description(datasets: dict[str, tuple[Path, metadata.DatasetInfo]]) -> None:
    for kind, (out, info) in datasets.items():
        assert sorted(p.name for p in out.iterdir()) == written_files(info), kind
        assert all(shard.index == shard.file + ".idx" for split in info.splits.values() for shard in split.shards), kind
        assert info.shard_contents == metadata.SHARD_CONTENTS_STABLE
        assert (out / "image-class-label.labels.txt").read_text() == "cat\ndog\nfish\n"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_tfds_reads_the_same_images_and_labels_as_reader_load(kind: str, datasets: dict[str, tuple[Path, metadata.DatasetInfo]]) -> None:
    import tensorflow_datasets as tfds

    out, info = datasets[kind]
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.features["image"]["class"]["label"].names == ["cat", "dog", "fish"]
    # TFDS decodes JPEG with TensorFlow's default (fast) IDCT and cannot be told otherwise.
    fast = {"dct_method": "INTEGER_FAST"} if kind in ("jpeg", "resized", "original") else {}
    for name, split in info.splits.items():
        tfds_split = builder.info.splits[name]
        assert tfds_split.num_examples == split.num_examples
        assert tfds_split.shard_lengths == [shard.num_records for shard in split.shards]
        assert [Path(f).name for f in tfds_split.filenames] == [shard.file for shard in split.shards]
        expected = cropshard_records(out, name, **fast)
        got = {}
        for example in builder.as_dataset(split=name, shuffle_files=False).as_numpy_iterator():
            image = example["image"]
            got[image["filename"].decode()] = (image["encoded"], int(image["class"]["label"]))
            assert image["class"]["text"].decode() == info.labels[int(image["class"]["label"])]
            assert image["crop"]["box"].shape == (4,) and len(image["key"]["sha256"]) == 64
        assert sorted(got) == sorted(expected), name
        for filename, (pixels, label) in expected.items():
            assert got[filename][1] == label, filename
            assert got[filename][0].dtype == np.uint8 and np.array_equal(got[filename][0], pixels), filename


@pytest.fixture(scope="module")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One input folder per raster test: GeoTIFFs of each stored type, a uint8 scene with its class
    map (shifted by whole pixels, as test_raster_build does), photos beside a 12-bit scene."""
    root = tmp_path_factory.mktemp("rasters")
    rng = np.random.default_rng(5)
    rastergen.write_raster(root / "uint16" / "scene.tif", rastergen.multispectral(48, 48, bands=2, high=65536))
    rastergen.write_raster(root / "int16" / "dem.tif", rng.integers(-30000, 30000, (2, 48, 48)).astype(np.int16))
    reflectance = rng.normal(0, 1, (2, 48, 48)).astype(np.float32)
    reflectance[1, 3, 5] = np.nan  # kept as stored: TFDS must hand back the same bits
    rastergen.write_raster(root / "float32" / "refl.tif", reflectance)
    rastergen.write_raster(root / "mask" / "images" / "tile.tif", rastergen.multispectral(48, 48, bands=3, high=256).astype(np.uint8))
    classes = np.kron(rng.choice([1, 2, 3, 9], size=(8, 8)), np.ones((8, 8), np.uint8)).astype(np.uint8)  # 9: no class (255)
    rastergen.write_raster(root / "mask" / "labels" / "tile_lc.tif", classes[None], origin=(487548.0 - 8.0, 4443554.0 + 16.0))
    (root / "mask" / "classes.csv").write_text("value,name\n1,water\n2,crops\n3,trees\n")
    imagegen.save(root / "mixed" / "a_photo.png", imagegen.photo(48, 48))
    imagegen.save(root / "mixed" / "b_photo.jpg", imagegen.photo(48, 48, seed=1))
    rastergen.write_raster(root / "mixed" / "scene.tif", rastergen.multispectral(64, 64, bands=3, high=4096))
    return root


GRID = ("--crop=grid", "--size=16x16")


def build_raster(inputs: Path, out: Path, *options: str, crop: tuple[str, ...] = GRID) -> metadata.DatasetInfo:
    args = [f"--input={inputs}", f"--output={out}", *crop, SPLITS, *options, *IN_PROCESS]
    return run(args, command_line=["test"]).info


def chip_key(filename: bytes, box: np.ndarray) -> tuple[str, tuple[int, ...]]:
    return filename.decode(), tuple(int(v) for v in box)  # grid chips of one raster share its filename


def tfds_and_reader_chips(out: Path, info: metadata.DatasetInfo) -> list[tuple[dict, tuple]]:
    """(TFDS's example["image"], reader.load's (image, label, metadata)) for every record of
    every split, matched by filename and crop box; normalize='none': the stored samples."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(out))
    pairs = []
    for name, split in info.splits.items():
        if not split.num_examples:
            continue  # a raster's chips share its split; TFDS reads no split of 0 examples
        loaded = reader.load(str(out), name, batch_size=None, shuffle=False, normalize="none", with_metadata=True)
        expected = {chip_key(meta["filename"], meta["source_crop_box"]): (image, label, meta) for image, label, meta in loaded.as_numpy_iterator()}
        got = {chip_key(ex["image"]["filename"], ex["image"]["crop"]["box"]): ex["image"]
               for ex in builder.as_dataset(split=name, shuffle_files=False).as_numpy_iterator()}
        assert sorted(got) == sorted(expected), name
        pairs += [(got[key], expected[key]) for key in sorted(expected)]
    assert len(pairs) == info.num_examples
    return pairs


def assert_same_pixels_and_georeferencing(pairs: list[tuple[dict, tuple]], dtype: str) -> None:
    for tfds_image, (pixels, _label, meta) in pairs:
        assert tfds_image["encoded"].dtype == np.dtype(dtype) == pixels.dtype
        np.testing.assert_array_equal(tfds_image["encoded"], pixels)  # NaN equals NaN here
        assert tfds_image["geo"]["crs"] == meta["geo_crs"] != b""
        assert tfds_image["geo"]["transform"].dtype == np.float64
        np.testing.assert_array_equal(tfds_image["geo"]["transform"], meta["geo_transform"])


def test_tfds_reads_uint16_png_samples_as_reader_load_does(rasters: Path, tmp_path: Path) -> None:
    """A uint16 PNG declared as a uint8 Image would come back as each sample's top byte."""
    info = build_raster(rasters / "uint16", tmp_path / "ds", "--bands=2", "--channels=1", "--dtype=uint16", "--encoding=png", "--label_from=none")
    pairs = tfds_and_reader_chips(tmp_path / "ds", info)
    assert max(int(pixels.max()) for _, (pixels, _, _) in pairs) > 255  # the top byte alone would differ
    assert_same_pixels_and_georeferencing(pairs, "uint16")
    assert all(tfds_image["dtype"] == b"uint16" for tfds_image, _ in pairs)


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_tfds_reads_raw_samples_of_every_stored_type(dtype: str, rasters: Path, tmp_path: Path) -> None:
    """Raw bytes are little-endian samples of image/dtype: TFDS's bytes-encoded Tensor of that
    dtype gives reader.load's arrays (a uint8 Tensor failed to reshape on the first record)."""
    info = build_raster(rasters / dtype, tmp_path / "ds", "--bands=1,2", "--dtype=keep", "--encoding=raw", "--label_from=none")
    assert info.dtype == dtype
    pairs = tfds_and_reader_chips(tmp_path / "ds", info)
    assert_same_pixels_and_georeferencing(pairs, dtype)
    assert all(tfds_image["dtype"] == dtype.encode() for tfds_image, _ in pairs)
    if dtype == "float32":
        assert sum(int(np.isnan(pixels).sum()) for _, (pixels, _, _) in pairs) == 1


def test_tfds_reads_the_class_id_mask_and_georeferencing_of_a_mask_dataset(rasters: Path, tmp_path: Path) -> None:
    """--label_mode mask: the label is image/segmentation/encoded, equal to reader.load's mask;
    no record stores image/dtype (uint8), so TFDS declares none."""
    mask_inputs = rasters / "mask"
    info = build_raster(mask_inputs / "images", tmp_path / "ds", "--encoding=png", "--label_mode=mask",
                        "--label_raster={dir}/../labels/{stem}_lc.tif", f"--label_names={mask_inputs / 'classes.csv'}")
    pairs = tfds_and_reader_chips(tmp_path / "ds", info)
    assert_same_pixels_and_georeferencing(pairs, "uint8")
    ids = set()
    for tfds_image, (_pixels, mask, _meta) in pairs:
        tfds_mask = tfds_image["segmentation"]["encoded"]
        assert tfds_mask.shape == mask.shape == (16, 16, 1) and tfds_mask.dtype == mask.dtype == np.uint8
        np.testing.assert_array_equal(tfds_mask, mask)
        ids |= set(np.unique(mask).tolist())
        assert "dtype" not in tfds_image
    assert ids == {0, 1, 2, 255}  # every class and the no-class id: the comparison saw real masks


def test_tfds_declares_no_georeferencing_when_photos_sit_beside_raster_chips(rasters: Path, tmp_path: Path) -> None:
    """Photos in a raster dataset have no image/geo/*; declared, TFDS would fail on their records."""
    out = tmp_path / "ds"
    info = build_raster(rasters / "mixed", out, "--to_uint8=bits:12", "--encoding=png", "--label_from=none", crop=("--crop=center", "--size=32x32"))
    assert (info.num_images_written, info.raster["num_rasters"]) == (3, 1)
    pairs = tfds_and_reader_chips(out, info)
    for tfds_image, (pixels, _label, _meta) in pairs:
        assert "geo" not in tfds_image and "dtype" not in tfds_image
        np.testing.assert_array_equal(tfds_image["encoded"], pixels)


def test_reader_load_decodes_jpeg_exactly_as_pillow_does(datasets: dict[str, tuple[Path, metadata.DatasetInfo]]) -> None:
    """The default IDCT is the accurate one: Pillow (and DALI's CPU decoder) give the same pixels."""
    import tensorflow as tf

    out, info = datasets["jpeg"]
    by_name = cropshard_records(out, "train")
    fast = cropshard_records(out, "train", dct_method="INTEGER_FAST")
    differs = 0
    for shard in info.splits["train"].shards:
        for record in tf.data.TFRecordDataset(str(out / shard.file)).as_numpy_iterator():
            example = reader.schema.decode_example(record)
            pillow = np.asarray(Image.open(io.BytesIO(example.encoded)).convert("RGB"))
            assert np.array_equal(by_name[example.filename][0], pillow), example.filename
            differs += not np.array_equal(fast[example.filename][0], pillow)
    assert differs > 0, "the fast IDCT gave Pillow's pixels for every image: this test would not notice a wrong default"


# Runs in a process of its own, as in a PyTorch job: the tfrecord package registers its own copy of
# TensorFlow's example.proto, which clashes with TensorFlow's in one process.
TFRECORD_WORKERS = """
import json, sys
from tfrecord.reader import tfrecord_loader
shards, use_index = json.loads(sys.argv[1]), sys.argv[2] == "index"
description = {"image/filename": "byte", "image/class/label": "int"}
print(json.dumps([
    [bytes(row["image/filename"]).decode() for data, index in shards
     for row in tfrecord_loader(data, index if use_index else None, description, shard=(worker, 2))]
    for worker in range(2)
]))
assert "tensorflow" not in sys.modules and "torch" not in sys.modules
"""


def tfrecord_workers(shards: list[tuple[str, str]], use_index: bool) -> list[list[str]]:
    """File names each of 2 workers reads, as `tfrecord.torch.TFRecordDataset` in a DataLoader
    worker does: `tfrecord_loader(..., shard=(worker_id, 2))` over every shard."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", TFRECORD_WORKERS, json.dumps(shards), "index" if use_index else "none"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_tfrecord_package_reads_each_record_once_with_two_workers(datasets: dict[str, tuple[Path, metadata.DatasetInfo]]) -> None:
    """With the shipped indexes, 2 workers read every record exactly once; without an index both
    read every record (the tfrecord package then ignores `shard`)."""
    out, info = datasets["jpeg"]
    for name, split in info.splits.items():
        expected = sorted(cropshard_records(out, name))
        shards = [(str(out / shard.file), str(out / shard.index)) for shard in split.shards]
        per_worker = tfrecord_workers(shards, use_index=True)
        assert all(per_worker), f"{name}: a worker got no records {[len(w) for w in per_worker]}"
        assert sorted(per_worker[0] + per_worker[1]) == expected, name
        without_index = tfrecord_workers(shards, use_index=False)
        assert collections.Counter(without_index[0] + without_index[1]) == collections.Counter(expected * 2)


def test_croissant_is_valid_and_mlcroissant_loads_it(datasets: dict[str, tuple[Path, metadata.DatasetInfo]]) -> None:
    import mlcroissant as mlc

    for kind, (out, _info) in datasets.items():
        dataset = mlc.Dataset(jsonld=str(out / metadata.CROISSANT_FILENAME))  # raises on any validation error
        assert not dataset.metadata.issues.errors, (kind, dataset.metadata.issues.report())
        fields = {field.name for record_set in dataset.metadata.record_sets for field in record_set.fields}
        assert set(reader.schema.FEATURE_KEYS) <= fields, kind
    out, info = datasets["jpeg"]
    dataset = mlc.Dataset(jsonld=str(out / metadata.CROISSANT_FILENAME))
    assert [row["labels/name"].decode() for row in dataset.records("labels")] == list(info.labels)
    splits = {row["splits/name"]: row["splits/num_examples"] for row in dataset.records("splits")}
    assert splits == {name: split.num_examples for name, split in info.splits.items()}
    body = json.loads((out / metadata.CROISSANT_FILENAME).read_text())
    assert body["conformsTo"] == "http://mlcommons.org/croissant/1.0"


def test_inspect_verify_checks_the_index_files(datasets: dict[str, tuple[Path, metadata.DatasetInfo]], tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "ds"
    shutil.copytree(datasets["raw"][0], out)
    assert inspect.main([str(out), "--verify", "--no-labels", "--progress=off"]) == 0
    shard = datasets["raw"][1].splits["train"].shards[0]
    spans = shard_index.parse_index((out / shard.index).read_text())
    offset, size = spans[1]
    spans[1] = (offset + 1, size)
    (out / shard.index).write_text(shard_index.format_index(spans))
    printed = io.StringIO()
    with redirect_stdout(printed):
        status = inspect.main([str(out), "--verify", "--no-labels", "--progress=off"])
    assert status == 1
    assert f"index entry 1 is offset {offset + 1} size {size}, the record is at offset {offset} size {size}" in printed.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("shards", ["--num_shards=2", "--target_shard_mb=0.01"])
def test_two_identical_builds_write_identical_shard_files(images: Path, tmp_path: Path, shards: str) -> None:
    """What cropshard promises for two builds of the same inputs and options on a local output:
    the same shard files, byte for byte, with the same index files (shard_contents 'stable'), even
    when one build runs in process and the other on two worker processes (other bundles, other
    part files, another order of arrival)."""
    runners = {"a": IN_PROCESS, "b": ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--progress=off"]}
    infos = [build(images, tmp_path / name, "jpeg", runner, shards) for name, runner in runners.items()]
    assert all(info.shard_contents == metadata.SHARD_CONTENTS_STABLE for info in infos)
    assert infos[0].splits == infos[1].splits  # names, record counts, bytes, index file names
    assert sum(len(split.shards) for split in infos[0].splits.values()) >= 4
    for name, split in infos[0].splits.items():
        for shard in split.shards:
            for file in (shard.file, shard.index):
                assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), (name, file)
    for directory in runners:
        report = reader.verify(str(tmp_path / directory))
        assert report.ok, str(report)  # every index matches the shard written next to it
