"""`cropshard inspect --leakage` and `--rgb`: overlapping footprints across splits found (and
absent with --split_by), rotated tiles that only touch not reported, identical photos across
splits found; multiband contact sheets, float nodata drawn in the nodata colour."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from cropshard.pipeline.build import BuildFailed, run
from cropshard.tools import contact_sheet, inspect
from cropshard.tools.contact_sheet import NODATA_COLOUR, display_pixels
from cropshard.tools.leakage import (
    Footprint,
    cross_crs_pairs,
    find_leaks,
    footprint_box,
    footprints,
    interiors_meet,
    map_footprint,
    overlapping_pairs,
)
from cropshard.transforms.crop import hash_split

from tests import imagegen, rastergen

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]
HALVES = (("train", 0.5), ("test", 0.5))
# 1 m pixels rotated by 30 degrees: the chips' bounding boxes overlap their neighbours' even where the chips only touch.
ROTATED = Affine(0.86602540378, -0.5, 500000.0, -0.5, -0.86602540378, 4000000.0)


def test_footprint_box_and_pairs() -> None:
    assert footprint_box((100.0, 2.0, 0.0, 500.0, 0.0, -2.0), 10, 20) == (100.0, 480.0, 140.0, 500.0)
    a = Footprint("train", "crs:EPSG:1", (0.0, 0.0, 10.0, 10.0), "a")
    b = Footprint("test", "crs:EPSG:1", (9.0, 9.0, 19.0, 19.0), "b")
    touching = Footprint("test", "crs:EPSG:1", (10.0, 0.0, 20.0, 10.0), "c")
    same_split = Footprint("train", "crs:EPSG:1", (5.0, 5.0, 15.0, 15.0), "d")
    other_crs = Footprint("test", "crs:EPSG:2", (0.0, 0.0, 10.0, 10.0), "e")
    pairs = overlapping_pairs([a, b, touching, same_split, other_crs])
    assert sorted(tuple(sorted((p.filename, q.filename))) for p, q in pairs) == [("a", "b"), ("b", "d"), ("c", "d")]  # a, c only touch


def _chips(split: str, tile: Affine, size: int = 512, chip: int = 256) -> list[Footprint]:
    """The grid chips of a size x size tile with transform `tile`, named split:row,col."""
    return [map_footprint(split, "EPSG:32632", (tile @ Affine.translation(col, row)).to_gdal(), chip, chip, f"{split}:{row},{col}")
            for row in range(0, size, chip) for col in range(0, size, chip)]


def _names(pairs: list[tuple[Footprint, Footprint]]) -> list[tuple[str, str]]:
    return sorted(tuple(sorted((a.filename, b.filename))) for a, b in pairs)


def test_rotated_chips_that_touch_are_not_an_overlap() -> None:
    east = ROTATED @ Affine.translation(512, 0)
    assert overlapping_pairs(_chips("train", ROTATED) + _chips("test", east)) == []
    assert overlapping_pairs(_chips("train", ROTATED) + _chips("test", ROTATED @ Affine.translation(512, 512))) == []  # a corner
    # Rounding in a stored transform (1e-9 m here) does not turn touching into overlapping.
    nudged = Affine(east.a, east.b, east.c - 1e-9, east.d, east.e, east.f + 1e-9)
    assert overlapping_pairs(_chips("train", ROTATED) + _chips("test", nudged)) == []


def test_rotated_chips_overlapping_by_a_sliver_are_reported_pair_by_pair() -> None:
    sliver = ROTATED @ Affine.translation(500, 0)  # 12 pixels of the next tile's left chips lie on this one's right chips
    pairs = overlapping_pairs(_chips("train", ROTATED) + _chips("test", sliver))
    assert _names(pairs) == [("test:0,0", "train:0,256"), ("test:256,0", "train:256,256")]
    assert overlapping_pairs(_chips("train", ROTATED) + _chips("train", sliver)) == []  # one split: no leak


def test_interiors_meet_by_separating_axes() -> None:
    diamond = np.array([[[1.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 1.0]]])
    square = np.array([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    assert interiors_meet(diamond, square).tolist() == [True]  # boxes and interiors overlap
    assert interiors_meet(diamond, square + [1.5, 1.5]).tolist() == [False]  # boxes overlap, a diamond edge separates them
    assert interiors_meet(diamond, diamond + [1.0, 1.0]).tolist() == [False]  # a shared edge
    assert interiors_meet(square, square + [1.0 - 1e-9, 0.0], 1e-6).tolist() == [False]  # within the tolerance
    assert interiors_meet(square, square + [1.0 - 1e-3, 0.0], 1e-6).tolist() == [True]
    assert interiors_meet(square, np.array([[[0.0, 0.5], [1.0, 0.5], [1.0, 0.5], [0.0, 0.5]]])).tolist() == [False]  # zero area


def _names_in_different_splits() -> tuple[str, str]:
    names = [f"scene{i}.tif" for i in range(20)]
    first = names[0]
    second = next(n for n in names[1:] if hash_split(n, HALVES) != hash_split(first, HALVES))
    return first, second


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("overlap")
    first, second = _names_in_different_splits()
    rastergen.write_raster(root / "in" / first, rastergen.multispectral(128, 128, bands=4, seed=1))
    rastergen.write_raster(root / "in" / second, rastergen.multispectral(128, 128, bands=4, seed=2), origin=(487548.0 + 64.0, 4443554.0 - 32.0))
    return root


def build(root: Path, name: str, *extra: str) -> str:
    out = str(root / name)
    run([f"--input={root / 'in'}", f"--output={out}", "--crop=grid", "--size=32x32", "--bands=1,2,3,4", "--dtype=keep",
         "--split=train=0.5,test=0.5", "--label_from=none", *extra, *IN_PROCESS], command_line=["test"])
    return out


@pytest.mark.slow  # two real builds
def test_per_source_splits_of_overlapping_rasters_leak_and_split_by_does_not(overlapping: Path, capsys) -> None:
    leaky = build(overlapping, "per_source")
    report = find_leaks(leaky, inspect.load_info(leaky))
    # The rasters overlap on 96 x 112 pixels: whole 32-pixel tiles of each meet tiles of the other.
    assert report.overlaps and not report.shared_sources
    assert all(a.split != b.split for a, b in report.overlaps)
    assert inspect.main([leaky, "--leakage", "--no-labels"]) == 1
    assert "LEAKAGE" in capsys.readouterr().out

    safe = build(overlapping, "blocks", "--split_by=block:128")
    report = find_leaks(safe, inspect.load_info(safe))
    assert report.clean and report.examples > 0
    assert inspect.main([safe, "--leakage", "--no-labels"]) == 0
    out = capsys.readouterr().out
    assert "no leakage found" in out
    # The chips that straddle a block boundary are not written, and the description says how many.
    skipped = inspect.load_info(safe).chips_skipped["split_boundary"]
    assert skipped > 0 and f"chips skipped split_boundary {skipped} (raster chips not written)" in out

    sheet = overlapping / "sheet.png"
    assert inspect.main([safe, "--no-labels", "--contact-sheet", str(sheet), "--rgb", "3,2,1", "--samples", "4"]) == 0
    assert sheet.stat().st_size > 0
    assert inspect.main([safe, "--no-labels", "--contact-sheet", str(sheet)]) == 2  # 4 bands: --rgb needed


def _write_rotated(path: Path, transform: Affine, seed: int) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint16", crs="EPSG:32632", transform=transform) as out:
        out.write(rastergen.multispectral(64, 64, bands=4, seed=seed))


@pytest.mark.slow  # two real builds
@pytest.mark.parametrize(("shift", "pairs"), [(64, 0), (60, 2)])  # the next tile east sharing an edge; overlapping by 4 pixels
def test_rotated_rasters_leak_only_where_they_overlap(tmp_path: Path, shift: int, pairs: int, capsys) -> None:
    first, second = _names_in_different_splits()
    _write_rotated(tmp_path / "in" / first, ROTATED, seed=1)
    _write_rotated(tmp_path / "in" / second, ROTATED @ Affine.translation(shift, 0), seed=2)
    out = build(tmp_path, "out")
    report = find_leaks(out, inspect.load_info(out))
    assert report.examples == 8 and len(report.overlaps) == pairs
    assert all(a.split != b.split and a.filename != b.filename for a, b in report.overlaps)
    assert inspect.main([out, "--leakage", "--no-labels"]) == (1 if pairs else 0)
    assert f"footprints overlapping across splits: {pairs} pairs" in capsys.readouterr().out


@pytest.mark.slow  # a real build
def test_the_same_photo_in_two_splits_is_reported(tmp_path: Path) -> None:
    pixels = imagegen.photo(80, 80, seed=3)
    imagegen.save(tmp_path / "in" / "train" / "cat" / "a.png", pixels)
    imagegen.save(tmp_path / "in" / "test" / "cat" / "copy.png", pixels)
    imagegen.save(tmp_path / "in" / "test" / "cat" / "other.png", imagegen.photo(80, 80, seed=4))
    out = str(tmp_path / "out")
    run([f"--input={tmp_path / 'in'}", f"--output={out}", "--size=32x32", "--split=train,test", *IN_PROCESS], command_line=["test"])
    report = find_leaks(out, inspect.load_info(out))
    assert list(report.shared_sources.values()) == [{"train", "test"}] and not report.overlaps


def test_display_pixels_stretch_and_band_choice() -> None:
    wide = np.stack([np.linspace(0, 2047, 100).reshape(10, 10)] * 4, axis=-1).astype(np.uint16)
    shown = display_pixels(wide, (4, 3, 2))
    assert shown.dtype == np.uint8 and shown.shape == (10, 10, 3) and shown.min() == 0 and shown.max() == 255
    assert display_pixels(np.full((4, 4, 3), 7, np.uint8), None).max() == 7  # uint8 photos as stored
    with pytest.raises(ValueError, match="--rgb"):
        display_pixels(wide, None)


def test_display_pixels_stretches_finite_values_and_marks_nan_nodata() -> None:
    rng = np.random.default_rng(0)
    clean = rng.random((16, 16, 3)).astype(np.float32)
    holed = clean.copy()
    holed[:4, :4, :] = np.nan  # a nodata corner, as a float32 raster with nodata NaN has
    holed[8, 8, 1] = np.inf  # one band out suffices to mark the pixel
    nodata = np.isnan(holed[..., 0]) | np.isinf(holed[..., 1])
    shown = display_pixels(holed, (1, 2, 3))
    assert (shown[nodata] == NODATA_COLOUR).all()
    # The rest keeps the 2-98% stretch of each band's finite values: not black, the full 0..255 range.
    finite = np.where(np.isfinite(holed), holed, np.nan).astype(np.float64)
    low, high = np.nanpercentile(finite, 2, axis=(0, 1)), np.nanpercentile(finite, 98, axis=(0, 1))
    expected = (np.clip((finite - low) / (high - low), 0, 1) * 255).round()
    assert np.array_equal(shown[~nodata], expected[~nodata].astype(np.uint8))
    assert shown[~nodata].min() == 0 and shown[~nodata].max() == 255
    assert shown[~nodata].mean() > 64


def test_display_pixels_all_nan_and_single_band_nodata() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "All-NaN slice" or invalid-value warnings either
        blank = display_pixels(np.full((8, 8, 3), np.nan, np.float32), (1, 2, 3))
    assert blank.dtype == np.uint8 and (blank == NODATA_COLOUR).all()
    band = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8, 1)
    band[0, 0, 0] = np.nan
    grey = display_pixels(band, None)
    assert grey.shape == (8, 8, 3) and tuple(grey[0, 0]) == NODATA_COLOUR  # grey RGB to carry the colour
    assert (grey[1:, :, 0] == grey[1:, :, 2]).all() and grey[1:].max() == 255
    assert display_pixels(band[1:], None).shape == (7, 8, 1)  # no nodata: one channel as before


@pytest.mark.slow  # a real build
def test_contact_sheet_of_float_chips_with_nan_nodata(tmp_path: Path) -> None:
    data = rastergen.multispectral(64, 64, bands=3, seed=5).astype(np.float32) / 2048
    data[:, :10, :10] = np.nan
    rastergen.write_raster(tmp_path / "in" / "refl.tif", data, nodata=float("nan"))
    out = str(tmp_path / "out")
    run([f"--input={tmp_path / 'in'}", f"--output={out}", "--crop=grid", "--size=32x32", "--dtype=keep", "--max_nodata=0.2",
         "--label_from=none", *IN_PROCESS], command_line=["test"])
    samples = {s.source_box[:2]: s.image for s in contact_sheet._read_samples(out, "train", 4, seed=0, rgb=(1, 2, 3))}
    corner = samples[(0, 0)]
    assert (corner[:10, :10] == NODATA_COLOUR).all()
    assert corner[10:].max() == 255 and corner[10:].mean() > 64  # the valid pixels are stretched, not black
    sheet = tmp_path / "sheet.png"
    assert inspect.main([out, "--no-labels", "--contact-sheet", str(sheet), "--rgb", "1,2,3", "--samples", "4"]) == 0
    assert sheet.stat().st_size > 0


@pytest.mark.slow  # two real builds
def test_one_crs_spelt_two_ways_is_one_block_grid_and_one_footprint_space(tmp_path: Path) -> None:
    """Two overlapping rasters in one custom CRS (no EPSG code) whose WKTs differ in the CRS's
    name, as two tools write them: --split_by gave each WKT its own block grid (overlapping chips
    in train and test) and the leakage tool compared neither with the other."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    wkt = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=7.4386 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs").to_wkt()
    first, second = _names_in_different_splits()
    for name, text, shift, seed in ((first, wkt, 0, 1), (second, wkt.replace('PROJCS["unknown"', 'PROJCS["Site grid"', 1), 64, 2)):
        (tmp_path / "in").mkdir(exist_ok=True)
        with rasterio.open(tmp_path / "in" / name, "w", driver="GTiff", width=128, height=128, count=4, dtype="uint16",
                           crs=CRS.from_wkt(text), transform=from_origin(1000.0 + shift, 5000.0, 1.0, 1.0)) as out:
            out.write(rastergen.multispectral(128, 128, bands=4, seed=seed))
    per_source = build(tmp_path, "per_source")
    assert len(inspect.load_info(per_source).raster["crs_seen"]) == 2  # the texts, as the files spell them
    assert find_leaks(per_source, inspect.load_info(per_source)).overlaps
    blocks = build(tmp_path, "blocks", "--split_by=block:64")
    report = find_leaks(blocks, inspect.load_info(blocks))
    assert report.clean and all(split.num_examples for split in inspect.load_info(blocks).splits.values())


