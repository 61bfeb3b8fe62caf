"""reader.load / info / as_numpy on hand-built datasets (tests/reader_fixtures.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import reader_fixtures as fx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from cropshard import reader  # noqa: E402
from cropshard.reader import fileio, schema  # noqa: E402
from cropshard.reader.metadata import DatasetError, IncompleteDatasetError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def raw_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    path = str(tmp_path_factory.mktemp("raw"))
    return path, fx.precropped_dataset(path, schema.FORMAT_RAW, shards={"train": 4, "validation": 2})


@pytest.fixture(scope="module")
def png_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    path = str(tmp_path_factory.mktemp("png"))
    return path, fx.precropped_dataset(path, schema.FORMAT_PNG, counts={"train": 12}, shards=2)


@pytest.fixture(scope="module")
def jpeg_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    path = str(tmp_path_factory.mktemp("jpeg"))
    return path, fx.precropped_dataset(path, schema.FORMAT_JPEG, counts={"train": 12}, shards=2)


@pytest.fixture(scope="module")
def full_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """Full images, JPEG and PNG mixed (encoding 'original'), some smaller than the 32x32 window."""
    path = str(tmp_path_factory.mktemp("full"))
    return path, fx.full_image_dataset(path, (schema.FORMAT_JPEG, schema.FORMAT_PNG))


def collect(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    images, labels, metas = [], [], []
    for batch in dataset.as_numpy_iterator():
        images.append(batch[0])
        labels.append(batch[1])
        if len(batch) > 2:
            metas.append(batch[2])
    meta = {key: np.concatenate([m[key] for m in metas]) for key in metas[0]} if metas else {}
    return np.concatenate(images), np.concatenate(labels), meta


def names(meta: dict[str, np.ndarray]) -> list[str]:
    return [name.decode() for name in meta["filename"]]


def expected_window(stored: fx.Stored, window: np.ndarray, flipped: bool, size: tuple[int, int]) -> np.ndarray:
    """The stored pixels of `window`, flipped if reported, zero-padded (centered) to `size`."""
    y, x, h, w = (int(v) for v in window)
    part = stored.pixels[y : y + h, x : x + w]
    if flipped:
        part = part[:, ::-1]
    out = np.zeros((size[0], size[1], stored.pixels.shape[2]), np.uint8)
    py, px = (size[0] - h) // 2, (size[1] - w) // 2
    out[py : py + h, px : px + w] = part
    return out


# ---- what comes out equals what was stored --------------------------------------------------


def test_info_returns_parsed_metadata(raw_ds: tuple[str, dict]) -> None:
    path, splits = raw_ds
    info = reader.info(path)
    assert isinstance(info, reader.DatasetInfo)
    assert info.image_shape == (24, 20, 3)
    assert {name: s.num_examples for name, s in info.splits.items()} == {k: len(v) for k, v in splits.items()}


@pytest.mark.parametrize("fixture", ["raw_ds", "png_ds"])
def test_precropped_exact_pixels_and_labels(fixture: str, request: pytest.FixtureRequest) -> None:
    path, splits = request.getfixturevalue(fixture)
    for split, stored in splits.items():
        images, labels, meta = collect(reader.load(path, split, batch_size=5, normalize="none", with_metadata=True))
        assert images.dtype == np.uint8 and images.shape[1:] == (24, 20, 3)
        assert sorted(names(meta)) == sorted(s.record.filename for s in stored)  # every example once
        by_name = fx.by_filename(stored)
        for image, label, name, window in zip(images, labels, names(meta), meta["crop_window"], strict=True):
            assert np.array_equal(image, by_name[name].pixels), name
            assert label == by_name[name].record.label
            assert list(window) == [0, 0, 24, 20]
        assert [m.decode() for m in meta["label_text"]] == [fx.LABELS[int(v)] for v in labels]
        assert {tuple(b) for b in meta["source_crop_box"]} == {s.record.crop_box for s in stored}


def test_precropped_jpeg_equals_decoded_jpeg(jpeg_ds: tuple[str, dict], batched_route: str) -> None:
    path, splits = jpeg_ds
    images, labels, meta = collect(reader.load(path, batch_size=4, normalize="none", with_metadata=True))
    by_name = fx.by_filename(splits["train"])
    assert len(images) == 12
    for image, name in zip(images, names(meta), strict=True):
        assert np.array_equal(image, by_name[name].pixels)


def test_unshuffled_single_worker_reads_every_record_in_shard_order(raw_ds: tuple[str, dict]) -> None:
    path, splits = raw_ds
    _, _, meta = collect(reader.load(path, batch_size=7, shuffle=False, seed=0, with_metadata=True, cycle_length=1))
    stored = splits["train"]
    expected = [s.record.filename for k in range(4) for s in stored[k::4]]  # shard k holds records k, k+4, ...
    assert names(meta) == expected


@pytest.mark.parametrize("fixture", ["raw_ds", "jpeg_ds"])
def test_random_subcrop_of_precropped_data_is_an_exact_window(fixture: str, request: pytest.FixtureRequest) -> None:
    path, splits = request.getfixturevalue(fixture)
    data = reader.load(
        path, batch_size=6, crop="random", crop_size=(10, 12), flip=True, seed=3, normalize="none", with_metadata=True
    )
    images, _, meta = collect(data)
    by_name = fx.by_filename(splits["train"])
    assert images.shape[1:] == (10, 12, 3)
    offsets = set()
    for image, name, window, flipped in zip(images, names(meta), meta["crop_window"], meta["flipped"], strict=True):
        assert np.array_equal(image, expected_window(by_name[name], window, bool(flipped), (10, 12))), name
        offsets.add((int(window[0]), int(window[1])))
    assert len(offsets) > 3, "windows should vary"
    assert 0 < meta["flipped"].sum() < len(images), "some images flipped, some not"


def test_center_subcrop_of_precropped_raw(raw_ds: tuple[str, dict]) -> None:
    path, splits = raw_ds
    images, _, meta = collect(
        reader.load(path, "validation", crop="center", crop_size=8, normalize="none", with_metadata=True)
    )
    by_name = fx.by_filename(splits["validation"])
    for image, name in zip(images, names(meta), strict=True):
        assert np.array_equal(image, by_name[name].pixels[8:16, 6:14])


@pytest.mark.parametrize("crop", ["random", "center"])
def test_full_images_cropped_on_the_fly_are_exact_windows(crop: str, full_ds: tuple[str, dict], batched_route: str) -> None:
    path, splits = full_ds
    data = reader.load(
        path, batch_size=4, crop=crop, crop_size=32, flip=crop == "random", seed=7, normalize="none", with_metadata=True
    )
    images, labels, meta = collect(data)
    by_name = fx.by_filename(splits["train"])
    assert images.shape == (20, 32, 32, 3)
    padded = 0
    for image, label, name, window, flipped in zip(
        images, labels, names(meta), meta["crop_window"], meta["flipped"], strict=True
    ):
        stored = by_name[name]
        assert label == stored.record.label
        assert np.array_equal(image, expected_window(stored, window, bool(flipped), (32, 32))), name
        h, w = stored.pixels.shape[:2]
        assert list(window[2:]) == [min(h, 32), min(w, 32)]
        padded += int(h < 32 or w < 32)
        if crop == "center":
            assert list(window[:2]) == [(h - min(h, 32)) // 2, (w - min(w, 32)) // 2]
    assert padded >= 4, "the fixture has images smaller than the window; they must be padded, not rejected"


def test_full_images_without_crop_need_unbatched_reading(full_ds: tuple[str, dict]) -> None:
    path, splits = full_ds
    with pytest.raises(DatasetError, match="varying sizes.*crop='random'"):
        reader.load(path, batch_size=4)
    by_name = fx.by_filename(splits["validation"])
    seen = 0
    for image, _label, meta in reader.as_numpy(
        path, "validation", batch_size=None, normalize="none", with_metadata=True
    ):
        assert np.array_equal(image, by_name[meta["filename"].decode()].pixels)
        seen += 1
    assert seen == len(by_name)


def test_same_seed_same_stream_different_seed_different(raw_ds: tuple[str, dict]) -> None:
    def run(seed: int) -> tuple[list[str], np.ndarray]:
        images, _, meta = collect(
            reader.load(raw_ds[0], batch_size=8, crop="random", crop_size=9, flip=True, seed=seed, with_metadata=True)
        )
        return names(meta), images

    a_names, a_images = run(11)
    b_names, b_images = run(11)
    c_names, c_images = run(12)
    assert a_names == b_names and np.array_equal(a_images, b_images)
    assert a_names != c_names


def test_epochs_reshuffle_and_repeat_continues(raw_ds: tuple[str, dict]) -> None:
    data = reader.load(raw_ds[0], batch_size=10, seed=5, with_metadata=True)
    first, second = (names(collect(data)[2]) for _ in range(2))
    assert sorted(first) == sorted(second) and first != second
    repeated = reader.load(raw_ds[0], batch_size=10, seed=5, repeat=True)
    assert sum(1 for _ in repeated.take(7)) == 7  # 70 images from a 30-image split


def test_unshuffled_repeat_serves_every_record_once_per_pass(raw_ds: tuple[str, dict]) -> None:
    """The shard files were repeated before they were interleaved, so the next pass began before
    the last ended: a stretch of one pass's length held one example twice and missed another. And
    without a seed the unshuffled order changed from pass to pass (parallel reads)."""
    data = reader.load(raw_ds[0], batch_size=None, shuffle=False, repeat=True, with_metadata=True)
    stream = [meta["filename"] for _, _, meta in data.take(4 * 30).as_numpy_iterator()]
    passes = [stream[i : i + 30] for i in range(0, 120, 30)]
    assert len(set(passes[0])) == 30 and all(one == passes[0] for one in passes)  # the stored order, every pass


def test_the_shuffle_buffer_holds_no_more_than_the_workers_records() -> None:
    """A 1024-deep buffer over a repeated 30-record stream held some 34 copies of each record."""
    from cropshard.reader.records import shuffle_depth

    assert shuffle_depth(1024, [8, 7, 8, 7]) == 30
    assert shuffle_depth(1024, [8, 7, 8, 7], sharing_workers=4) == 7  # every 4th record of the 30
    assert shuffle_depth(16, [800, 700]) == 16
    assert shuffle_depth(1024, [0]) == 1  # an empty split: tf.data needs a positive buffer


def test_normalize_modes(raw_ds: tuple[str, dict]) -> None:
    path, _ = raw_ds
    raw, _, _ = collect(reader.load(path, "validation", shuffle=False, seed=0, normalize="none"))
    unit, _, _ = collect(reader.load(path, "validation", shuffle=False, seed=0))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    standard, _, _ = collect(reader.load(path, "validation", shuffle=False, seed=0, normalize=(mean, std)))
    assert raw.dtype == np.uint8 and unit.dtype == np.float32 and standard.dtype == np.float32
    np.testing.assert_allclose(unit, raw / 255.0, atol=1e-6)
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    np.testing.assert_allclose(standard, (raw / 255.0 - np.array(mean)) / np.array(std), atol=1e-5)
    with pytest.raises(ValueError, match="normalize"):
        reader.load(path, normalize="imagenet")
    with pytest.raises(ValueError, match="one per channel"):
        reader.load(path, normalize=((0.5, 0.5), (1.0, 1.0)))


def test_gzip_dataset_reads_transparently(tmp_path: os.PathLike) -> None:
    path = str(tmp_path)
    splits = fx.precropped_dataset(path, schema.FORMAT_PNG, counts={"train": 9}, shards=2, compression="gzip")
    assert all(name.endswith(".tfrecord.gz") for name in os.listdir(path) if "tfrecord" in name)
    images, _, meta = collect(reader.load(path, batch_size=4, normalize="none", with_metadata=True))
    by_name = fx.by_filename(splits["train"])
    assert sorted(names(meta)) == sorted(by_name)
    for image, name in zip(images, names(meta), strict=True):
        assert np.array_equal(image, by_name[name].pixels)


def test_as_numpy_yields_numpy_batches(raw_ds: tuple[str, dict]) -> None:
    # With a seed the order is guaranteed, so the short batch is last; without one the reader leaves
    # the order free (parallel finishing of batches), so only the sizes are.
    batches = list(reader.as_numpy(raw_ds[0], "validation", batch_size=3, seed=0))
    assert [len(b[0]) for b in batches] == [3, 3, 2]
    assert sorted(len(b[0]) for b in reader.as_numpy(raw_ds[0], "validation", batch_size=3)) == [2, 3, 3]
    assert all(isinstance(b[0], np.ndarray) and isinstance(b[1], np.ndarray) for b in batches)


# ---- multi-worker sharding ------------------------------------------------------------------


def worker_names(path: str, **kwargs: object) -> list[str]:
    return names(collect(reader.load(path, batch_size=4, with_metadata=True, **kwargs))[2])


def test_two_workers_partition_the_split_by_file(raw_ds: tuple[str, dict]) -> None:
    path, splits = raw_ds
    parts = [
        worker_names(path, input_context=tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i))
        for i in range(2)
    ]
    assert all(parts) and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(s.record.filename for s in splits["train"])


def test_more_workers_than_files_shards_by_record(raw_ds: tuple[str, dict]) -> None:
    path, splits = raw_ds  # validation has 2 shard files
    parts = [worker_names(path, split="validation", num_shards=3, index=i) for i in range(3)]
    assert all(parts)
    assert sorted(sum(parts, [])) == sorted(s.record.filename for s in splits["validation"])
    with pytest.raises(ValueError, match="index"):
        reader.load(path, num_shards=2, index=2)


# ---- errors that name the problem -----------------------------------------------------------


def test_clear_errors(tmp_path: os.PathLike, raw_ds: tuple[str, dict]) -> None:
    path, _ = raw_ds
    with pytest.raises(DatasetError, match="does not exist"):
        reader.load(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="no cropshard.json"):
        reader.load(str(tmp_path))
    partial = str(tmp_path / "partial")
    shutil.copytree(path, partial)
    os.remove(os.path.join(partial, "cropshard.json"))
    with pytest.raises(IncompleteDatasetError, match="incomplete"):
        reader.load(partial)
    with pytest.raises(DatasetError, match="split 'test' does not exist.*'train', 'validation'"):
        reader.load(path, "test")
    with pytest.raises(DatasetError, match="larger than this pre-cropped dataset's images"):
        reader.load(path, crop="random", crop_size=(25, 10))
    with pytest.raises(ValueError, match="crop_size"):
        reader.load(path, crop="random")


def test_unknown_format_version_is_named(tmp_path: os.PathLike, raw_ds: tuple[str, dict]) -> None:
    target = str(tmp_path / "future")
    shutil.copytree(raw_ds[0], target)
    info_path = os.path.join(target, "cropshard.json")
    with open(info_path, encoding="utf-8") as handle:
        text = handle.read().replace('"format_version": 2', '"format_version": 99')
    with open(info_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    with pytest.raises(DatasetError, match="format_version 99"):
        reader.load(target)


@pytest.mark.parametrize("edit", ["num_examples", "num_records"])
def test_a_split_count_that_disagrees_with_its_shards_is_named(tmp_path: os.PathLike, raw_ds: tuple[str, dict], edit: str) -> None:
    """The reader reads each shard's listed count: a lowered count dropped records silently, a
    raised example count went unnoticed. The writer makes both from the same shards."""
    target = str(tmp_path / "edited")
    shutil.copytree(raw_ds[0], target)
    info_path = os.path.join(target, "cropshard.json")
    with open(info_path, encoding="utf-8") as handle:
        body = json.load(handle)
    train = body["splits"]["train"]
    if edit == "num_examples":
        train["num_examples"] += 5
    else:
        train["shards"][0]["num_records"] -= 1
    with open(info_path, "w", encoding="utf-8") as handle:
        json.dump(body, handle)
    for call in (reader.info, reader.load):
        with pytest.raises(DatasetError, match=r"cropshard.json: split 'train' lists \d+ examples but its shards \d+ \("):
            call(target)


def test_missing_shard_file_is_named(tmp_path: os.PathLike, raw_ds: tuple[str, dict]) -> None:
    target = str(tmp_path / "holey")
    shutil.copytree(raw_ds[0], target)
    os.remove(os.path.join(target, "train-00002-of-00004.tfrecord"))
    with pytest.raises(DatasetError, match="train-00002-of-00004.tfrecord.*is missing"):
        reader.load(target)


# ---- gs:// through the file-access seam ---------------------------------------------------


class BucketOnDisk(fileio.FileSystem):
    """Serves gs://bucket/... from a local directory and records every path the reader touches."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.touched: list[str] = []

    def _local(self, path: str) -> str:
        self.touched.append(path)
        assert path.startswith("gs://bucket/"), f"reader bypassed the gs:// path: {path}"
        return os.path.join(self.root, path[len("gs://bucket/") :])

    def exists(self, path: str) -> bool:
        return os.path.exists(self._local(path))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._local(path))

    def open(self, path: str, mode: str = "rb"):  # type: ignore[no-untyped-def]
        return open(self._local(path), mode)  # noqa: SIM115

    def size(self, path: str) -> int:
        return os.path.getsize(self._local(path))

    def tf_path(self, path: str) -> str:
        return self._local(path)


