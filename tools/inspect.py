"""`cropshard inspect OUT`: what a dataset holds, whether every record is intact, and what its images look like.

    cropshard inspect OUT                         schema, encoding, crop spec, splits, shard sizes, labels, rejections
    cropshard inspect OUT --verify                + read every record: CRC, index files, parse, decode, shape vs cropshard.json
    cropshard inspect OUT --contact-sheet s.png   + a grid of sample images (and the reader's crop windows)
    cropshard inspect OUT --leakage               + examples of different splits sharing ground or a source (tools/leakage.py)

The framing/CRC scan is the reader's own (`reader.integrity.verify_shard`, what `reader.verify`
runs per shard); this module adds the per-record checks only a full decode can make, and the
presentation.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from cropshard.reader import fileio, schema
from cropshard.reader.integrity import ShardReport, verify_shard
from cropshard.reader.metadata import (
    COMPRESSION_GZIP,
    LABELS_FILENAME,
    REJECTED_FILENAME,
    DatasetError,
    DatasetInfo,
    ShardInfo,
    join,
    labels_text,
    load_info,
)
from cropshard.tools import (
    exit_status_guarding_storage,
    human_bytes,
    refuse_options_without,
    refuse_repeated_options,
    storage_failure,
)

_HEADER_AND_FOOTER = 16  # TFRecord framing around each payload: uint64 length + 2 x uint32 CRC


# ---- progress -------------------------------------------------------------------------------


class Progress:
    """A bar redrawn in place on a terminal; a plain line every `log_every` seconds otherwise
    (CI logs and pipes must not fill with carriage returns)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, mode: str = "auto", log_every: float = 10.0) -> None:
        self.total = total
        self.done = 0
        self._label = label
        self._stream = stream or sys.stderr
        self._bar = mode == "bar" or (mode == "auto" and self._stream.isatty())
        self._quiet = mode == "off"
        self._every = 0.1 if self._bar else log_every
        self._start = self._last = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._render()

    def _render(self) -> None:
        if self._quiet:
            return
        # Shared with the build's progress display so both look the same.
        from cropshard.transforms.progress import format_progress

        line = f"{self._label} {format_progress(self.done, self.total, time.monotonic() - self._start)}"
        self._stream.write(f"\r{line}" if self._bar else f"{line}\n")
        self._stream.flush()

    def close(self) -> None:
        self._render()
        if self._bar and not self._quiet:
            self._stream.write("\n")
            self._stream.flush()


# ---- per-record checks ----------------------------------------------------------------------


def check_record(payload: bytes, info: DatasetInfo) -> tuple[str | None, int]:
    """(problem or None, label) for one serialized example: it must parse as a cropshard example,
    decode, and have the shape, channels, format and label the metadata promises."""
    from google.protobuf.message import DecodeError

    try:
        record = schema.decode_example(payload)
    except (DecodeError, ValueError, IndexError) as err:
        # IndexError: a feature present but empty; ValueError covers raw size mismatches too.
        return f"record does not parse as a cropshard example ({err})", schema.UNLABELED
    if record.format not in info.image_formats:
        return f"image/format {record.format!r} is not one of the dataset's formats {list(info.image_formats)}", record.label
    try:
        decoded = _decoded_shape(record)
    except Exception as err:  # noqa: BLE001 - any decoder failure is the finding we report
        return f"{record.format} image does not decode ({type(err).__name__}: {str(err).splitlines()[0][:200]})", record.label
    declared = (record.height, record.width, record.channels)
    if decoded != declared:
        return f"decoded image is {_shape(decoded)} but the record says {_shape(declared)}", record.label
    if info.image_shape is not None and declared != tuple(info.image_shape):
        return f"image is {_shape(declared)} but cropshard.json says every image is {_shape(info.image_shape)}", record.label
    if record.channels != info.channels:
        return f"image has {record.channels} channels, cropshard.json says {info.channels}", record.label
    if not schema.UNLABELED <= record.label < len(info.labels):
        return f"label {record.label} is outside the {len(info.labels)} labels of cropshard.json", record.label
    if record.label >= 0 and record.label_text != info.labels[record.label]:
        return f"label {record.label} has text {record.label_text!r}, cropshard.json says {info.labels[record.label]!r}", record.label
    return None, record.label


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(v) for v in shape)