@pytest.mark.slow  # a real build
def test_copies_of_a_raster_without_a_crs_in_two_splits_are_reported(tmp_path: Path) -> None:
    """Byte-identical rasters without a CRS (their chips carry a pixel-grid transform) in train
    and test: the same-bytes check skipped every record with a transform, and each copy's
    footprints are in its own pixel space, so the tool said 'no leakage found'."""
    first, second = _names_in_different_splits()
    data = rastergen.multispectral(64, 64, bands=4, seed=5)
    for name in (first, second):
        rastergen.write_raster(tmp_path / "in" / name, data, crs=None)
    out = build(tmp_path, "out")
    report = find_leaks(out, inspect.load_info(out))
    assert list(report.shared_sources.values()) == [{"train", "test"}]
    # One raster file split by --split_by blocks shares its digest across splits by design.
    rastergen.write_raster(tmp_path / "one" / "in" / first, data, crs=None)
    blocks = build(tmp_path / "one", "blocks", "--split_by=block:32")
    assert all(split.num_examples for split in inspect.load_info(blocks).splits.values())  # one file in both splits
    assert find_leaks(blocks, inspect.load_info(blocks)).clean


# --- rasters in two UTM zones: neighbouring zones overlap, and their grids are turned ------------


def _clip_area(subject: list[tuple[float, float]], clip: list[tuple[float, float]]) -> float:
    """Area of two convex polygons' intersection (Sutherland-Hodgman), independent of the tool's test."""
    def side(p, a, b):  # noqa: ANN001, ANN202
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    if side(clip[2], clip[0], clip[1]) < 0:
        clip = clip[::-1]
    polygon = list(subject)
    for a, b in zip(clip, clip[1:] + clip[:1], strict=True):
        points, polygon = polygon, []
        for p, q in zip(points, points[1:] + points[:1], strict=True):
            sp, sq = side(p, a, b), side(q, a, b)
            if sp >= 0:
                polygon.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                polygon.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        if not polygon:
            return 0.0
    return 0.5 * abs(sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(polygon, polygon[1:] + polygon[:1], strict=True)))


