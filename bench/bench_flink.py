"""Flink at scale: `cropshard build` on the local Flink cluster (launch/flink_cluster.sh, PROCESS
SDK workers) against the DirectRunner, on the same generated JPEGs, in one run.

    .venv/bin/python bench/bench_flink.py --sizes 1000,10000,100000 --direct-sizes 1000,10000

The cluster must be running (launch/flink_cluster.sh start; the same CROPSHARD_FLINK_HOME /
FLINK_REST_PORT / BEAM_JOB_PORT ... variables are passed through). For every size it records:
wall time of `launch/flink.sh`, the Flink job's own duration (REST), the rest as job-submission
overhead, peak RSS of each TaskManager JVM and of the SDK worker processes it started (sampled
every 0.25 s), and shard sizes. Marginal images/s: (N2 - N1) / (T2 - T1) between the two smallest
sizes run on both runners (job time on Flink, wall time on the DirectRunner), which takes out the
fixed costs. The records of the Flink and DirectRunner builds are compared as multisets per split
at every size both ran. Results are appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_writer import REPO, TreeRss, generate_images, record  # noqa: E402

BUILD = ["--crop=center", "--size=64x64", "--encoding=jpeg", "--split=train=0.9,validation=0.1", "--target_shard_mb=16", "--progress=off"]
MIB = 2**20


def rest(path: str) -> dict:
    port = os.environ.get("FLINK_REST_PORT", "8081")
    with urllib.request.urlopen(f"http://localhost:{port}{path}", timeout=10) as response:
        return json.load(response)


def taskmanager_pids() -> list[int]:
    pids = Path(os.environ.get("CROPSHARD_FLINK_HOME", "/tmp/cropshard-flink")) / "pids"
    return [int(p.read_text()) for p in sorted(pids.glob("taskmanager-*.pid"))]


def inputs_for(folder: Path, count: int, biggest: int) -> str:
    """The first count*100/biggest class folders (generate_images puts biggest/100 in each)."""
    return ",".join(f"{folder}/class_{k:02d}/*" for k in range(count * 100 // biggest))


def flink_build(inputs: str, output: Path) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    before = {job["jid"] for job in rest("/jobs/overview")["jobs"]}
    cmd = ["bash", str(REPO / "launch" / "flink.sh"), f"--input={inputs}", f"--output={output}", *BUILD]
    samplers = [TreeRss(pid) for pid in taskmanager_pids()]
    start = time.perf_counter()
    for sampler in samplers:
        sampler.__enter__()
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    finally:
        for sampler in samplers:
            sampler.__exit__()
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-4000:])
    [job] = [job for job in rest("/jobs/overview")["jobs"] if job["jid"] not in before]
    tm_peaks = [max((r for name, r in s.peaks.values() if name == "launcher"), default=0) for s in samplers]
    worker_peaks = [r for s in samplers for name, r in s.peaks.values() if name == "sdk worker"]
    return {
        "wall": wall,
        "job": job["duration"] / 1000,
        "state": job["state"],
        "tm_peaks": tm_peaks,
        "worker_peaks": sorted(worker_peaks, reverse=True),
        "tracebacks": done.stderr.count("Traceback"),
    }


def direct_build(inputs: str, output: Path) -> float:
    shutil.rmtree(output, ignore_errors=True)
    cmd = [sys.executable, "-m", "cropshard.pipeline", "build", f"--input={inputs}", f"--output={output}", *BUILD]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-4000:])
    return time.perf_counter() - start


def records_by_split(output: Path) -> dict[str, collections.Counter]:
    from apache_beam.io.tfrecordio import _TFRecordUtil

    info = json.loads((output / "dataset_info.json").read_text())
    found: dict[str, collections.Counter] = {}
    for name, split in info["splits"].items():
        counter = found.setdefault(name, collections.Counter())
        for shard in split["shards"]:
            with open(output / shard["file"], "rb") as handle:
                while (rec := _TFRecordUtil.read_record(handle)) is not None:
                    counter[rec] += 1
    return found


def mib(values: list[int]) -> str:
    return ", ".join(f"{v / MIB:.0f}" for v in values)


def shard_summary(output: Path) -> str:
    info = json.loads((output / "dataset_info.json").read_text())
    parts = []
    for name, split in info["splits"].items():
        sizes = [s["num_bytes"] / MIB for s in split["shards"]]
        parts.append(f"{name}: {len(sizes)} shards, {min(sizes):.1f}-{max(sizes):.1f} MiB")
    return "; ".join(parts)


def run(scratch: Path, sizes: list[int], direct_sizes: list[int]) -> str:
    biggest = max(sizes)
    folder = generate_images(scratch / f"generated-{biggest}", biggest)
    rows, flink, direct, same = [], {}, {}, {}
    for count in sizes:
        inputs = inputs_for(folder, count, biggest)
        result = flink_build(inputs, scratch / f"flink-{count}")
        flink[count] = result
        shards = shard_summary(scratch / f"flink-{count}")
        if count in direct_sizes:
            direct[count] = direct_build(inputs, scratch / f"direct-{count}")
            same[count] = records_by_split(scratch / f"flink-{count}") == records_by_split(scratch / f"direct-{count}")
        direct_wall = f"{direct[count]:.0f}" if count in direct else "-"
        rows.append(
            f"| {count} | {result['state']} | {result['wall']:.0f} | {result['job']:.0f} | {result['wall'] - result['job']:.0f} | "
            f"{mib(result['tm_peaks'])} | {mib(result['worker_peaks'])} | {direct_wall} | {same.get(count, '-')} | {result['tracebacks']} | {shards} |"
        )
        print(rows[-1], flush=True)
    lines = [
        "Generated 256x192 JPEGs (bench_writer.generate_images), " + " ".join(BUILD) + ";"
        f" local Flink cluster, {rest('/overview')['taskmanagers']} TaskManagers x {rest('/overview')['slots-total'] // max(1, rest('/overview')['taskmanagers'])} slot,"
        " PROCESS SDK workers (launch/flink.sh defaults); DirectRunner: the default multi_processing runner, one worker per core."
        f" Machine: {os.cpu_count()} cores shared with other sessions (load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "| images | Flink state | Flink wall s | Flink job s | submission + client s | TM peak RSS MiB | SDK worker peak RSS MiB | DirectRunner wall s | same records | tracebacks | Flink shards |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    both = sorted(c for c in direct if c in flink)
    if len(both) >= 2:
        small, big = both[0], both[1]
        flink_rate = (big - small) / (flink[big]["job"] - flink[small]["job"])
        direct_rate = (big - small) / (direct[big] - direct[small])
        lines += ["", f"Marginal images/s between {small} and {big}: Flink {flink_rate:.0f} (job time), DirectRunner {direct_rate:.0f} (wall);"
                  f" Flink / DirectRunner = {flink_rate / direct_rate:.2f}x (goal >= 0.8x)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "cropshard-bench-flink"))
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--direct-sizes", default="1000,10000")
    args = parser.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    direct_sizes = [int(s) for s in args.direct_sizes.split(",")]
    body = run(scratch, sizes, direct_sizes)
    record("Flink at scale", body, f".venv/bin/python bench/bench_flink.py --sizes {args.sizes} --direct-sizes {args.direct_sizes}")


if __name__ == "__main__":
    main()
