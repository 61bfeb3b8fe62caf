"""The raster path without Beam: windowed reads against rasterio, the uint8 rules and their
collapse check, chip transforms, nodata shares, spatial-block splits and the GDAL safety rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from cropshard.reader import schema
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.raster import chips, convert
from cropshard.transforms.raster.open_raster import jp2_header
from cropshard.transforms.raster.records import (
    ENUMCS_GREYSCALE,
    HEAD_BYTES,
    RasterSpec,
    encode_chip,
    open_job,
    parse_bands,
    parse_split_by,
    parse_split_crs,
    pillow_decodes_jpeg2000,
)
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import ImageSource
from rasterio.windows import Window

from tests import rastergen

FRACTIONS = (("train", 0.6), ("validation", 0.2), ("test", 0.2))


def source(path: Path) -> ImageSource:
    return ImageSource(path=str(path), key=path.name, label="", split=None)


def job_records(path: Path, crop: CropSpec, raster: RasterSpec, channels: int, fractions=(("train", 1.0),)):
    """Every (split, decoded record) of one raster, plus the job's skip counts."""
    src = source(path)
    with open_job(src, path.read_bytes()[:HEAD_BYTES], crop, raster, channels, 10**9) as job:
        assert job is not None
        out = [(split, schema.decode_example(rec)) for split, rec in job.records(3, "train", fractions, "raw", 90, "digest")]
        return out, dict(job.skipped)


def pixels_of(record: schema.ImageRecord) -> np.ndarray:
    return np.frombuffer(record.encoded, np.dtype(record.dtype).newbyteorder("<")).reshape(record.height, record.width, record.channels)


def reference_window(path: Path, box, bands=None) -> np.ndarray:
    y, x, h, w = box
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(bands, window=Window(x, y, w, h)), 0, -1)


# --- sample types -------------------------------------------------------------------------------


def test_bits_rule_keeps_the_top_eight_significant_bits() -> None:
    values = np.array([0, 7, 8, 1023, 2047, 4095], np.uint16)
    assert convert.to_uint8(values, 11).tolist() == [0, 0, 1, 127, 255, 255]  # above 11 bits saturates
    assert convert.to_uint8(values, 16).tolist() == (values >> 8).tolist()  # the photos' top-byte rule
    assert convert.to_uint8(np.array([0, 1], np.uint8), 1).tolist() == [0, 255]
    assert convert.to_uint8(np.array([-5, 300], np.int16), 15).tolist() == [0, 2]


def test_uint8_rule_parsing_and_bits_from_metadata() -> None:
    assert convert.parse_uint8_rule("bits") == convert.Uint8Rule("bits", None)
    assert str(convert.parse_uint8_rule("bits:11")) == "bits:11"
    assert convert.parse_uint8_rule("minmax").needs_dataset_range
    assert str(convert.parse_uint8_rule("percentile:2,98")) == "percentile:2,98"
    for bad in ("minmax:1", "bits:0", "bits:17", "bits:x", "percentile:98,2", "percentile:2"):
        with pytest.raises(ValueError):
            convert.parse_uint8_rule(bad)
    assert convert.stretch_to_uint8(np.array([[100, 0], [300, 10], [500, 20]]), (100, 0), (500, 10)).tolist() == [[0, 0], [128, 255], [255, 255]]
    assert convert.conversion_bits("uint16", "11", convert.Uint8Rule()) == 11
    assert convert.conversion_bits("uint16", None, convert.Uint8Rule()) == 16
    assert convert.conversion_bits("uint16", "11", convert.Uint8Rule("bits", 12)) == 12
    with pytest.raises(Rejected, match="--dtype keep") as err:
        convert.conversion_bits("float32", None, convert.Uint8Rule())
    assert err.value.reason == "band_mismatch"


def test_collapse_check_names_the_options_and_spares_constant_sources() -> None:
    tracker = convert.RangeTracker()
    values = np.arange(0, 2048, dtype=np.uint16)
    tracker.add(values, convert.to_uint8(values, 16))
    with pytest.raises(Rejected, match=r"bits:11.*--dtype keep") as err:
        tracker.check(convert.Uint8Rule(), 16, "uint16")
    assert err.value.reason == "range_collapsed"
    constant = convert.RangeTracker()
    constant.add(np.zeros(10, np.uint16), np.zeros(10, np.uint8))
    constant.check(convert.Uint8Rule(), 16, "uint16")  # nothing to collapse


def test_option_parsers() -> None:
    assert parse_bands("4,3,2") == (4, 3, 2)
    assert parse_split_by("block:512") == 512.0
    for bad in ("0,1", "a", ""):
        with pytest.raises(ValueError):
            parse_bands(bad)
    for bad in ("grid:5", "block:0", "block:x", "block:inf", "block:nan"):  # one infinite block: every chip in one split
        with pytest.raises(ValueError):
            parse_split_by(bad)
    assert parse_split_crs("EPSG:32632") == "EPSG:32632"
    assert parse_split_crs(" +proj=utm +zone=33 +datum=WGS84 +units=m +no_defs ") == "EPSG:32633"  # named as chips name CRSs
    for bad, message in (("", "is blank"), ("EPSG:999999", "not a CRS PROJ knows"), ("utm 32", "not a CRS PROJ knows")):
        with pytest.raises(ValueError, match=message):
            parse_split_crs(bad)


# --- windowed reads -----------------------------------------------------------------------------


def test_eight_band_keep_is_the_rasterio_window_read(tmp_path: Path) -> None:
    data = rastergen.multispectral(200, 170, bands=8)
    path = rastergen.write_raster(tmp_path / "ms.tif", data)
    crop = CropSpec("grid", size=(64, 48), stride=(50, 40))
    records, _ = job_records(path, crop, RasterSpec(bands=tuple(range(1, 9)), dtype="uint16"), 8)
    assert len(records) == len(range(0, 200 - 64 + 1, 50)) * len(range(0, 170 - 48 + 1, 40))
    with rasterio.open(path) as ds:
        for _, record in records:
            assert record.dtype == "uint16" and record.channels == 8 and record.geo_crs == "EPSG:32613"
            y, x, h, w = record.crop_box
            np.testing.assert_array_equal(pixels_of(record), reference_window(path, record.crop_box))
            assert record.geo_transform == ds.window_transform(Window(x, y, w, h)).to_gdal()


def test_band_selection_orders_bands_and_mismatches_are_rejected(tmp_path: Path) -> None:
    data = rastergen.multispectral(80, 80, bands=4)
    path = rastergen.write_raster(tmp_path / "four.tif", data)
    crop = CropSpec("center", size=(32, 32))
    records, _ = job_records(path, crop, RasterSpec(bands=(4, 2, 1), dtype="uint16"), 3)
    (_, record), = records
    np.testing.assert_array_equal(pixels_of(record), np.moveaxis(data[[3, 1, 0], 24:56, 24:56], 0, -1))
    for raster, channels, message in (
        (RasterSpec(bands=(5,), dtype="uint16"), 1, "asks for band 5"),
        (RasterSpec(dtype="uint16"), 3, r"has 4 bands and the dataset 3 \(--channels 3\); choose 3 of them with --bands"),
        (RasterSpec(dtype="uint16"), 5, "has 4 bands and the dataset 5 .* build 4-band rasters with --bands 1,2,3,4$"),
        (RasterSpec(bands=(1,), dtype="int16"), 1, "samples are uint16"),
    ):
        with pytest.raises(Rejected, match=message) as err, open_job(source(path), path.read_bytes()[:64], crop, raster, channels, 10**9):
            pass
        assert err.value.reason == "band_mismatch"


def test_a_single_band_raster_in_a_three_channel_build_names_the_options_that_fit(tmp_path: Path) -> None:
    path = rastergen.write_raster(tmp_path / "pan.tif", rastergen.multispectral(64, 64, bands=1))
    with pytest.raises(Rejected) as err, open_job(source(path), path.read_bytes()[:64], CropSpec("center", size=(32, 32)), RasterSpec(dtype="uint16"), 3, 10**9):
        pass
    assert err.value.reason == "band_mismatch"
    assert err.value.message == "the raster has 1 band and the dataset 3 (--channels 3); build 1-band rasters with --channels 1, or repeat the band with --bands 1,1,1"
    with pytest.raises(Rejected) as err, open_job(source(path), path.read_bytes()[:64], CropSpec("center", size=(32, 32)), RasterSpec(bands=(1, 2, 3), dtype="uint16"), 3, 10**9):
        pass
    assert err.value.message == "--bands 1,2,3 asks for band 2; the raster has 1 band"
    for fix in ((None, 1), ((1, 1, 1), 3)):  # both suggestions open it
        with open_job(source(path), path.read_bytes()[:64], CropSpec("center", size=(32, 32)), RasterSpec(bands=fix[0], dtype="uint16"), fix[1], 10**9):
            pass