@pytest.fixture(scope="module")
def two_zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2.56 km scene near 12E in UTM 32N, and the same ground warped into UTM 33N."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    root = tmp_path_factory.mktemp("zones")
    data = rastergen.multispectral(256, 256, bands=3, high=255, seed=3).astype(np.uint8)
    first = rastergen.write_raster(root / "in" / "zone32.tif", data, crs="EPSG:32632", origin=(791000.0, 5329000.0), pixel=10.0)
    import rasterio

    with rasterio.open(first) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:32633", src.width, src.height, *src.bounds, resolution=10)
        warped = np.zeros((3, height, width), np.uint8)
        reproject(data, warped, src_transform=src.transform, src_crs=src.crs, dst_transform=transform, dst_crs="EPSG:32633",
                  resampling=Resampling.nearest)
    with rasterio.open(root / "in" / "zone33.tif", "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as out:
        out.write(warped)
    return root


def _zone_build(root: Path, name: str, *extra: str, source: str = "in") -> str:
    out = str(root / name)
    manifest = any(arg.startswith("--manifest") for arg in extra)
    inputs = [] if manifest else [f"--input={root / source}", "--label_from=none"]
    run([f"--output={out}", "--crop=grid", "--size=32x32", *inputs, *extra, *IN_PROCESS], command_line=["test"])
    return out


def _expected_cross_pairs(dataset: str) -> set[tuple[str, str]]:
    """Pairs (zone-32 chip, zone-33 chip) in different splits whose ground overlaps by more than a
    millionth of a pixel: zone 33's corners reprojected into zone 32, intersected by clipping."""
    from rasterio.warp import transform as reproject

    items, _, _ = footprints(dataset, inspect.load_info(dataset))
    first = [item for item in items if item.filename.endswith("zone32.tif")]
    second = [item for item in items if item.filename.endswith("zone33.tif")]
    xs, ys = reproject("EPSG:32633", "EPSG:32632", [x for item in second for x, _ in item.corners], [y for item in second for _, y in item.corners])
    moved = [list(zip(xs[4 * k : 4 * k + 4], ys[4 * k : 4 * k + 4], strict=True)) for k in range(len(second))]
    return {(f"{a.split}{a.box}", f"{b.split}{b.box}") for a in first for b, corners in zip(second, moved, strict=True)
            if a.split != b.split and _clip_area(list(a.corners), corners) > 1e-6 * 100.0}


@pytest.mark.slow  # four real builds
def test_rasters_in_two_utm_zones_leak_are_found_and_split_crs_keeps_them_apart(two_zones: Path, capsys) -> None:
    """Neighbouring UTM zones' rasters overlap: the tool compared footprints per CRS only (so it
    said clean on a leaking dataset), and --split_by cut each zone's blocks on its own grid."""
    manifest = two_zones / "splits.csv"
    manifest.write_text(f"path,split\n{two_zones / 'in' / 'zone32.tif'},train\n{two_zones / 'in' / 'zone33.tif'},test\n")
    leaky = _zone_build(two_zones, "per_file", f"--manifest={manifest}", "--split=train,test")
    report = find_leaks(leaky, inspect.load_info(leaky))
    found = {tuple(sorted((f"{a.split}{a.box}", f"{b.split}{b.box}"), key=lambda s: not s.startswith("train"))) for a, b in report.overlaps}
    expected = _expected_cross_pairs(leaky)
    assert len(expected) > 64 and found == expected  # every 32 px chip of one zone meets several of the other's
    assert inspect.main([leaky, "--leakage", "--no-labels"]) == 1
    assert "crs:" in capsys.readouterr().out

    blocks = ["--split=train=0.5,test=0.5", "--split_by=block:1000"]
    with pytest.raises(BuildFailed, match=r"the rasters are in 2 CRSs \(EPSG:32632; EPSG:32633\).*--split_crs EPSG:32632"):
        _zone_build(two_zones, "mixed", *blocks)
    assert not (two_zones / "mixed" / "cropshard.json").exists()

    safe = _zone_build(two_zones, "split_crs", *blocks, "--split_crs=EPSG:32632")
    info = inspect.load_info(safe)
    assert info.raster["split_crs"] == "EPSG:32632" and all(split.num_examples for split in info.splits.values())
    assert find_leaks(safe, info).clean
    # Zone 32's chips are in the split CRS already: their splits are those of a build of zone 32 alone.
    (two_zones / "alone").mkdir()
    (two_zones / "alone" / "zone32.tif").symlink_to(two_zones / "in" / "zone32.tif")
    alone = _zone_build(two_zones, "zone32_alone", *blocks, source="alone")
    assert _zone32_chips(safe) == _zone32_chips(alone) and _zone32_chips(safe)


def _zone32_chips(dataset: str) -> set[tuple[str, tuple]]:
    items, _, _ = footprints(dataset, inspect.load_info(dataset))
    return {(item.split, item.box) for item in items if item.filename.endswith("zone32.tif")}


def _geo(split: str, crs: str, transform: tuple[float, ...], height: int, width: int, name: str) -> Footprint:
    from cropshard.transforms.raster.chips import crs_identity

    return map_footprint(split, crs_identity(crs), transform, height, width, name, crs)


def test_curved_footprints_across_crss_are_compared_as_they_lie() -> None:
    """A 2.56-degree geographic chip is an arc-edged shape in a conic projection (~700 m of sag):
    its four reprojected corners missed a chip wholly inside its south edge and reported one 155 m
    beyond its north edge."""
    geographic = _geo("train", "EPSG:4326", (-100.0, 0.01, 0.0, 62.56, 0.0, -0.01), 256, 256, "geographic")
    from rasterio.warp import transform as reproject

    def lcc_chip(lon: float, lat: float, name: str) -> Footprint:  # a 320 m chip whose top-left corner is at lon, lat
        (x,), (y,) = reproject("EPSG:4326", "EPSG:3978", [lon], [lat])
        return _geo("test", "EPSG:3978", (x, 10.0, 0.0, y, 0.0, -10.0), 32, 32, name)

    inside = lcc_chip(-98.72, 60.0048, "inside the south edge")
    outside = lcc_chip(-98.72, 62.5645, "beyond the north edge")
    pairs, uncompared = cross_crs_pairs([geographic, inside, outside])
    assert sorted(b.filename if a is geographic else a.filename for a, b in pairs) == ["inside the south edge"] and uncompared == 0


def test_the_antimeridian_and_the_poles_across_crss() -> None:
    # A UTM 60N chip across 180E and a chip at Greenwich: 12,000 km apart (it was a leak: the corners wrapped around the Earth).
    across = _geo("train", "EPSG:32660", (700000.0, 1000.0, 0.0, 5530000.0, 0.0, -1000.0), 30, 30, "across 180E")
    greenwich = _geo("test", "EPSG:4326", (0.0, 0.01, 0.0, 51.0, 0.0, -0.01), 100, 100, "greenwich")
    east = _geo("test", "EPSG:4326", (-179.9, 0.01, 0.0, 49.9, 0.0, -0.01), 20, 20, "just east of 180")
    pairs, _ = cross_crs_pairs([across, greenwich, east])
    assert [(a.filename, b.filename) for a, b in pairs] == [("across 180E", "just east of 180")]
    # A polar stereographic chip around the pole holds the whole cap north of 89.9N (its corners all collapse onto the pole).
    pole = _geo("train", "EPSG:3413", (-20000.0, 200.0, 0.0, 20000.0, 0.0, -200.0), 200, 200, "pole")
    cap = _geo("test", "EPSG:4326", (-180.0, 1.0, 0.0, 90.0, 0.0, -0.001), 100, 360, "cap")
    assert [(a.filename, b.filename) for a, b in cross_crs_pairs([pole, cap])[0]] == [("pole", "cap")]
