"""`cropshard compare` arguments, the run (build or reuse, measure, write JSON and chart) and the printed table."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from cropshard.reader.integrity import verify
from cropshard.reader.metadata import REJECTED_FILENAME, DatasetError, DatasetInfo, load_info
from cropshard.tools import exit_status_guarding_storage, human_bytes, refuse_options_without, refuse_repeated_options
from cropshard.tools.compare.chart import chart_title, write_chart
from cropshard.tools.compare.costs import Trainee, TrainSettings, coverages, scan_all, training_plan
from cropshard.tools.compare.coverage import Coverage
from cropshard.tools.compare.measure import (
    ReaderRun,
    ReaderSettings,
    ReaderSpec,
    VariantRow,
    measure_reader,
    pick_split,
    reader_spec,
    run_reader_subprocess,
    summarize,
    with_coverage,
    with_training,
)
from cropshard.tools.compare.plan import (
    LAYOUTS,
    Build,
    Check,
    Variant,
    build_argv,
    combine,
    crop_label,
    plan_variants,
    training_crop,
    variant_from_dataset,
)
from cropshard.tools.compare.recommend import TRAIN_LIMITS, recommend, share_text
from cropshard.tools.compare.train import (
    MODEL_DESCRIPTION,
    TrainingSummary,
    TrainPlan,
    TrainRun,
    run_training_subprocess,
    summarize_training,
    train_all,
)
from cropshard.tools.compare.workdir import check_variant_folders, claim_folder

# 2: coverage and context columns, compare --train (the "train" object and the train_* columns).
# 3: num_inputs and rejected per variant.
COMPARE_FORMAT_VERSION = 3
# Build options compare sets itself per variant; passing them through would silently change a variant.
OWNED_BUILD_OPTIONS = ("--input", "--manifest", "--output", "--crop", "--size", "--resize", "--encoding", "--jpeg_quality",
                       "--box", "--crops_per_image", "--stride")
# compare's options that only shape the variants it builds; with --dataset alone they change nothing.
VARIANT_OPTIONS = ("encodings", "full_encodings", "resize", "layouts", "jpeg_quality", "overwrite")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    from cropshard.transforms.crop import parse_size

    parser = refuse_repeated_options(argparse.ArgumentParser(
        prog="cropshard compare",
        allow_abbrev=False,
        description="Build (or reuse) pre-cropped and full-image variants of the same input and measure size, build time, "
        "reader throughput and reader memory. Unrecognised --options (Beam's --runner, --direct_num_workers, Dataflow "
        "options, and build options such as --split, --num_shards, --compression) are passed to every build.",
    ))
    parser.add_argument("--input", action="append", default=[], metavar="GLOB", help="images to build from (as for cropshard build; repeatable)")
    parser.add_argument("--manifest", default=None, help="build from a manifest instead of --input")
    parser.add_argument("--dataset", action="append", default=[], metavar="PATH",
                        help="an existing dataset to measure as is (repeatable); its kind comes from its cropshard.json")
    parser.add_argument("--size", type=parse_size, required=True, metavar="HxW", help="the training crop, e.g. 128x128")
    parser.add_argument("--encodings", type=_csv, default=["raw", "jpeg"], help="encodings for the pre-cropped variants (default raw,jpeg)")
    parser.add_argument("--full-encodings", type=_csv, default=["jpeg"], help="encodings for the full-image variants (default jpeg)")
    parser.add_argument("--resize", type=int, default=None, metavar="S",
                        help="shorter side of the downscaled full-image variant (default: 2x the longer crop side; 0 skips it)")
    parser.add_argument("--layouts", type=_csv, default=list(LAYOUTS), help=f"which kinds of variant to build (default {','.join(LAYOUTS)})")
    parser.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality for every JPEG variant (default 90)")
    parser.add_argument("--workdir", default="cropshard-compare",
                        help="where the variants are built, one folder each (default ./cropshard-compare); compare replaces only folders it built")
    parser.add_argument("--overwrite", action="store_true",
                        help="build into variant folders that compare did not write (replacing the dataset there); without it they are refused")
    parser.add_argument("--json", default=None, help="results file (default WORKDIR/compare.json)")
    parser.add_argument("--chart", default=None, help="chart PNG (default WORKDIR/compare.png)")
    parser.add_argument("--read-split", default=None,
                        help="split the reader throughput and memory runs read (default train, else the first non-empty split);"
                        " a named split must exist and have examples in every variant. Coverage and --train always use each"
                        " variant's train split (else its first non-empty one), and --train scores on --eval-split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=50, help="timed batches per variant, at least")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="keep timing batches for at least this long (default 3)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (tracing, file opening, shuffle buffer, autotuning)")
    parser.add_argument("--repeats", type=int, default=3, help="reader runs per variant, round-robin; the fastest counts (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="reader seed (default: unseeded, the fast non-deterministic order)")
    train = parser.add_argument_group("--train: what pre-cropping costs a model (a small proxy CNN trained from scratch on every variant)")
    train.add_argument("--train", action="store_true",
                       help="train the same small classifier on each variant (through reader.load, random crops and flips where the"
                       " variant allows them) and score all of them on the same held-out images")
    train.add_argument("--seeds", type=_int_csv, default=[0, 1, 2], help="one training run per seed and variant (default 0,1,2)")
    train.add_argument("--train-budget", type=float, default=180.0, metavar="SECONDS",
                       help="training wall clock per variant, shared by its seeds (default 180)")
    train.add_argument("--train-steps", type=int, default=None, metavar="N", help="also stop each run after N steps (default: the budget alone)")
    train.add_argument("--train-batch-size", type=int, default=32)
    train.add_argument("--eval-split", default="validation",
                       help="the held-out split, read whole from a full-image variant (default validation)")
    return parser


def _int_csv(text: str) -> list[int]:
    return [int(part) for part in _csv(text)]


TRAIN_OPTIONS = ("seeds", "train_budget", "train_steps", "train_batch_size", "eval_split")


def check_train_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 for a --train option without --train (`--train-steps 5` ran the size and reader
    comparison and trained nothing, without a word)."""
    if not args.train:
        refuse_options_without(parser, args, TRAIN_OPTIONS, "--train", "--train")


