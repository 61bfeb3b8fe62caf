"""Raster benchmark: `--crop grid` over large tiled GeoTIFFs, cropshard vs a bare rasterio loop.

    .venv/bin/python bench/bench_raster.py                    # 10000^2 and 40000^2 (about 1.6 GB of pixels), 3 rounds
    .venv/bin/python bench/bench_raster.py --sizes 4000 10000 --rounds 1 # smaller, for a quick look

For each size it writes (once, cached under ~/.cache/cropshard/rasters) a tiled, deflate-compressed
single-band uint8 GeoTIFF with overviews (the COG layout), then runs, in interleaved rounds (the
order of the programs rotates per round, so a load change hits all alike):

- cropshard: `cropshard build --crop grid --size 256x256` as a user runs it (no --runner: the
  local DirectRunner with one worker process per core; stable shard contents, the default on a
  local output: every record is written to a part file, then copied into its shard in key order);
- cropshard runner-chosen: the same with `--shard_contents runner-chosen` (records written once);
- bare: one process that opens with rasterio, reads each 256x256 window, serializes the same
  tf.train.Example (cropshard's schema) and writes one TFRecord file: the floor any raster
  chipper pays.

All run as child processes, each after `os.sync()`, so no program's writes wait on the previous
one's dirty pages (a standalone 1.6 GB copy took 3-4 s right after another program's 1.6 GB and
mostly 0.6-1.0 s after a sync here; fresh page-cache pages stay expensive on a VM either way).
Measured per run: wall seconds (process start included), CPU seconds of the whole process tree
(user + system; the larger of the polled per-process times and the reaped children's rusage), and
peak RSS of the tree (polled every 0.1 s, summed over its processes). With two or more sizes, the
marginal rate is also shown: (chips of the largest - chips of the smallest) / (wall of the largest -
wall of the smallest), per round, which takes out the fixed cost of starting each program (Beam's
launcher and workers; the bare loop's TensorFlow import). The claims to check: cropshard's peak RSS
does not grow with the raster (10000^2 vs 40000^2), and its chips/s is at least 0.9x the bare
loop's. Printed, and appended to bench/RESULTS.md.
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
from cropshard.transforms.raster.open_raster import GDAL_CACHE_BYTES
path, out, chip = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.monotonic()
count = 0
# The same GDAL block cache bound as cropshard's (open_raster.SAFE_GDAL_OPTIONS), for equal memory.
with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), rasterio.open(path) as ds, tf.io.TFRecordWriter(out) as writer:
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


def run_cropshard(raster: Path, out: Path, python: str, shard_contents: str) -> Run:
    run = run_child([
        python, "-m", "cropshard.pipeline", "build", f"--input={raster}", f"--output={out}", "--crop=grid", f"--size={CHIP}x{CHIP}",
        "--label_from=none", "--channels=1", "--progress=off", f"--shard_contents={shard_contents}",
    ])
    info = json.loads((out / "cropshard.json").read_text())
    shutil.rmtree(out)
    assert info["shard_contents"] == ("stable" if shard_contents == "auto" else shard_contents), info["shard_contents"]
    run.stdout = str(sum(split["num_examples"] for split in info["splits"].values()))
    return run


def run_bare(raster: Path, scratch: Path, python: str) -> Run:
    run = run_child([python, "-c", BARE_LOOP, str(raster), str(scratch / "bare.tfrecord"), str(CHIP)])
    (scratch / "bare.tfrecord").unlink()
    run.stdout = run.stdout.split()[0]
    return run


PROGRAMS = ("cropshard", "runner-chosen", "bare")  # cropshard: the default build (stable shard contents)


def bench_round(size: int, scratch: Path, rotation: int) -> dict:
    raster = make_raster(size)
    python = str(REPO / ".venv" / "bin" / "python")
    chips = (size // CHIP) ** 2
    programs = {
        "cropshard": lambda: run_cropshard(raster, scratch / f"out_{size}", python, "auto"),
        "runner-chosen": lambda: run_cropshard(raster, scratch / f"out_{size}", python, "runner-chosen"),
        "bare": lambda: run_bare(raster, scratch, python),
    }
    order = PROGRAMS[rotation % 3:] + PROGRAMS[: rotation % 3]
    runs = {}
    for name in order:
        os.sync()  # no dirty pages of the previous program left to write back during this one
        runs[name] = programs[name]()
        assert int(runs[name].stdout) == chips, (name, runs[name].stdout, chips)
    return {"size": size, "chips": chips, "file_mib": raster.stat().st_size / 2**20, **runs}


def summarize(size: int, rounds: list[dict]) -> dict:
    chips = rounds[0]["chips"]
    bare = [r["bare"] for r in rounds]
    row = {"size": size, "chips": chips, "file_mib": rounds[0]["file_mib"], "bare_rate": statistics.median(chips / r.wall for r in bare),
           "bare_ms_cpu": statistics.median(1000 * r.cpu / chips for r in bare), "bare_rss": max(r.rss for r in bare)}
    for name in PROGRAMS[:2]:
        runs = [r[name] for r in rounds]
        row[name] = {
            "rate": statistics.median(chips / r.wall for r in runs),
            "ratio": statistics.median(b.wall / c.wall for c, b in zip(runs, bare, strict=True)),
            "ms_cpu": statistics.median(1000 * r.cpu / chips for r in runs), "rss": max(r.rss for r in runs),
            "per_round": ", ".join(f"{chips / c.wall:.0f}/{chips / b.wall:.0f} ({b.wall / c.wall:.2f}x, load {c.load:.1f}/{b.load:.1f})"
                                   for c, b in zip(runs, bare, strict=True)),
        }
    return row


def marginal(small: list[dict], large: list[dict]) -> dict[str, tuple[float, list[float]]]:
    """Per program: the median marginal chips/s between two sizes and, per round, its ratio to the bare loop's."""
    chips = large[0]["chips"] - small[0]["chips"]
    rates = {name: [chips / (lg[name].wall - sm[name].wall) for sm, lg in zip(small, large, strict=True)] for name in PROGRAMS}
    return {name: (statistics.median(rates[name]), [r / b for r, b in zip(rates[name], rates["bare"], strict=True)]) for name in PROGRAMS}