def test_a_palette_raster_in_a_three_channel_build_says_its_band_holds_palette_indices(tmp_path: Path) -> None:
    classes = (np.arange(64 * 64).reshape(1, 64, 64) % 5).astype(np.uint8)
    path = rastergen.write_raster(tmp_path / "landcover.tif", classes)
    with rasterio.open(path, "r+") as dataset:
        dataset.write_colormap(1, {value: (40 * value, 255 - 40 * value, 0, 255) for value in range(5)})
    with pytest.raises(Rejected) as err, open_job(source(path), path.read_bytes()[:64], CropSpec("center", size=(32, 32)), RasterSpec(), 3, 10**9):
        pass
    assert err.value.reason == "band_mismatch"
    assert err.value.message.startswith("the raster has 1 band of palette indices")
    assert "--channels 1 stores the indices" in err.value.message and "gdal_translate -expand rgb" in err.value.message
    records, _ = job_records(path, CropSpec("center", size=(32, 32)), RasterSpec(), 1)  # the indices, as the message says
    assert np.array_equal(pixels_of(records[0][1])[:, :, 0], classes[0, 16:48, 16:48])


def test_eleven_bit_nbits_file_converts_with_its_histogram_spread(tmp_path: Path) -> None:
    data = rastergen.multispectral(128, 128, bands=1, high=2048)
    path = rastergen.write_raster(tmp_path / "pan11.tif", data, nbits=11)
    records, _ = job_records(path, CropSpec("grid", size=(64, 64)), RasterSpec(), 1)
    assert len(records) == 4
    for _, record in records:
        pixels = pixels_of(record)
        assert record.dtype == "uint8"
        np.testing.assert_array_equal(pixels, (reference_window(path, record.crop_box) >> 3).astype(np.uint8))
        assert len(np.unique(pixels)) > 100 and pixels.max() > 180  # spread, not black (the top byte gives max 7)


def test_sixteen_bit_declared_eleven_bit_data_is_rejected_not_black(tmp_path: Path) -> None:
    """The WorldView panchromatic case: BitsPerSample 16, values 0..2047."""
    path = rastergen.write_raster(tmp_path / "pan.tif", rastergen.multispectral(96, 96, bands=1, high=2048))
    crop = CropSpec("grid", size=(32, 32))
    with pytest.raises(Rejected, match="bits:11") as err, open_job(source(path), path.read_bytes()[:64], crop, RasterSpec(), 1, 10**9):
        pass
    assert err.value.reason == "range_collapsed"
    records, _ = job_records(path, crop, RasterSpec(to_uint8=convert.Uint8Rule("bits", 11)), 1)
    assert all(pixels_of(r).max() > 150 for _, r in records)


def test_signed_data_with_a_real_share_of_negatives_is_rejected_not_cut_in_half(tmp_path: Path) -> None:
    # The bits rule maps negatives to 0: a signed raster centred on zero (Pillow's 8bit.s.tif, a
    # DEM below sea level) had half its samples written black.
    crop = CropSpec("grid", size=(32, 32))
    values = rastergen.multispectral(64, 64, bands=1, high=8000, seed=2).astype(np.int16) - 2000  # about a quarter negative
    dem = rastergen.write_raster(tmp_path / "dem.tif", values)
    with pytest.raises(Rejected) as err, open_job(source(dem), dem.read_bytes()[:64], crop, RasterSpec(), 1, 10**9):
        pass
    assert err.value.reason == "band_mismatch"
    assert err.value.message.startswith("--to_uint8 bits (15 bits) maps this int16 source's negative values (")
    assert err.value.message.endswith(f"down to {values.min()}) to 0; stretch it with --to_uint8 minmax or percentile:2,98, or store it with --dtype keep")
    centred = rastergen.write_raster(tmp_path / "centred.tif", (rastergen.multispectral(64, 64, bands=1, high=256, seed=3).astype(np.int16) - 128).astype(np.int8))
    with pytest.raises(Rejected, match=r"percentile:2,98$"), open_job(source(centred), centred.read_bytes()[:64], crop, RasterSpec(), 1, 10**9):
        pass  # int8 is not a type --dtype keep stores: not offered
    noise = values.copy()
    noise[noise < 0] = 500
    noise[0, 0, :20] = -3  # reflectance-like: a few small negatives (under 1% of the samples) become 0
    path = rastergen.write_raster(tmp_path / "noise.tif", noise)
    records, _ = job_records(path, crop, RasterSpec(), 1)
    (_, first), *_ = records
    assert pixels_of(first)[0, :20, 0].tolist() == [0] * 20


def test_a_bits_rule_narrower_than_the_data_is_rejected_not_saturated_white(tmp_path: Path) -> None:
    # bits:12 on 14-bit values (NBITS=14): most samples exceed 4095 and would all be 255.
    crop = CropSpec("grid", size=(32, 32))
    values = (rastergen.multispectral(64, 64, bands=1, high=16000, seed=5) + 100).astype(np.uint16)
    path = rastergen.write_raster(tmp_path / "b14.tif", values, nbits=14)
    with pytest.raises(Rejected) as err, open_job(source(path), path.read_bytes()[:64], crop, RasterSpec(to_uint8=convert.parse_uint8_rule("bits:12")), 1, 10**9):
        pass
    assert err.value.reason == "band_mismatch"
    assert err.value.message.startswith("--to_uint8 bits:12 (12 bits) saturates this uint16 source: ")
    assert err.value.message.endswith(f"(up to {values.max()}) and would all be 255; its values fit in 14 bits: pass --to_uint8 bits:14, or stretch it with minmax or percentile:2,98")
    records, _ = job_records(path, crop, RasterSpec(to_uint8=convert.parse_uint8_rule("bits:14")), 1)  # the remedy opens it
    assert len(records) == 4
    fitting = values.copy()
    fitting[fitting > 4095] = 4000
    fitting[0, 0, :20] = 5000  # a few hot pixels (under 1% of the samples) saturate, as before
    path = rastergen.write_raster(tmp_path / "b12.tif", fitting)
    records, _ = job_records(path, crop, RasterSpec(to_uint8=convert.parse_uint8_rule("bits:12")), 1)
    (_, first), *_ = records
    assert pixels_of(first)[0, :20, 0].tolist() == [255] * 20


def _patched_tiff_entry(path: Path, tag: int, count: int | None = None, value_index: int | None = None) -> None:
    """Overwrite, in a little-endian classic TIFF's first IFD, `tag`'s count, or zero the
    `value_index`-th entry of its array (the array must lie outside the entry)."""
    import struct

    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for at in range(ifd + 2, ifd + 2 + 12 * struct.unpack("<H", data[ifd : ifd + 2])[0], 12):
        if struct.unpack("<H", data[at : at + 2])[0] == tag:
            if count is not None:
                data[at + 4 : at + 8] = struct.pack("<I", count)
            if value_index is not None:
                size = {3: 2, 4: 4, 16: 8}[struct.unpack("<H", data[at + 2 : at + 4])[0]]  # SHORT, LONG or LONG8 entries
                array = struct.unpack("<I", data[at + 8 : at + 12])[0]
                data[array + size * value_index : array + size * (value_index + 1)] = bytes(size)
    path.write_bytes(bytes(data))


def test_a_damaged_tile_index_is_rejected_not_read_as_black_tiles(tmp_path: Path) -> None:
    # libtiff ignores a TileByteCounts of the wrong length, and a tile with an offset but no bytes
    # reads as zeros: GDAL served black chips from both, without an error.
    crop = CropSpec("grid", size=(32, 32))
    data = rastergen.multispectral(128, 128, bands=3, high=256).astype(np.uint8)
    short = rastergen.write_raster(tmp_path / "short_index.tif", data, block=32)
    _patched_tiff_entry(short, 325, count=1)
    with pytest.raises(Rejected) as err, open_job(source(short), short.read_bytes()[:64], crop, RasterSpec(), 3, 10**9):
        pass
    assert (err.value.reason, err.value.message) == ("decode_error", "the TIFF's TileByteCounts lists 1 entries for its 16 blocks: the file's block index is damaged")
    empty = rastergen.write_raster(tmp_path / "empty_tile.tif", data, block=32)
    _patched_tiff_entry(empty, 325, value_index=5)
    with pytest.raises(Rejected, match=r"block 5 of the TIFF.s 16 has an offset \(\d+\) but 0 bytes in its TileByteCounts"), open_job(
        source(empty), empty.read_bytes()[:64], crop, RasterSpec(), 3, 10**9
    ):
        pass
    intact = rastergen.write_raster(tmp_path / "intact.tif", data, block=32)
    assert len(job_records(intact, crop, RasterSpec(), 3)[0]) == 16


