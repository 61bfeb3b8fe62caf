"""Class names from a class map's own category table (transforms/raster/categories.py): the PAM
sidecars GDAL itself writes (tests/rastergen.py write_category_table), the refusals, and the
check every class map passes when the names come from the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cropshard.reader import schema
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.raster import categories
from cropshard.transforms.raster.labels import LabelRasterSpec
from cropshard.transforms.raster.records import HEAD_BYTES, RasterSpec, open_job
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import ImageSource

from tests import rastergen

NAMES = ((1, "water"), (2, "forest"), (4, "urban"))


def class_map(path: Path, values: np.ndarray | None = None, **kwargs) -> Path:
    values = values if values is not None else np.kron(np.array([[1, 2], [4, 3]], np.uint8), np.ones((16, 16), np.uint8))
    return rastergen.write_raster(path, values[None], **kwargs)


def test_gdal_category_names_and_attribute_tables_are_read(tmp_path: Path) -> None:
    both = class_map(tmp_path / "both.tif")
    rastergen.write_category_table(both, names=["", "water", "forest", "", "urban"], table=list(NAMES))
    assert categories.read_category_table(str(both)) == NAMES
    names_only = class_map(tmp_path / "names.tif")
    rastergen.write_category_table(names_only, names=["", "water", "forest", "", "urban"])
    assert categories.read_category_table(str(names_only)) == NAMES
    table_only = class_map(tmp_path / "table.tif")
    rastergen.write_category_table(table_only, table=[(4, "urban"), (1, "water"), (2, "forest")])
    assert categories.read_category_table(str(table_only)) == NAMES
    binned = class_map(tmp_path / "binned.tif")  # rows are values 0, 1, 2, ...; unnamed rows name nothing
    rastergen.write_category_table(binned, binned=["", "water", "forest", "", "urban"])
    assert categories.read_category_table(str(binned)) == NAMES
    escaped = class_map(tmp_path / "escaped.tif")
    rastergen.write_category_table(escaped, names=["", "water & <sea>", "forêt"])
    assert categories.read_category_table(str(escaped)) == ((1, "water & <sea>"), (2, "forêt"))


def test_no_sidecar_or_no_table_for_band_one_is_none(tmp_path: Path) -> None:
    plain = class_map(tmp_path / "plain.tif")
    assert categories.read_category_table(str(plain)) is None
    stats_only = b'<PAMDataset><PAMRasterBand band="1"><Metadata><MDI key="STATISTICS_MEAN">2</MDI></Metadata></PAMRasterBand>' \
        b'<PAMRasterBand band="2"><CategoryNames><Category>a</Category></CategoryNames></PAMRasterBand></PAMDataset>'
    assert categories.parse_pam_categories(stats_only, "x.aux.xml") is None


def test_a_tables_single_text_column_names_its_rows() -> None:
    # NLCD land-cover sidecars (the stars package's lc.tif) name their classes in "Land Cover Class",
    # beside integer Value/Count and colour columns: refused as "no name column".
    xml = (b'<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable><FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>0</Usage>'
           b'</FieldDefn><FieldDefn index="1"><Name>Count</Name><Type>0</Type><Usage>0</Usage></FieldDefn><FieldDefn index="2">'
           b'<Name>Land Cover Class</Name><Type>2</Type><Usage>0</Usage></FieldDefn><Row index="0"><F>11</F><F>9</F><F>Open Water</F></Row>'
           b'<Row index="1"><F>21</F><F>3</F><F>Developed, Open Space</F></Row></GDALRasterAttributeTable></PAMRasterBand></PAMDataset>')
    assert categories.parse_pam_categories(xml, "lc.tif.aux.xml") == ((11, "Open Water"), (21, "Developed, Open Space"))
    two_texts = xml.replace(b'<FieldDefn index="1"><Name>Count</Name><Type>0</Type>', b'<FieldDefn index="1"><Name>Note</Name><Type>2</Type>')
    with pytest.raises(categories.CategoryTableError, match="no name column"):
        categories.parse_pam_categories(two_texts, "lc.tif.aux.xml")  # which of two texts names the class is not guessed


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
         b'<PAMDataset><PAMRasterBand band="1"><CategoryNames><Category>&b;</Category></CategoryNames></PAMRasterBand></PAMDataset>', "has a DTD"),
        (b'<!DOCTYPE PAMDataset SYSTEM "file:///etc/passwd"><PAMDataset/>', "has a DTD"),
        (b"<PAMDataset><PAMRasterBand band='1'>", "not well-formed XML"),
        (b"<VRTDataset/>", "not GDAL's <PAMDataset>"),
        (b'<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable><FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage>'
         b"</FieldDefn><Row index=\"0\"><F>1</F></Row></GDALRasterAttributeTable></PAMRasterBand></PAMDataset>", "no name column"),
        (b'<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable><FieldDefn index="0"><Name>Class_Name</Name><Type>2</Type><Usage>2</Usage>'
         b"</FieldDefn><Row index=\"0\"><F>water</F></Row></GDALRasterAttributeTable></PAMRasterBand></PAMDataset>", "no value column"),
        (b'<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable Row0Min="0.5" BinSize="1"><FieldDefn index="0"><Name>Name</Name><Type>2</Type>'
         b"<Usage>2</Usage></FieldDefn><Row index=\"0\"><F>water</F></Row></GDALRasterAttributeTable></PAMRasterBand></PAMDataset>", "not an integer"),
        (b'<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable><FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage>'
         b'</FieldDefn><FieldDefn index="1"><Name>Name</Name><Type>2</Type><Usage>2</Usage></FieldDefn><Row index="0"><F>1</F><F>a</F></Row>'
         b'<Row index="1"><F>1</F><F>b</F></Row></GDALRasterAttributeTable></PAMRasterBand></PAMDataset>', "distinct values"),
    ],
)
def test_unusable_tables_are_refused_with_a_reason(xml: bytes, message: str) -> None:
    with pytest.raises(categories.CategoryTableError, match=message):
        categories.parse_pam_categories(xml, "x.aux.xml")


def test_category_names_and_attribute_table_must_agree(tmp_path: Path) -> None:
    path = class_map(tmp_path / "split.tif")
    rastergen.write_category_table(path, names=["", "water", "forest"], table=[(1, "water"), (2, "trees")])
    with pytest.raises(categories.CategoryTableError, match="value 2 is 'trees' here, 'forest' in the category names"):
        categories.read_category_table(str(path))


def test_a_sidecar_too_large_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = class_map(tmp_path / "big.tif")
    rastergen.write_category_table(path, names=["", "water"])
    monkeypatch.setattr(categories, "MAX_SIDECAR_BYTES", 64)
    with pytest.raises(categories.CategoryTableError, match="larger than"):
        categories.read_category_table(str(path))


def test_difference_names_each_change() -> None:
    assert categories.difference(NAMES, NAMES) == ""
    text = categories.difference(NAMES, ((1, "water"), (2, "trees"), (5, "snow")))
    assert text == "value 2 is 'trees' here, 'forest' in the dataset; value 4 ('urban') missing here; value 5 ('snow') not in the dataset's classes"


def chips_of(image: Path, spec: LabelRasterSpec) -> list[schema.ImageRecord]:
    source = ImageSource(path=str(image), key=image.name, label="", split=None)
    raster = RasterSpec(dtype="uint16", labels=spec)
    with open_job(source, image.read_bytes()[:HEAD_BYTES], CropSpec("grid", size=(16, 16)), raster, 1, 10**9) as job:
        return [schema.decode_example(record) for _, record in job.records(0, "train", None, "raw", 90, "digest")]


def test_every_class_map_must_carry_the_datasets_table(tmp_path: Path) -> None:
    """The sidecar is data to cropshard, never to GDAL: a GeoTransform in it moves nothing."""
    image = rastergen.write_raster(tmp_path / "img" / "a.tif", rastergen.multispectral(32, 32, bands=1))
    labels = class_map(tmp_path / "lc" / "a.tif")
    sidecar = rastergen.write_category_table(labels, names=["", "water", "forest", "", "urban"])
    bogus = "<SRS>EPSG:4326</SRS><GeoTransform>0, 1, 0, 0, 0, -1</GeoTransform>"
    sidecar.write_text(sidecar.read_text().replace("<PAMDataset>", f"<PAMDataset>{bogus}", 1))
    (tmp_path / "img" / "a.tif.aux.xml").write_text(f"<PAMDataset>{bogus}</PAMDataset>")
    spec = LabelRasterSpec("{dir}/../lc/{name}", "majority", 0.0, NAMES, "category table of lc/a.tif", names_from_tables=True)

    records = chips_of(image, spec)
    by_origin = {record.crop_box[:2]: (record.label, record.label_text) for record in records}
    assert by_origin == {(0, 0): (0, "water"), (0, 16): (1, "forest"), (16, 0): (2, "urban")}  # value 3 names no class: skipped
    first = next(record for record in records if record.crop_box[:2] == (0, 0))
    assert tuple(first.geo_transform) == (487548.0, 2.0, 0.0, 4443554.0, 0.0, -2.0)  # the file's own georeferencing

    for names, expected in (
        (["", "water", "trees", "", "urban"], "value 2 is 'trees' here, 'forest' in the dataset"),
        (None, "has no category table"),
    ):
        sidecar.unlink(missing_ok=True)
        other = class_map(tmp_path / "lc" / "a.tif")
        if names:
            rastergen.write_category_table(other, names=names)
        with pytest.raises(Rejected) as err:
            chips_of(image, spec)
        assert err.value.reason == "label_names_mismatch" and expected in err.value.message
    # With --label_names the tables are not consulted per class map (the launcher compares the first).
    assert len(chips_of(image, LabelRasterSpec("{dir}/../lc/{name}", "majority", 0.0, NAMES, "--label_names file c.csv"))) == 3