def _decoded_shape(record: schema.ImageRecord) -> tuple[int, int, int]:
    if record.format == schema.FORMAT_RAW:
        return record.height, record.width, record.channels  # byte count already checked by ImageRecord
    import tensorflow as tf

    decode = tf.io.decode_jpeg if record.format == schema.FORMAT_JPEG else tf.io.decode_png
    # channels=0: keep what is stored, so a wrong channel count is found rather than converted away.
    image = decode(record.encoded, channels=0)
    return tuple(int(v) for v in image.shape)  # type: ignore[return-value]


@dataclasses.dataclass
class VerifyResult:
    shards: list[ShardReport]
    label_counts: dict[str, Counter]  # split -> label id -> count, over every readable record
    seconds: float
    problems: list[str] = dataclasses.field(default_factory=list)  # of the dataset's other files (labels.txt)

    @property
    def bad(self) -> list[ShardReport]:
        return [shard for shard in self.shards if not shard.ok]

    @property
    def ok(self) -> bool:
        return not self.bad and not self.problems

    @property
    def records_ok(self) -> int:
        return sum(shard.good_records for shard in self.shards)


def _check_shard(path: str, split_name: str, shard: ShardInfo, info: DatasetInfo, counts: Counter, progress: Progress | None) -> ShardReport:
    """Framing, CRCs and record index of one shard, then parse, decode and shape of each readable
    record up to the first bad one."""
    import tensorflow as tf

    file = join(path, shard.file)
    index = join(path, shard.index) if shard.index else None
    framing = verify_shard(file, split=split_name, expected_records=shard.num_records, compression=info.compression, index=index)
    readable = framing.good_records
    offset, index, problem = 0, 0, None
    if readable:
        records = tf.data.TFRecordDataset(fileio.get().tf_path(file), compression_type="GZIP" if info.compression == COMPRESSION_GZIP else "")
        try:
            for tensor in records.take(readable):
                payload = tensor.numpy()
                problem, label = check_record(payload, info)
                if problem:
                    break
                counts[label] += 1
                offset += _HEADER_AND_FOOTER + len(payload)
                index += 1
                if progress:
                    progress.add()
        except tf.errors.OpError as err:
            if storage_failure(err):
                raise  # storage failed mid-shard: that says nothing about the records (main reports it)
            # TensorFlow inflates a gzip stream in blocks and fails on the whole block that holds
            # the damage, so before records the framing scan read intact: its report stands.
            if progress:
                progress.add(shard.num_records - index)
            if not framing.ok:
                return framing
            problem = f"unreadable by TensorFlow ({type(err).__name__}: {err.message.splitlines()[0][:200]})"
            return ShardReport(split_name, file, shard.num_records, index, problem, offset)
    if problem:
        if progress:
            progress.add(shard.num_records - index)  # the rest of this shard is not checked
        return ShardReport(split_name, file, shard.num_records, index, problem, offset)
    if progress:
        progress.add(max(shard.num_records - readable, 0))
    return framing


def verify_dataset(path: str, info: DatasetInfo, progress: Progress | None = None) -> VerifyResult:
    """Read every record of every shard: framing and CRCs (verify_shard), then parse, decode and shape.

    A shard's report names its first bad record's byte offset (in the decompressed stream for
    gzip); the records after it are lost for any TFRecord reader, so checking stops there.
    """
    start = time.monotonic()
    reports: list[ShardReport] = []
    label_counts: dict[str, Counter] = {}
    for split_name, split in sorted(info.splits.items()):
        counts = label_counts.setdefault(split_name, Counter())
        reports += [_check_shard(path, split_name, shard, info, counts, progress) for shard in split.shards]
    if progress:
        progress.close()
    problem = labels_file_problem(path, info)
    return VerifyResult(reports, label_counts, time.monotonic() - start, [problem] if problem else [])


