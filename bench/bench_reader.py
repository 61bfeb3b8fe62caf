"""Reader throughput (images/s) against the bare-read ceiling and the classic tf.data recipes.

    .venv/bin/python bench/bench_reader.py                      # build datasets from photos
    .venv/bin/python bench/bench_reader.py --dataset DIR ...    # datasets built by the writer

Without --dataset it writes four datasets with `schema.encode_example` from the photos in
${CROPSHARD_PHOTOS:-~/.cache/cropshard/photos} (bench/fetch_photos.sh fills it; generated
images are used, and said so, when it is empty):

  precropped-raw    224x224x3 center crops, raw uint8
  precropped-jpeg   the same crops as JPEG q90
  full-jpeg         the photos at full size (8+ MP) re-encoded as baseline JPEG q90, as the
                    writer's --encoding jpeg stores them
  full-jpeg-original  the photos' own JPEG bytes (--encoding original); wallpaper photos are
                    often progressive, which a partial decode cannot speed up much
  small-jpeg        the photos downscaled to a 400 px short side, JPEG q90 (ImageNet-like)

Each `--dataset DIR` is classified from its cropshard.json the same way (pre-cropped raw or
JPEG, full JPEG by image size). For every dataset it measures, on the same shard files:

  ceiling           TFRecordDataset(files, num_parallel_reads=AUTOTUNE).batch().prefetch():
                    every byte read and CRC-checked, nothing parsed (the strictest bound)
  reader            reader.load(...), shuffle=True (its training default), normalize='none'
  classic           pre-cropped raw: TFRecordDataset -> shuffle -> map(parse_single_example +
                    decode_raw) -> batch; JPEG: same with decode_jpeg (+ tf.image.random_crop
                    for full images)

Targets: pre-cropped raw reader >= 0.9x ceiling; reader random crops from full JPEGs >= 1.5x
classic decode_jpeg + random_crop. Results are printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from cropshard import reader  # noqa: E402
from cropshard.reader import schema  # noqa: E402
from cropshard.reader.metadata import DatasetInfo, ShardInfo, SplitInfo, join  # noqa: E402

AUTOTUNE = tf.data.AUTOTUNE
HERE = os.path.dirname(os.path.abspath(__file__))
READ_BUFFER = 256 << 10  # the reader's default read_buffer_bytes: every pipeline reads the same way


# ---- building benchmark datasets ------------------------------------------------------------


def find_photos(root: str, limit: int) -> list[str]:
    """The large camera photos (large/ from fetch_photos.sh), else any JPEG under root; [] if none."""
    for pattern in ("large/*.jp*g", "**/*.jp*g"):
        found = sorted(p for p in glob.glob(os.path.join(root, pattern), recursive=True) if "/." not in p[len(root) :])
        if found:
            return found[:limit]
    return []


def generated_photo(index: int, height: int = 2448, width: int = 3264) -> bytes:
    """A photo-sized JPEG with smooth structure and noise (compresses roughly like a photo)."""
    rng = np.random.default_rng(index)
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    channels = []
    for c in range(3):
        fy, fx, phase = rng.uniform(2, 12), rng.uniform(2, 12), rng.uniform(0, 6.28)
        channels.append(127 + 90 * np.sin(fy * 6.28 * yy + phase) * np.cos(fx * 6.28 * xx + c))
    image = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    return tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90).numpy()


def write_dataset(path: str, records: list[schema.ImageRecord], *, shards: int, precropped: bool, encoding: str) -> str:
    os.makedirs(path, exist_ok=True)
    shard_infos = []
    for index in range(shards):
        name = f"train-{index:05d}-of-{shards:05d}.tfrecord"
        members = records[index::shards]
        with tf.io.TFRecordWriter(os.path.join(path, name)) as writer:
            for record in members:
                writer.write(schema.encode_example(record))
        shard_infos.append(ShardInfo(name, len(members), os.path.getsize(os.path.join(path, name))))
    first = records[0]
    info = DatasetInfo(
        cropshard_version="bench",
        encoding=encoding,
        image_formats=(first.format,),
        channels=3,
        image_shape=(first.height, first.width, 3) if precropped else None,
        crop={"strategy": "center", "size": [first.height, first.width]} if precropped else {"strategy": "none"},
        labels=tuple(f"class{i}" for i in range(10)),
        splits={"train": SplitInfo("train", len(records), tuple(shard_infos))},
        compression="none",
        num_inputs=len(records),
        num_images_written=len(records),
        rejected={},
        schema=schema.schema_description(),
        command_line=tuple(sys.argv),
    )
    with open(os.path.join(path, "cropshard.json"), "w", encoding="utf-8") as handle:
        handle.write(info.to_json())
    return path


def record(encoded: bytes, fmt: str, shape: tuple[int, ...], index: int, name: str) -> schema.ImageRecord:
    return schema.ImageRecord(
        encoded=encoded,
        format=fmt,
        height=int(shape[0]),
        width=int(shape[1]),
        channels=3,
        label=index % 10,
        label_text=f"class{index % 10}",
        filename=name,
        crop_box=(0, 0, int(shape[0]), int(shape[1])),
        sha256=hashlib.sha256(encoded).hexdigest(),
    )


def build_datasets(workdir: str, photos: list[bytes], args: argparse.Namespace) -> dict[str, str]:
    """The four benchmark datasets from photo JPEG bytes (cycled to reach the requested counts)."""
    crops, small, baseline = [], [], []
    for i, data in enumerate(photos):
        image = tf.io.decode_jpeg(data, channels=3)
        h, w = int(image.shape[0]), int(image.shape[1])
        baseline.append(tf.io.encode_jpeg(image, quality=90).numpy())  # baseline (non-progressive) 4:2:0
        scale = args.small_side / min(h, w)
        resized = tf.cast(tf.image.resize(image, (round(h * scale), round(w * scale)), antialias=True), tf.uint8)
        small.append(tf.io.encode_jpeg(resized, quality=90).numpy())
        side = min(resized.shape[0], resized.shape[1])
        square = tf.image.resize_with_crop_or_pad(resized, side, side)
        crop = tf.cast(tf.image.resize(square, (args.crop_size, args.crop_size), antialias=True), tf.uint8).numpy()
        crops.append(crop)
        print(f"  prepared photo {i + 1}/{len(photos)} ({h}x{w})", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    shape = (args.crop_size, args.crop_size, 3)
    raw = [record(crops[i % len(crops)].tobytes(), "raw", shape, i, f"crop{i}") for i in range(args.precropped_images)]
    jpeg_crops = [tf.io.encode_jpeg(c, quality=90).numpy() for c in crops]
    pre_jpeg = [
        record(jpeg_crops[i % len(crops)], "jpeg", shape, i, f"crop{i}.jpg") for i in range(args.precropped_images)
    ]

    def jpeg_records(blobs: list[bytes], count: int, prefix: str) -> list[schema.ImageRecord]:
        out = []
        for i in range(count):
            blob = blobs[i % len(blobs)]
            h, w = (int(v) for v in tf.image.extract_jpeg_shape(blob)[:2])
            out.append(record(blob, "jpeg", (h, w), i, f"{prefix}{i}.jpg"))
        return out

    return {
        "precropped-raw": write_dataset(
            os.path.join(workdir, "precropped-raw"), raw, shards=args.shards, precropped=True, encoding="raw"
        ),
        "precropped-jpeg": write_dataset(
            os.path.join(workdir, "precropped-jpeg"), pre_jpeg, shards=args.shards, precropped=True, encoding="jpeg"
        ),
        "full-jpeg": write_dataset(
            os.path.join(workdir, "full-jpeg"),
            jpeg_records(baseline, args.full_images, "full"),
            shards=args.shards,
            precropped=False,
            encoding="jpeg",
        ),
        "full-jpeg-original": write_dataset(
            os.path.join(workdir, "full-jpeg-original"),
            jpeg_records(photos, args.full_images, "orig"),
            shards=args.shards,
            precropped=False,
            encoding="original",
        ),
        "small-jpeg": write_dataset(
            os.path.join(workdir, "small-jpeg"),
            jpeg_records(small, args.full_images * 4, "small"),
            shards=args.shards,
            precropped=False,
            encoding="jpeg",
        ),
    }


def classify(path: str) -> str:
    info = reader.info(path)
    formats = set(info.image_formats)
    if info.is_precropped and formats == {"raw"}:
        return "precropped-raw"
    if info.is_precropped and formats == {"jpeg"}:
        return "precropped-jpeg"
    if not info.is_precropped and "jpeg" in formats:
        shard = info.split("train" if "train" in info.splits else sorted(info.splits)[0]).shards[0]
        first = next(iter(tf.data.TFRecordDataset(join(path, shard.file))))
        parsed = tf.io.parse_single_example(first, schema.feature_spec())
        large = int(parsed[schema.IMAGE_HEIGHT]) * int(parsed[schema.IMAGE_WIDTH]) > 2_000_000
        if not large:
            return "small-jpeg"
        return "full-jpeg-original" if info.encoding == "original" else "full-jpeg"
    return "other"


# ---- pipelines --------------------------------------------------------------------------------


def shard_files(path: str, split: str) -> list[str]:
    return [join(path, shard.file) for shard in reader.info(path).split(split).shards]


def ceiling(files: list[str], batch: int) -> tf.data.Dataset:
    return (
        tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE, buffer_size=READ_BUFFER)
        .repeat()
        .batch(batch)
        .prefetch(AUTOTUNE)
    )


def ceiling_shuffled(files: list[str], batch: int, shuffle_buffer: int) -> tf.data.Dataset:
    """The ceiling with the reader's record shuffle: what shuffling alone costs."""
    return (
        tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE, buffer_size=READ_BUFFER)
        .repeat()
        .shuffle(shuffle_buffer)
        .batch(batch)
        .prefetch(AUTOTUNE)
    )


