"""Real satellite files: the WorldView-2 scene of the `dgsamples` wheel (8-band multispectral
uint16 and 11-bit panchromatic TIFFs that declare 16 bits), fetched once with pip into
${CROPSHARD_CACHE:-~/.cache/cropshard}/dgsamples (never into the repository).

- 8 bands, --dtype keep: every chip equals rasterio's window read, value for value;
- panchromatic, --dtype uint8: the default `bits` rule would give values 0..7 (black) and is
  rejected `range_collapsed` naming `bits:11`; with `--to_uint8 bits:11` the chips are the
  window read >> 3, their histogram spread over the 256 levels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cropshard import reader
from cropshard.pipeline.build import BuildFailed, run
from rasterio.windows import Window

CACHE = Path(os.environ.get("CROPSHARD_CACHE", Path.home() / ".cache" / "cropshard")) / "dgsamples"
SCENE = "dgsamples/wv2_longmont_1k"
pytestmark = pytest.mark.slow  # pip download on first use, real builds
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off", "--label_from=none"]


@pytest.fixture(scope="module")
def scene() -> dict[str, Path]:
    """{'mul': 8-band TIFF, 'pan': panchromatic TIFF} of the WorldView-2 sample scene."""
    unpacked = CACHE / "unpacked"
    if not (unpacked / SCENE).exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "dgsamples==1.1.2", "-d", str(CACHE)], check=True)
        (wheel,) = CACHE.glob("dgsamples-*.whl")
        partial = CACHE / "unpacking"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(partial)
        partial.rename(unpacked)  # whole or not at all
    return {kind: next((unpacked / SCENE).glob(f"*_{kind.upper()}/*.TIF")) for kind in ("mul", "pan")}


def window(path: Path, box) -> np.ndarray:
    y, x, h, w = (int(v) for v in box)
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(window=Window(x, y, w, h)), 0, -1)


def test_eight_band_worldview_round_trips_exactly(scene: dict[str, Path], tmp_path: Path) -> None:
    with rasterio.open(scene["mul"]) as ds:
        assert (ds.count, ds.dtypes[0]) == (8, "uint16")
    out = tmp_path / "mul"
    info = run([f"--input={scene['mul']}", f"--output={out}", "--crop=grid", "--size=128x128", "--bands=1,2,3,4,5,6,7,8", "--dtype=keep", *IN_PROCESS]).info
    assert info.num_images_written == 1 and info.num_examples == (501 // 128) * (500 // 128)
    assert info.raster["crs_seen"] == ["EPSG:32613"]
    for image, _, meta in reader.load(str(out), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        np.testing.assert_array_equal(image, window(scene["mul"], meta["source_crop_box"]))


def test_eleven_bit_panchromatic_is_never_black(scene: dict[str, Path], tmp_path: Path) -> None:
    with rasterio.open(scene["pan"]) as ds:
        assert ds.dtypes[0] == "uint16" and int(ds.read(1, window=Window(0, 0, 512, 512)).max()) < 2048
    common = [f"--input={scene['pan']}", "--crop=grid", "--size=256x256", "--channels=1", "--encoding=png", *IN_PROCESS]
    with pytest.raises(BuildFailed):  # its only input rejected: no example, nothing published
        run([*common, f"--output={tmp_path / 'default'}"])
    (line,) = (tmp_path / "default" / "rejected.jsonl").read_text().splitlines()
    assert '"reason": "range_collapsed"' in line and "--to_uint8 bits:11" in line

    info = run([*common, f"--output={tmp_path / 'bits11'}", "--to_uint8=bits:11"]).info
    assert info.num_examples == (2004 // 256) * (2000 // 256)
    levels = set()
    for image, _, meta in reader.load(str(tmp_path / "bits11"), batch_size=None, shuffle=False, normalize="none", with_metadata=True).as_numpy_iterator():
        np.testing.assert_array_equal(image, (window(scene["pan"], meta["source_crop_box"]) >> 3).astype(np.uint8))
        levels |= set(np.unique(image).tolist())
    assert len(levels) > 200  # the histogram is spread, not 8 levels