def labels_file_problem(path: str, info: DatasetInfo) -> str | None:
    """labels.txt must list cropshard.json's labels, line i = label id i: other readers (TFDS's
    ClassLabel, a PyTorch job) name the classes from it."""
    fs = fileio.get()
    file = join(path, LABELS_FILENAME)
    if not fs.exists(file):
        return f"{file} is missing (cropshard.json lists {len(info.labels)} labels)"
    with fs.open(file, "r") as handle:
        text = handle.read()
    if text == labels_text(info.labels):
        return None
    lines = text.splitlines()
    first = next((i for i, (a, b) in enumerate(zip(lines, info.labels, strict=False)) if a != b), min(len(lines), len(info.labels)))
    return (f"{file} does not match cropshard.json's labels: {len(lines)} lines for {len(info.labels)} labels,"
            f" first difference at label id {first}")


def count_labels(path: str, info: DatasetInfo) -> dict[str, Counter]:
    """Label counts per split from a fast parse of the label feature only (no image decoding)."""
    import numpy as np
    import tensorflow as tf

    spec = {schema.LABEL: tf.io.FixedLenFeature([], tf.int64)}
    compression = "GZIP" if info.compression == COMPRESSION_GZIP else ""
    fs = fileio.get()
    result: dict[str, Counter] = {}
    for name, split in sorted(info.splits.items()):
        files = [fs.tf_path(join(path, shard.file)) for shard in split.shards]
        counts: Counter = Counter()
        if files:
            records = tf.data.TFRecordDataset(files, compression_type=compression, num_parallel_reads=tf.data.AUTOTUNE)
            labels = records.batch(4096).map(lambda batch: tf.io.parse_example(batch, spec)[schema.LABEL])
            for batch in labels.as_numpy_iterator():
                values, numbers = np.unique(batch, return_counts=True)
                counts.update(dict(zip(values.tolist(), numbers.tolist(), strict=True)))
        result[name] = counts
    return result


# ---- the text report ------------------------------------------------------------------------


def _crop_text(crop: dict[str, Any]) -> str:
    strategy = crop.get("strategy")
    size = crop.get("size")
    size_text = f" {_shape(size)}" if size else ""
    parts = [f"{strategy}{size_text}"]
    if strategy == "none":
        parts = ["none (full images; crop on the fly with reader.load(crop=..., crop_size=...))"]
    if crop.get("resize"):
        parts.append(f"shorter side resized to {crop['resize']} first")
    if strategy == "box" and crop.get("box"):
        parts.append(f"box y,x,h,w = {','.join(map(str, crop['box']))}")
    if strategy == "random":
        parts.append(f"{crop.get('crops_per_image', 1)} crops per image, seed {crop.get('seed', 0)}")
    if strategy == "grid" and crop.get("stride"):
        parts.append(f"stride {_shape(crop['stride'])}")
    if strategy != "none":
        parts.append(f"smaller images: {crop.get('small', 'reject')}")
    return "; ".join(parts)


def _spread(values: Sequence[float], fmt: Any) -> str:
    if not values:
        return "-"
    return " / ".join(fmt(v) for v in (min(values), statistics.median(values), max(values)))


def split_order(names: Iterable[str]) -> list[str]:
    """train, validation, test first (the order people read them in), then the rest alphabetically."""
    usual = ("train", "validation", "test")
    return sorted(names, key=lambda n: (usual.index(n) if n in usual else len(usual), n))


