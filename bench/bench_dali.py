"""Reader throughput against NVIDIA DALI's CPU pipeline, on the same shards, the same work, the same threads.

    .venv/bin/python bench/bench_dali.py [--workdir DIR] [--threads N] [--seconds S] [--rounds R]

DALI runs in its own venv, which this script creates on first use (default
~/.cache/cropshard/dali-venv: `python -m venv` + `pip install nvidia-dali-cuda120`); it is never a
dependency of cropshard or of its tests. DALI's pipelines run CPU-only (`device_id=None`) from
`fn.readers.tfrecord`, with index files made by DALI's own `tfrecord2idx`.

Datasets (written with `schema.encode_example`, reused from --workdir when present), all from
rendered textured images (no photo download needed), baseline JPEG q90, 4:2:0:

  precropped-128    128x128 crops                      -> decode                      (row 1)
  full-large        3264x2448 full images              -> decode + random 224 crop    (row 2)
  full-imagenet     500x375 full images                -> decode + random 224 crop    (row 2b)
  ffcv-512          512x384 full images (FFCV's setting) -> random-resized-crop 224 + flip (row 3)

For every row, in one run and round-robin (reader, DALI variants, reader, ...), images/s after
warm-up batches; ratios are medians of per-round ratios. DALI gets its fastest equivalent where
it has two: a decode followed by a crop op, and its fused ROI decoders (`decoders.image_crop`,
`decoders.image_random_crop`), which decode only the window as the reader does. Both sides
shuffle records (1024 deep, at most the split's records), batch 64, uint8 HWC output, and get `--threads` worker threads
(tf.data private thread pool / DALI num_threads). Results go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DALI_PACKAGE = "nvidia-dali-cuda120==2.4.0"
FFCV_PER_CORE = 326  # images/s per vCPU FFCV publishes for 512 px q90 + random-resized-crop 224 + flip
CROP = 224
BATCH = 64
SHUFFLE = 1024

# name -> (image height, width, distinct images rendered, records, shards)
DATASETS = {
    "precropped-128": (128, 128, 64, 4096, 8),
    "full-large": (2448, 3264, 12, 96, 8),
    "full-imagenet": (375, 500, 64, 2048, 8),
    "ffcv-512": (384, 512, 64, 2048, 8),
}
# row -> (dataset, the reader's decode options, DALI variants)
ROWS = {
    "pre-cropped JPEG decode": ("precropped-128", {}, ("decode",)),
    "full 8 MP JPEG + random crop 224": ("full-large", {"crop": "random", "crop_size": CROP}, ("decode+crop", "roi-crop")),
    "full 500x375 JPEG + random crop 224": (
        "full-imagenet",
        {"crop": "random", "crop_size": CROP},
        ("decode+crop", "roi-crop"),
    ),
    "512 px JPEG + random-resized-crop 224 + flip": (
        "ffcv-512",
        {"crop": "random_resized", "crop_size": CROP, "flip": True},
        ("decode+rrc", "roi-rrc"),
    ),
}


# ---- DALI side (runs inside the DALI venv: numpy and DALI only) --------------------------------


def shuffle_depth(indexes: list[str]) -> int:
    """SHUFFLE, but no deeper than the records (one index line each), as reader.load caps its
    buffer: the same shuffle on both sides."""
    records = 0
    for index in indexes:
        with open(index) as handle:
            records += sum(1 for line in handle if line.strip())
    return max(1, min(SHUFFLE, records))


def dali_pipeline(variant: str, files: list[str], indexes: list[str], threads: int) -> Any:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali import tfrecord as tfrec

    @pipeline_def(batch_size=BATCH, num_threads=threads, device_id=None, seed=0)
    def pipe() -> Any:
        features = {
            "image/encoded": tfrec.FixedLenFeature((), tfrec.string, ""),
            "image/class/label": tfrec.FixedLenFeature([1], tfrec.int64, -1),
        }
        inputs = fn.readers.tfrecord(
            path=files, index_path=indexes, features=features, random_shuffle=True, initial_fill=shuffle_depth(indexes), name="reader"
        )
        encoded, label = inputs["image/encoded"], inputs["image/class/label"]
        if variant == "decode":
            images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
        elif variant == "decode+crop":
            images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
            images = fn.crop(images, crop=(CROP, CROP), crop_pos_x=fn.random.uniform(range=(0, 1)),
                             crop_pos_y=fn.random.uniform(range=(0, 1)))
        elif variant == "roi-crop":
            images = fn.decoders.image_crop(encoded, device="cpu", output_type=types.RGB, crop=(CROP, CROP),
                                            crop_pos_x=fn.random.uniform(range=(0, 1)),
                                            crop_pos_y=fn.random.uniform(range=(0, 1)))
        elif variant == "decode+rrc":
            images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
            images = fn.random_resized_crop(images, size=(CROP, CROP), random_area=(0.08, 1.0),
                                            random_aspect_ratio=(3 / 4, 4 / 3))
            images = fn.flip(images, horizontal=fn.random.coin_flip())
        elif variant == "roi-rrc":
            images = fn.decoders.image_random_crop(encoded, device="cpu", output_type=types.RGB,
                                                   random_area=(0.08, 1.0), random_aspect_ratio=(3 / 4, 4 / 3))
            images = fn.resize(images, resize_x=CROP, resize_y=CROP)
            images = fn.flip(images, horizontal=fn.random.coin_flip())
        else:
            raise ValueError(variant)
        return images, label

    return pipe()


def dali_worker(spec: dict[str, Any]) -> dict[str, float]:
    """Build one DALI pipeline, warm it up, run it for spec['seconds']; images/s and CPU us/image."""
    pipe = dali_pipeline(spec["variant"], spec["files"], spec["indexes"], spec["threads"])
    pipe.build()
    for _ in range(spec["warmup"]):
        pipe.run()
    count, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    shape = None
    while time.perf_counter() - start < spec["seconds"]:
        images, _labels = pipe.run()
        count += len(images)
        shape = images.at(0).shape
    elapsed = time.perf_counter() - start
    return {"rate": count / elapsed, "cpu_us": (_cpu_seconds() - cpu) / count * 1e6, "shape": list(shape)}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ensure_dali_venv(venv: str) -> str:
    """The venv's python, creating the venv and installing DALI into it if needed."""
    python = os.path.join(venv, "bin", "python")
    probe = [python, "-c", "import nvidia.dali"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with {DALI_PACKAGE} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", DALI_PACKAGE, "numpy"], check=True)
    return python


def dali_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import nvidia.dali; print(nvidia.dali.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()


def run_dali(python: str, spec: dict[str, Any]) -> dict[str, float]:
    result = subprocess.run(
        [python, os.path.abspath(__file__), "--dali-worker", json.dumps(spec)], capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"DALI worker failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def index_files(python: str, files: list[str], folder: str) -> list[str]:
    """DALI's index of each shard (tfrecord2idx from the DALI venv), made once."""
    os.makedirs(folder, exist_ok=True)
    tool = os.path.join(os.path.dirname(python), "tfrecord2idx")
    out = []
    for path in files:
        index = os.path.join(folder, os.path.basename(path) + ".idx")
        if not os.path.exists(index):
            subprocess.run([python, tool, path, index], check=True, capture_output=True)
        out.append(index)
    return out


# ---- cropshard side -------------------------------------------------------------------------


def build_dataset(path: str, height: int, width: int, distinct: int, count: int, shards: int) -> str:
    """`count` records cycling through `distinct` rendered images of height x width, JPEG q90."""
    if os.path.exists(os.path.join(path, "cropshard.json")):
        return path
    import numpy as np
    import tensorflow as tf
    from bench_reader import record, write_dataset
    from cropshard.pipeline.demo import CLASSES, render

    rng = np.random.default_rng(height * 7919 + width)
    blobs = []
    for i in range(distinct):
        if height == width and height <= 256:  # crops: a rendered 512x384 image, centre square, downscaled
            pixels = tf.image.resize(render(CLASSES[i % 3], 384, 512, rng)[:, 64:448], (height, width), antialias=True)
            pixels = tf.cast(tf.round(pixels), tf.uint8).numpy()
        else:
            pixels = render(CLASSES[i % 3], height, width, rng)
        blobs.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    records = [record(blobs[i % distinct], "jpeg", (height, width), i, f"img{i}.jpg") for i in range(count)]
    precropped = height == width and height <= 256
    return write_dataset(path, records, shards=shards, precropped=precropped, encoding="jpeg")


def reader_rate(path: str, options: dict[str, Any], threads: int, seconds: float, warmup: int) -> dict[str, float]:
    from cropshard import reader

    data = reader.load(path, batch_size=BATCH, repeat=True, normalize="none", shuffle_buffer=SHUFFLE, **options)
    return timed_batches(data, threads, seconds, warmup)


def records_alone(path: str, threads: int, seconds: float = 2.0) -> dict[str, float]:
    """CPU us per record of the reader's own record stream alone (shards interleaved, checked
    and shuffled as reader.load reads them, batched): no parsing, no decode. Added to the ops
    alone, it is the CPU any reader of these shards built on tf.data's TFRecord reading pays."""
    from cropshard import reader
    from cropshard.reader import records

    meta = reader.info(path)
    read = reader.ReadConfig(repeat=True, shuffle_buffer=SHUFFLE)
    stream = records.record_stream(path, meta.split("train").shards, meta.compression, read).batch(BATCH)
    return {"cpu_us": timed_batches(stream, threads, seconds, SHUFFLE // BATCH + 2)["cpu_us"]}  # warm-up fills the shuffle buffer


def timed_batches(dataset: Any, threads: int, seconds: float, warmup: int) -> dict[str, Any]:
    """Images (or records) per second and CPU us per item of iterating `dataset` for `seconds`
    after `warmup` batches, on a private tf.data pool of `threads`; batches are tensors or
    tuples whose first element is the batch."""
    import tensorflow as tf

    tf_options = tf.data.Options()
    tf_options.threading.private_threadpool_size = threads
    iterator = iter(dataset.with_options(tf_options))
    for _ in range(warmup):
        next(iterator)
    count, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    while time.perf_counter() - start < seconds:
        batch = next(iterator)
        items = batch[0] if isinstance(batch, tuple) else batch
        count += int(items.shape[0])
    elapsed = time.perf_counter() - start
    return {"rate": count / elapsed, "cpu_us": (_cpu_seconds() - cpu) / count * 1e6, "shape": list(items.shape[1:])}


def ops_alone(path: str, options: dict[str, Any], seconds: float = 2.0, draws: int = 1024) -> dict[str, float]:
    """CPU us per image of the reader's own per-image ops alone, back to back in one graph loop over
    the row's first shard: the JPEG decode (of the window, as reader.load decodes it), then for
    'random_resized' the resize and the flip. No tf.data, no reading, parsing, shuffling or
    batching: no input pipeline built on TensorFlow's ops spends less CPU per image than this.
    Windows are drawn afresh for `draws` passes over the records: a window's cost depends on its
    place (libjpeg entropy-decodes every row above it: 2 ms at the top of an 8 MP photo, 14 ms at
    the bottom), so a handful of windows would not give the mean."""
    import tensorflow as tf
    from cropshard import reader
    from cropshard.reader import decode, schema

    config = reader.DecodeConfig(**options)
    files = [os.path.join(path, shard.file) for shard in reader.info(path).split("train").shards]
    records = tf.stack(list(tf.data.TFRecordDataset(files[:1]).take(64)))
    records = tf.tile(records, [-(-draws // int(records.shape[0]))])  # every record, about `draws` windows in all
    keys = (schema.IMAGE_ENCODED, schema.IMAGE_HEIGHT, schema.IMAGE_WIDTH)
    parsed = tf.io.parse_example(records, {key: schema.feature_spec()[key] for key in keys})
    height, width = (tf.cast(parsed[key], tf.int32) for key in keys[1:])
    seed = tf.constant([0, 1], tf.int64)
    if config.crop == "random_resized":
        windows = decode.random_resized_windows(height, width, seed, config.scale, config.ratio, config.flip)
    else:
        windows = decode.crop_windows(height, width, seed, config.window, config.crop, config.flip)
    count = tf.shape(height)[0]

    @tf.function
    def loop(repeats: Any) -> Any:
        total = tf.constant(0)
        for i in tf.range(repeats):
            j = i % count
            ex = {"_height": height[j], "_width": width[j], **{key: v[j] for key, v in zip(("_y", "_x", "_h", "_w"), windows[:4], strict=True)}}
            image = decode._decode_jpeg(parsed[schema.IMAGE_ENCODED][j], ex, 3, config.window is not None, tf.uint8, config.dct_method)
            if config.crop == "random_resized":
                image = decode.resize_window(image, config.window)
            if config.flip:
                image = tf.cond(windows[4][j], lambda image=image: tf.reverse(image, axis=[1]), lambda image=image: image)
            total += tf.cast(image[0, 0, 0], tf.int32)
        return total

    loop(tf.constant(8))  # trace and warm up
    repeats = 8
    while True:
        cpu = _cpu_seconds()
        loop(tf.constant(repeats))
        spent = _cpu_seconds() - cpu
        if spent >= seconds or repeats >= 1 << 16:
            return {"cpu_us": spent / repeats * 1e6}
        repeats *= 2


def bench(args: argparse.Namespace, python: str) -> list[dict[str, Any]]:
    sys.path.insert(0, HERE)
    sys.path.insert(0, REPO)
    from cropshard import reader

    rows = []
    for row, (name, options, variants) in ROWS.items():
        if args.rows and name not in args.rows:
            continue
        path = build_dataset(os.path.join(args.workdir, name), *DATASETS[name])
        files = [os.path.join(path, shard.file) for shard in reader.info(path).split("train").shards]
        indexes = index_files(python, files, os.path.join(args.workdir, "dali-index", name))
        warmup = 2 if name == "full-large" else 5
        rounds: list[dict[str, dict[str, float]]] = []
        for _ in range(args.rounds):
            measured = {"reader": reader_rate(path, options, args.threads, args.seconds, warmup),
                        "ops alone": ops_alone(path, options), "records alone": records_alone(path, args.threads)}
            for variant in variants:
                spec = {"variant": variant, "files": files, "indexes": indexes, "threads": args.threads,
                        "seconds": args.seconds, "warmup": warmup}
                measured[f"DALI {variant}"] = run_dali(python, spec)
            rounds.append(measured)
            print(row, {k: round(v.get("rate", v["cpu_us"])) for k, v in measured.items()}, file=sys.stderr)
        best = max((f"DALI {v}" for v in variants), key=lambda k: statistics.median(r[k]["rate"] for r in rounds))
        rows.append(
            {
                "row": row,
                "dataset": name,
                "reader": _median(rounds, "reader"),
                "dali": {k: _median(rounds, k) for k in rounds[0] if k.startswith("DALI")},
                "ops_alone_us": statistics.median(r["ops alone"]["cpu_us"] for r in rounds),
                "records_alone_us": statistics.median(r["records alone"]["cpu_us"] for r in rounds),
                "best": best,
                "ratio": statistics.median(r["reader"]["rate"] / r[best]["rate"] for r in rounds),
                "shapes": {k: v["shape"] for k, v in rounds[0].items() if "shape" in v},
            }
        )
    return rows


def _median(rounds: list[dict[str, dict[str, float]]], key: str) -> dict[str, float]:
    return {field: statistics.median(r[key][field] for r in rounds) for field in ("rate", "cpu_us")}


def report(args: argparse.Namespace, rows: list[dict[str, Any]], version: str, load: tuple[float, float]) -> str:
    import tensorflow as tf

    cores = min(args.threads, os.cpu_count() or 1)
    lines = [
        f"## Reader vs DALI CPU pipeline ({datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')})",
        "",
        f"`{args.command}`",
        "",
        f"Same shards, batch {BATCH}, shuffle {SHUFFLE} deep (at most the split's records), uint8 output, {args.threads} threads each (tf.data private pool /"
        f" DALI num_threads, device_id=None); {args.rounds} rounds of >= {args.seconds:g} s each after warm-up, round-robin;"
        f" images/s medians, ratio = median of per-round reader / fastest DALI variant. Rendered JPEG q90 images"
        f" (bench/bench_dali.py docstring). DALI {version}, TensorFlow {tf.__version__}, Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs; shared machine, load average {load[0]:.1f} before / {load[1]:.1f} after.",
        "",
        "| work | reader images/s | DALI variant: images/s | reader / best DALI | reader images/s per core |"
        " images per CPU-s: reader, best DALI | reader's ops alone: images per CPU-s | floor: ops + records alone, images per CPU-s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dali = ", ".join(f"{k[5:]}: {v['rate']:.0f}" for k, v in r["dali"].items())
        lines.append(
            f"| {r['row']} | {r['reader']['rate']:.0f} | {dali} | {r['ratio']:.2f}x | {r['reader']['rate'] / cores:.0f} |"
            f" {1e6 / r['reader']['cpu_us']:.0f}, {1e6 / r['dali'][r['best']]['cpu_us']:.0f} | {1e6 / r['ops_alone_us']:.0f} |"
            f" {1e6 / (r['ops_alone_us'] + r['records_alone_us']):.0f} |"
        )
    lines += [
        "",
        f"Goal: reader >= 1.0x DALI on every row. FFCV publishes ~{FFCV_PER_CORE} images/s per vCPU for the last row's work;"
        " 'per core' is images/s over the threads given (at most the CPU count), 'per CPU-s' is images per second of"
        " process CPU time (both include reading, parsing and shuffling). 'ops alone': the reader's per-image TensorFlow ops"
        " (the JPEG decode of the window; for random-resized-crop also the resize and the flip) back to back in one graph"
        " loop, nothing else: where that is below DALI's whole pipeline per CPU-s, no tf.data pipeline built on these ops"
        " can match DALI on that row's CPU. 'floor': those ops plus the reader's record stream alone (TFRecord shards"
        " interleaved, CRC-checked, shuffled and batched, no parsing): the CPU per image of any tf.data reader of these"
        " shards that decodes with TensorFlow's ops; parsing, batching the images and handing batches to Python come on top.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dali-worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "cropshard", "bench-dali"))
    parser.add_argument("--dali-venv", default=os.path.join(os.path.expanduser("~"), ".cache", "cropshard", "dali-venv"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", nargs="*", help="dataset names to run (default: all)")
    parser.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"), help="markdown file to append to ('' to skip)")
    args = parser.parse_args(argv)
    if args.dali_worker:
        print(json.dumps(dali_worker(json.loads(args.dali_worker))))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.command = ".venv/bin/python bench/bench_dali.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    python = ensure_dali_venv(args.dali_venv)
    load_before = os.getloadavg()[0]
    rows = bench(args, python)
    publish(report(args, rows, dali_version(python), (load_before, os.getloadavg()[0])), args.results)
    return 0


def publish(text: str, results: str) -> None:
    """Print a report and append it to the results file (none: '')."""
    print(text)
    if results:
        with open(results, "a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    sys.exit(main())
