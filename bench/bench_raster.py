"""Raster benchmark: `--crop grid` over large tiled GeoTIFFs, cropshard vs a bare rasterio loop.

    .venv/bin/python bench/bench_raster.py                    # 10000^2 and 40000^2 (about 1.6 GB of pixels)
    .venv/bin/python bench/bench_raster.py --sizes 4000 10000 # smaller, for a quick look

For each size it writes (once, cached under ~/.cache/cropshard/rasters) a tiled, deflate-compressed
single-band uint8 GeoTIFF with overviews (the COG layout), then runs in one go:

- cropshard: `cropshard build --crop grid --size 256x256` on the in-process DirectRunner;
- bare: open with rasterio, read each 256x256 window, serialize the same tf.train.Example
  (cropshard's schema), write one TFRecord file: the floor any raster chipper pays.

Both run as child processes; peak RSS is the child's (with its own children), polled. The claims to check: cropshard's peak RSS does not
grow with the raster (10000^2 vs 40000^2), and its chips/s is close to the bare loop's.
Results are printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CROPSHARD_RASTERS", Path.home() / ".cache" / "cropshard" / "rasters"))
RESULTS = REPO / "bench" / "RESULTS.md"
CHIP = 256
BLOCK = 512


def make_raster(size: int) -> Path:
    """A size x size tiled GeoTIFF with overviews, written strip by strip (flat memory)."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path = CACHE / f"grid_{size}.tif"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.tif")
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint8", tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                   compress="deflate", crs="EPSG:32613", transform=from_origin(400000.0, 4500000.0, 0.5, 0.5), BIGTIFF="YES")
    cols = np.arange(size, dtype=np.uint32)
    with rasterio.open(partial, "w", **profile) as dataset:
        for row in range(0, size, BLOCK):
            rows = np.arange(row, min(row + BLOCK, size), dtype=np.uint32)[:, None]
            strip = ((cols[None, :] * 7 + rows * 3) % 251 + (cols[None, :] // 97 + rows // 89) % 5).astype(np.uint8)
            dataset.write(strip[None], window=Window(0, row, size, len(rows)))
        dataset.build_overviews([4, 16, 64], Resampling.average)
    partial.rename(path)
    return path


BARE_LOOP = """
import sys, time
import numpy as np, rasterio, tensorflow as tf
from rasterio.windows import Window
from cropshard.reader import schema
path, out, chip = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.monotonic()
count = 0
# The same GDAL block cache bound as cropshard's (open_raster.SAFE_GDAL_OPTIONS), for equal memory.
with rasterio.Env(GDAL_CACHEMAX=128), rasterio.open(path) as ds, tf.io.TFRecordWriter(out) as writer:
    for y in range(0, ds.height - chip + 1, chip):
        for x in range(0, ds.width - chip + 1, chip):
            window = Window(x, y, chip, chip)
            pixels = np.moveaxis(ds.read(window=window), 0, -1)
            record = schema.ImageRecord(pixels.tobytes(), "raw", chip, chip, 1, -1, "", path, (y, x, chip, chip), "",
                                        "uint8", "EPSG:32613", ds.window_transform(window).to_gdal())
            writer.write(schema.encode_example(record))
            count += 1
print(count, time.monotonic() - start)
"""


def run_child(argv: list[str]) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS MiB of the child and its children, polled every 0.1 s)."""
    import psutil

    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.1)
    stdout = process.stdout.read()
    if process.returncode:
        raise RuntimeError(f"{argv[:4]} failed with {process.returncode}")
    return stdout, time.monotonic() - start, peak / 2**20


def bench(size: int, scratch: Path) -> dict:
    raster = make_raster(size)
    out = scratch / f"out_{size}"
    python = str(REPO / ".venv" / "bin" / "python")
    stdout, wall, rss = run_child([
        python, "-m", "cropshard.pipeline", "build", f"--input={raster}", f"--output={out}", "--crop=grid", f"--size={CHIP}x{CHIP}",
        "--label_from=none", "--channels=1", "--progress=off", "--runner=DirectRunner", "--direct_running_mode=in_memory",
    ])
    chips = (size // CHIP) ** 2
    shutil.rmtree(out)
    bare_out, bare_wall, bare_rss = run_child([python, "-c", BARE_LOOP, str(raster), str(scratch / "bare.tfrecord"), str(CHIP)])
    bare_chips, bare_seconds = bare_out.split()
    assert int(bare_chips) == chips, (bare_chips, chips)
    (scratch / "bare.tfrecord").unlink()
    return {"size": size, "chips": chips, "file_mib": raster.stat().st_size / 2**20, "cropshard_s": wall, "cropshard_rss": rss,
            "bare_s": bare_wall, "bare_loop_s": float(bare_seconds), "bare_rss": bare_rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-raster-") as scratch:
        for size in sorted(args.sizes):
            rows.append(bench(size, Path(scratch)))
            row = rows[-1]
            print(f"{size}^2: {row['chips']} chips; cropshard {row['chips'] / row['cropshard_s']:.0f} chips/s"
                  f" (wall {row['cropshard_s']:.1f} s, peak RSS {row['cropshard_rss']:.0f} MiB); bare loop"
                  f" {row['chips'] / row['bare_s']:.0f} chips/s (wall {row['bare_s']:.1f} s, loop {row['bare_loop_s']:.1f} s,"
                  f" peak RSS {row['bare_rss']:.0f} MiB); ratio {row['bare_s'] / row['cropshard_s']:.2f}x", flush=True)
    lines = [
        "", f"### Raster grid chipping ({datetime.date.today().isoformat()}, `python bench/bench_raster.py --sizes {' '.join(map(str, args.sizes))}`)", "",
        "| raster | chips | file | cropshard chips/s | cropshard peak RSS | bare rasterio loop chips/s | bare peak RSS | cropshard / bare |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']}² uint8 | {row['chips']} | {row['file_mib']:.0f} MiB | {row['chips'] / row['cropshard_s']:.0f} |"
            f" {row['cropshard_rss']:.0f} MiB | {row['chips'] / row['bare_s']:.0f} | {row['bare_rss']:.0f} MiB | {row['bare_s'] / row['cropshard_s']:.2f}x |"
        )
    lines.append("")
    lines.append("Wall times include process start (TensorFlow import; cropshard also builds and runs a Beam pipeline on the in-process runner).")
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