def classic(files: list[str], batch: int, kind: str, shape: list[int], shuffle_buffer: int) -> tf.data.Dataset:
    """The usual recipe: parse_single_example per record; `shape` is the stored (pre-cropped) or crop shape."""
    spec = {
        schema.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        schema.LABEL: tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = tf.io.parse_single_example(serialized, spec)
        if kind == "precropped-raw":
            image = tf.reshape(tf.io.decode_raw(features[schema.IMAGE_ENCODED], tf.uint8), shape)
        else:
            image = tf.io.decode_jpeg(features[schema.IMAGE_ENCODED], channels=3)
            image = (
                tf.ensure_shape(image, shape) if kind.startswith("precropped") else tf.image.random_crop(image, shape)
            )
        return image, features[schema.LABEL]

    data = (
        tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE, buffer_size=READ_BUFFER)
        .repeat()
        .shuffle(shuffle_buffer)
    )
    return data.map(parse, num_parallel_calls=AUTOTUNE).batch(batch).prefetch(AUTOTUNE)


def run_once(make: Callable[[], tf.data.Dataset], seconds: float, warmup: int) -> tuple[float, float]:
    """(images/s, process CPU microseconds per image) over at least `seconds`, after `warmup` batches."""
    iterator = iter(make())
    for _ in range(warmup):
        next(iterator)
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        batch = next(iterator)
        count += int((batch[0] if isinstance(batch, tuple) else batch).shape[0])
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return count / elapsed, (time.process_time() - cpu) / count * 1e6