def describe(path: str, info: DatasetInfo, label_counts: dict[str, Counter] | None, label_note: str = "") -> str:
    """The human-readable summary `cropshard inspect` prints."""
    lines = [f"cropshard dataset {path}"]
    lines.append(f"  created {info.created or '?'} by cropshard {info.cropshard_version} (format version {info.format_version})")
    if info.command_line:
        lines.append(f"  command {' '.join(info.command_line)}")
    shape = _shape(info.image_shape) + " (every image)" if info.image_shape else "varies (full images)"
    lines += [
        "",
        f"encoding     {info.encoding}  (image/format: {', '.join(info.image_formats)}; {info.channels} channel{'s' if info.channels > 1 else ''})",
        f"image shape  {shape}",
        f"crop         {_crop_text(info.crop)}",
        f"compression  {info.compression}",
        *_raster_lines(info.raster),
        "",
    ]

    header = f"{'split':<12}{'examples':>10}{'shards':>8}{'size':>12}   {'shard size min / median / max':<40} records/shard min / median / max"
    lines.append(header)
    for name in split_order(info.splits):
        split = info.splits[name]
        sizes = [shard.num_bytes for shard in split.shards]
        records = [shard.num_records for shard in split.shards]
        lines.append(
            f"  {name:<10}{split.num_examples:>10}{len(split.shards):>8}{human_bytes(split.num_bytes):>12}   "
            f"{_spread(sizes, human_bytes):<40} {_spread(records, lambda v: f'{v:g}')}"
        )
    total_bytes = sum(split.num_bytes for split in info.splits.values())
    total_shards = sum(len(split.shards) for split in info.splits.values())
    lines.append(f"  {'total':<10}{info.num_examples:>10}{total_shards:>8}{human_bytes(total_bytes):>12}")
    lines.append("")

    lines.extend(_label_table(info, label_counts, label_note))
    lines.append("")

    lines.append(f"rejected     {info.num_rejected} of {info.num_inputs} inputs ({info.num_images_written} images written)")
    for reason, count in sorted(info.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason:<20}{count:>8}")
    if info.num_rejected:
        lines.append(f"  details: {join(path, REJECTED_FILENAME)}")
    if info.chips_skipped:
        lines.append("chips skipped " + ", ".join(f"{reason} {count}" for reason, count in info.chips_skipped.items()) + " (raster chips not written)")
    lines.append("")

    lines.append("schema       tf.train.Example features")
    features = info.schema.get("features", {})
    width = max([22] + [len(key) + 2 for key in features])  # raster keys are longer: image/segmentation/encoded
    for key, spec in features.items():
        dims = spec.get("shape") or []
        lines.append(f"  {key:<{width}}{spec.get('dtype', '?')}{'[' + ','.join(map(str, dims)) + ']' if dims else ''}")
    for key in ("raw_layout", "crop_box"):
        if key in info.schema:
            lines.append(f"  {key.replace('_', ' ')}: {info.schema[key]}")
    return "\n".join(lines)


def _raster_lines(raster: dict | None) -> list[str]:
    """What a raster dataset's pixels are: sample type (a uint16 dataset read as uint8 looked like
    one), source bands, conversion, nodata limit and the CRSs of its chips."""
    if not raster:
        return []
    dtype = raster.get("dtype") or "uint8"
    conversion = f" (--to_uint8 {raster['to_uint8']})" if dtype == "uint8" and raster.get("to_uint8") else ""
    bands = ",".join(map(str, raster.get("bands") or [])) or "all"
    crs = raster.get("crs_seen") or []
    crs_text = ", ".join(crs[:3]) + (f" and {len(crs) - 3} more" if len(crs) > 3 else "") if crs else "none"
    nodata = f"; chips up to {raster['max_nodata']:g} nodata kept" if raster.get("max_nodata") else ""
    return [f"raster       {raster.get('num_rasters', '?')} rasters; samples {dtype}{conversion}; bands {bands}{nodata}; CRS {crs_text}"]


def _label_table(info: DatasetInfo, label_counts: dict[str, Counter] | None, note: str) -> list[str]:
    if label_counts is None:
        return [f"labels       {len(info.labels)}: {', '.join(info.labels)}" + (f"  ({note})" if note else "")]
    splits = split_order(label_counts)
    names = [*((i, name) for i, name in enumerate(info.labels))]
    if any(counts.get(schema.UNLABELED) for counts in label_counts.values()):
        names.append((schema.UNLABELED, "(unlabeled)"))
    width = max([len(name) for _, name in names] + [10])
    lines = [f"labels       {len(info.labels)}" + (f"  ({note})" if note else "")]
    lines.append(f"  {'label':<{width}}" + "".join(f"{s:>12}" for s in splits) + f"{'total':>10}")
    totals = {label: sum(label_counts[s].get(label, 0) for s in splits) for label, _ in names}
    peak = max(totals.values(), default=0) or 1
    for label, name in names:
        bar = "#" * round(30 * totals[label] / peak)
        lines.append(f"  {name:<{width}}" + "".join(f"{label_counts[s].get(label, 0):>12}" for s in splits) + f"{totals[label]:>10}  {bar}")
    return lines


