"""Where the class names of --label_raster come from, decided before the job
(transforms/raster/launch.py resolve_label_names): --label_names, else the first class map's
category table (a GDAL .aux.xml sidecar, written here by GDAL itself)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.pipeline.options import build_config
from cropshard.transforms.raster.launch import resolve_label_names

from tests import rastergen

PATTERN = "{dir}/../lc/{name}"


def resolved(*args: str):
    config = resolve_label_names(build_config(PipelineOptions(list(args))))
    return config.example.raster.labels


def scene(root: Path, name: str, names: list[str] | None) -> None:
    rastergen.write_raster(root / "img" / name, rastergen.multispectral(32, 32, bands=1))
    class_map = rastergen.write_raster(root / "lc" / name, np.ones((1, 32, 32), np.uint8))
    if names is not None:
        rastergen.write_category_table(class_map, names=names)


def test_names_come_from_the_first_class_maps_table(tmp_path: Path) -> None:
    scene(tmp_path, "a.tif", ["", "water", "", "urban"])
    scene(tmp_path, "b.tif", ["", "water", "trees"])  # differs: rejected by the workers, not here
    spec = resolved(f"--input={tmp_path / 'img'}", "--output=/out", "--crop=grid", "--size=16x16", f"--label_raster={PATTERN}")
    assert spec.classes == ((1, "water"), (3, "urban")) and spec.names == ("water", "urban")
    assert spec.names_from_tables and spec.names_from == f"category table of {tmp_path / 'lc' / 'a.tif'}"
    assert spec.to_dict()["classes"] == [{"id": 0, "value": 1, "name": "water"}, {"id": 1, "value": 3, "name": "urban"}]


def test_no_table_and_no_label_names_stops_the_launcher(tmp_path: Path) -> None:
    scene(tmp_path, "a.tif", None)
    args = [f"--input={tmp_path / 'img'}", "--output=/out", "--crop=grid", "--size=16x16"]
    with pytest.raises(ValueError, match=r"the first class map, .*a\.tif, has none .*give --label_names classes\.csv"):
        resolved(*args, f"--label_raster={PATTERN}")
    with pytest.raises(ValueError, match="no class map was found"):
        resolved(*args, "--label_raster={dir}/../nowhere/{name}")
    (tmp_path / "lc" / "a.tif.aux.xml").write_text("<PAMDataset><PAMRasterBand band='1'>")
    with pytest.raises(ValueError, match="category table is unusable: .*not well-formed XML"):
        resolved(*args, f"--label_raster={PATTERN}")


def test_label_names_win_and_a_differing_table_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    scene(tmp_path, "a.tif", ["", "water", "trees"])
    csv = tmp_path / "classes.csv"
    csv.write_text("value,name\n1,water\n2,forest\n")
    args = [f"--input={tmp_path / 'img'}", "--output=/out", "--crop=grid", "--size=16x16", f"--label_raster={PATTERN}", f"--label_names={csv}"]
    with caplog.at_level(logging.WARNING, logger="cropshard"):
        spec = resolved(*args)
    assert spec.classes == ((1, "water"), (2, "forest")) and not spec.names_from_tables
    assert spec.names_from == f"--label_names file {csv}"
    assert spec.table_conflict == f"{tmp_path / 'lc' / 'a.tif.aux.xml'}: value 2 is 'trees' here, 'forest' in the dataset"
    assert spec.to_dict()["category_table_conflict"] == spec.table_conflict
    assert "--label_names wins over the first class map's own category table" in caplog.text

    (tmp_path / "lc" / "a.tif.aux.xml").unlink()
    scene(tmp_path, "a.tif", ["", "water", "forest"])
    assert resolved(*args).table_conflict == "" and "category_table_conflict" not in resolved(*args).to_dict()


def test_a_manifest_label_raster_column_gives_the_first_class_map(tmp_path: Path) -> None:
    scene(tmp_path, "a.tif", ["", "water"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label_raster\nimg/a.tif,lc/a.tif\n")
    csv = tmp_path / "classes.csv"
    csv.write_text("1,lake\n")
    spec = resolved(f"--manifest={manifest}", "--output=/out", "--crop=grid", "--size=16x16", f"--label_names={csv}")
    assert spec.table_conflict.endswith("a.tif.aux.xml: value 1 is 'water' here, 'lake' in the dataset")


@pytest.mark.parametrize("kind,with_class_maps,without", [
    ("csv", "path,label_raster\nimg/a.tif,lc/a.tif\n", "path,label\nimg/a.tif,x\n"),
    # JSONL: the first row has no class map, the key in a later row still turns class maps on;
    # an empty key or a line that is not JSON does not.
    ("jsonl", '{"path": "img/other.tif"}\n{"path": "img/a.tif", "label_raster": "lc/a.tif"}\n',
     '{"path": "img/a.tif", "label_raster": ""}\nnot json but "label_raster"\n'),
])
def test_a_manifest_naming_class_maps_needs_no_label_names(tmp_path: Path, kind: str, with_class_maps: str, without: str) -> None:
    scene(tmp_path, "a.tif", ["", "water"])
    manifest = tmp_path / f"m.{kind}"
    manifest.write_text(with_class_maps)
    spec = resolved(f"--manifest={manifest}", "--output=/out", "--crop=grid", "--size=16x16")
    assert spec.pattern is None and spec.classes == ((1, "water"),) and spec.names_from_tables
    plain = tmp_path / f"plain.{kind}"
    plain.write_text(without)
    assert resolved(f"--manifest={plain}", "--output=/out", "--crop=grid", "--size=16x16") is None