def bench_one(kind: str, path: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Ceiling, reader variants and the classic recipe on one dataset's files.

    Pipelines are measured round-robin (A B C A B C ...) and every ratio is the median of
    per-round ratios, so slow drift of a shared machine cancels out instead of favouring
    whichever pipeline ran in a quiet moment.
    """
    files = shard_files(path, args.split)
    base = kind.split(" ")[0]
    full = not base.startswith("precropped")
    crop = {"crop": "random", "crop_size": args.crop_size} if full else {}
    warmup = 2 if full else 5
    seconds = max(args.seconds, args.full_seconds) if base.startswith("full") else args.seconds

    def load(**extra: Any) -> tf.data.Dataset:
        options = dict(batch_size=args.batch_size, repeat=True, normalize="none", shuffle_buffer=args.shuffle_buffer)
        options.update(crop)
        options.update(extra)
        return reader.load(path, args.split, **options)

    pipelines: dict[str, Callable[[], tf.data.Dataset]] = {
        "ceiling": lambda: ceiling(files, args.batch_size),
        "reader": load,
    }
    pipelines["reader, shuffle=False"] = lambda: load(shuffle=False)
    if base == "precropped-raw":
        pipelines["ceiling + shuffle"] = lambda: ceiling_shuffled(files, args.batch_size, args.shuffle_buffer)
        pipelines["reader, normalize='unit'"] = lambda: load(normalize="unit")
    if base != "other":
        info = reader.info(path)
        shape = (
            list(info.image_shape) if base.startswith("precropped") else [args.crop_size, args.crop_size, info.channels]
        )
        pipelines["classic"] = lambda: classic(files, args.batch_size, base, shape, args.shuffle_buffer)
    rounds: list[dict[str, tuple[float, float]]] = []
    for _ in range(args.repeats):
        rounds.append({name: run_once(make, seconds, warmup) for name, make in pipelines.items()})
    results = {}
    for name in pipelines:
        results[name] = {
            "rate": statistics.median(r[name][0] for r in rounds),
            "cpu_us": statistics.median(r[name][1] for r in rounds),
            "x_ceiling": statistics.median(r[name][0] / r["ceiling"][0] for r in rounds),
            "x_classic": statistics.median(r[name][0] / r["classic"][0] for r in rounds)
            if "classic" in pipelines
            else float("nan"),
        }
        print(
            f"{kind:22s} {name:26s} {results[name]['rate']:9.1f} img/s {results[name]['cpu_us']:9.0f} CPU us/img",
            file=sys.stderr,
        )
    return results


# ---- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", action="append", default=[], help="dataset directory built by the writer (repeatable)"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--photos", default=os.environ.get("CROPSHARD_PHOTOS", os.path.expanduser("~/.cache/cropshard/photos"))
    )
    parser.add_argument(
        "--workdir", help="where to build the datasets (reused if already built there; default: a temp dir)"
    )
    parser.add_argument("--max-photos", type=int, default=24)
    parser.add_argument("--precropped-images", type=int, default=1536)
    parser.add_argument("--full-images", type=int, default=96)
    parser.add_argument("--small-side", type=int, default=400)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shuffle-buffer", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=4.0, help="minimum timed seconds per run")
    parser.add_argument("--full-seconds", type=float, default=10.0, help="the same for 8+ MP JPEGs (few images/s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--results", default=os.path.join(HERE, "RESULTS.md"), help="markdown file to append to ('' to skip)"
    )
    args = parser.parse_args(argv)

    source = ""
    if args.dataset:
        datasets = {}
        for path in args.dataset:
            kind = classify(path)
            datasets[f"{kind} ({os.path.basename(os.path.normpath(path))})" if kind in datasets else kind] = path
        source = "writer-built datasets: " + ", ".join(args.dataset)
    else:
        workdir = args.workdir or tempfile.mkdtemp(prefix="cropshard-bench-")
        paths = find_photos(args.photos, args.max_photos)
        if paths:
            photos = []
            for path in paths:
                with open(path, "rb") as handle:
                    photos.append(handle.read())
            source = f"{len(photos)} real photos from {args.photos}"
        else:
            photos = [generated_photo(i) for i in range(min(args.max_photos, 8))]
            source = f"GENERATED images ({len(photos)} synthetic 3264x2448 JPEGs; no photos in {args.photos}, run bench/fetch_photos.sh)"
        kinds = ("precropped-raw", "precropped-jpeg", "full-jpeg", "full-jpeg-original", "small-jpeg")
        if args.workdir and all(os.path.exists(os.path.join(workdir, k, "cropshard.json")) for k in kinds):
            print(f"reusing the datasets in {workdir}", file=sys.stderr)
            datasets = {k: os.path.join(workdir, k) for k in kinds}
        else:
            print(f"building datasets in {workdir} from {source}", file=sys.stderr)
            datasets = build_datasets(workdir, photos, args)

    load_before = os.getloadavg()[0]
    rows = []
    for kind, path in datasets.items():
        for name, r in bench_one(kind, path, args).items():
            rows.append((kind, name, r["rate"], r["cpu_us"], r["x_ceiling"], r["x_classic"]))

    lines = [
        "| dataset | pipeline | images/s | CPU µs/image | × ceiling | × classic |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {k} | {n} | {r:.0f} | {u:.0f} | {c:.2f} | {x:.2f} |" for k, n, r, u, c, x in rows]
    verdicts = []
    table = {(k.split(" ")[0], n): (r, c, x) for k, n, r, u, c, x in rows}
    if ("precropped-raw", "reader") in table:
        ratio = table[("precropped-raw", "reader")][1]
        verdicts.append(
            f"pre-cropped raw reader (shuffle=True, its default) / bare ceiling = {ratio:.2f}"
            f" (target >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'})"
        )
        if ("precropped-raw", "reader, shuffle=False") in table:
            ratio = table[("precropped-raw", "reader, shuffle=False")][1]
            verdicts.append(f"pre-cropped raw reader, shuffle=False / bare ceiling (same read order) = {ratio:.2f}")
        if ("precropped-raw", "ceiling + shuffle") in table:
            ratio = table[("precropped-raw", "reader")][1] / table[("precropped-raw", "ceiling + shuffle")][1]
            verdicts.append(f"pre-cropped raw reader / ceiling + the same shuffle = {ratio:.2f} (what parse + decode cost)")
    for kind in ("full-jpeg", "full-jpeg-original", "small-jpeg"):
        if (kind, "reader") in table:
            ratio = table[(kind, "reader")][2]
            target = " (target >= 1.50: " + ("met)" if ratio >= 1.5 else "NOT met)") if kind == "full-jpeg" else ""
            verdicts.append(f"{kind} random crops: reader / classic decode_jpeg+random_crop = {ratio:.2f}{target}")
    command = (
        "CROPSHARD_PHOTOS="
        + shlex.quote(args.photos)
        + " .venv/bin/python bench/bench_reader.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    )
    report = "\n".join(
        [
            f"## Reader throughput, {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            "",
            f"- Command: `{command.strip()}`",
            f"- Data: {source}; batch {args.batch_size}, crop {args.crop_size}, shuffle buffer {args.shuffle_buffer}, normalize='none'",
            f"- Load average (1 min) before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f}"
            " (other jobs on a shared machine distort absolute numbers; ratios are paired per round)",
            f"- Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, TensorFlow {tf.__version__}, Python {platform.python_version()}",
            f"- {args.repeats} rounds, each pipeline >= {args.seconds:g} s ({args.full_seconds:g} s for full-size JPEGs) per round (after warm-up batches), round-robin;"
            " images/s and CPU are medians, ratios are medians of per-round ratios; page cache warm",
            "",
            *lines,
            "",
            *[f"- {v}" for v in verdicts],
            "",
        ]
    )
    print(report)
    if args.results:
        new = not os.path.exists(args.results)
        with open(args.results, "a", encoding="utf-8") as handle:
            if new:
                handle.write("# Benchmark results\n\nAppended by the bench/ scripts; newest last.\n\n")
            handle.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