def test_gs_paths_go_through_the_filesystem_seam(tmp_path: os.PathLike, raw_ds: tuple[str, dict]) -> None:
    shutil.copytree(raw_ds[0], str(tmp_path / "datasets" / "flowers"))
    bucket = BucketOnDisk(str(tmp_path))
    with fileio.use(bucket):
        info = reader.info("gs://bucket/datasets/flowers")
        images, _, meta = collect(reader.load("gs://bucket/datasets/flowers", "validation", with_metadata=True))
        report = reader.verify("gs://bucket/datasets/flowers")
    assert info.splits["validation"].num_examples == len(images) == 8
    assert report.ok and len(report.shards) == 6
    assert "gs://bucket/datasets/flowers/cropshard.json" in bucket.touched
    assert "gs://bucket/datasets/flowers/validation-00001-of-00002.tfrecord" in bucket.touched
    assert fileio.get().__class__ is fileio.FileSystem  # restored


# ---- training -----------------------------------------------------------------------------


def tiny_model(size: tuple[int, int]) -> tf.keras.Model:
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input((*size, 3)),
            tf.keras.layers.Conv2D(4, 3, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(len(fx.LABELS)),
        ]
    )
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_keras_fit_on_precropped_raw(raw_ds: tuple[str, dict]) -> None:
    model = tiny_model((24, 20))
    history = model.fit(
        reader.load(raw_ds[0], batch_size=8, flip=True, repeat=True), steps_per_epoch=4, epochs=2, verbose=0
    )
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