def _spelling(flag: str) -> str:
    return flag.replace("_", "-")


def own_option_meant(flag: str, parser: argparse.ArgumentParser) -> str | None:
    """compare's own option(s) that `flag` stands for: the same name with '_' for '-' or the other
    way (`--batch_size`), or an abbreviation (`--enc`). Left to the build, such a flag got the
    build's closest option as a hint (`--size`, or `--encoding`, which compare refuses)."""
    own = sorted({f for action in parser._actions for f in action.option_strings if f.startswith("--")})
    typed = _spelling(flag)
    same = [option for option in own if _spelling(option) == typed]
    longer = [option for option in own if len(typed) > 2 and _spelling(option).startswith(typed)]
    return " or ".join(same or longer) or None


def check_passthrough(parser: argparse.ArgumentParser, passthrough: Sequence[str]) -> None:
    """Exit 2 for an argument meant for compare itself; the rest goes to every build, which checks it."""
    for option in passthrough:
        flag = option.split("=", 1)[0]
        if flag in OWNED_BUILD_OPTIONS:
            parser.error(f"{flag} is set by compare for each variant; use compare's own options (--size, --encodings, --resize, ...)")
        if flag.startswith("-") and not flag.startswith("--"):
            parser.error(f"unknown option {option}")
        meant = own_option_meant(flag, parser) if flag.startswith("--") else None
        if meant:
            parser.error(f"unknown option {flag} (did you mean {meant}?); cropshard compare --help lists compare's options")


def check_variant_options(parser: argparse.ArgumentParser, args: argparse.Namespace, passthrough: Sequence[str]) -> None:
    """Exit 2 for a variant option that no variant compare builds reads (`--full-encodings png
    --layouts precrop`, `--resize` without the resized layout: ignored, yet recorded in compare.json)."""
    if not (args.input or args.manifest):
        refuse_options_without(parser, args, VARIANT_OPTIONS, "the variants compare builds", "--input or --manifest")
        build_options = [option for option in passthrough if option != "--verbose"]  # --verbose: the dispatcher's too
        if build_options:
            parser.error(f"{build_options[0]} is passed to the builds, and with --dataset alone compare builds nothing:"
                         " add --input or --manifest, or drop it")
        return
    if "precrop" not in args.layouts:
        refuse_options_without(parser, args, ("encodings",), "the pre-cropped variants", "precrop to --layouts")
    full = "full" in args.layouts or ("resized" in args.layouts and args.resize != 0)
    if not full:
        refuse_options_without(parser, args, ("full_encodings",), "the full and resized variants", "full or resized to --layouts")
    if "resized" not in args.layouts:
        refuse_options_without(parser, args, ("resize",), "the resized variant", "resized to --layouts")
    built = [*(args.encodings if "precrop" in args.layouts else []), *(args.full_encodings if full else [])]
    if args.jpeg_quality != parser.get_default("jpeg_quality") and not {"jpeg", "original"} & set(built):
        parser.error(f"--jpeg_quality has no effect: no variant compare builds encodes JPEG (encodings {','.join(dict.fromkeys(built))}):"
                     " add jpeg to --encodings or --full-encodings, or drop it")


