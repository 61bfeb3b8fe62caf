"""Raster inputs on gs:// (the GCS API emulator, see tests/gcs_emulator.py): rasterio reads the
objects through Beam's FileSystems (one file object per input, GDAL opens no URL), windowed,
with --dtype keep resolved from a gs:// raster; chips of GeoTIFFs and a JPEG 2000 equal rasterio
window reads of the originals; a VRT object named .tif and a JPEG 2000 cut short are rejected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cropshard.pipeline.build import run
from cropshard.reader import metadata, schema
from cropshard.transforms.raster.open_raster import open_raster
from cropshard.transforms.rejects import Rejection
from rasterio.windows import Window

from tests import rastergen
from tests.gcs_emulator import GcsEmulator, emulator_environment
from tests.integration.test_gcs import read_records, read_text

pytestmark = [pytest.mark.gcs, pytest.mark.slow]

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    with GcsEmulator.running(buckets=("bucket",)) as emulator, pytest.MonkeyPatch.context() as monkeypatch:
        emulator_environment(monkeypatch, emulator, tmp_path_factory.mktemp("gcs-env"))
        yield emulator


def test_raster_build_from_gs(gcs: GcsEmulator, tmp_path: Path) -> None:
    local = tmp_path / "rasters"
    first = rastergen.write_raster(local / "scene" / "a.tif", rastergen.multispectral(96, 80, bands=4, seed=3), overviews=(2,))
    rastergen.write_raster(local / "scene" / "b.tif", rastergen.multispectral(64, 64, bands=4, seed=4), crs="EPSG:3857", origin=(100.0, 900.0))
    rastergen.write_jp2(local / "scene" / "c.jp2", rastergen.multispectral(64, 64, bands=4, seed=5), crs="EPSG:32633")
    cut = rastergen.write_jp2(local / "scene" / "cut.jp2", rastergen.multispectral(64, 64, bands=4, seed=6))
    cut.write_bytes(cut.read_bytes()[:-100])  # an interrupted upload: found through Beam's file object too
    (local / "scene" / "vrt.tif").write_text(f'<VRTDataset><VRTRasterBand><SimpleSource><SourceFilename>{first}</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>')
    uploaded = gcs.upload_tree(local, "gs://bucket/rasters")
    with open_raster(uploaded[str(first)]) as dataset:  # GDAL reads the object through Beam, not a URL
        assert dataset.count == 4 and dataset.crs.to_epsg() == 32613 and dataset.overviews(1) == [2]

    out = "gs://bucket/out"
    info = run(
        ["--input=gs://bucket/rasters/**", f"--output={out}", "--temp_location=gs://bucket/tmp", "--crop=grid", "--size=32x32",
         "--bands=1,2,3,4", "--dtype=keep", "--num_shards=1", *IN_PROCESS],
        command_line=["test"],
    ).info
    assert info.raster["dtype"] == "uint16" and sorted(info.raster["crs_seen"]) == ["EPSG:32613", "EPSG:32633", "EPSG:3857"]
    assert info.rejected == {"raster_reference": 1, "truncated": 1} and info.num_images_written == 3
    rejections = {Rejection.from_json(line).path: Rejection.from_json(line).reason for line in read_text(f"{out}/{metadata.REJECTED_FILENAME}").splitlines()}
    assert rejections == {uploaded[str(local / "scene" / "vrt.tif")]: "raster_reference", uploaded[str(cut)]: "truncated"}
    originals = {url: path for path, url in uploaded.items()}
    seen = 0
    for shard in info.splits["train"].shards:
        for serialized in read_records(f"{out}/{shard.file}"):
            record = schema.decode_example(serialized)
            y, x, h, w = record.crop_box
            with rasterio.open(originals[record.filename]) as ds:
                expected = np.moveaxis(ds.read(window=Window(x, y, w, h)), 0, -1)
                assert record.geo_transform == ds.window_transform(Window(x, y, w, h)).to_gdal()
            pixels = np.frombuffer(record.encoded, "<u2").reshape(h, w, 4)
            np.testing.assert_array_equal(pixels, expected)
            seen += 1
    assert seen == info.num_examples == 3 * 2 + 2 * 2 + 2 * 2


def test_class_names_from_a_gs_class_maps_category_table(gcs: GcsEmulator, tmp_path: Path) -> None:
    """The class map's .aux.xml is read through Beam's FileSystems too (launcher and workers)."""
    local = tmp_path / "tree"
    values = np.kron(np.array([[1, 2], [2, 1]], np.uint8), np.ones((16, 16), np.uint8))
    for name, names in (("a", ["", "water", "crops"]), ("b", ["", "water", "trees"])):
        rastergen.write_raster(local / "img" / f"{name}.tif", rastergen.multispectral(32, 32, bands=1, seed=5))
        rastergen.write_category_table(rastergen.write_raster(local / "lc" / f"{name}.tif", values[None]), names=names)
    uploaded = gcs.upload_tree(local, "gs://bucket/labelled")
    assert f"{uploaded[str(local / 'lc' / 'a.tif')]}.aux.xml" in uploaded.values()

    out = "gs://bucket/labelled-out"
    info = run(
        ["--input=gs://bucket/labelled/img/*.tif", f"--output={out}", "--temp_location=gs://bucket/tmp", "--crop=grid", "--size=16x16",
         "--channels=1", "--dtype=keep", "--label_raster={dir}/../lc/{name}", "--num_shards=1", *IN_PROCESS],
        command_line=["test"],
    ).info
    assert info.labels == ("water", "crops") and info.raster["labels"]["names_from"] == "category table of gs://bucket/labelled/lc/a.tif"
    assert info.rejected == {"label_names_mismatch": 1} and info.num_images_written == 1
    (line,) = read_text(f"{out}/{metadata.REJECTED_FILENAME}").splitlines()
    assert Rejection.from_json(line).path == uploaded[str(local / "img" / "b.tif")] and "'trees' here, 'crops' in the dataset" in line
    labels = sorted((schema.decode_example(r).crop_box[:2], schema.decode_example(r).label) for r in read_records(f"{out}/{info.splits['train'].shards[0].file}"))
    assert labels == [((0, 0), 0), ((0, 16), 1), ((16, 0), 1), ((16, 16), 0)]
