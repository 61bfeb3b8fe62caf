"""`cropshard inspect --leakage` and `--rgb`: overlapping footprints across splits found (and
absent with --split_by), identical photos across splits found; multiband contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cropshard.pipeline.build import run
from cropshard.tools import inspect
from cropshard.tools.contact_sheet import display_pixels
from cropshard.tools.leakage import Footprint, find_leaks, footprint_box, overlapping_pairs
from cropshard.transforms.crop import hash_split

from tests import imagegen, rastergen

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]
HALVES = (("train", 0.5), ("test", 0.5))


def test_footprint_box_and_pairs() -> None:
    assert footprint_box((100.0, 2.0, 0.0, 500.0, 0.0, -2.0), 10, 20) == (100.0, 480.0, 140.0, 500.0)
    a = Footprint("train", "crs:EPSG:1", (0.0, 0.0, 10.0, 10.0), "a")
    b = Footprint("test", "crs:EPSG:1", (9.0, 9.0, 19.0, 19.0), "b")
    touching = Footprint("test", "crs:EPSG:1", (10.0, 0.0, 20.0, 10.0), "c")
    same_split = Footprint("train", "crs:EPSG:1", (5.0, 5.0, 15.0, 15.0), "d")
    other_crs = Footprint("test", "crs:EPSG:2", (0.0, 0.0, 10.0, 10.0), "e")
    pairs = overlapping_pairs([a, b, touching, same_split, other_crs])
    assert sorted(tuple(sorted((p.filename, q.filename))) for p, q in pairs) == [("a", "b"), ("b", "d"), ("c", "d")]  # a, c only touch


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