def test_resize_reads_through_overviews_and_scales_the_transform(tmp_path: Path) -> None:
    data = rastergen.multispectral(512, 384, bands=3)
    path = rastergen.write_raster(tmp_path / "ov.tif", data, overviews=(2, 4))
    crop = CropSpec("center", size=(64, 64), resize=96)  # 512x384 -> 128x96: a quarter
    records, _ = job_records(path, crop, RasterSpec(bands=(1, 2, 3), dtype="uint16"), 3)
    (_, record), = records
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4]
        y, x = 32, 16  # the centre box in the 128x96 working image
        window = Window(x * 4, y * 4, 64 * 4, 64 * 4)
        from rasterio.enums import Resampling

        expected = ds.read(window=window, out_shape=(3, 64, 64), resampling=Resampling.bilinear)
        np.testing.assert_array_equal(pixels_of(record), np.moveaxis(expected, 0, -1))
        transform = ds.window_transform(window) @ rasterio.Affine.scale(4, 4)
        assert record.geo_transform == transform.to_gdal()
        assert record.geo_transform[1] == 8.0  # 2 m pixels read at a quarter of the resolution


def test_pad_fills_outside_the_raster_with_zeros(tmp_path: Path) -> None:
    data = rastergen.multispectral(40, 30, bands=1)
    path = rastergen.write_raster(tmp_path / "small.tif", data)
    records, _ = job_records(path, CropSpec("center", size=(50, 50), small="pad"), RasterSpec(dtype="uint16"), 1)
    (_, record), = records
    pixels = pixels_of(record)[:, :, 0]
    assert pixels.shape == (50, 50) and record.crop_box == (0, 0, 40, 30)
    np.testing.assert_array_equal(pixels[5:45, 10:40], data[0])
    assert not pixels[:5].any() and not pixels[:, :10].any()


# --- nodata -------------------------------------------------------------------------------------


def test_nodata_share_skips_chips_and_counts_them(tmp_path: Path) -> None:
    data = rastergen.multispectral(128, 128, bands=4)
    data[:, :64, :] = 0  # top half nodata
    data[:, 64:80, :16] = 0  # a quarter of one lower-left chip
    path = rastergen.write_raster(tmp_path / "nd.tif", data, nodata=0)
    crop = CropSpec("grid", size=(32, 32))
    records, skipped = job_records(path, crop, RasterSpec(bands=(1, 2, 3, 4), dtype="uint16", max_nodata=0.5), 4)
    assert skipped == {"nodata": 8} and len(records) == 8
    records, skipped = job_records(path, crop, RasterSpec(bands=(1, 2, 3, 4), dtype="uint16", max_nodata=0.0), 4)
    assert skipped == {"nodata": 9} and len(records) == 7
    with rasterio.open(path) as ds:  # the numpy reference: share of pixels equal to nodata
        for y in range(0, 128, 32):
            for x in range(0, 128, 32):
                share = float((ds.read(1, window=Window(x, y, 32, 32)) == 0).mean())
                chip = chips.read_chip(ds, (1, 2, 3, 4), (y, x, 32, 32), (128, 128), masked=chips.has_mask(ds, (1, 2, 3, 4)))
                assert chip.valid_fraction == pytest.approx(1 - share)


# --- spatial-block splits -----------------------------------------------------------------------


def _footprint(record: schema.ImageRecord) -> tuple[float, float, float, float]:
    x0, a, _, y0, _, e = record.geo_transform
    xs = (x0, x0 + a * record.width)
    ys = (y0, y0 + e * record.height)
    return min(xs), min(ys), max(xs), max(ys)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_split_by_block_keeps_overlapping_chips_together_and_spreads_one_orthophoto(tmp_path: Path) -> None:
    data = rastergen.multispectral(640, 640, bands=1)
    first = rastergen.write_raster(tmp_path / "a.tif", data)
    second = rastergen.write_raster(tmp_path / "b.tif", data, origin=(487548.0 + 101.0, 4443554.0 - 37.0))  # overlaps a
    crop = CropSpec("grid", size=(32, 32), stride=(16, 16))  # overlapping tiles
    raster = RasterSpec(dtype="uint16", split_block=128.0)  # 128 m = 64 pixels
    chips_out = []
    for path in (first, second):
        records, skipped = job_records(path, crop, raster, 1, FRACTIONS)
        assert skipped.get("split_boundary", 0) > 0
        chips_out += [(split, _footprint(record)) for split, record in records]
    assert {split for split, _ in chips_out} == {"train", "validation", "test"}
    for i, (split_a, box_a) in enumerate(chips_out):
        for split_b, box_b in chips_out[i + 1 :]:
            if split_a != split_b:
                assert not _overlap(box_a, box_b)


def _chip(transform: tuple[float, ...], source_box: tuple[int, int, int, int]) -> chips.Chip:
    return chips.Chip(np.zeros((1, 1, 1), np.uint8), 1.0, source_box, transform)


def test_chip_blocks_in_map_units_and_pixels() -> None:
    transform = (1024.0, 2.0, 0.0, 5056.0, 0.0, -2.0)  # 32 px = 64 m, on block edges: x 1024..1088, y 4992..5056
    box = (0, 0, 32, 32)
    assert chips.chip_blocks(_chip(transform, box), box, 64.0, "EPSG:1", "k") == {"crs:EPSG:1|16|78"}
    shifted = (1034.0, 2.0, 0.0, 5056.0, 0.0, -2.0)
    assert chips.chip_blocks(_chip(shifted, box), box, 64.0, "EPSG:1", "k") == {"crs:EPSG:1|16|78", "crs:EPSG:1|17|78"}
    # Without a CRS the blocks are source pixels, whatever the geotransform's units (0.25 m here).
    quarter_metre = (100.0, 0.25, 0.0, 200.0, 0.0, -0.25)
    assert chips.chip_blocks(_chip(quarter_metre, (0, 10, 10, 10)), (0, 10, 10, 10), 10.0, "", "img") == {"pixels:img|1|0"}
    assert chips.chip_blocks(_chip(quarter_metre, (20, 30, 10, 10)), (20, 30, 10, 10), 10.0, "", "img") == {"pixels:img|3|2"}