def refuse_blank_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 for a blank --input/--manifest/--dataset/--workdir (`"$DIR"` unset) and a --workdir that
    is a file, before the first build claims a folder there (it failed with '[Errno 17] File exists')."""
    given = [("--input", value) for value in args.input] + [("--dataset", value) for value in args.dataset]
    given += [("--manifest", args.manifest)] if args.manifest is not None else []
    for option, value in [*given, ("--workdir", args.workdir)]:
        if not value.strip():
            parser.error(f"{option} {value!r} is blank (an unset shell variable?): give a path, or drop it")
    if set(args.workdir) & set("*?[]"):  # the builds' --output, which Beam's file operations would read as a glob
        parser.error(f"--workdir {args.workdir!r} holds one of * ? [ ], which the builds' file operations read as a pattern: choose another")
    if "://" not in args.workdir and os.path.isfile(args.workdir):
        parser.error(f"--workdir {args.workdir} is a file: give a folder for the variants and results (created if missing)")


def refuse_repeated_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 for a value named twice: `--encodings raw,raw` or one --dataset given twice built or
    measured the same variant twice, as two rows of the table."""
    given = [path.rstrip("/") or path for path in args.dataset]
    for option, values in (("--encodings", args.encodings), ("--full-encodings", args.full_encodings), ("--layouts", args.layouts),
                           ("--dataset", given)):
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            parser.error(f"{option} names {', '.join(repeated)} more than once; each variant is built and measured once")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """compare's own options, and the rest (passed through to every build)."""
    from cropshard.transforms.encode import ENCODINGS

    parser = _parser()
    args, passthrough = parser.parse_known_args(list(argv))
    check_passthrough(parser, passthrough)
    for enc in args.encodings + args.full_encodings:
        if enc not in ENCODINGS:
            parser.error(f"unknown encoding {enc!r}; choose from {', '.join(ENCODINGS)}")
    if "original" in args.encodings:
        parser.error("'original' keeps whole source files; it cannot be a pre-cropped encoding (use it in --full-encodings)")
    unknown = set(args.layouts) - set(LAYOUTS)
    if unknown:
        parser.error(f"unknown layouts {sorted(unknown)}; choose from {', '.join(LAYOUTS)}")
    if not (math.isfinite(args.min_seconds) and math.isfinite(args.train_budget)):  # nan passed every bound; inf never ended
        parser.error(f"--min-seconds and --train-budget are seconds: finite numbers, not {args.min_seconds} and {args.train_budget}")
    refuse_repeated_values(parser, args)
    refuse_blank_paths(parser, args)
    if args.batch_size < 1 or args.batches < 1 or args.repeats < 1 or args.warmup < 0 or args.min_seconds < 0:
        parser.error("--batch-size, --batches and --repeats must be positive, --warmup and --min-seconds >= 0")
    check_variant_options(parser, args, passthrough)
    if args.resize is None:
        args.resize = 2 * max(args.size)
    if args.train and (not args.seeds or len(set(args.seeds)) != len(args.seeds) or args.train_budget <= 0
                       or args.train_batch_size < 1 or (args.train_steps is not None and args.train_steps < 1)):
        parser.error("--train needs distinct --seeds, a positive --train-budget and --train-batch-size, and --train-steps >= 1")
    check_train_options(parser, args)
    if args.input and args.manifest:
        parser.error("give --input or --manifest, not both")
    if not (args.input or args.manifest) and not args.dataset:
        parser.error("give --input/--manifest to build variants, or --dataset PATH for existing ones")
    return args, passthrough


def reader_settings(args: argparse.Namespace) -> ReaderSettings:
    return ReaderSettings(args.read_split or "train", args.batch_size, args.batches, args.min_seconds, args.warmup, args.repeats, args.seed)