def table(rows: list[dict], margins: dict | None, command: str) -> list[str]:
    lines = [
        "", f"### Raster grid chipping, tasks over the workers ({datetime.date.today().isoformat()}, `{command}`)", "",
        "| raster | chips | file | program | chips/s | bare loop chips/s | program / bare | CPU ms/chip | CPU ms/chip bare |"
        " peak RSS | bare peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for name in PROGRAMS[:2]:
            r = row[name]
            lines.append(
                f"| {row['size']}² uint8 | {row['chips']} | {row['file_mib']:.0f} MiB | {name} | {r['rate']:.0f} | {row['bare_rate']:.0f} |"
                f" {r['ratio']:.2f}x | {r['ms_cpu']:.2f} | {row['bare_ms_cpu']:.2f} | {r['rss']:.0f} MiB | {row['bare_rss']:.0f} MiB |"
            )
    lines.append("")
    lines.append("Medians over the rounds; per round, program/bare chips/s (ratio, 1-min load average at the end of each run):")
    lines += [f"- {row['size']}² {name}: {row[name]['per_round']}" for row in rows for name in PROGRAMS[:2]]
    if margins:
        small, large = rows[0]["size"], rows[-1]["size"]
        lines.append("")
        lines.append(f"Marginal chips/s between {small}² and {large}² (start-up cost taken out), median; per round, ratio to the bare loop:")
        for name in PROGRAMS:
            rate, ratios = margins[name]
            per_round = "" if name == "bare" else f": {statistics.median(ratios):.2f}x (" + ", ".join(f"{r:.2f}x" for r in ratios) + ")"
            lines.append(f"- {name}: {rate:.0f} chips/s{per_round}")
    lines.append("")
    lines.append(f"{os.cpu_count()} cores. Wall times include process start (the bare loop imports TensorFlow for its writer; cropshard"
                 " builds and runs the Beam pipeline with its worker processes). CPU and RSS are of the whole process tree (cropshard:"
                 " launcher + workers). Every run starts after os.sync().")
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
                row = bench_round(size, Path(scratch), rotation=round_index)
                by_size[size].append(row)
                bare = row["bare"]
                shown = [f"{name} {row['chips'] / row[name].wall:.0f} chips/s (wall {row[name].wall:.1f} s, CPU {row[name].cpu:.1f} s,"
                         f" RSS {row[name].rss:.0f} MiB, load {row[name].load:.1f}, {bare.wall / row[name].wall:.2f}x)" for name in PROGRAMS]
                print(f"round {round_index + 1} {size}^2: " + "; ".join(shown), flush=True)
    command = f"python bench/bench_raster.py --sizes {' '.join(map(str, sizes))} --rounds {args.rounds}"
    margins = marginal(by_size[sizes[0]], by_size[sizes[-1]]) if len(sizes) > 1 else None
    lines = table([summarize(size, by_size[size]) for size in sizes], margins, command)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
