"""Which batched decode route of `reader.load` costs less CPU per image, by record size.

    .venv/bin/python bench/bench_routes.py [--workdir DIR] [--threads N] [--seconds S] [--rounds R]

Batches of fixed-size JPEG output (here: full images, random 224 crops) take FixedSizeRoute
(parse and decode inside each batch's call) for small records and PerImageRoute (parse and
decode each record in a per-record map, then batch) from `decode.PER_IMAGE_RECORD_BYTES` on
average. This reads the same shards both ways, the threshold forced to either side, round-robin,
on rendered JPEG q90 datasets of four image sizes (made with bench_dali's `build_dataset` and
reused from --workdir), and reports CPU microseconds per image (process CPU time: wall time means
little on a shared machine), medians over the rounds. Results go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

# name -> (height, width, distinct images rendered, records, shards)
DATASETS = {
    "full-imagenet": (375, 500, 64, 2048, 8),
    "mid-1024": (768, 1024, 24, 384, 8),
    "mid-2048": (1536, 2048, 24, 384, 8),
    "full-large": (2448, 3264, 12, 96, 8),
}
ROUTES = {"fixed-size": math.inf, "per-image": 0}  # the PER_IMAGE_RECORD_BYTES that forces each route


def measure(path: str, route: str, args: argparse.Namespace) -> float:
    """CPU us per image of reading `path` through `route`."""
    import bench_dali
    from cropshard.reader import decode

    decode.PER_IMAGE_RECORD_BYTES = ROUTES[route]
    warmup = 2 if os.path.basename(path) == "full-large" else 5
    return bench_dali.reader_rate(path, {"crop": "random", "crop_size": 224}, args.threads, args.seconds, warmup)["cpu_us"]


def record_kib(path: str) -> float:
    with open(os.path.join(path, "cropshard.json"), encoding="utf-8") as handle:
        split = json.load(handle)["splits"]["train"]
    return split["num_bytes"] / split["num_examples"] / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "cropshard", "bench-dali"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"), help="markdown file to append to ('' to skip)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import bench_dali
    from cropshard.reader import decode

    command = ".venv/bin/python bench/bench_routes.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [
        f"## Reader decode routes by record size ({datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"`{command}`",
        "",
        f"Full rendered JPEG q90 images, random 224 crops, batch {bench_dali.BATCH}, shuffle {bench_dali.SHUFFLE},"
        f" {args.threads} tf.data threads; CPU us per image, medians of {args.rounds} round-robin rounds of >= {args.seconds:g} s."
        f" Records from {decode.PER_IMAGE_RECORD_BYTES >> 10} KiB on average take PerImageRoute by default.",
        "",
        "| images | KiB per record | FixedSizeRoute | PerImageRoute | per-image / fixed-size | default route |",
        "|---|---:|---:|---:|---:|---|",
    ]
    default_threshold = decode.PER_IMAGE_RECORD_BYTES
    for name, spec in DATASETS.items():
        path = bench_dali.build_dataset(os.path.join(args.workdir, name), *spec)
        cpu: dict[str, list[float]] = {route: [] for route in ROUTES}
        for _ in range(args.rounds):
            for route in ROUTES:
                cpu[route].append(measure(path, route, args))
        decode.PER_IMAGE_RECORD_BYTES = default_threshold
        fixed, per_image = (statistics.median(cpu[route]) for route in ROUTES)
        kib = record_kib(path)
        default = "per-image" if kib * 1024 >= default_threshold else "fixed-size"
        lines.append(f"| {spec[1]}x{spec[0]} | {kib:.0f} | {fixed:.0f} | {per_image:.0f} | {per_image / fixed:.2f}x | {default} |")
        print(lines[-1], {route: [round(v) for v in values] for route, values in cpu.items()}, file=sys.stderr)
    bench_dali.publish("\n".join([*lines, ""]), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