def describe_verify(result: VerifyResult) -> str:
    total = sum(shard.expected_records for shard in result.shards)
    if result.ok:
        return (
            f"verify: OK - {len(result.shards)} shards, {result.records_ok} records: framing, CRCs, index files, parse,"
            f" decode, shape and labels match cropshard.json ({result.seconds:.1f} s)"
        )
    lost = sum(shard.lost_records for shard in result.bad)
    others = f"; {len(result.problems)} other problem{'s' if len(result.problems) > 1 else ''}" if result.problems else ""
    lines = [f"verify: FAILED - {len(result.bad)} of {len(result.shards)} shards bad; {lost} of {total} records unreadable{others}"]
    lines += [f"  BAD {shard.describe()}" for shard in result.bad]
    lines += [f"  BAD {problem}" for problem in result.problems]
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------


def parse_crop_size(text: str) -> tuple[int, int]:
    """'128' or '128x96' -> (height, width) for the contact sheet's crop windows."""
    from cropshard.transforms.crop import parse_size

    return parse_size(text)


def parse_bands(text: str) -> tuple[int, ...]:
    """'4,3,2' -> (4, 3, 2): three 1-based band numbers."""
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--rgb takes three 1-based band numbers like 4,3,2; got {text!r}") from err
    if len(bands) != 3 or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"--rgb takes three 1-based band numbers like 4,3,2; got {text!r}")
    return bands


def _parser() -> argparse.ArgumentParser:
    # No abbreviations and no conflicting repeats, as in `cropshard build`: `--ver` ran --verify, `--no` meant --no-labels.
    parser = refuse_repeated_options(argparse.ArgumentParser(
        prog="cropshard inspect", allow_abbrev=False, description="Describe, verify and look at a cropshard dataset."))
    parser.add_argument("path", help="dataset directory (local or gs://)")
    parser.add_argument("--verify", action="store_true", help="read every record of every shard: CRC, index file, parse, decode, shape and label vs the metadata")
    parser.add_argument("--progress", default="auto", choices=("auto", "bar", "log", "off"), help="--verify progress: bar on a terminal, log lines otherwise")
    parser.add_argument("--no-labels", action="store_true", help="skip the label histogram (it reads the label of every record)")
    parser.add_argument("--contact-sheet", metavar="PNG", help="write a grid of sample images with their labels to this PNG")
    parser.add_argument("--split", default=None, help="split for the contact sheet (default: train, or the first split)")
    parser.add_argument("--samples", type=int, default=16, help="images on the contact sheet")
    parser.add_argument("--crop-size", type=parse_crop_size, default=None, metavar="HxW",
                        help="full-image datasets: the reader crop to draw on the sheet (default: half the --resize side, if the build resized)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the contact sheet's random crop windows")
    parser.add_argument("--leakage", action="store_true",
                        help="report chip footprints that overlap across splits (map footprints for georeferenced chips) and sources in several splits; exit 1 if any")
    parser.add_argument("--rgb", type=parse_bands, default=None, metavar="R,G,B",
                        help="contact sheet of multiband or 16-bit chips: the 1-based stored bands to show as red,green,blue (e.g. 4,3,2), stretched 2-98%%")
    return parser


def _label_counts(args: argparse.Namespace, info: DatasetInfo, verified: VerifyResult | None) -> tuple[dict[str, Counter] | None, str]:
    """(label counts per split or None, a note for the label table)."""
    if verified is not None:
        return verified.label_counts, "readable records only" if verified.bad else ""
    if args.no_labels:
        return None, ""
    try:
        return count_labels(args.path, info), ""
    except Exception as err:  # noqa: BLE001 - a damaged shard must not stop the description
        if storage_failure(err):
            raise  # unreachable storage is not damage: "run --verify to locate the damage" would mislead
        return None, f"histogram unavailable: {type(err).__name__}; run with --verify to locate the damage"


