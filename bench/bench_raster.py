"""Raster benchmark: `--crop grid` over large tiled GeoTIFFs, cropshard vs a bare rasterio loop.

    .venv/bin/python bench/bench_raster.py                    # 10000^2 and 40000^2 (about 1.6 GB of pixels), 3 rounds
    .venv/bin/python bench/bench_raster.py --sizes 4000 10000 --rounds 1 # smaller, for a quick look

For each size it writes (once, cached under ~/.cache/cropshard/rasters) a tiled, deflate-compressed
single-band uint8 GeoTIFF with overviews (the COG layout), then runs, in interleaved rounds (the
order of the two programs alternates per round, so a load change hits both alike):

- cropshard: `cropshard build --crop grid --size 256x256` as a user runs it (no --runner: the
  local DirectRunner with one worker process per core);
- bare: one process that opens with rasterio, reads each 256x256 window, serializes the same
  tf.train.Example (cropshard's schema) and writes one TFRecord file: the floor any raster
  chipper pays.

Both run as child processes. Measured per run: wall seconds (process start included), CPU
seconds of the whole process tree (user + system; the larger of the polled per-process times and
the reaped children's rusage), and peak RSS of the tree (polled every 0.1 s, summed over its
processes). The claims to check: cropshard's peak RSS does not grow with the raster (10000^2 vs
40000^2), and its chips/s is at least 0.9x the bare loop's. Printed, and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import resource
import shutil
import statistics
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


@dataclasses.dataclass
class Run:
    stdout: str
    wall: float
    cpu: float  # CPU seconds of the process tree
    rss: float  # peak RSS of the process tree, MiB
    load: float  # 1-minute load average when the run ended


def run_child(argv: list[str]) -> Run:
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched = psutil.Process(process.pid)
    peak, cpu_by_pid = 0, {}
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
            for p in tree:
                times = p.cpu_times()
                cpu_by_pid[p.pid] = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.monotonic() - start
    stdout = process.stdout.read()
    if process.returncode:
        raise RuntimeError(f"{argv[:4]} failed with {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Run(stdout, wall, max(reaped, sum(cpu_by_pid.values())), peak / 2**20, os.getloadavg()[0])


def run_cropshard(raster: Path, out: Path, python: str) -> Run:
    run = run_child([
        python, "-m", "cropshard.pipeline", "build", f"--input={raster}", f"--output={out}", "--crop=grid", f"--size={CHIP}x{CHIP}",
        "--label_from=none", "--channels=1", "--progress=off",
    ])
    info = json.loads((out / "cropshard.json").read_text())
    shutil.rmtree(out)
    run.stdout = str(sum(split["num_examples"] for split in info["splits"].values()))
    return run


def run_bare(raster: Path, scratch: Path, python: str) -> Run:
    run = run_child([python, "-c", BARE_LOOP, str(raster), str(scratch / "bare.tfrecord"), str(CHIP)])
    (scratch / "bare.tfrecord").unlink()
    run.stdout = run.stdout.split()[0]
    return run


def bench_round(size: int, scratch: Path, cropshard_first: bool) -> dict:
    raster = make_raster(size)
    python = str(REPO / ".venv" / "bin" / "python")
    chips = (size // CHIP) ** 2
    programs = [("cropshard", lambda: run_cropshard(raster, scratch / f"out_{size}", python)), ("bare", lambda: run_bare(raster, scratch, python))]
    runs = {}
    for name, program in programs if cropshard_first else programs[::-1]:
        runs[name] = program()
        assert int(runs[name].stdout) == chips, (name, runs[name].stdout, chips)
    return {"size": size, "chips": chips, "file_mib": raster.stat().st_size / 2**20, **runs}


def summarize(size: int, rounds: list[dict]) -> dict:
    chips = rounds[0]["chips"]
    crop, bare = [r["cropshard"] for r in rounds], [r["bare"] for r in rounds]
    return {
        "size": size, "chips": chips, "file_mib": rounds[0]["file_mib"],
        "crop_rate": statistics.median(chips / r.wall for r in crop), "bare_rate": statistics.median(chips / r.wall for r in bare),
        "ratio": statistics.median(b.wall / c.wall for c, b in zip(crop, bare, strict=True)),
        "crop_ms_cpu": statistics.median(1000 * r.cpu / chips for r in crop), "bare_ms_cpu": statistics.median(1000 * r.cpu / chips for r in bare),
        "crop_rss": max(r.rss for r in crop), "bare_rss": max(r.rss for r in bare),
        "per_round": ", ".join(f"{chips / c.wall:.0f}/{chips / b.wall:.0f} ({b.wall / c.wall:.2f}x, load {c.load:.1f}/{b.load:.1f})" for c, b in zip(crop, bare, strict=True)),
    }


def table(rows: list[dict], command: str) -> list[str]:
    lines = [
        "", f"### Raster grid chipping, tasks over the workers ({datetime.date.today().isoformat()}, `{command}`)", "",
        "| raster | chips | file | cropshard chips/s | bare loop chips/s | cropshard / bare | CPU ms/chip cropshard | CPU ms/chip bare |"
        " cropshard peak RSS | bare peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']}² uint8 | {row['chips']} | {row['file_mib']:.0f} MiB | {row['crop_rate']:.0f} | {row['bare_rate']:.0f} |"
            f" {row['ratio']:.2f}x | {row['crop_ms_cpu']:.2f} | {row['bare_ms_cpu']:.2f} | {row['crop_rss']:.0f} MiB | {row['bare_rss']:.0f} MiB |"
        )
    lines.append("")
    lines.append("Medians over the rounds; per round, cropshard/bare chips/s (ratio, 1-min load average at the end of each run):")
    lines += [f"- {row['size']}²: {row['per_round']}" for row in rows]
    lines.append("")
    lines.append(f"{os.cpu_count()} cores. Wall times include process start (the bare loop imports TensorFlow for its writer; cropshard"
                 " builds and runs the Beam pipeline with its worker processes). CPU and RSS are of the whole process tree (cropshard:"
                 " launcher + workers).")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    by_size: dict[int, list[dict]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-raster-") as scratch:
        for round_index in range(args.rounds):
            for size in sizes:
                row = bench_round(size, Path(scratch), cropshard_first=round_index % 2 == 0)
                by_size[size].append(row)
                crop, bare = row["cropshard"], row["bare"]
                print(f"round {round_index + 1} {size}^2: cropshard {row['chips'] / crop.wall:.0f} chips/s (wall {crop.wall:.1f} s, CPU {crop.cpu:.1f} s,"
                      f" RSS {crop.rss:.0f} MiB, load {crop.load:.1f}); bare {row['chips'] / bare.wall:.0f} chips/s (wall {bare.wall:.1f} s,"
                      f" CPU {bare.cpu:.1f} s, RSS {bare.rss:.0f} MiB, load {bare.load:.1f}); ratio {bare.wall / crop.wall:.2f}x", flush=True)
    command = f"python bench/bench_raster.py --sizes {' '.join(map(str, sizes))} --rounds {args.rounds}"
    lines = table([summarize(size, by_size[size]) for size in sizes], command)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