def test_keras_fit_on_full_images_with_random_crops(full_ds: tuple[str, dict]) -> None:
    model = tiny_model((32, 32))
    data = reader.load(
        full_ds[0], batch_size=4, crop="random", crop_size=32, flip=True, repeat=True, normalize=((0.5,), (0.25,))
    )
    history = model.fit(data, steps_per_epoch=5, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


# ---- no Beam, no Pillow in reader/ ----------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter
def test_reader_works_with_beam_and_pillow_blocked(raw_ds: tuple[str, dict]) -> None:
    """Imports every reader module and reads a dataset with apache_beam and PIL made unimportable."""
    script = f"""
import sys
for name in ("apache_beam", "PIL"):
    sys.modules[name] = None  # any import of them now raises ImportError
import importlib, pkgutil
from cropshard import reader
for module in pkgutil.iter_modules(reader.__path__):
    importlib.import_module("cropshard.reader." + module.name)
batches = list(reader.as_numpy({raw_ds[0]!r}, "validation", batch_size=4, crop="random", crop_size=8))
assert sum(len(b[0]) for b in batches) == 8, batches
assert reader.verify({raw_ds[0]!r}).ok
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_import_reader_does_not_import_tensorflow() -> None:
    script = (
        "import sys; import cropshard.reader, cropshard.reader.metadata; print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]