def _variants(args: argparse.Namespace) -> list[Variant]:
    given = [variant_from_dataset(path, load_info(path)) for path in args.dataset]
    planned = []
    if args.input or args.manifest:
        planned = plan_variants(args.workdir, args.size, args.encodings, args.full_encodings, args.resize or None, args.layouts)
    return combine(given, planned)


@dataclasses.dataclass(frozen=True)
class Built:
    variant: Variant
    info: DatasetInfo
    seconds: float | None  # build wall seconds; None: an existing dataset, reused
    spec: ReaderSpec


def _source_args(args: argparse.Namespace) -> list[str]:
    return [f"--input={pattern}" for pattern in args.input] + ([f"--manifest={args.manifest}"] if args.manifest else [])


def _build_all(variants: Sequence[Variant], args: argparse.Namespace, passthrough: Sequence[str], build: Build | None) -> list[Built]:
    """Build the variants that need it, reuse the others; each with what its reader runs measure."""
    settings = reader_settings(args)
    source = _source_args(args)
    built = []
    for variant in variants:
        seconds = None
        if variant.build_args is None:
            info = load_info(variant.path)
        elif build is None:
            # Given datasets come first, so this stops before any build has started.
            raise ValueError("building variants needs the pipeline: run `cropshard compare` (this module alone measures --dataset folders only)")
        else:
            print(f"building {variant.name} -> {variant.path}", file=sys.stderr, flush=True)
            claim_folder(variant, args.workdir)  # before the build writes: a rerun after an interrupted build still owns it
            info, seconds = build(build_argv(variant, source, args.jpeg_quality, passthrough))
        built.append(Built(variant, info, seconds, reader_spec(variant, info, settings, args.size, args.read_split is not None)))
    return built


def _measure_all(names: Sequence[str], specs: Sequence[ReaderSpec], settings: ReaderSettings) -> list[list[ReaderRun]]:
    """`settings.repeats` runs per variant, round-robin, so a burst of load elsewhere hits one run of
    several variants rather than every run of one."""
    runs: list[list[ReaderRun]] = [[] for _ in specs]
    for round_number in range(settings.repeats):
        for name, spec, variant_runs in zip(names, specs, runs, strict=True):
            print(f"  reader run {round_number + 1}/{settings.repeats} of {name} ({spec.crop or 'plain'} read,"
                  f" batch {settings.batch_size})", file=sys.stderr, flush=True)
            variant_runs.append(run_reader_subprocess(spec))
    return runs


def _machine() -> dict[str, Any]:
    import tensorflow as tf

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "tensorflow": tf.__version__}


@dataclasses.dataclass(frozen=True)
class Comparison:
    rows: list[VariantRow]
    document: dict[str, Any]  # what compare.json holds
    json_path: str
    chart_path: str
    size_note: str | None = None  # why some shares are '?' (source sizes unknown), printed under the costs table


def train_settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(tuple(args.seeds), args.train_budget, args.train_steps, args.train_batch_size, args.eval_split)


def _train(plan: TrainPlan) -> tuple[dict[str, TrainingSummary], list[TrainRun]]:
    print(f"training {len(plan.targets)} variants x {len(plan.seeds)} seeds, {plan.seconds:g} s each"
          f" (held-out: {plan.eval_split!r} of {plan.eval_path})", file=sys.stderr, flush=True)
    runs = run_training_subprocess(plan)
    by_variant: dict[str, list[TrainRun]] = {}
    for train_run in runs:
        by_variant.setdefault(train_run.variant, []).append(train_run)
    return {name: summarize_training(variant_runs) for name, variant_runs in by_variant.items()}, runs


def _rows(built: Sequence[Built], runs: Sequence[list[ReaderRun]], coverage: Sequence[Coverage], size: tuple[int, int],
          training: dict[str, TrainingSummary] | None, seeds: Sequence[int]) -> list[VariantRow]:
    rows = []
    for b, measured, kept in zip(built, runs, coverage, strict=True):
        row = with_coverage(summarize(b.variant, b.info, b.seconds, b.spec, measured), kept, crop_label(training_crop(b.info, size), size))
        rows.append(with_training(row, seeds, training[b.variant.name]) if training is not None else row)
    return rows


def refuse_damaged_datasets(paths: Sequence[str]) -> None:
    """DatasetError for a given --dataset with a damaged or short shard, before anything is built
    or measured: mid-measurement, TensorFlow's DataLossError names a byte offset and no file."""
    for path in paths:
        report = verify(path)
        if not report.ok:
            first, more = report.bad_shards[0], len(report.bad_shards) - 1
            others = f" (and {more} more shard{'s' if more > 1 else ''})" if more else ""
            raise DatasetError(f"--dataset {path} is damaged: {first.describe()}{others}; `cropshard inspect {path} --verify` lists every damaged shard")