CONTACT_SHEET_OPTIONS = ("split", "samples", "crop_size", "seed", "rgb")


def check_options_take_effect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 for an option set where nothing reads it (`--rgb 4,3,2` without --contact-sheet
    printed the description and no sheet, without a word)."""
    if not args.contact_sheet:
        refuse_options_without(parser, args, CONTACT_SHEET_OPTIONS, "the contact sheet", "--contact-sheet PNG")
    if not args.verify and args.progress != parser.get_default("progress"):
        parser.error("--progress shows the progress of --verify: add --verify, or drop it")


def contact_sheet_path(path: str) -> str:
    """The file the sheet goes to: matplotlib adds '.png' to a name without an extension, and
    inspect reported the name as typed; a folder is refused rather than written as FOLDER.png."""
    if not path.strip():
        raise ValueError("--contact-sheet needs a file name, e.g. sheet.png")
    if "://" in path:
        return path
    if os.path.isdir(path):
        raise ValueError(f"--contact-sheet {path} is a folder: give a file name, e.g. {os.path.join(path, 'sheet.png')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):  # checked before the dataset is read
        raise ValueError(f"--contact-sheet {path}: folder {folder} does not exist")
    path = path if os.path.splitext(path)[1][1:] else f"{path}.png"
    from cropshard.tools.contact_sheet import is_contact_sheet

    if os.path.lexists(path) and not is_contact_sheet(path):  # a source photo given by mistake was replaced
        raise ValueError(f"--contact-sheet {path} exists and is not a contact sheet inspect wrote: give a new file name")
    return path


def check_against_dataset(args: argparse.Namespace, info: DatasetInfo) -> None:
    """ValueError for an option this dataset gives nothing to do: a pre-cropped dataset has no
    reader crop windows to draw, so --crop-size changed nothing on its sheet."""
    if args.crop_size is not None and info.is_precropped:
        raise ValueError(f"--crop-size draws the reader's crop windows on full-image datasets; {args.path} is pre-cropped"
                         f" ({_crop_text(info.crop)}), so its sheet has none: drop --crop-size")


def main(argv: Iterable[str]) -> int:
    parser = _parser()
    args = parser.parse_args(list(argv))
    check_options_take_effect(parser, args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Not 1 when storage fails: for --verify that means damage found, and an unreachable bucket proves no damage.
    return exit_status_guarding_storage("inspect", lambda: _inspect(args), args.path)


def _inspect(args: argparse.Namespace) -> int:
    try:
        if args.contact_sheet is not None:  # '' too: refused, not taken for no sheet
            args.contact_sheet = contact_sheet_path(args.contact_sheet)
        info = load_info(args.path)
        check_against_dataset(args, info)
    except (DatasetError, ValueError) as err:
        print(f"cropshard inspect: error: {err}", file=sys.stderr)
        return 2

    verified = None
    if args.verify:
        total = sum(shard.num_records for split in info.splits.values() for shard in split.shards)
        verified = verify_dataset(args.path, info, Progress(total, "verify", mode=args.progress))
    print(describe(args.path, info, *_label_counts(args, info, verified)))

    status = 0
    if verified is not None:
        print()
        print(describe_verify(verified))
        status = 0 if verified.ok else 1
    if args.leakage:
        from cropshard.tools.leakage import find_leaks

        report = find_leaks(args.path, info)
        print()
        print(report.summary())
        status = max(status, 0 if report.clean else 1)
    if args.contact_sheet:
        from cropshard.tools.contact_sheet import write_contact_sheet

        try:
            sheet = write_contact_sheet(
                args.path, args.contact_sheet, split=args.split, samples=args.samples, crop_size=args.crop_size, seed=args.seed, rgb=args.rgb
            )
        except (DatasetError, ValueError) as err:
            print(f"cropshard inspect: contact sheet: {err}", file=sys.stderr)
            return 2
        print()
        print(sheet.summary())
    return status