def _reprojected_blocks(transform: tuple[float, ...], size: int, source: str, target: str, block: float) -> set[tuple[int, int]]:
    """The blocks an independent dense reprojection of the chip's edges touches (every pixel step)."""
    from rasterio.warp import transform as reproject

    c, a, b, f, d, e = transform
    edge = [(u, v) for u in range(size + 1) for v in (0, size)] + [(u, v) for v in range(size + 1) for u in (0, size)]
    xs, ys = reproject(source, target, [c + a * u + b * v for u, v in edge], [f + d * u + e * v for u, v in edge])
    return {(bx, by) for bx in range(int(min(xs) // block), int(max(xs) // block) + 1)
            for by in range(int(min(ys) // block), int(max(ys) // block) + 1)}


def test_chip_blocks_in_the_split_crs() -> None:
    """--split_crs: a chip in UTM 33N is cut into blocks of UTM 32N's grid, its footprint reprojected;
    a chip already in the split CRS gets exactly the blocks it gets without the option."""
    zone32, zone33 = chips.crs_identity("EPSG:32632"), chips.crs_identity("EPSG:32633")
    box = (0, 0, 128, 128)
    in_32 = (791000.0, 10.0, 0.0, 5329000.0, 0.0, -10.0)
    grid_32 = chips.SplitGrid("EPSG:32632", "EPSG:32632")
    assert not grid_32.reprojects
    plain = chips.chip_blocks(_chip(in_32, box), box, 1000.0, zone32, "k")
    assert chips.chip_blocks(_chip(in_32, box), box, 1000.0, zone32, "k", grid_32) == plain
    assert plain == {f"crs:{zone32}|{bx}|{by}" for bx in (791, 792) for by in (5327, 5328)}
    in_33 = (343000.0, 10.0, 0.0, 5324000.0, 0.0, -10.0)  # about the same ground, 2.4 degrees of grid convergence apart
    grid_33 = chips.SplitGrid("EPSG:32633", "EPSG:32632")
    assert grid_33.reprojects and grid_33.identity == zone32
    blocks = chips.chip_blocks(_chip(in_33, box), box, 1000.0, zone33, "k", grid_33)
    expected = _reprojected_blocks(in_33, 128, "EPSG:32633", "EPSG:32632", 1000.0)
    assert blocks == {f"crs:{zone32}|{bx}|{by}" for bx, by in expected} and len(blocks) >= 4
    # Without a CRS the chip keeps its own pixel blocks whatever --split_crs says.
    assert chips.chip_blocks(_chip(in_33, (0, 10, 10, 10)), (0, 10, 10, 10), 10.0, "", "img", None) == {"pixels:img|1|0"}


def test_split_crs_extents_hold_curved_footprints_poles_and_the_antimeridian() -> None:
    """The footprint's extent in the split CRS must hold all of it: a polar cap's edge sampled at
    5 points reached 7.7 of its 10.8 km, so a raster beside it got another split."""
    from affine import Affine
    from rasterio.warp import transform as reproject

    cap = Affine(1.0, 0.0, -180.0, 0.0, -0.001, 90.0)  # every longitude, 89.9N-90N: 360 x 100 pixels
    (spans, (low_y, high_y)) = chips.SplitGrid("EPSG:4326", "EPSG:3413").extent(cap, 360, 100)
    lons = [i / 10 - 180 for i in range(3601)]
    xs, ys = reproject("EPSG:4326", "EPSG:3413", lons, [89.9] * len(lons))  # the cap's rim, densely
    assert spans[0][0] <= min(xs) and spans[0][1] >= max(xs) and low_y <= min(ys) and high_y >= max(ys)
    # A polar stereographic chip around the pole: in longitude and latitude it reaches 90N at every longitude.
    around = Affine(200.0, 0.0, -20000.0, 0.0, -200.0, 20000.0)
    spans, (low_y, high_y) = chips.SplitGrid("EPSG:3413", "EPSG:4326").extent(around, 200, 200)
    _, corner_lats = reproject("EPSG:3413", "EPSG:4326", [-20000.0], [20000.0])  # the farthest point from the pole
    assert spans == [(-180.0, 180.0)] and high_y == 90.0 and corner_lats[0] - 0.01 < low_y <= corner_lats[0]
    # A UTM 60N chip across 180E: two longitude spans, one each side.
    spans, _ = chips.SplitGrid("EPSG:32660", "EPSG:4326").extent(Affine(1000.0, 0.0, 700000.0, 0.0, -1000.0, 5530000.0), 30, 30)
    assert len(spans) == 2 and spans[0][0] > 179 and spans[0][1] == 180.0 and spans[1][0] == -180.0 and spans[1][1] < -179


def test_a_raster_proj_cannot_place_in_the_split_crs_is_rejected() -> None:
    ortho = parse_split_crs("+proj=ortho +lat_0=0 +lon_0=0 +datum=WGS84")  # the hemisphere seen from above 0N 0E
    grid = chips.SplitGrid("EPSG:4326", ortho)
    with pytest.raises(Rejected) as err:
        grid.check_covers((1.0, 0.0, 160.0, 0.0, -1.0, 10.0), (10, 20))  # 160-180E: the far side
    assert err.value.reason == "outside_split_crs" and f"--split_crs {ortho}" in err.value.message
    grid.check_covers((1.0, 0.0, 10.0, 0.0, -1.0, 10.0), (10, 20))  # 10-30E: seen, placed


def test_a_split_by_dataset_of_rasters_in_several_crss_is_refused_without_split_crs() -> None:
    section = {"split_by": "block:1000", "split_crs": None, "crs_seen": ["EPSG:32632", "EPSG:32633", ""]}
    refused = chips.mixed_crs_refusal(section)
    assert refused and "2 CRSs (EPSG:32632; EPSG:32633)" in refused and "--split_crs EPSG:32632" in refused
    assert chips.mixed_crs_refusal({**section, "split_crs": "EPSG:32632"}) is None
    assert chips.mixed_crs_refusal({**section, "split_by": None}) is None
    assert chips.mixed_crs_refusal({**section, "crs_seen": ["EPSG:32000", "EPSG:31985", ""]}) is None  # one projection, two codes
    assert chips.mixed_crs_refusal(None) is None
    from rasterio.crs import CRS

    custom = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=7.4386 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs").to_wkt()
    named = custom.replace('PROJCS["unknown"', 'PROJCS["Site grid"', 1)
    refused = chips.mixed_crs_refusal({**section, "crs_seen": [named, "EPSG:32632"]})
    assert '("Site grid"; EPSG:32632)' in refused


def test_crs_identity_is_one_name_per_crs_however_its_wkt_is_spelt() -> None:
    """Two tools name one custom CRS differently: --split_by gave each its own block grid, so
    overlapping chips of the two rasters fell in different splits."""
    from rasterio.crs import CRS

    wkt = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=7.4386 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs").to_wkt()
    named = wkt.replace('PROJCS["unknown"', 'PROJCS["Site grid"', 1)
    assert named != wkt and CRS.from_wkt(named) == CRS.from_wkt(wkt)
    assert chips.crs_identity(named) == chips.crs_identity(wkt) != chips.crs_identity(wkt.replace("7.4386", "7.5"))
    assert chips.crs_identity("") == "" and chips.crs_identity("EPSG:32631") != chips.crs_identity("EPSG:32632")
    # One projection under two EPSG codes (SIRGAS 1995 and 2000 / UTM 25S, as two real files of one area carry).
    assert chips.crs_identity("EPSG:32000") == chips.crs_identity("EPSG:31985") == chips.crs_identity(CRS.from_epsg(31985).to_wkt())
    # One PROJ string for two datums ~200 m apart (ED50 and FD54 / UTM 29N: `+ellps=intl`, no shift): two grids.
    assert chips.crs_identity("EPSG:23029") != chips.crs_identity("EPSG:3374")
    local = 'LOCAL_CS["site",UNIT["metre",1]]'  # no PROJ definition: the WKT names it
    assert chips.crs_identity(local) == local


# --- safety -------------------------------------------------------------------------------------


def test_vrt_named_tif_is_rejected_before_gdal_sees_it(tmp_path: Path) -> None:
    secret = rastergen.write_raster(tmp_path / "outside" / "secret.tif", rastergen.multispectral(32, 32, bands=1))
    vrt = tmp_path / "in" / "innocent.tif"
    vrt.parent.mkdir()
    vrt.write_text(
        f'<VRTDataset rasterXSize="32" rasterYSize="32"><VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{secret}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>'
    )
    with rasterio.open(vrt) as ds:  # what plain GDAL would do: read the file outside the inputs
        assert ds.driver == "VRT" and ds.read(1).any()
    with pytest.raises(Rejected, match="VRT") as err, open_job(source(vrt), vrt.read_bytes()[:64], CropSpec("center", size=(8, 8)), RasterSpec(), 1, 10**9):
        pass
    assert err.value.reason == "raster_reference"
    # Named .vrt it takes the photo path (not a raster extension): the same reason, not not_an_image.
    from cropshard.transforms.decode import decode_crops

    with pytest.raises(Rejected, match="VRT") as err:
        decode_crops(vrt.read_bytes(), CropSpec("center", size=(8, 8)), key="mosaic.vrt")
    assert err.value.reason == "raster_reference"


def _write_gcps(path: Path, points: list[tuple[float, float, float, float]]) -> Path:
    import rasterio
    from rasterio.control import GroundControlPoint

    gcps = [GroundControlPoint(row, col, x, y) for row, col, x, y in points]
    with rasterio.open(path, "w", driver="GTiff", width=120, height=90, count=1, dtype="uint16", gcps=gcps, crs="EPSG:32631") as out:
        out.write(rastergen.multispectral(90, 120, bands=1))
    return path


def test_a_raster_georeferenced_by_ground_control_points_gets_their_fitted_transform(tmp_path: Path) -> None:
    """Only GCPs (no geotransform): the chips had CRS '' and the pixel grid, and nothing said so.
    They get the affine transform GDAL fits to the points, in the points' CRS; a scene no affine
    fits within a pixel (unrectified: it needs warping) is rejected not_rectified."""
    from affine import Affine

    grid = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    corners = [(row, col, *(grid * (col, row))) for row, col in ((0, 0), (0, 120), (90, 0), (90, 120))]
    path = _write_gcps(tmp_path / "gcps.tif", corners)
    records, _ = job_records(path, CropSpec("grid", size=(30, 40)), RasterSpec(dtype="uint16"), 1)
    assert len(records) == 9
    for _, record in records:
        y, x, _, _ = record.crop_box
        assert record.geo_crs == "EPSG:32631"
        np.testing.assert_allclose(record.geo_transform, (grid * Affine.translation(x, y)).to_gdal(), rtol=0, atol=1e-6)
    bent = corners[:3] + [(90, 120, corners[3][2] + 50.0, corners[3][3])]  # 5 pixels off an affine
    for points in (bent, corners[:2]):
        with pytest.raises(Rejected, match="ground control points") as err:
            job_records(_write_gcps(tmp_path / f"bad{len(points)}.tif", points), CropSpec("grid", size=(30, 40)), RasterSpec(dtype="uint16"), 1)
        assert err.value.reason == "not_rectified"


def test_sidecar_files_are_not_read(tmp_path: Path) -> None:
    path = rastergen.write_raster(tmp_path / "plain.tif", rastergen.multispectral(64, 64, bands=4), crs=None)
    (tmp_path / "plain.tfw").write_text("2.0\n0\n0\n-2.0\n500000\n4000000\n")  # a world file
    (tmp_path / "plain.tif.aux.xml").write_text('<PAMDataset><SRS>EPSG:4326</SRS></PAMDataset>')
    records, _ = job_records(path, CropSpec("center", size=(16, 16)), RasterSpec(dtype="uint16"), 4)
    (_, record), = records
    assert record.geo_crs == "" and record.geo_transform == (24.0, 1.0, 0.0, 24.0, 0.0, 1.0)  # pixel grid only


def test_photo_like_tiff_goes_to_pillow_unless_raster_options_are_given(tmp_path: Path) -> None:
    rgb = rastergen.write_raster(tmp_path / "photo.tif", rastergen.multispectral(40, 40, bands=3, high=256).astype(np.uint8), crs=None)
    crop = CropSpec("center", size=(8, 8))
    with open_job(source(rgb), rgb.read_bytes()[:64], crop, RasterSpec(), 3, 10**9) as job:
        assert job is None
    with open_job(source(rgb), rgb.read_bytes()[:64], crop, RasterSpec(bands=(1, 2, 3)), 3, 10**9) as job:
        assert job is not None
    jpeg_named_tif = tmp_path / "photo2.tif"
    jpeg_named_tif.write_bytes(b"\xff\xd8\xff\xe0" + bytes(60))
    with open_job(source(jpeg_named_tif), jpeg_named_tif.read_bytes()[:64], crop, RasterSpec(), 3, 10**9) as job:
        assert job is None


def test_jpeg2000_that_pillow_cannot_decode_goes_to_the_raster_path_on_the_pixel_grid(tmp_path: Path) -> None:
    # GDAL writes a 3-band JP2 whose bands are not marked red, green, blue in a greyscale colour
    # space, which Pillow refuses ("broken data stream"), and Pillow identifies 1-4 components only
    rgb = rastergen.multispectral(48, 48, bands=5, high=256, seed=3).astype(np.uint8)
    grey3 = rastergen.write_jp2(tmp_path / "grey3.jp2", rgb[:3], crs=None)
    (tmp_path / "grey3.j2w").write_text("2.0\n0\n0\n-2.0\n500000\n4000000\n")  # sidecars stay unread
    (tmp_path / "grey3.jp2.aux.xml").write_text("<PAMDataset><SRS>EPSG:4326</SRS><GeoTransform>9, 2, 0, 9, 0, -2</GeoTransform></PAMDataset>")
    records, _ = job_records(grey3, CropSpec("center", size=(16, 16)), RasterSpec(), 3)
    (_, record), = records
    assert np.array_equal(pixels_of(record), reference_window(grey3, (16, 16, 16, 16)))
    assert record.geo_crs == "" and record.geo_transform == (16.0, 1.0, 0.0, 16.0, 0.0, 1.0)  # not stale memory
    for bands in (4, 5):  # Pillow would take a fourth band GDAL does not mark as alpha for alpha; a fifth, nothing
        path = rastergen.write_jp2(tmp_path / f"bands{bands}.jp2", rgb[:bands], crs=None)
        records, _ = job_records(path, CropSpec("center", size=(16, 16)), RasterSpec(), bands)
        assert np.array_equal(pixels_of(records[0][1]), reference_window(path, (16, 16, 16, 16)))


def test_jpeg2000_that_pillow_decodes_stays_on_the_pillow_path(tmp_path: Path) -> None:
    from PIL import Image

    data = np.moveaxis(rastergen.multispectral(32, 32, bands=4, high=256, seed=4).astype(np.uint8), 0, -1)
    Image.fromarray(data[..., :3]).save(tmp_path / "pillow.jp2")
    Image.fromarray(data, "RGBA").save(tmp_path / "alpha.jp2")  # its header marks the fourth band as opacity
    Image.fromarray(data[..., :3]).save(tmp_path / "bare.j2k")  # a codestream: no header box
    crop = CropSpec("center", size=(8, 8))
    for path, channels in ((tmp_path / "alpha.jp2", 4), (tmp_path / "pillow.jp2", 3), (tmp_path / "bare.j2k", 3)):
        with Image.open(path) as image:
            image.load()  # the premise: Pillow decodes it
        with open_job(source(path), path.read_bytes()[:HEAD_BYTES], crop, RasterSpec(), channels, 10**9) as job:
            assert job is None, path.name


def test_jp2_header_reads_components_and_colour_space(tmp_path: Path) -> None:
    from PIL import Image

    data = rastergen.multispectral(16, 16, bands=3, high=256).astype(np.uint8)
    assert jp2_header(str(rastergen.write_jp2(tmp_path / "g.jp2", data, crs=None))) == (3, ENUMCS_GREYSCALE)
    Image.fromarray(np.moveaxis(data, 0, -1)).save(tmp_path / "p.jp2")
    assert jp2_header(str(tmp_path / "p.jp2")) == (3, 16)  # sRGB
    Image.fromarray(np.moveaxis(data, 0, -1)).save(tmp_path / "c.j2k")
    assert jp2_header(str(tmp_path / "c.j2k")) is None
    signature = (tmp_path / "p.jp2").read_bytes()[:12]
    (tmp_path / "cut.jp2").write_bytes(signature + b"\x00\x00\x00\x2djp2h")  # header box cut short
    assert jp2_header(str(tmp_path / "cut.jp2")) is None
    assert not pillow_decodes_jpeg2000(3, (3, ENUMCS_GREYSCALE)) and not pillow_decodes_jpeg2000(5, None)
    assert pillow_decodes_jpeg2000(3, None) and pillow_decodes_jpeg2000(4, (4, ENUMCS_GREYSCALE)) and pillow_decodes_jpeg2000(1, (1, 17))


# --- encoding and schema ------------------------------------------------------------------------


def test_sixteen_bit_png_and_raw_round_trip_through_tensorflow() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(5)
    for bands in (1, 3):
        pixels = rng.integers(0, 65536, (9, 7, bands)).astype(np.uint16)
        encoded, fmt = encode_chip(pixels, "png", 90)
        assert fmt == "png"
        np.testing.assert_array_equal(tf.io.decode_png(encoded, channels=bands, dtype=tf.uint16).numpy(), pixels)
    floats = rng.normal(size=(4, 5, 6)).astype(np.float32)
    encoded, fmt = encode_chip(floats, "raw", 90)
    np.testing.assert_array_equal(tf.reshape(tf.io.decode_raw(encoded, tf.float32), (4, 5, 6)).numpy(), floats)


def test_schema_round_trips_dtype_and_georeferencing() -> None:
    transform = (487548.123456789, 0.3, 0.0, 4443553.199999999, 0.0, -0.3)
    record = schema.ImageRecord(bytes(2 * 2 * 3 * 2), "raw", 2, 2, 3, 1, "x", "f.tif", (0, 0, 2, 2), "ab", "uint16", "EPSG:32613", transform)
    assert schema.decode_example(schema.encode_example(record)) == record  # float64: no loss at UTM northings
    photo = schema.ImageRecord(bytes(12), "raw", 2, 2, 3, 1, "x", "f.jpg", (0, 0, 2, 2), "ab")
    assert schema.decode_example(schema.encode_example(photo)) == photo
    from tensorflow.core.example import example_pb2

    keys = set(example_pb2.Example.FromString(schema.encode_example(photo)).features.feature)
    assert keys == set(schema.FEATURE_KEYS)  # photo records keep exactly their keys
    with pytest.raises(ValueError):
        schema.ImageRecord(bytes(12), "raw", 2, 2, 3, 1, "x", "f", (0, 0, 2, 2), "ab", "uint16")


# --- 16-bit photos: the same rule ---------------------------------------------------------------


def test_sixteen_bit_grey_png_uses_the_bits_rule_and_its_collapse_check() -> None:
    import io

    from cropshard.transforms.decode import stream_crops
    from PIL import Image

    twelve_bit = rastergen.multispectral(48, 64, bands=1, high=4096)[0]  # a 12-bit camera PNG
    buffer = io.BytesIO()
    Image.fromarray(twelve_bit).save(buffer, format="PNG")
    data = buffer.getvalue()
    crop = CropSpec("center", size=(32, 32))
    with pytest.raises(Rejected, match="bits:12") as err:
        stream_crops(data, crop, "k", 1)  # top byte: 0..15, a near-black image
    assert err.value.reason == "range_collapsed"
    (cut,) = stream_crops(data, crop, "k", 1, wide_rule=convert.Uint8Rule("bits", 12)).crops
    np.testing.assert_array_equal(cut.pixels[:, :, 0], (twelve_bit[8:40, 16:48] >> 4).astype(np.uint8))
    resized = list(stream_crops(data, CropSpec("center", size=(16, 16), resize=24), "k", 1, wide_rule=convert.Uint8Rule("bits", 12)).crops)
    assert resized[0].pixels.max() > 100


# --- label rasters ------------------------------------------------------------------------------

CLASSES = ((10, "water"), (20, "forest"), (30, "urban"))


def _class_map(height: int, width: int, seed: int = 7) -> np.ndarray:
    """Blocky classes (values 10/20/30, a few 99s that are no class) like a land-cover map."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice([10, 20, 30, 99], size=(height // 8 + 1, width // 8 + 1), p=[0.3, 0.3, 0.3, 0.1])
    return np.kron(coarse, np.ones((8, 8), np.uint8))[:height, :width].astype(np.uint8)


def _reference_ids(values: np.ndarray) -> np.ndarray:
    ids = np.full(values.shape, 255, np.uint8)
    for index, (value, _) in enumerate(CLASSES):
        ids[values == value] = index
    return ids


def test_label_names_csv() -> None:
    from cropshard.transforms.raster.labels import parse_label_names

    assert parse_label_names("value,name\n30,urban\n10,water\n", "c.csv") == ((10, "water"), (30, "urban"))
    for bad in ("x,y\n", "1,a\n1,b\n", "a,b\nfoo,bar\n"):
        with pytest.raises(ValueError):
            parse_label_names(bad, "c.csv")


def test_label_raster_path_resolves_dot_dot_locally_and_within_a_bucket() -> None:
    from cropshard.transforms.raster.labels import label_raster_path

    assert label_raster_path("/data/img/a.tif", "{dir}/../lc/{stem}_lc{ext}") == "/data/lc/a_lc.tif"
    assert label_raster_path("gs://b/data/img/a.tif", "{dir}/../lc/{name}") == "gs://b/data/lc/a.tif"  # GCS has no '..'
    assert label_raster_path("gs://b/a.tif", "{dir}/../../lc/{name}") == "gs://b/lc/a.tif"  # never above the bucket


def test_majority_and_mask_labels_from_a_shifted_class_map(tmp_path: Path) -> None:
    from cropshard.transforms.raster.labels import LabelRasterSpec

    image = rastergen.write_raster(tmp_path / "img" / "scene.tif", rastergen.multispectral(96, 128, bands=1))
    # The class map starts 5 pixels left of and 3 pixels above the image (2 m pixels), and is larger.
    values = _class_map(110, 140)
    rastergen.write_raster(tmp_path / "labels" / "scene.tif", values[None], origin=(487548.0 - 10.0, 4443554.0 + 6.0), compress="lzw")
    aligned = values[3 : 3 + 96, 5 : 5 + 128]  # the class map on the image's grid
    crop = CropSpec("grid", size=(32, 32))
    pattern = "{dir}/../labels/{stem}.tif"
    majority_spec = RasterSpec(dtype="uint16", labels=LabelRasterSpec(pattern, "majority", 0.5, CLASSES))
    records, skipped = job_records(image, crop, majority_spec, 1)
    expected_skips = 0
    by_box = {record.crop_box: record for _, record in records}
    for y in range(0, 96, 32):
        for x in range(0, 128, 32):
            ids = _reference_ids(aligned[y : y + 32, x : x + 32])
            counts = np.bincount(ids[ids != 255], minlength=3)
            if counts.max() / ids.size < 0.5:
                expected_skips += 1
                assert (y, x, 32, 32) not in by_box
                continue
            record = by_box[(y, x, 32, 32)]
            assert record.label == int(np.argmax(counts)) and record.label_text == CLASSES[record.label][1]
    assert skipped.get("label_fraction", 0) == expected_skips and len(records) == 12 - expected_skips

    mask_spec = RasterSpec(dtype="uint16", labels=LabelRasterSpec(pattern, "mask", 0.0, CLASSES))
    records, _ = job_records(image, crop, mask_spec, 1)
    assert len(records) == 12
    for _, record in records:
        import io

        from PIL import Image

        y, x, h, w = record.crop_box
        mask = np.asarray(Image.open(io.BytesIO(record.segmentation)))
        np.testing.assert_array_equal(mask, _reference_ids(aligned[y : y + h, x : x + w]))
        assert record.label == -1


def test_class_map_outside_the_image_or_missing_is_rejected(tmp_path: Path) -> None:
    from cropshard.transforms.raster.labels import LabelRasterSpec

    image = rastergen.write_raster(tmp_path / "scene.tif", rastergen.multispectral(64, 64, bands=1))
    rastergen.write_raster(tmp_path / "far.tif", _class_map(64, 64)[None], origin=(100000.0, 100000.0))
    rastergen.write_raster(tmp_path / "nocrs.tif", _class_map(50, 50)[None], crs=None)
    whole = rastergen.write_raster(tmp_path / "whole.tif", _class_map(64, 64)[None], block=16).read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) * 2 // 3])  # a class map cut short
    crop = CropSpec("center", size=(16, 16))
    cases = (("far.tif", "label_raster_mismatch"), ("nocrs.tif", "label_raster_mismatch"), ("cut.tif", "label_raster_mismatch"), ("gone.tif", "label_raster_missing"))
    for name, reason in cases:
        spec = RasterSpec(dtype="uint16", labels=LabelRasterSpec("{dir}/" + name, "majority", 0.0, CLASSES))
        with pytest.raises(Rejected) as err, open_job(source(image), image.read_bytes()[:64], crop, spec, 1, 10**9):
            pass
        assert err.value.reason == reason, err.value.message


def test_a_class_map_on_the_images_grid_without_its_crs_tag_is_used(tmp_path: Path) -> None:
    """A mask exported without its CRS tag, on the image's exact grid (same size and transform),
    was rejected 'the class map's grid (64x64) differs from the image's (64x64)'. It lies pixel for
    pixel on the image, so it is used; off the grid, the message says what differs."""
    import rasterio
    from cropshard.transforms.raster.labels import LabelRasterSpec

    image = rastergen.write_raster(tmp_path / "scene.tif", rastergen.multispectral(64, 64, bands=1))
    classes = _class_map(64, 64)
    with rasterio.open(image) as ds, rasterio.open(tmp_path / "tagless.tif", "w", driver="GTiff", width=64, height=64, count=1,
                                                   dtype="uint8", transform=ds.transform) as out:
        out.write(classes[None])
    rastergen.write_raster(tmp_path / "pixels.tif", classes[None], crs=None)  # no CRS and no transform: another grid
    crop = CropSpec("grid", size=(16, 16))
    spec = RasterSpec(dtype="uint16", labels=LabelRasterSpec("{dir}/tagless.tif", "majority", 0.0, CLASSES))
    records, _ = job_records(image, crop, spec, 1)
    ids = {value: index for index, (value, _) in enumerate(CLASSES)}
    for _, record in records:
        y, x, h, w = record.crop_box
        values, counts = np.unique(classes[y : y + h, x : x + w], return_counts=True)
        kept = [(c, -ids[v]) for v, c in zip(values, counts, strict=True) if v in ids]  # ties: the lowest id
        assert record.label == (-max(kept)[1] if kept else -1)
    assert len(records) == 16 and len({record.label for _, record in records}) > 1
    spec = RasterSpec(dtype="uint16", labels=LabelRasterSpec("{dir}/pixels.tif", "majority", 0.0, CLASSES))
    with pytest.raises(Rejected, match=r"class map \(64x64, no CRS.*image \(64x64, EPSG:32613.*differ in transform") as err, \
            open_job(source(image), image.read_bytes()[:64], crop, spec, 1, 10**9):
        pass
    assert err.value.reason == "label_raster_mismatch"


def test_band_stats_merge_equals_one_pass_and_sixteen_bit_percentiles_are_binned() -> None:
    from cropshard.transforms.raster.stats import BandStats, CombineBandStats

    rng = np.random.default_rng(11)
    chips_in = [rng.integers(0, 2048, (16, 16, 2)).astype(np.uint16) for _ in range(5)]
    whole = BandStats.empty("uint16", 2)
    parts = []
    for chip in chips_in:
        whole.add(chip)
        part = BandStats.empty("uint16", 2)
        part.add(chip)
        parts.append(part)
    combine = CombineBandStats()
    merged = combine.extract_output(combine.merge_accumulators([combine.add_input(combine.create_accumulator(), p) for p in parts]))
    assert merged == whole.summary()
    values = np.concatenate([c.reshape(-1, 2) for c in chips_in]).astype(np.float64)
    np.testing.assert_allclose(merged["mean"], values.mean(axis=0), rtol=1e-9)
    exact = np.percentile(values, 98, axis=0, method="inverted_cdf")
    assert all(0 <= e - p < 16 for e, p in zip(exact, merged["p98"], strict=True))  # 16-value bins


@pytest.mark.parametrize("bands", [1, 2, 3, 4, 6])
def test_uint8_band_stats_from_the_histogram_equal_numpy(bands: int) -> None:
    """uint8 statistics are kept as the exact histogram alone (one Pillow pass per chip, up to 4
    interleaved bands at once); moments, extremes and percentiles equal NumPy's over the same
    samples, for chips (h, w, bands), previews (pixels, bands), merged partials and no data."""
    from cropshard.transforms.raster.stats import BandStats, CombineBandStats

    rng = np.random.default_rng(bands)
    chips_in = [rng.integers(3 + b, 250 - b, (17, 23, bands), dtype=np.uint8) for b in range(4)]
    chips_in.append(rng.integers(0, 256, (40, bands), dtype=np.uint8))  # a preview's (pixels, bands)
    partials = []
    for chip in chips_in:
        part = BandStats.empty("uint8", bands)
        part.add(chip)
        partials.append(part)
    combine = CombineBandStats()
    merged = combine.extract_output(combine.merge_accumulators([combine.add_input(None, p) for p in partials]))
    values = np.concatenate([c.reshape(-1, bands) for c in chips_in]).astype(np.float64)
    assert (merged["images"], merged["pixels"]) == (len(chips_in), len(values))
    assert merged["min"] == values.min(axis=0).tolist() and merged["max"] == values.max(axis=0).tolist()
    np.testing.assert_allclose(merged["mean"], values.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(merged["std"], values.std(axis=0), atol=1e-5)
    assert merged["p2"] == np.percentile(values, 2, axis=0, method="inverted_cdf").tolist()
    empty = BandStats.empty("uint8", bands).summary()
    assert empty["images"] == empty["pixels"] == 0 and empty["min"] == empty["max"] == [None] * bands  # strict JSON: null, not +-Infinity


def test_the_driver_is_chosen_from_the_first_bytes(tmp_path: Path) -> None:
    from cropshard.transforms.raster.open_raster import GTIFF, JP2, SNIFF_BYTES, raster_driver

    tif = rastergen.write_raster(tmp_path / "a.tif", rastergen.multispectral(16, 16, bands=1))
    jp2 = rastergen.write_jp2(tmp_path / "a.jp2", rastergen.multispectral(16, 16, bands=1, high=256).astype(np.uint8))
    j2k = rastergen.write_jp2(tmp_path / "a.j2k", rastergen.multispectral(16, 16, bands=1), crs=None, CODEC="J2K")
    heads = {path.name: path.read_bytes()[:SNIFF_BYTES] for path in (tif, jp2, j2k)}
    assert {name: raster_driver(head) for name, head in heads.items()} == {"a.tif": GTIFF, "a.jp2": JP2, "a.j2k": JP2}
    assert raster_driver(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00") is None  # a JPEG is a photo
    # A JPEG 2000 named .tif is opened by its bytes, never by its name.
    renamed = tmp_path / "renamed.tif"
    renamed.write_bytes(jp2.read_bytes())
    with open_job(source(renamed), renamed.read_bytes()[:HEAD_BYTES], CropSpec("center", size=(8, 8)), RasterSpec(), 1, 10**9) as job:
        assert job is not None and job.dataset.driver == JP2


def test_gdal_block_cache_holds_tiles_while_chips_are_cut(tmp_path: Path) -> None:
    # rasterio hands an int GDAL_CACHEMAX to GDAL as bytes: 128 meant a 128-byte cache, so every
    # chip smaller than a tile decoded its whole tile again.
    from cropshard.transforms.raster.open_raster import open_raster
    from rasterio._env import get_gdal_config

    tif = rastergen.write_raster(tmp_path / "a.tif", rastergen.multispectral(16, 16, bands=1))
    with open_raster(str(tif)):
        assert get_gdal_config("GDAL_CACHEMAX") >= 64 * 2**20


def _open_ended(jp2: bytes) -> bytes:
    """The JP2 with its codestream box's length set to 0 (it runs to the end of the file)."""
    offset = 0
    while jp2[offset + 4 : offset + 8] != b"jp2c":
        offset += int.from_bytes(jp2[offset : offset + 4], "big")
    return jp2[:offset] + bytes(4) + jp2[offset + 4 :]


@pytest.mark.parametrize(
    ("name", "damage", "cut"),
    [
        ("cut.jp2", lambda data: data[: len(data) * 2 // 3], True),  # the codestream box runs past the end
        ("header.jp2", lambda data: data[:40], True),  # the file ends before the codestream box
        ("open_ended_cut.jp2", lambda data: _open_ended(data)[: len(data) * 2 // 3], True),  # a tile-part runs past the end
        ("cut.j2k", lambda data: data[: len(data) // 2], True),
        ("main_header_cut.j2k", lambda data: data[:60], True),
        ("open_ended.jp2", _open_ended, False),
        ("no_eoc.j2k", lambda data: data[:-2], True),  # every tile-part whole, but openjpeg fails on the last tile
        ("trailing_byte.j2k", lambda data: data + b"\x00", False),  # Pillow's 9bit.j2k has one after its EOC
    ],
)
def test_a_jpeg2000_cut_short_is_rejected_before_chipping(tmp_path: Path, name: str, damage, cut: bool) -> None:
    from cropshard.transforms.raster.open_raster import refuse_truncated_jpeg2000

    bare = name.endswith(".j2k")
    whole = rastergen.write_jp2(tmp_path / f"whole{Path(name).suffix}", rastergen.multispectral(64, 64, bands=1), block=32,
                                crs=None if bare else rastergen.UTM13, **({"CODEC": "J2K"} if bare else {}))
    refuse_truncated_jpeg2000(str(whole))  # the intact file passes
    damaged = tmp_path / name
    damaged.write_bytes(damage(whole.read_bytes()))
    if not cut:
        refuse_truncated_jpeg2000(str(damaged))
        with rasterio.open(damaged) as ds:  # and GDAL reads every pixel of it
            np.testing.assert_array_equal(ds.read(), rasterio.open(whole).read())
        return
    with pytest.raises(Rejected) as caught:
        refuse_truncated_jpeg2000(str(damaged))
    assert caught.value.reason == "truncated" and "cut short" in caught.value.message


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("tiled.tif", {"block": 32}),
        ("striped.tif", {"tiled": False, "blockysize": 8}),
        ("band_interleaved.tif", {"block": 32, "interleave": "band"}),
        ("bigtiff.tif", {"block": 32, "BIGTIFF": "YES"}),
    ],
)
def test_a_geotiff_cut_short_is_rejected_before_chipping(tmp_path: Path, name: str, profile: dict) -> None:
    # An interrupted download keeps its header and first tiles: GDAL opens it and previews it
    # without complaint, and the build failed while chipping (the source planned whole).
    data = rastergen.multispectral(96, 96, bands=3, high=256).astype(np.uint8)
    whole = rastergen.write_raster(tmp_path / f"whole_{name}", data, **profile)
    cut = tmp_path / name
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.7)])
    crop, raster = CropSpec("grid", size=(32, 32)), RasterSpec()
    for path, expected in ((whole, None), (cut, "truncated")):
        try:
            with open_job(source(path), path.read_bytes()[:HEAD_BYTES], crop, raster, 3, 10**9) as job:
                assert job is not None
            reason = None
        except Rejected as err:
            reason, message = err.reason, err.message
        assert reason == expected, (path.name, reason)
    assert "cut short" in message and "past the end of the file" in message


def test_complex_samples_are_refused_by_every_to_uint8_rule(tmp_path: Path) -> None:
    # minmax stretched the real part and dropped the imaginary one (half an SLC's data) without a word.
    values = (np.arange(64 * 64).reshape(1, 64, 64) % 7 + 5) + 1j * (np.arange(64 * 64).reshape(1, 64, 64) % 200 - 100)
    path = rastergen.write_raster(tmp_path / "slc.tif", values.astype(np.complex64))
    crop = CropSpec("grid", size=(32, 32))
    ranges = {"complex64": ([5.0], [11.0])}
    for rule in (convert.Uint8Rule("minmax"), convert.Uint8Rule("bits")):
        for given in (None, ranges):
            with pytest.raises(Rejected, match="complex64 .real and imaginary parts., which no --to_uint8 rule converts") as err, \
                    open_job(source(path), path.read_bytes()[:64], crop, RasterSpec(to_uint8=rule), 1, 10**9, ranges=given):
                pass
            assert err.value.reason == "band_mismatch"


def test_a_float64_raster_is_offered_the_rule_that_converts_it_not_dtype_keep(tmp_path: Path) -> None:
    # The bits rule's refusal said "store them with --dtype keep", which refuses float64.
    crop = CropSpec("grid", size=(32, 32))
    for dtype, keep in (("float64", False), ("float32", True)):
        path = rastergen.write_raster(tmp_path / f"{dtype}.tif", np.linspace(0, 1, 64 * 64).reshape(1, 64, 64).astype(dtype))
        with pytest.raises(Rejected) as err, open_job(source(path), path.read_bytes()[:64], crop, RasterSpec(), 1, 10**9):
            pass
        assert "--to_uint8 minmax" in err.value.message and ("--dtype keep" in err.value.message) is keep


@pytest.mark.parametrize("case", ["sparse", "lerc", "webp"])
def test_eight_bit_tiffs_pillow_misreads_take_the_gdal_path(tmp_path: Path, case: str) -> None:
    # A sparse TIFF's unwritten tiles came out of Pillow as the file's first bytes (the TIFF header,
    # 73,73,42,0,...) and were written as pixels; LERC and WEBP TIFFs were decode_error "SyntaxError: 34887".
    values = (np.arange(3 * 128 * 128) % 251).reshape(3, 128, 128).astype(np.uint8)
    path = tmp_path / f"{case}.tif"
    options = {"SPARSE_OK": True} if case == "sparse" else {"compress": case}
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8", tiled=True, blockxsize=64,
                       blockysize=64, **options) as ds:
        ds.write(values[:, :64, :64] if case == "sparse" else values, window=Window(0, 0, 64, 64) if case == "sparse" else None)
    crop = CropSpec("grid", size=(64, 64))
    records, _ = job_records(path, crop, RasterSpec(), 3)  # job_records asserts the raster path took it
    assert len(records) == 4
    for _, record in records:
        np.testing.assert_array_equal(pixels_of(record), reference_window(path, record.crop_box))  # WEBP: GDAL's decode both sides
        if case == "sparse" and record.crop_box[:2] != (0, 0):
            assert not pixels_of(record).any()  # never written: zeros, as GDAL reads them


def test_a_plain_eight_bit_tiff_stays_on_the_photo_path(tmp_path: Path) -> None:
    path = tmp_path / "scan.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", compress="lzw") as ds:
        ds.write(np.zeros((3, 64, 64), np.uint8))
    with open_job(source(path), path.read_bytes()[:HEAD_BYTES], CropSpec("grid", size=(32, 32)), RasterSpec(), 3, 10**9) as job:
        assert job is None


# --- resampling, per-band masks, saturation: the branches the tests above do not reach -----------


def test_resize_without_overviews_is_rasterios_bilinear_read(tmp_path: Path) -> None:
    # The overview test above reads at exactly an overview's factor, where nearest and bilinear
    # give the same samples; without overviews a nearest read differed by up to ~2400 levels.
    from rasterio.enums import Resampling

    data = rastergen.multispectral(512, 384, bands=3)
    path = rastergen.write_raster(tmp_path / "no_ov.tif", data)
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == []
        chip = chips.read_chip(ds, (1, 2, 3), (32, 16, 64, 64), (128, 96), masked=False)
        window = Window(16 * 4, 32 * 4, 64 * 4, 64 * 4)
        bilinear = ds.read(window=window, out_shape=(3, 64, 64), resampling=Resampling.bilinear)
        nearest = ds.read(window=window, out_shape=(3, 64, 64), resampling=Resampling.nearest)
    assert not np.array_equal(bilinear, nearest)  # the data tells the two apart
    np.testing.assert_array_equal(chip.pixels, np.moveaxis(bilinear, 0, -1))


def _per_band_nodata_vrt(tmp_path: Path, data: np.ndarray, nodata_band: int) -> Path:
    """A VRT over a plain GeoTIFF of `data` with nodata=0 on band `nodata_band` only, so the
    bands' masks differ (a GeoTIFF's nodata applies to every band)."""
    tif = rastergen.write_raster(tmp_path / "bands.tif", data)
    count, height, width = data.shape
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}">'
        + ("<NoDataValue>0</NoDataValue>" if b == nodata_band else "")
        + f'<SimpleSource><SourceFilename relativeToVRT="1">{tif.name}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
        "</VRTRasterBand>"
        for b in range(1, count + 1)
    )
    vrt = tmp_path / "bands.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">{bands}</VRTDataset>')
    return vrt


def test_a_pixel_is_valid_only_when_every_band_is_data(tmp_path: Path) -> None:
    # Every other nodata raster masks the same pixels in every band; with "any band is data" a
    # pixel nodata in band 2 alone counted as valid (and has_mask said the raster had no mask).
    data = rastergen.multispectral(32, 32, bands=3) + 1
    data[1, :8, :8] = 0  # band 2 alone is nodata in the top-left 8x8 corner
    vrt = _per_band_nodata_vrt(tmp_path, data, nodata_band=2)
    with rasterio.open(vrt) as ds:
        assert chips.has_mask(ds, (1, 2, 3)) and not chips.has_mask(ds, (1, 3))
        chip = chips.read_chip(ds, (1, 2, 3), (0, 0, 32, 32), (32, 32), masked=True)
        assert chip.valid_fraction == 1 - 64 / (32 * 32)
        assert not chip.valid[:8, :8].any() and chip.valid[8:, :].all() and chip.valid[:, 8:].all()
        values = chips.preview(ds, (1, 2, 3))
    assert values.shape == (3, 32 * 32 - 64)  # the corner's samples are not in the statistics
    assert (values[1] > 0).all()


def test_a_float_rasters_nan_samples_are_not_valid(tmp_path: Path) -> None:
    # Without the finite check a NaN sample (no nodata declared) counted as data.
    data = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    data[1, 3, 4] = np.nan
    data[0, 10, 11] = np.inf
    path = rastergen.write_raster(tmp_path / "nan.tif", data)
    with rasterio.open(path) as ds:
        chip = chips.read_chip(ds, (1, 2), (0, 0, 16, 16), (16, 16), masked=True)
    expected = np.ones((16, 16), bool)
    expected[3, 4] = expected[10, 11] = False
    np.testing.assert_array_equal(chip.valid, expected)
    assert chip.valid_fraction == 254 / 256


def test_small_pad_of_a_masked_raster_keeps_the_mask_inside(tmp_path: Path) -> None:
    # With --small pad the part inside the raster was marked all valid, nodata included.
    data = rastergen.multispectral(20, 20, bands=1) + 1
    data[0, :5, :5] = 0  # 25 nodata pixels inside the raster
    path = rastergen.write_raster(tmp_path / "pad.tif", data, nodata=0)
    with rasterio.open(path) as ds:
        chip = chips.read_chip(ds, (1,), (-5, -5, 30, 30), (20, 20), masked=True)
    assert chip.valid_fraction == (400 - 25) / 900
    assert not chip.valid[5:10, 5:10].any() and chip.valid[10:25, 10:25].all()
    assert not chip.valid[:5].any() and not chip.valid[:, 25:].any()


def test_the_bits_rule_rejects_more_than_one_percent_of_saturated_samples() -> None:
    # Only a source with nearly every sample above the bits was tested: at a 50% threshold,
    # bits:12 on data with 30% of its samples above 4095 passed, 30% of the image white.
    values = np.tile(np.arange(0, 4000, 4, dtype=np.uint16), 10)  # 10000 samples in 0..3996
    for share, rejected in ((0.3, True), (0.05, True), (0.005, False)):
        source = values.copy()
        source[: int(share * source.size)] = 5000
        tracker = convert.RangeTracker(bits=12)
        tracker.add(source, convert.to_uint8(source, 12))
        if rejected:
            with pytest.raises(Rejected) as err:
                tracker.check(convert.Uint8Rule("bits", 12), 12, "uint16")
            assert err.value.reason == "band_mismatch" and "saturates" in err.value.message
        else:
            tracker.check(convert.Uint8Rule("bits", 12), 12, "uint16")


def test_a_percentile_rule_needs_low_below_high() -> None:
    # percentile:50,50 stretched over a span of ~0: a thresholded black-and-white image.
    for bad in ("percentile:50,50", "percentile:0,0", "percentile:100,100"):
        with pytest.raises(ValueError):
            convert.parse_uint8_rule(bad)
    assert convert.parse_uint8_rule("percentile:49,50").percentiles == (49.0, 50.0)
