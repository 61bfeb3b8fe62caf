"""What `reader.load`'s accurate JPEG IDCT (the default, dct_method="INTEGER_ACCURATE") costs
against TensorFlow's fast one ("INTEGER_FAST", TF's own default), and how far apart the pixels are.

Builds two JPEG datasets from the built-in demo images (`cropshard demo-images`): 128x128
pre-cropped, and full images resized to a 256 shorter side; then reads each split with both IDCTs
`--passes` times in alternating rounds (same process, same data, warm page cache) and reports
images/s per method (median of the rounds), their ratio, and the max / mean absolute pixel
difference over one pass.

    python bench/bench_dct.py --workdir /tmp/dct-bench [--rounds 3] [--passes 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

METHODS = ("INTEGER_ACCURATE", "INTEGER_FAST")
KINDS = {
    "precropped-128": (["--crop=center", "--size=128x128"], {"batch_size": 64}),
    "full-resize-256": (["--crop=none", "--resize=256"], {"batch_size": None}),
}


def build(workdir: str) -> dict[str, str]:
    images = os.path.join(workdir, "images")
    cli = [sys.executable, "-m", "cropshard.pipeline"]
    if not os.path.isdir(images):
        subprocess.run([*cli, "demo-images", images], check=True)
    out = {}
    for kind, (flags, _) in KINDS.items():
        path = os.path.join(workdir, kind)
        if not os.path.exists(os.path.join(path, "cropshard.json")):
            subprocess.run([*cli, "build", f"--input={images}/**", f"--output={path}", "--encoding=jpeg", "--overwrite",
                            "--progress=off", *flags], check=True, stdout=subprocess.DEVNULL)
        out[kind] = path
    return out


def read_all(path: str, method: str, batch_size: int | None, passes: int) -> tuple[float, int, list[np.ndarray]]:
    """(seconds, images decoded, the first pass's images) for `passes` passes over the train split."""
    from cropshard import reader

    dataset = reader.load(path, "train", batch_size=batch_size, shuffle=False, deterministic=True, normalize="none",
                          dct_method=method, repeat=passes > 1)
    per_pass = reader.info(path).split("train").num_examples
    batches = -(-per_pass // batch_size) if batch_size else per_pass  # with repeat, batches span passes
    start, images = time.perf_counter(), []
    for batch, _ in dataset.take(batches * passes).as_numpy_iterator():
        images.extend(batch if batch_size else [batch])
    return time.perf_counter() - start, len(images), images[:per_pass]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=30, help="passes over the split per measurement")
    args = parser.parse_args()
    for kind, path in build(args.workdir).items():
        batch_size = KINDS[kind][1]["batch_size"]
        seconds: dict[str, list[float]] = {m: [] for m in METHODS}
        pixels = {}
        for _ in range(args.rounds):
            for method in METHODS:
                took, count, images = read_all(path, method, batch_size, args.passes)
                seconds[method].append(took)
                pixels[method] = images
        diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(*pixels.values(), strict=True)]
        rate = {m: count / statistics.median(s) for m, s in seconds.items()}
        print(f"{kind}: {count} images per measurement ({len(diffs)} distinct); " + ", ".join(f"{m} {rate[m]:.0f} images/s" for m in METHODS)
              + f"; accurate/fast throughput {rate[METHODS[0]] / rate[METHODS[1]]:.3f};"
              f" pixel difference max {max(int(d.max()) for d in diffs)}, mean {np.mean([d.mean() for d in diffs]):.3f} levels")


if __name__ == "__main__":
    main()
