"""Raster builds end to end: `cropshard build` on GeoTIFFs (DirectRunner), read back with
`reader.load`, compared value for value with rasterio window reads; the metadata's raster
section; rejections and skipped chips counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cropshard import reader
from cropshard.pipeline.build import BuildFailed, run
from cropshard.reader import decode, metadata
from rasterio.windows import Window

from tests import imagegen, rastergen

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]
pytestmark = pytest.mark.slow  # each test runs one or two real builds


def build(*args: str) -> metadata.DatasetInfo:
    return run([*args, *IN_PROCESS], command_line=["cropshard", "build"]).info


def rejected(out: Path) -> dict[str, str]:
    lines = (out / metadata.REJECTED_FILENAME).read_text().splitlines()
    return {Path(row["path"]).name: row["reason"] for row in map(json.loads, lines)}


def window_read(path: str, box, bands=None) -> np.ndarray:
    y, x, h, w = (int(v) for v in box)
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(bands, window=Window(x, y, w, h)), 0, -1)


def test_eight_band_keep_round_trips_with_georeferencing(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    rastergen.write_raster(inputs / "scene" / "a.tif", rastergen.multispectral(160, 130, bands=8, seed=1))
    rastergen.write_raster(inputs / "scene" / "b.tif", rastergen.multispectral(100, 100, bands=8, seed=2), crs="EPSG:3857", origin=(1000.0, 9000.0))
    rastergen.write_raster(inputs / "scene" / "four.tif", rastergen.multispectral(100, 100, bands=4))
    rastergen.write_raster(inputs / "scene" / "zz_float.tif", rastergen.multispectral(100, 100, bands=8).astype(np.float32))
    (inputs / "scene" / "hostile.tif").write_text('<VRTDataset rasterXSize="1" rasterYSize="1"></VRTDataset>')
    imagegen.save(inputs / "scene" / "photo.jpg", imagegen.photo(80, 80))
    out = tmp_path / "out"
    info = build("--input", str(inputs), "--output", str(out), "--crop", "grid", "--size", "32x32", "--bands", "1,2,3,4,5,6,7,8", "--dtype", "keep")

    assert rejected(out) == {"four.tif": "band_mismatch", "zz_float.tif": "band_mismatch", "hostile.tif": "raster_reference", "photo.jpg": "band_mismatch"}
    assert (info.num_inputs, info.num_images_written, info.channels, info.image_shape) == (6, 2, 8, (32, 32, 8))
    assert info.raster["dtype"] == "uint16" and info.raster["bands"] == list(range(1, 9))
    assert info.raster["crs_seen"] == ["EPSG:32613", "EPSG:3857"] and info.raster["num_rasters"] == 2
    assert info.num_examples == 5 * 4 + 3 * 3
    from cropshard.tools.inspect import describe  # a uint16 dataset described like a uint8 one

    assert "raster       2 rasters; samples uint16; bands 1,2,3,4,5,6,7,8; CRS EPSG:32613, EPSG:3857" in describe(str(out), info, None)

    seen = 0
    for image, label, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        path = meta["filename"].decode()
        assert image.dtype == np.uint16 and image.shape == (32, 32, 8) and label == 0
        np.testing.assert_array_equal(image, window_read(path, meta["source_crop_box"]))
        y, x, h, w = (int(v) for v in meta["source_crop_box"])
        with rasterio.open(path) as ds:
            assert tuple(meta["geo_transform"]) == ds.window_transform(Window(x, y, w, h)).to_gdal()
            assert meta["geo_crs"].decode() == f"EPSG:{ds.crs.to_epsg()}"
        seen += 1
    assert seen == info.num_examples
    images, _ = next(iter(reader.load(str(out), batch_size=4, crop="random", crop_size=16, seed=3)))
    assert images.shape == (4, 16, 16, 8) and images.dtype.name == "float32" and float(images.numpy().max()) < 2048 / 65535 + 1e-6


def test_eleven_bit_pan_to_uint8_png_nodata_and_collapse(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    pan = rastergen.multispectral(128, 128, bands=1, high=2048)
    rastergen.write_raster(inputs / "pan.tif", pan)  # declares 16 bits, holds 11: the WorldView case
    holes = rastergen.multispectral(128, 128, bands=1, high=2048, seed=4)
    holes[:, :64] = 0
    rastergen.write_raster(inputs / "holes.tif", holes, nodata=0)
    rastergen.write_raster(inputs / "empty.tif", np.zeros((1, 64, 64), np.uint16), nodata=0)
    common = ["--crop", "grid", "--size", "32x32", "--encoding", "png", "--channels", "1", "--label_from", "none", "--max_nodata", "0.5"]

    out = tmp_path / "collapsed"
    with pytest.raises(BuildFailed):  # no example left: nothing is published, the rejections are listed
        build("--input", str(inputs), "--output", str(out), *common)
    assert rejected(out) == {"pan.tif": "range_collapsed", "holes.tif": "range_collapsed", "empty.tif": "no_valid_chips"}
    assert "--to_uint8 bits:11" in (out / metadata.REJECTED_FILENAME).read_text()

    out = tmp_path / "spread"
    info = build("--input", str(inputs), "--output", str(out), *common, "--to_uint8", "bits:11")
    assert rejected(out) == {"empty.tif": "no_valid_chips"}
    assert info.raster["to_uint8"] == "bits:11" and info.raster["chips_skipped"] == {"nodata": 8 + 4}  # empty.tif's 4 too
    assert info.num_examples == 16 + 8
    for image, _, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        assert image.dtype == np.uint8 and image.shape == (32, 32, 1)
        np.testing.assert_array_equal(image, (window_read(meta["filename"].decode(), meta["source_crop_box"]) >> 3).astype(np.uint8))
        assert len(np.unique(image)) > 50


def test_split_by_block_spreads_one_orthophoto_over_every_split(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    # An origin on the 128 m block grid, so 32-pixel (64 m) tiles never straddle blocks.
    ortho = rastergen.write_raster(inputs / "ortho.tif", rastergen.multispectral(512, 512, bands=3, high=4096), origin=(487552.0, 4443520.0), nbits=12)
    out = tmp_path / "out"
    info = build(
        "--input", str(inputs), "--output", str(out), "--crop", "grid", "--size", "32x32", "--encoding", "png",
        "--split", "train=0.6,validation=0.2,test=0.2", "--split_by", "block:128", "--label_from", "none",
    )
    assert info.num_images_written == 1 and all(split.num_examples > 0 for split in info.splits.values())
    assert info.num_examples == 16 * 16 and info.raster["chips_skipped"] == {}
    assert info.raster["split_by"] == "block:128"
    with rasterio.open(ortho) as ds:  # every chip lies in one 128 m block (64 pixels): grid-aligned here
        block_of = {}
        for split in info.splits:
            for _, _, meta in reader.load(str(out), split=split, batch_size=None, shuffle=False, with_metadata=True).as_numpy_iterator():
                y, x = (int(v) for v in meta["source_crop_box"][:2])
                block_of.setdefault((y // 64, x // 64), set()).add(split)
                assert meta["geo_transform"][0] == pytest.approx(ds.transform.c + 2.0 * x)
    assert all(len(splits) == 1 for splits in block_of.values()) and len(block_of) == 64

    # Per-band statistics per split (Beam combiners) against numpy over the stored chips.
    for split in info.splits:
        stored = np.stack([img for img, _ in reader.load(str(out), split=split, batch_size=None, shuffle=False, normalize="none").as_numpy_iterator()])
        stats = info.raster["stats"][split]
        values = stored.reshape(-1, 3).astype(np.float64)
        assert (stats["images"], stats["pixels"]) == (len(stored), values.shape[0])
        np.testing.assert_allclose(stats["mean"], values.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(stats["std"], values.std(axis=0), rtol=1e-5)
        assert stats["min"] == values.min(axis=0).tolist() and stats["max"] == values.max(axis=0).tolist()
        for q in (2, 98):
            assert stats[f"p{q}"] == np.percentile(values, q, axis=0, method="inverted_cdf").tolist()
    train = info.raster["stats"]["train"]
    # Two reads compared batch for batch: the order is only promised with a seed (reader.ReadConfig).
    raw, _ = next(iter(reader.load(str(out), batch_size=8, shuffle=False, seed=0, normalize="none")))
    normalized, _ = next(iter(reader.load(str(out), batch_size=8, shuffle=False, seed=0, normalize="dataset")))
    expected = (raw.numpy().astype(np.float32) - np.float32(train["mean"])) / np.float32(train["std"])
    np.testing.assert_allclose(normalized.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_stable_raster_shards_are_the_same_in_process_and_on_two_workers(tmp_path: Path) -> None:
    """Raster tasks' chips are shards of their own, renamed parts (transforms/sharding.py): the
    same files, byte for byte, whichever worker wrote which task, with several tasks per raster,
    several pieces per task and three splits."""
    inputs = tmp_path / "in"
    for seed in (1, 2):
        rastergen.write_raster(inputs / f"scene{seed}.tif", rastergen.multispectral(640, 512, bands=3, seed=seed), origin=(487552.0, 4443520.0 + 2048.0 * seed))
    args = ["--input", str(inputs), "--crop", "grid", "--size", "32x32", "--bands", "1,2,3", "--dtype", "keep", "--label_from", "none",
            "--split", "train=0.6,validation=0.2,test=0.2", "--split_by", "block:128", "--target_shard_mb", "0.05"]
    runners = {"a": IN_PROCESS, "b": ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2", "--progress=off"]}
    infos = [run([*args, "--output", str(tmp_path / name), *runner], command_line=["cropshard", "build"]).info for name, runner in runners.items()]
    assert all(info.shard_contents == metadata.SHARD_CONTENTS_STABLE for info in infos)
    assert infos[0].splits == infos[1].splits and infos[0].num_examples == 2 * 20 * 16
    # 2 rasters x 2 tasks (about 256 chips each) x 3 splits, each cut at ~50 KB (6 KB chips)
    assert all(len(split.shards) > 4 for split in infos[0].splits.values())
    for split in infos[0].splits.values():
        for shard in split.shards:
            for file in (shard.file, shard.index):
                assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert not any(path.name.startswith("beam-temp") for path in (tmp_path / "b").iterdir())
    report = reader.verify(str(tmp_path / "b"))
    assert report.ok, str(report)
    chips = [meta["source_crop_box"].tolist() for split in infos[0].splits
             for _, _, meta in reader.load(str(tmp_path / "b"), split=split, batch_size=None, shuffle=False, with_metadata=True).as_numpy_iterator()]
    assert len(chips) == 640 and len({tuple(box) for box in chips}) == 320  # every chip once per raster


def test_label_rasters_majority_and_mask_through_the_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    values = np.kron(rng.choice([1, 2, 3], size=(10, 10)), np.ones((8, 8), np.uint8)).astype(np.uint8)  # 80x80 class map
    image = rastergen.multispectral(64, 64, bands=3, high=256).astype(np.uint8)
    rastergen.write_raster(tmp_path / "images" / "tile.tif", image)
    # Shifted by (8, 4) pixels: the class map's origin is 4 pixels left and 8 above the image's.
    rastergen.write_raster(tmp_path / "labels" / "tile_lc.tif", values[None], origin=(487548.0 - 8.0, 4443554.0 + 16.0))
    aligned = values[8:72, 4:68]
    names = tmp_path / "classes.csv"
    names.write_text("value,name\n1,water\n2,crops\n3,trees\n")
    common = ["--input", str(tmp_path / "images"), "--crop", "grid", "--size", "16x16", "--encoding", "png",
              "--label_raster", "{dir}/../labels/{stem}_lc.tif", "--label_names", str(names)]

    out = tmp_path / "majority"
    info = build(*common, "--output", str(out), "--min_label_fraction", "0.6")
    assert info.labels == ("water", "crops", "trees") and info.raster["labels"]["mode"] == "majority"
    kept = 0
    for img, label, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        y, x, h, w = (int(v) for v in meta["source_crop_box"])
        counts = np.bincount(aligned[y : y + h, x : x + w].ravel() - 1, minlength=3)
        assert label == int(np.argmax(counts)) and counts.max() / counts.sum() >= 0.6
        assert meta["label_text"].decode() == info.labels[label]
        np.testing.assert_array_equal(img, np.moveaxis(image[:, y : y + h, x : x + w], 0, -1))
        kept += 1
    assert kept + info.raster["chips_skipped"].get("label_fraction", 0) == 16 and kept == info.num_examples

    out = tmp_path / "mask"
    info = build(*common, "--output", str(out), "--label_mode", "mask")
    assert info.num_examples == 16
    for per_image_from in (decode.PER_IMAGE_RECORD_BYTES, 0):  # both batched routes: FixedSizeRoute, PerImageRoute
        monkeypatch.setattr(decode, "PER_IMAGE_RECORD_BYTES", per_image_from)
        check_masks(out, image, aligned)


def check_masks(out: Path, image: np.ndarray, aligned: np.ndarray) -> None:
    """Random crops of a mask dataset, flipped: each image and mask the same window of the raster and class map."""
    batches = reader.load(str(out), batch_size=4, shuffle=False, crop="random", crop_size=12, flip=True, seed=5, normalize="none", with_metadata=True)
    for images, masks, meta in batches.as_numpy_iterator():
        assert masks.shape == (4, 12, 12, 1) and masks.dtype == np.uint8
        for i in range(4):
            sy, sx = (int(v) for v in meta["source_crop_box"][i][:2])
            wy, wx, wh, ww = (int(v) for v in meta["crop_window"][i])
            expected_mask = aligned[sy + wy : sy + wy + wh, sx + wx : sx + wx + ww] - 1
            expected_image = np.moveaxis(image[:, sy + wy : sy + wy + wh, sx + wx : sx + wx + ww], 0, -1)
            if meta["flipped"][i]:
                expected_mask, expected_image = expected_mask[:, ::-1], expected_image[:, ::-1]
            np.testing.assert_array_equal(masks[i, :, :, 0], expected_mask)
            np.testing.assert_array_equal(images[i], expected_image)


@pytest.mark.parametrize("rule", ["percentile:2,98", "minmax"])
def test_dataset_range_rules_stretch_by_the_whole_dataset(tmp_path: Path, rule: str) -> None:
    from cropshard.transforms.raster.convert import stretch_to_uint8

    inputs = tmp_path / "in"
    bright = (rastergen.multispectral(96, 96, bands=2, high=2000, seed=1) + 1000).astype(np.uint16)
    dark = (rastergen.multispectral(64, 64, bands=2, high=2000, seed=2) + 500).astype(np.uint16)
    rastergen.write_raster(inputs / "bright.tif", bright)
    rastergen.write_raster(inputs / "dark.tif", dark)
    out = tmp_path / "out"
    info = build("--input", str(inputs), "--output", str(out), "--crop", "grid", "--size", "32x32", "--bands", "1,2", "--encoding", "raw",
                 "--to_uint8", rule, "--label_from", "none")
    # Both rasters are under 1024 pixels a side, so their previews are every pixel.
    values = np.concatenate([bright.reshape(2, -1), dark.reshape(2, -1)], axis=1)
    if rule == "minmax":
        low, high = values.min(axis=1), values.max(axis=1)
    else:  # the lowest value of the 16-value histogram bin holding the percentile
        low = np.percentile(values, 2, axis=1, method="inverted_cdf") // 16 * 16
        high = np.percentile(values, 98, axis=1, method="inverted_cdf") // 16 * 16
    assert info.raster["to_uint8"] == rule
    assert info.raster["to_uint8_range"] == {"uint16": {"low": low.astype(float).tolist(), "high": high.astype(float).tolist()}}
    assert info.num_examples == 9 + 4
    for image, _, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        np.testing.assert_array_equal(image, stretch_to_uint8(window_read(meta["filename"].decode(), meta["source_crop_box"]), low, high))


def test_manifest_label_raster_column(tmp_path: Path) -> None:
    values = np.kron(np.array([[1, 2], [3, 1]], np.uint8), np.ones((16, 16), np.uint8))  # 32x32, one class per quadrant
    for name in ("a", "b"):
        rastergen.write_raster(tmp_path / "img" / f"{name}.tif", rastergen.multispectral(32, 32, bands=1, high=256).astype(np.uint8))
    rastergen.write_raster(tmp_path / "lc" / "a_classes.tif", values[None])
    (tmp_path / "classes.csv").write_text("1,water\n2,crops\n3,trees\n")
    manifest = tmp_path / "rows.csv"
    manifest.write_text("path,label_raster\nimg/a.tif,lc/a_classes.tif\nimg/b.tif,\n")
    out = tmp_path / "out"
    info = build("--manifest", str(manifest), "--output", str(out), "--crop", "grid", "--size", "16x16", "--channels", "1", "--label_names", str(tmp_path / "classes.csv"))
    assert rejected(out) == {"b.tif": "label_raster_missing"}
    labels = sorted((tuple(int(v) for v in meta["source_crop_box"][:2]), int(label))
                    for _, label, meta in reader.load(str(out), batch_size=None, shuffle=False, with_metadata=True).as_numpy_iterator())
    assert labels == [((0, 0), 0), ((0, 16), 1), ((16, 0), 2), ((16, 16), 0)]
    assert info.labels == ("water", "crops", "trees")


def test_class_names_from_the_class_maps_category_tables(tmp_path: Path) -> None:
    """No --label_names: the names are the first class map's GDAL category table, recorded like
    --label_names; a class map naming its classes otherwise, or not at all, is rejected."""
    values = np.kron(np.array([[1, 2], [3, 1]], np.uint8), np.ones((16, 16), np.uint8))  # one class per quadrant
    for name, names in (("a", ["", "water", "crops", "trees"]), ("b", ["", "water", "crops", "trees"]), ("c", ["", "lake", "crops", "trees"]), ("d", None)):
        rastergen.write_raster(tmp_path / "img" / f"{name}.tif", rastergen.multispectral(32, 32, bands=1, high=256).astype(np.uint8))
        class_map = rastergen.write_raster(tmp_path / "lc" / f"{name}.tif", values[None])
        if names:
            rastergen.write_category_table(class_map, names=names)
    common = ["--input", str(tmp_path / "img"), "--crop", "grid", "--size", "16x16", "--channels", "1", "--label_raster", "{dir}/../lc/{name}"]
    out = tmp_path / "tables"
    info = build(*common, "--output", str(out))
    assert rejected(out) == {"c.tif": "label_names_mismatch", "d.tif": "label_names_mismatch"}
    assert (info.num_inputs, info.num_images_written, info.num_examples) == (4, 2, 8)
    assert info.labels == ("water", "crops", "trees") and (out / "labels.txt").read_text().split() == ["water", "crops", "trees"]
    assert info.raster["labels"]["names_from"] == f"category table of {tmp_path / 'lc' / 'a.tif'}"
    assert [c["name"] for c in info.raster["labels"]["classes"]] == ["water", "crops", "trees"]
    text = (out / metadata.REJECTED_FILENAME).read_text()
    assert "value 1 is 'lake' here, 'water' in the dataset" in text and "has no category table" in text
    labels = sorted((Path(meta["filename"].decode()).name, tuple(int(v) for v in meta["source_crop_box"][:2]), int(label))
                    for _, label, meta in reader.load(str(out), batch_size=None, shuffle=False, with_metadata=True).as_numpy_iterator())
    assert labels == [(name, box, label) for name in ("a.tif", "b.tif") for box, label in (((0, 0), 0), ((0, 16), 1), ((16, 0), 2), ((16, 16), 0))]

    (tmp_path / "classes.csv").write_text("1,lake\n2,crops\n3,trees\n")  # --label_names wins; a's differing table is reported
    out = tmp_path / "csv"
    info = build(*common, "--output", str(out), "--label_names", str(tmp_path / "classes.csv"))
    assert rejected(out) == {} and info.labels == ("lake", "crops", "trees") and info.num_examples == 16
    assert info.raster["labels"]["category_table_conflict"] == f"{tmp_path / 'lc' / 'a.tif.aux.xml'}: value 1 is 'water' here, 'lake' in the dataset"


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_float32_and_int16_keep_through_the_reader(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(3)
    data = (rng.normal(0, 1, (2, 48, 40)) if dtype == "float32" else rng.integers(-3000, 3000, (2, 48, 40))).astype(dtype)
    path = rastergen.write_raster(tmp_path / "in" / "dem.tif", data)
    out = tmp_path / "out"
    info = build("--input", str(tmp_path / "in"), "--output", str(out), "--crop", "center", "--size", "32x24", "--bands", "2,1",
                 "--dtype", "keep", "--label_from", "none")
    assert info.raster["dtype"] == dtype and info.image_shape == (32, 24, 2)
    (image, _, meta), = reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator()
    assert image.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(image, window_read(str(path), meta["source_crop_box"], [2, 1]))
    unit, _ = next(iter(reader.load(str(out), batch_size=1, shuffle=False, normalize="unit")))
    scale = 1.0 if dtype == "float32" else 32767.0
    np.testing.assert_allclose(unit.numpy()[0], image.astype(np.float32) / scale, rtol=1e-6)


def test_photos_beside_rasters_read_with_metadata_and_no_partial_dataset_statistics(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    imagegen.save(inputs / "a_photo.png", imagegen.photo(48, 48))
    imagegen.save(inputs / "b_photo.jpg", imagegen.photo(48, 48, seed=1))
    scene = rastergen.write_raster(inputs / "scene.tif", rastergen.multispectral(64, 64, bands=3, high=4096))
    out = tmp_path / "out"
    info = build("--input", str(inputs), "--output", str(out), "--crop", "center", "--size", "32x32", "--to_uint8", "bits:12",
                 "--encoding", "png", "--label_from", "none")
    assert (info.num_examples, info.raster["num_rasters"], info.raster["stats"]["train"]["images"]) == (3, 1, 1)

    # Unbatched and batched: the photos' rows carry no georeferencing (NaN, '') and still batch with the chip's.
    rows = {meta["filename"].decode(): meta for _, _, meta in
            reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator()}
    _, _, batch = next(reader.load(str(out), batch_size=3, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator())
    assert batch["geo_transform"].shape == (3, 6)
    with rasterio.open(scene) as ds:
        y, x, h, w = (int(v) for v in rows[str(scene)]["source_crop_box"])
        assert tuple(rows[str(scene)]["geo_transform"]) == ds.window_transform(Window(x, y, w, h)).to_gdal()
    for name in ("a_photo.png", "b_photo.jpg"):
        meta = rows[str(inputs / name)]
        assert np.isnan(meta["geo_transform"]).all() and meta["geo_crs"] == b""
    # The train statistics describe the one raster chip, not the photos: 'dataset' refuses them.
    with pytest.raises(reader.DatasetError, match="cover 1 of its 3 examples"):
        reader.load(str(out), normalize="dataset")
    # cropshard inspect lists the raster schema's longer keys in their own column.
    from cropshard.tools.inspect import describe

    assert "  image/segmentation/encoded  bytes\n" in describe(str(out), info, None)


def test_dtype_keep_of_a_uint8_first_raster_converts_nothing(tmp_path: Path) -> None:
    # keep resolved to uint8 had fallen back on the uint8 dataset's --to_uint8 rule: a uint16
    # raster (and 16-bit photos) later in path order were converted instead of refused.
    from cropshard.transforms.raster.records import png16

    inputs = tmp_path / "in"
    rastergen.write_raster(inputs / "0_pan.tif", rastergen.multispectral(64, 64, bands=1))  # first, but its band count is rejected
    scene = rastergen.write_raster(inputs / "a.tif", rastergen.multispectral(64, 64, bands=3, high=256).astype(np.uint8))
    rastergen.write_raster(inputs / "b.tif", rastergen.multispectral(64, 64, bands=3, high=4096), nbits=12)
    imagegen.save(inputs / "c_photo.png", imagegen.photo(48, 48))
    (inputs / "d_grey16.png").write_bytes(png16(rastergen.multispectral(48, 48, bands=1, high=65536).transpose(1, 2, 0)))
    (inputs / "e_rgb16.png").write_bytes(png16(rastergen.multispectral(48, 48, bands=3, high=65536).transpose(1, 2, 0)))
    out = tmp_path / "out"
    info = build("--input", str(inputs), "--output", str(out), "--crop", "center", "--size", "32x32", "--dtype", "keep", "--label_from", "none")
    assert rejected(out) == {"0_pan.tif": "band_mismatch", "b.tif": "band_mismatch", "d_grey16.png": "band_mismatch", "e_rgb16.png": "band_mismatch"}
    lines = {Path(row["path"]).name: row["message"] for row in map(json.loads, (out / metadata.REJECTED_FILENAME).read_text().splitlines())}
    assert all("--dtype keep" in lines[name] for name in ("b.tif", "d_grey16.png", "e_rgb16.png"))
    assert (info.raster["dtype"], info.raster["to_uint8"], info.num_examples) == ("uint8", None, 2)
    rows = {meta["filename"].decode(): (image, meta) for image, _, meta in
            reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator()}
    image, meta = rows[str(scene)]
    np.testing.assert_array_equal(image, window_read(str(scene), meta["source_crop_box"]))


def test_jpeg2000_rasters_are_chipped_by_gdal_with_their_georeferencing(tmp_path: Path) -> None:
    # Sentinel-2 band files (and many orthophotos) are JPEG 2000: they had gone to Pillow as
    # photos, a 12-bit band by the 16-bit rule and without its CRS, and a 4-band file not at all.
    inputs = tmp_path / "in"
    band = rastergen.write_jp2(inputs / "T13_B11.jp2", rastergen.multispectral(96, 70, bands=1, high=4096, seed=1), NBITS=12)
    other = rastergen.write_jp2(inputs / "T13_B12.jp2", rastergen.multispectral(64, 64, bands=1, high=4096, seed=2), crs="EPSG:32633", NBITS=12)
    bare = rastergen.write_jp2(inputs / "bare.j2k", rastergen.multispectral(40, 40, bands=1, high=4096, seed=3), crs=None, CODEC="J2K")
    out = tmp_path / "keep"
    info = build("--input", str(inputs), "--output", str(out), "--crop", "grid", "--size", "32x32", "--channels", "1", "--dtype", "keep", "--label_from", "none")
    assert (info.num_inputs, info.num_images_written, info.num_examples) == (3, 3, 3 * 2 + 2 * 2 + 1)
    assert info.raster["dtype"] == "uint16" and info.raster["crs_seen"] == ["", "EPSG:32613", "EPSG:32633"]
    seen = set()
    for image, _, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        path = meta["filename"].decode()
        np.testing.assert_array_equal(image, window_read(path, meta["source_crop_box"]))
        y, x, h, w = (int(v) for v in meta["source_crop_box"])
        with rasterio.open(path) as ds:
            if ds.crs is not None:
                assert tuple(meta["geo_transform"]) == ds.window_transform(Window(x, y, w, h)).to_gdal()
                assert meta["geo_crs"].decode() == f"EPSG:{ds.crs.to_epsg()}"
        seen.add(Path(path).name)
    assert seen == {band.name, other.name, bare.name}

    # uint8 by the bits the file declares (JPEG 2000 precision, GDAL's NBITS): v >> 4, histogram kept.
    out = tmp_path / "uint8"
    build("--input", str(band), "--output", str(out), "--crop", "grid", "--size", "32x32", "--channels", "1", "--label_from", "none")
    for image, _, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        np.testing.assert_array_equal(image, (window_read(str(band), meta["source_crop_box"]) >> 4).astype(np.uint8))
        assert len(np.unique(image)) > 50

    # A georeferenced 3-band orthophoto (GDAL marks it greyscale: Pillow cannot decode it) and a
    # JPEG 2000 photo (8-bit RGB, no CRS: still Pillow's) in one 3-channel build.
    ortho = rastergen.write_jp2(inputs / "rgb" / "ortho.jp2", rastergen.multispectral(64, 64, bands=3, high=256).astype(np.uint8))
    photo = imagegen.save(inputs / "rgb" / "photo.jp2", imagegen.photo(48, 48))
    # The same GDAL-written file without georeferencing: not a decode_error, a chip on the pixel grid.
    scan = rastergen.write_jp2(inputs / "rgb" / "scan.jp2", rastergen.multispectral(64, 64, bands=3, high=256, seed=5).astype(np.uint8), crs=None)
    out = tmp_path / "rgb"
    info = build("--input", str(inputs / "rgb"), "--output", str(out), "--crop", "center", "--size", "32x32", "--label_from", "none")
    assert (info.num_images_written, info.raster["num_rasters"], info.num_rejected) == (3, 2, 0)
    rows = {meta["filename"].decode(): (image, meta) for image, _, meta in
            reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator()}
    image, meta = rows[str(ortho)]
    np.testing.assert_array_equal(image, window_read(str(ortho), meta["source_crop_box"]))
    assert meta["geo_crs"] == b"EPSG:32613"
    assert rows[str(photo)][1]["geo_crs"] == b""
    image, meta = rows[str(scan)]
    np.testing.assert_array_equal(image, window_read(str(scan), meta["source_crop_box"]))
    assert meta["geo_crs"] == b"" and tuple(meta["geo_transform"]) == (16.0, 1.0, 0.0, 16.0, 0.0, 1.0)


@pytest.mark.parametrize("declared", [True, False], ids=["nodata-nan", "nan-undeclared"])
def test_float32_nan_nodata_gives_finite_strict_json_statistics(tmp_path: Path, declared: bool) -> None:
    """NaN in a float32 raster stays out of raster.stats: as `masked` pixels where the raster
    declares NaN its nodata, else as `nonfinite` samples. cropshard.json is strict JSON and
    normalize='dataset' is NaN only where the chip is."""
    data = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    data[:, :10, :10] = np.nan  # 100 nodata pixels in one corner: 10% of its 32x32 chip
    rastergen.write_raster(tmp_path / "in" / "refl.tif", data, nodata=float("nan") if declared else None)
    out = tmp_path / "out"
    info = build("--input", str(tmp_path / "in"), "--output", str(out), "--crop", "grid", "--size", "32x32", "--dtype", "keep",
                 *(["--max_nodata", "0.2"] if declared else []), "--label_from", "none")
    assert info.num_examples == 4
    json.loads((out / "cropshard.json").read_text(), parse_constant=lambda name: pytest.fail(f"cropshard.json holds {name}"))
    train = info.raster["stats"]["train"]
    assert train["pixels"] == 64 * 64
    assert (train["masked"], train["nonfinite"]) == ((100, [0, 0, 0]) if declared else (0, [100, 100, 100]))
    values = np.moveaxis(data, 0, -1).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(train["mean"], np.nanmean(values, axis=0), atol=1e-6)
    np.testing.assert_allclose(train["std"], np.nanstd(values, axis=0), atol=1e-5)
    raw, _ = next(iter(reader.load(str(out), batch_size=4, shuffle=False, seed=0, normalize="none")))
    normalized, _ = next(iter(reader.load(str(out), batch_size=4, shuffle=False, seed=0, normalize="dataset")))
    np.testing.assert_array_equal(np.isnan(normalized.numpy()), np.isnan(raw.numpy()))
    assert np.isnan(raw.numpy()).sum() == 300


def test_statistics_leave_out_a_scene_border_of_nodata_and_small_padding(tmp_path: Path) -> None:
    """A uint16 scene whose nodata (0) frames its data, and a raster smaller than the chip under
    --small pad: the per-band statistics are numpy's over the valid pixels of the stored chips
    alone (GDAL's rule); the border and the padding count as `masked`; normalize='dataset' uses
    those values."""
    rng = np.random.default_rng(3)
    scene = rng.integers(900, 3000, (3, 64, 64), dtype=np.uint16)
    valid = np.zeros((64, 64), bool)
    valid[12:60, 20:61] = True
    scene[:, ~valid] = 0
    rastergen.write_raster(tmp_path / "in" / "scene.tif", scene, nodata=0)
    small = rng.integers(900, 3000, (3, 20, 24), dtype=np.uint16)
    rastergen.write_raster(tmp_path / "in" / "small.tif", small, block=16)
    out = tmp_path / "out"
    info = build("--input", str(tmp_path / "in"), "--output", str(out), "--crop", "grid", "--size", "32x32", "--small", "pad",
                 "--dtype", "keep", "--label_from", "none")
    assert info.num_examples == 5  # 2 x 2 chips of the scene, 1 padded chip of the small raster
    train = info.raster["stats"]["train"]
    expected = np.concatenate([np.moveaxis(scene[:, valid], 0, -1), small.reshape(3, -1).T]).astype(np.float64)
    assert (train["pixels"], train["masked"]) == (5 * 32 * 32, 5 * 32 * 32 - len(expected))
    np.testing.assert_allclose(train["mean"], expected.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(train["std"], expected.std(axis=0), rtol=1e-5)
    assert train["min"] == expected.min(axis=0).tolist() and train["max"] == expected.max(axis=0).tolist()
    raw, _ = next(iter(reader.load(str(out), batch_size=5, shuffle=False, seed=0, normalize="none")))
    normalized, _ = next(iter(reader.load(str(out), batch_size=5, shuffle=False, seed=0, normalize="dataset")))
    want = (raw.numpy().astype(np.float32) - np.float32(train["mean"])) / np.float32(train["std"])
    np.testing.assert_allclose(normalized.numpy(), want, rtol=1e-5, atol=1e-5)


def test_dtype_keep_without_bands_that_fit_names_the_band_count_not_the_type(tmp_path: Path) -> None:
    """4-band rasters, --dtype keep, no --bands: the refusal said no input was a readable raster
    and advised naming the type, which failed again; the bands are what does not fit."""
    rastergen.write_raster(tmp_path / "in" / "scene.tif", rastergen.multispectral(64, 64, bands=4, high=4096))
    with pytest.raises(ValueError, match=r"first raster input whose bands fit the dataset, and none does: .*scene.tif: the raster has 4"
                                         r" bands and the dataset 3 \(--channels 3\); choose 3 of them with --bands .*, or store all 4 with --bands 1,2,3,4"):
        build("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--crop", "grid", "--size", "32x32", "--dtype", "keep",
              "--label_from", "none")


def test_a_16_bit_tiff_photo_is_turned_by_its_orientation_tag_or_refused(tmp_path: Path) -> None:
    """A 16-bit greyscale camera/scanner TIFF without georeferencing, tagged Orientation 6: GDAL
    reads the stored grid, so the raster path stored it unrotated with the crop box in the wrong
    frame. Without raster options it now takes the Pillow path (turned, as every photo's EXIF
    orientation is); with one (--dtype keep) it is refused, naming the tag."""
    from PIL import Image

    stored = np.random.default_rng(4).integers(0, 65536, (80, 120), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotated 90 degrees clockwise
    (tmp_path / "in").mkdir()
    Image.fromarray(stored).save(tmp_path / "in" / "scan.tif", exif=exif)
    shown = np.rot90(stored, k=-1)  # 120 x 80, as displayed
    out = tmp_path / "out"
    info = build("--input", str(tmp_path / "in"), "--output", str(out), "--crop", "center", "--size", "40x60", "--channels", "1",
                 "--label_from", "none")
    assert info.num_examples == 1
    (image, _, meta), = reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator()
    assert meta["source_crop_box"].tolist() == [40, 10, 40, 60]
    np.testing.assert_array_equal(image[..., 0], (shown[40:80, 10:70] >> 8).astype(np.uint8))
    with pytest.raises(BuildFailed):
        build("--input", str(tmp_path / "in"), "--output", str(tmp_path / "kept"), "--crop", "center", "--size", "40x60",
              "--channels", "1", "--dtype", "keep", "--label_from", "none")
    (row,) = map(json.loads, (tmp_path / "kept" / metadata.REJECTED_FILENAME).read_text().splitlines())
    assert row["reason"] == "decode_error" and "Orientation tag is 6" in row["message"]


def test_cropshard_json_records_the_to_uint8_rule_given_alone(tmp_path: Path) -> None:
    # --to_uint8 is the only raster option here (the README's panchromatic command): the raster
    # section must still say bits:11, the rule every chip was converted by, not the default.
    inputs = tmp_path / "in"
    rastergen.write_raster(inputs / "pan.tif", rastergen.multispectral(64, 64, bands=1, high=2048))
    info = build("--input", str(inputs), "--output", str(tmp_path / "out"), "--crop", "grid", "--size", "32x32", "--channels", "1",
                 "--label_from", "none", "--to_uint8", "bits:11")
    assert info.num_examples == 4 and info.raster["to_uint8"] == "bits:11"


def test_encoding_original_chips_rasters_as_png_with_their_bands_and_georeferencing(tmp_path: Path) -> None:
    """`--encoding original` sent every GeoTIFF to Pillow: records without georeferencing, bands
    1,2,3 under a cropshard.json saying --bands 3,2,1, and a 12-bit GeoTIFF rejected decode_error.
    A raster has no source bytes a reader decodes: its chips take the raster path and are stored
    as PNG, which keeps their samples."""
    import tensorflow as tf

    inputs = tmp_path / "in"
    rastergen.write_raster(inputs / "scene" / "rgb12.tif", rastergen.multispectral(60, 70, bands=3, high=4096, seed=4))
    rastergen.write_raster(inputs / "scene" / "other.tif", rastergen.multispectral(50, 40, bands=3, high=4096, seed=5), crs="EPSG:3857")
    out = tmp_path / "out"
    info = build("--input", str(inputs), "--output", str(out), "--crop", "none", "--encoding", "original", "--bands", "3,2,1", "--dtype", "keep")

    assert rejected(out) == {} and info.num_examples == 2 and info.raster["bands"] == [3, 2, 1] and info.raster["dtype"] == "uint16"
    shards = [str(out / shard.file) for shard in info.splits["train"].shards]
    assert {tf.train.Example.FromString(r.numpy()).features.feature["image/format"].bytes_list.value[0] for r in tf.data.TFRecordDataset(shards)} == {b"png"}
    seen = 0
    for image, _, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        path = meta["filename"].decode()
        np.testing.assert_array_equal(image, window_read(path, meta["source_crop_box"], bands=[3, 2, 1]))
        with rasterio.open(path) as ds:
            assert tuple(meta["geo_transform"]) == ds.transform.to_gdal() and meta["geo_crs"].decode() == f"EPSG:{ds.crs.to_epsg()}"
        seen += 1
    assert seen == 2


def test_a_stretched_float_rasters_nan_and_infinite_samples_are_nodata(tmp_path: Path) -> None:
    """--to_uint8 minmax on a float32 raster without a declared nodata: the NaN hole became 0 and
    +inf 255, counted as data in raster.stats and never towards --max_nodata. They are no data."""
    data = (np.random.default_rng(2).random((3, 64, 64)) * 0.5 + 0.25).astype(np.float32)
    data[:, :10, :10] = np.nan  # 100 pixels of the first 32x32 chip
    data[0, 40, 40] = np.inf  # one pixel of the last chip
    data[:, 32:, :32] = np.nan  # the whole third chip
    rastergen.write_raster(tmp_path / "in" / "refl.tif", data)
    out = tmp_path / "out"
    info = build("--input", str(tmp_path / "in"), "--output", str(out), "--crop", "grid", "--size", "32x32", "--to_uint8", "minmax",
                 "--max_nodata", "0.5", "--label_from", "none")
    assert info.num_examples == 3 and info.raster["chips_skipped"] == {"nodata": 1}
    train = info.raster["stats"]["train"]
    assert (train["pixels"], train["masked"]) == (3 * 32 * 32, 101) and "nonfinite" not in train
    assert min(train["p1"]) > 0  # counted as data, the hole's 100 zeros (3% of the pixels) made p1 0
