"""Check a cropshard dataset against NVIDIA DALI's CPU pipeline, with the index files the build ships.

DALI is never a test dependency (its wheel is hundreds of MB): this runs in the repo venv and
calls a Python that has `nvidia-dali-cuda120` (e.g. the venv `bench/bench_dali.py` makes) for
the DALI side. For every split it checks that

* each shipped `.idx` file is byte-identical to what DALI's own `tfrecord2idx` makes of the shard,
* `fn.readers.tfrecord(index_path=<shipped>, num_shards=2)` (device_id=None, no GPU) gives every
  record exactly once over the two shards,
* DALI's CPU JPEG/PNG decoder gives exactly the pixels of `reader.load` (accurate IDCT, default).

    python bench/check_dali.py DATASET --dali-python ~/.cache/cropshard/dali-venv/bin/python

Exit status 0 when everything holds. Uncompressed JPEG/PNG datasets only (DALI reads no gzip).
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import subprocess
import sys
import tempfile

WORKERS = 2


def dali_side(path: str) -> None:
    """In the DALI venv: per split and worker, (file name, sha256 of the decoded pixels) of each record."""
    import numpy as np
    import nvidia.dali.tfrecord as tfrec
    from nvidia.dali import fn, pipeline_def

    with open(os.path.join(path, "cropshard.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    features = {key: tfrec.FixedLenFeature((), tfrec.string, "") for key in ("image/filename", "image/encoded")}
    result = {}
    for name, split in info["splits"].items():
        files = [os.path.join(path, s["file"]) for s in split["shards"]]
        indexes = [os.path.join(path, s["index"]) for s in split["shards"]]
        for worker in range(WORKERS):

            @pipeline_def(batch_size=1, num_threads=1, device_id=None)
            def pipe(worker=worker, files=files, indexes=indexes):  # noqa: ANN202 - DALI graph
                ex = fn.readers.tfrecord(path=files, index_path=indexes, features=features, shard_id=worker, num_shards=WORKERS, name="r")
                return ex["image/filename"], fn.decoders.image(ex["image/encoded"], device="cpu")

            p = pipe()
            p.build()
            size = p.reader_meta("r")["epoch_size"]
            share = size * (worker + 1) // WORKERS - size * worker // WORKERS
            rows = []
            for _ in range(share):
                filename, image = p.run()
                rows.append((bytes(np.array(filename.at(0))).decode(), hashlib.sha256(np.array(image.at(0)).tobytes()).hexdigest()))
            result.setdefault(name, []).append(rows)
    print(json.dumps(result))


def check(path: str, dali_python: str) -> list[str]:
    """Problems found (empty: DALI agrees with the shipped indexes and with reader.load)."""
    from cropshard import reader

    done = subprocess.run([dali_python, os.path.abspath(__file__), path, "--dali-side"], capture_output=True, text=True, check=True)
    dali = json.loads(done.stdout.strip().splitlines()[-1])
    tool = os.path.join(os.path.dirname(dali_python), "tfrecord2idx")
    problems = []
    info = reader.info(path)
    for name, workers in dali.items():
        dataset = reader.load(path, name, batch_size=None, shuffle=False, normalize="none", with_metadata=True)
        ours = {m["filename"].decode(): hashlib.sha256(image.tobytes()).hexdigest() for image, _, m in dataset.as_numpy_iterator()}
        seen = sorted(f for rows in workers for f, _ in rows)
        print(f"{name}: DALI workers read {[len(rows) for rows in workers]} records; cropshard lists {len(ours)}")
        if seen != sorted(ours):
            problems.append(f"{name}: DALI's {WORKERS} shards do not read every record exactly once")
        if any(ours.get(f) != digest for rows in workers for f, digest in rows):
            problems.append(f"{name}: DALI's CPU decoder and reader.load give different pixels")
        for shard in info.split(name).shards:
            with tempfile.TemporaryDirectory() as tmp:
                reference = os.path.join(tmp, "ref.idx")
                subprocess.run([dali_python, tool, os.path.join(path, shard.file), reference], check=True, capture_output=True)
                if not filecmp.cmp(reference, os.path.join(path, shard.index), shallow=False):
                    problems.append(f"{shard.index} differs from DALI's tfrecord2idx output")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--dali-python", default=os.path.expanduser("~/.cache/cropshard/dali-venv/bin/python"))
    parser.add_argument("--dali-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dali_side:
        dali_side(args.path)
        return 0
    problems = check(args.path, args.dali_python)
    print("\n".join(problems) if problems else "DALI: shipped indexes == tfrecord2idx, every record once with 2 shards, pixels == reader.load")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