def _train_document(plan: TrainPlan | None, runs: Sequence[TrainRun]) -> dict[str, Any] | None:
    """compare.json's "train" object: what was trained, how, on what, and every run."""
    if plan is None:
        return None
    return {"model": MODEL_DESCRIPTION, "limits": TRAIN_LIMITS, "seeds": list(plan.seeds), "seconds_per_run": plan.seconds,
            "max_steps": plan.max_steps, "batch_size": plan.batch_size, "learning_rate": plan.learning_rate,
            "eval_path": plan.eval_path, "eval_split": plan.eval_split, "runs": [dataclasses.asdict(r) for r in runs]}


def run(argv: Sequence[str], build: Build | None = None, check: Check | None = None) -> Comparison:
    """Build/reuse, scan for coverage, plan any training, measure, train, and write JSON + chart."""
    args, passthrough = parse_args(argv)
    settings = reader_settings(args)
    variants = _variants(args)
    refuse_damaged_datasets([v.path for v in variants if v.build_args is None])
    if not args.overwrite:  # before any build: compare replaces only what it wrote itself
        check_variant_folders([v for v in variants if v.build_args is not None], args.workdir)
    if check is not None:  # every variant's options, before the first build: a refusal costs no build
        source = _source_args(args)
        for variant in variants:
            if variant.build_args is not None:
                try:
                    check(build_argv(variant, source, args.jpeg_quality, passthrough))
                except ValueError as err:
                    where = " (compare sets --encoding from its --encodings and --full-encodings)" if "--encoding " in str(err) else ""
                    raise ValueError(f"variant {variant.name} cannot be built: {err}{where}") from None
    built = _build_all(variants, args, passthrough, build)
    # The model trains on each variant's training split, whatever split the reader runs time.
    trainees = [Trainee(b.variant.name, b.variant.path, b.info, pick_split(b.variant, b.info, "train", False)) for b in built]
    scans = scan_all(trainees)
    coverage, size_note = coverages(trainees, scans, args.size)
    plan = training_plan(trainees, scans, args.size, train_settings(args)) if args.train else None  # fails before any run
    runs = _measure_all([b.variant.name for b in built], [b.spec for b in built], settings)
    training, train_runs = _train(plan) if plan is not None else (None, [])
    rows = _rows(built, runs, coverage, args.size, training, args.seeds)
    machine = _machine()
    document = {
        "format_version": COMPARE_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command_line": ["cropshard", "compare", *argv],
        "input": list(args.input) or ([args.manifest] if args.manifest else []),
        "size": list(args.size),
        "resize": args.resize or None,
        "encodings": list(args.encodings),
        "full_encodings": list(args.full_encodings),
        "jpeg_quality": args.jpeg_quality,
        "build_options": passthrough,
        "reader": dataclasses.asdict(settings),
        "machine": machine,
        "train": _train_document(plan, train_runs),
        "variants": [row.to_json() for row in rows],
        "recommendation": recommend(rows),
        "source_size_note": size_note,
    }
    json_path = args.json or os.path.join(args.workdir, "compare.json")
    chart_path = args.chart or os.path.join(args.workdir, "compare.png")
    for path in (json_path, chart_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    write_chart(rows, document["recommendation"], chart_title(rows, settings, args.size, machine["cpus"]), chart_path)
    return Comparison(rows, document, json_path, chart_path, size_note)


def _cell(text: str, width: int, align: str = ">") -> str:
    """`text` in a column `width` wide that keeps at least one space from its neighbours: a value as
    wide as its column ran into the next one ("1" then "1 in 1,232,279" printed "11 in 1,232,279")."""
    return f" {text:>{width - 1}}" if align == ">" else f"{text:<{width - 1}} "


def _line(cells: Sequence[tuple[str, int, str]]) -> str:
    return "".join(_cell(text, width, align) for text, width, align in cells).rstrip()


def format_table(rows: Sequence[VariantRow]) -> str:
    def cells(name: str, stored: str, per_image: str, total: str, build: str, reader: str, speed: str, rss: str) -> str:
        return _line([(name, 22, "<"), (stored, 14, ">"), (per_image, 13, ">"), (total, 12, ">"), (build, 9, ">"),
                      ("", 2, "<"), (reader, 22, "<"), (speed, 10, ">"), (rss, 12, ">")])

    header = cells("variant", "stored", "bytes/image", "total", "build", "reader", "images/s", "peak RSS")
    lines = [header, "-" * len(header)]
    for r in rows:
        build = "reused" if r.build_seconds is None else f"{r.build_seconds:.1f} s"
        lines.append(cells(r.name, r.stored_shape, human_bytes(r.bytes_per_image), human_bytes(r.total_bytes), build, r.reader_crop,
                           f"{r.reader_images_per_second:,.0f}", human_bytes(r.reader_peak_rss_bytes)))
    return "\n".join(lines)


COSTS_COLUMNS = (("variant", 22, "<"), ("training crop", 22, "<"), ("windows/image", 14, ">"), ("window share", 14, ">"),
                 ("RRC share", 11, ">"), ("context kept", 14, ">"), ("resolution", 12, ">"))
TRAIN_COLUMNS = (("accuracy", 10, ">"), ("± sd", 8, ">"), ("train img/s", 13, ">"), ("acc/minute", 12, ">"))


def format_costs_table(rows: Sequence[VariantRow]) -> str:
    """What each variant keeps for training, and with --train how the proxy model did."""
    trained = any(r.train_accuracy is not None for r in rows)
    columns = COSTS_COLUMNS + (TRAIN_COLUMNS if trained else ())
    header = _line(columns)
    lines = [header, "-" * len(header)]
    for r in rows:
        values = [r.name, r.coverage_crop or "", _number(r.windows_per_image, "{:,.0f}"), _share(r.window_share),
                  _share(r.rrc_window_share), _share(r.context_kept), _number(r.resolution, "{:.2f}x")]
        if trained:
            values += [_number(r.train_accuracy, "{:.1%}"), _number(r.train_accuracy_sd, "{:.1%}"),
                       _number(r.train_images_per_second, "{:,.0f}"), _number(r.accuracy_per_minute, "{:.0%}")]
        lines.append(_line([(value, width, align) for value, (_, width, align) in zip(values, columns, strict=True)]))
    return "\n".join(lines)


def format_rejections(rows: Sequence[VariantRow]) -> str | None:
    """One line per variant whose build rejected inputs: its rows cover only the images written."""
    lines = []
    for r in rows:
        if r.rejected:
            reasons = ", ".join(f"{reason} {count}" for reason, count in r.rejected.items())
            lines.append(f"{r.name}: inputs {r.num_inputs} = {r.num_images} written + {sum(r.rejected.values())} rejected"
                         f" ({reasons}); see {os.path.join(r.path, REJECTED_FILENAME)}")
    return "\n".join(["rejected inputs (not in the comparison):", *lines]) if lines else None


def _number(value: float | None, fmt: str) -> str:
    return "?" if value is None else fmt.format(value)


def _share(value: float | None) -> str:
    return "?" if value is None else share_text(value)


def main(argv: Sequence[str], build: Build | None = None, check: Check | None = None) -> int:
    """`cropshard compare ARGS`; `build` runs one build and `check` checks one build's command line
    (the `cropshard` dispatcher passes both). With
    `--measure-reader SPEC` this is the child process that measures one reader run."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(argv)
    if argv[:1] == ["--measure-reader"]:
        print(json.dumps(dataclasses.asdict(measure_reader(ReaderSpec.from_json(argv[1])))))
        return 0
    if argv[:1] == ["--train-plan"]:
        print(json.dumps([dataclasses.asdict(r) for r in train_all(TrainPlan.from_json(argv[1]))]))
        return 0
    return exit_status_guarding_storage("compare", lambda: _compare(argv, build, check))


def _compare(argv: list[str], build: Build | None, check: Check | None = None) -> int:
    try:
        comparison = run(argv, build, check)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
        print(f"cropshard compare: error: {err}", file=sys.stderr)
        return 2
    print()
    print(format_table(comparison.rows))
    rejections = format_rejections(comparison.rows)
    if rejections:
        print(rejections)
    print()
    print(format_costs_table(comparison.rows))
    if comparison.size_note:
        print(textwrap.fill(comparison.size_note, 110, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False))
    print()
    for sentence in comparison.document["recommendation"]:
        print(textwrap.fill(sentence, 110, subsequent_indent="  ", break_on_hyphens=False))  # keep variant names whole
    print(f"\nwrote {comparison.json_path} and {comparison.chart_path}")
    return 0
