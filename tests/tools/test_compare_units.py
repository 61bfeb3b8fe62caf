"""The pure parts of `cropshard compare`, tested directly: variant planning, build arguments, reader specs,
rows and their JSON, the CPU-share arithmetic, the recommendation's wording, the table and the chart's colours."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cropshard.reader import fileio
from cropshard.reader.metadata import DatasetError, DatasetInfo, ShardInfo, SplitInfo
from cropshard.tools import EXIT_STORAGE
from cropshard.tools.compare import cli
from cropshard.tools.compare.chart import LAYOUT_COLOURS, bar_colours, chart_title
from cropshard.tools.compare.measure import (
    ROW_FIELDS,
    ReaderRun,
    ReaderSettings,
    ReaderSpec,
    VariantRow,
    other_cpu_share,
    reader_spec,
    summarize,
)
from cropshard.tools.compare.plan import Variant, build_argv, combine, plan_variants, variant_from_dataset
from cropshard.tools.compare.recommend import ratio_text, recommend, speed_text

from tests.tools import storage
from tests.tools.compare_rows import measured_row

# The row keys of compare.json format 1, in order: readers of old results depend on them.
FORMAT_1_ROW_KEYS = (
    "name", "layout", "encoding", "path", "reused", "stored_shape", "resize", "num_images", "num_examples",
    "total_bytes", "bytes_per_image", "build_seconds", "reader_split", "reader_crop", "reader_batch_size",
    "reader_batches", "reader_images", "reader_seconds", "reader_images_per_second", "reader_runs_images_per_second",
    "reader_peak_rss_bytes", "reader_baseline_rss_bytes", "other_cpu_share",
)
# Format 2 (issue 17) appends the coverage and --train columns after them; format 1's keys keep their order.
FORMAT_3_ADDED_ROW_KEYS = ("num_inputs", "rejected")  # the build's reconciliation
FORMAT_2_ADDED_ROW_KEYS = (
    "coverage_crop", "coverage_images", "windows_per_image", "window_share", "context_kept", "resolution", "rrc_window_share",
    "train_seeds", "train_accuracies", "train_accuracy", "train_accuracy_sd", "train_steps", "train_seconds",
    "train_images_per_second", "accuracy_per_minute", "eval_images",
)


def dataset_info(crop: dict, splits: dict[str, list[int]], encoding: str = "jpeg", image_shape: tuple[int, int, int] | None = None) -> DatasetInfo:
    """Metadata with one shard per split holding the given [records, bytes]."""
    split_infos = {name: SplitInfo(name, records, (ShardInfo(f"{name}-0.tfrecord", records, size),)) for name, (records, size) in splits.items()}
    total = sum(records for records, _ in splits.values())
    return DatasetInfo("1.0", encoding, (encoding,), 3, image_shape, crop, ("cat", "dog"), split_infos, "none", total, {}, {},
                       num_images_written=total)


def test_plan_builds_every_layout_and_encoding_under_the_workdir() -> None:
    variants = plan_variants("/w", (48, 40), ["raw", "jpeg"], ["jpeg", "original"], 96, ["precrop", "full", "resized"])
    assert [(v.name, v.layout, v.encoding, v.path) for v in variants] == [
        ("precrop-raw", "precrop", "raw", "/w/precrop-raw"),
        ("precrop-jpeg", "precrop", "jpeg", "/w/precrop-jpeg"),
        ("full-jpeg", "full", "jpeg", "/w/full-jpeg"),
        ("full-original", "full", "original", "/w/full-original"),
        ("resized96-jpeg", "resized", "jpeg", "/w/resized96-jpeg"),  # `original` cannot be downscaled: stored as JPEG, once
    ]
    assert variants[0].build_args == ("--crop=center", "--size=48x40", "--encoding=raw")
    assert variants[3].build_args == ("--crop=none", "--encoding=original")
    assert variants[4].build_args == ("--crop=none", "--resize=96", "--encoding=jpeg") and variants[4].resize == 96


def test_plan_skips_layouts_not_asked_for_and_the_resized_variant_without_resize() -> None:
    assert [v.name for v in plan_variants("/w", (8, 8), ["png"], ["jpeg"], None, ["precrop", "full", "resized"])] == ["precrop-png", "full-jpeg"]
    assert [v.name for v in plan_variants("/w", (8, 8), ["png"], ["raw"], 32, ["resized"])] == ["resized32-raw"]


def test_an_existing_dataset_is_named_by_its_own_metadata() -> None:
    cases = [({"strategy": "center", "size": [8, 8]}, "precrop", "precrop-jpeg", None),
             ({"strategy": "none", "resize": 64}, "resized", "resized64-jpeg", 64),
             ({"strategy": "none"}, "full", "full-jpeg", None)]
    for crop, layout, name, resize in cases:
        variant = variant_from_dataset("/d", dataset_info(crop, {"train": (4, 400)}))
        assert variant == Variant(name, layout, "jpeg", "/d", None, resize)


def test_a_given_dataset_replaces_the_build_of_its_name_and_clashing_names_get_their_folder() -> None:
    planned = plan_variants("/w", (8, 8), ["raw", "jpeg"], [], None, ["precrop"])
    given = [Variant("precrop-raw", "precrop", "raw", "/old/a"), Variant("precrop-raw", "precrop", "raw", "/old/b/")]
    combined = combine(given, planned)
    assert [(v.name, v.path) for v in combined] == [
        ("precrop-raw (a)", "/old/a"), ("precrop-raw (b)", "/old/b/"), ("precrop-jpeg", "/w/precrop-jpeg")]
    assert combine([], planned) == planned


def test_build_argv_is_source_variant_options_quality_overwrite_then_passthrough() -> None:
    raw, jpeg = plan_variants("/w", (8, 8), ["raw", "jpeg"], [], None, ["precrop"])
    assert build_argv(jpeg, ["--input=a/**", "--input=b/**"], 75, ["--runner=DirectRunner"]) == [
        "--input=a/**", "--input=b/**", "--output=/w/precrop-jpeg", "--crop=center", "--size=8x8", "--encoding=jpeg",
        "--jpeg_quality=75", "--overwrite", "--runner=DirectRunner"]
    # No quality for a raw variant: build refuses --jpeg_quality 75 of a raw dataset as having no effect.
    assert build_argv(raw, ["--input=a/**"], 75, []) == ["--input=a/**", "--output=/w/precrop-raw", "--crop=center", "--size=8x8",
                                                        "--encoding=raw", "--overwrite"]
    with pytest.raises(ValueError, match="existing dataset"):
        build_argv(Variant("precrop-raw", "precrop", "raw", "/d"), [], 90, [])
    # --small shapes the pre-crops; whole images are never too small, and build refuses it there.
    (full,) = plan_variants("/w", (8, 8), [], ["raw"], None, ["full"])
    assert "--small=pad" in build_argv(raw, [], 90, ["--small=pad"])
    assert build_argv(full, [], 90, ["--small", "pad", "--seed=3", "--small=upscale"])[-1:] == ["--seed=3"]


def test_reader_spec_reads_pre_crops_plainly_and_full_images_with_random_crops() -> None:
    settings = ReaderSettings(split="train", batch_size=4, batches=2, min_seconds=0.5, warmup=1, repeats=1, seed=7)
    pre = dataset_info({"strategy": "center"}, {"train": (4, 400)}, image_shape=(8, 8, 3))
    spec = reader_spec(Variant("precrop-jpeg", "precrop", "jpeg", "/p"), pre, settings, (8, 8))
    assert spec == ReaderSpec("/p", "train", 4, 2, 1, 0.5, None, None, 7)
    # No train split: the first non-empty split, alphabetically.
    full = dataset_info({"strategy": "none"}, {"a": (0, 0), "c": (3, 300), "b": (2, 200)})
    spec = reader_spec(Variant("full-jpeg", "full", "jpeg", "/f"), full, settings, (6, 5))
    assert (spec.split, spec.crop, spec.crop_size) == ("b", "random", (6, 5))
    assert ReaderSpec.from_json(spec.to_json()) == spec
    with pytest.raises(DatasetError, match="no examples"):
        reader_spec(Variant("full-jpeg", "full", "jpeg", "/e"), dataset_info({"strategy": "none"}, {"test": (0, 0)}), settings, (6, 5))


def test_summarize_takes_the_fastest_run_and_the_largest_peak_and_round_trips_through_json() -> None:
    info = dataset_info({"strategy": "none", "resize": 64}, {"train": (6, 6000), "test": (2, 2000)})
    spec = ReaderSpec("/r", "train", 4, 2, 1, 0.0, "random", (32, 32), None)
    runs = [ReaderRun(8, 2, 0.02, 400.0, 700, 500, 0.1), ReaderRun(8, 2, 0.01, 800.0, 650, 510, 0.05)]
    row = summarize(Variant("resized64-jpeg", "resized", "jpeg", "/r"), info, 3.25, spec, runs)
    assert (row.reader_images_per_second, row.reader_seconds, row.reader_baseline_rss_bytes, row.other_cpu_share) == (800.0, 0.01, 510, 0.05)
    assert row.reader_peak_rss_bytes == 700 and row.reader_runs_images_per_second == (400.0, 800.0)
    assert (row.total_bytes, row.bytes_per_image, row.num_examples, row.stored_shape, row.resize) == (8000, 1000.0, 8, "varies", 64)
    assert row.reader_crop == "random crop 32x32" and row.reused is False and row.build_seconds == 3.25
    document = json.loads(json.dumps(row.to_json()))
    assert tuple(document) == ROW_FIELDS == FORMAT_1_ROW_KEYS + FORMAT_2_ADDED_ROW_KEYS + FORMAT_3_ADDED_ROW_KEYS
    assert document["reader_runs_images_per_second"] == [400.0, 800.0]
    assert VariantRow.from_json(document) == row
    reused = summarize(Variant("x", "resized", "jpeg", "/r"), info, None, spec, runs)
    assert reused.reused is True and reused.build_seconds is None


def test_other_cpu_share_is_the_machine_busy_time_minus_our_own_over_all_cpus() -> None:
    assert other_cpu_share((100.0, 10.0), (103.0, 11.0), 1.0, 4) == 0.5  # 3 s busy, 1 s ours, 4 CPU-seconds
    assert other_cpu_share((100.0, 10.0), (100.5, 11.0), 1.0, 4) == 0.0  # clamped: never negative
    assert other_cpu_share((100.0, 10.0), (120.0, 10.0), 1.0, 4) == 1.0  # clamped: never above all CPUs
    assert other_cpu_share(None, (1.0, 1.0), 1.0, 4) is None and other_cpu_share((1.0, 1.0), (2.0, 1.0), 0.0, 4) is None


def test_ratio_and_speed_words() -> None:
    assert [ratio_text(v) for v in (722.2, 17.98, 6.12, 1.814, 0.012)] == ["722", "18", "6.1", "1.81", "0.012"]
    assert speed_text(1.4) == "1.40x faster" and speed_text(0.5) == "2.0x slower"
    assert speed_text(1.03) == "at about the same speed" and speed_text(0) == "with no measurable throughput"


def test_recommendation_without_pre_crops_or_measurements() -> None:
    assert recommend([measured_row(reader_images_per_second=0.0)]) == ["No variant was measured; nothing to recommend."]
    rows = [measured_row(name="full-jpeg", layout="full", encoding="jpeg", bytes_per_image=2048.0, reader_images_per_second=500.0,
                         reader_peak_rss_bytes=600e6),
            measured_row(name="full-png", layout="full", encoding="png", bytes_per_image=4096.0, reader_images_per_second=250.0,
                         reader_peak_rss_bytes=610e6)]
    text = recommend(rows)
    assert text[0] == "Full images (full-jpeg) keep random-crop augmentation at 500 images/s and 2.00 KiB per image."
    assert text[1].startswith("Every variant reads at least 250 images/s on this machine (full-png is the slowest)")
    assert text[2] == "Reader peak memory is similar for every variant (572.20 MiB to 581.74 MiB)."
    assert len(text) == 3


def test_busy_machine_caution_counts_rows_that_were_not_measured_too() -> None:
    rows = [measured_row(), measured_row(name="precrop-jpeg", reader_images_per_second=0.0, other_cpu_share=0.3)]
    assert recommend(rows)[-1].startswith("Caution: other processes used up to 30% of the CPUs")
    assert not recommend([measured_row(other_cpu_share=0.2)])[-1].startswith("Caution")


def test_table_has_a_line_per_variant() -> None:
    table = cli.format_table([measured_row(), measured_row(name="full-jpeg", build_seconds=None, reader_crop="random crop 8x8",
                                                           reader_images_per_second=12345.6)]).splitlines()
    assert table[0].split() == ["variant", "stored", "bytes/image", "total", "build", "reader", "images/s", "peak", "RSS"]
    assert set(table[1]) == {"-"} and len(table[1]) == len(table[0])
    assert table[2].split() == ["precrop-raw", "48x48x3", "6.84", "KiB", "68.36", "KiB", "2.5", "s", "plain", "read", "1,000", "572.20", "MiB"]
    assert " reused " in table[3] and "random crop 8x8" in table[3] and "12,346" in table[3]


def test_bar_colours_follow_the_layout_and_alternate_within_it() -> None:
    rows = [measured_row(layout=layout) for layout in ("precrop", "precrop", "full", "precrop", "resized")]
    pre, full, resized = LAYOUT_COLOURS["precrop"], LAYOUT_COLOURS["full"], LAYOUT_COLOURS["resized"]
    assert bar_colours(rows) == [pre[0], pre[1], full[0], pre[0], resized[0]]


def test_chart_title_names_the_reader_settings() -> None:
    settings = ReaderSettings(split="train", batch_size=4, batches=2, min_seconds=0.5, warmup=1, repeats=3)
    assert chart_title([measured_row()], settings, (48, 40), 2) == (
        "cropshard compare: 10 images, crop 48x40; reader: split 'train', batch 4, timed >= 2 batches and >= 0.5 s"
        " after 1 warm-up, best of 3 (2 CPUs)")
    assert list(dataclasses.asdict(settings)) == ["split", "batch_size", "batches", "min_seconds", "warmup", "repeats", "seed"]


def test_argument_checks() -> None:
    for argv in (["--input=x/**", "--size=8", "-v"], ["--input=x/**", "--size=8", "--encodings=webp"],
                 ["--input=x/**", "--size=8", "--encodings=original"], ["--input=x/**", "--size=8", "--layouts=tiles"],
                 ["--input=x/**", "--size=8", "--batches=0"], ["--input=x/**", "--manifest=m.csv", "--size=8"], ["--size=8"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)
    args, passthrough = cli.parse_args(["--input=x/**", "--size=8x6", "--resize=0", "--encodings=png, raw"])
    assert passthrough == [] and args.resize == 0 and args.encodings == ["png", "raw"] and args.size == (8, 6)


@pytest.mark.parametrize("option", ["--seeds=0,1", "--train-budget=5", "--train-steps=5", "--train-batch-size=8", "--eval-split=test"])
def test_a_train_option_without_train_is_refused(option: str, capsys: pytest.CaptureFixture[str]) -> None:
    # It ran the size and reader comparison and trained nothing, without a word.
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["--input=x/**", "--size=8", option])
    assert exited.value.code == 2
    assert f"{option.split('=')[0]} is an option of --train: add --train, or drop it" in capsys.readouterr().err
    args, _ = cli.parse_args(["--input=x/**", "--size=8", "--train", option])
    assert args.train


def test_without_a_builder_compare_refuses_to_build_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m cropshard.tools.compare` has no pipeline to build with: it says so and builds nothing."""
    assert cli.main([f"--input={tmp_path}/**", "--size=8", f"--workdir={tmp_path / 'work'}"]) == 2
    assert "building variants needs the pipeline: run `cropshard compare`" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_cost_columns_keep_a_space_between_values_as_wide_as_their_column() -> None:
    # "1" windows per image then "1 in 1,232,279" (14 characters, the column's width) printed "11 in 1,232,279".
    row = dataclasses.replace(measured_row(), coverage_crop="plain read", windows_per_image=1.0, window_share=1 / 1_232_279)
    line = cli.format_costs_table([row]).splitlines()[2]
    assert " 1 1 in 1,232,279 " in line and "11 in" not in line


FAST = ["--input=x/**", "--size=8"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--layouts=precrop", "--encodings=raw", "--full-encodings=png"],
     "--full-encodings is an option of the full and resized variants: add full or resized to --layouts, or drop it"),
    (["--layouts=precrop", "--resize=300"], "--resize is an option of the resized variant: add resized to --layouts, or drop it"),
    (["--layouts=full", "--encodings=raw"], "--encodings is an option of the pre-cropped variants: add precrop to --layouts"),
    (["--layouts=precrop", "--encodings=raw", "--jpeg_quality=40"],
     "--jpeg_quality has no effect: no variant compare builds encodes JPEG (encodings raw)"),
    (["--layouts=precrop,full", "--encodings=raw", "--full-encodings=png", "--jpeg_quality=40"], "encodes JPEG (encodings raw,png)"),
])
def test_a_variant_option_no_variant_uses_is_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Each was ignored and yet recorded in compare.json.
    with pytest.raises(SystemExit) as exited:
        cli.parse_args([*FAST, *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_with_dataset_alone_build_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in ((["--resize=96"], "--resize is an option of the variants compare builds: add --input or --manifest"),
                          (["--split", "train=0.5,test=0.5"], "--split is passed to the builds, and with --dataset alone compare builds")):
        with pytest.raises(SystemExit):
            cli.parse_args(["--dataset=/d", "--size=8", *argv])
        assert message in capsys.readouterr().err
    assert cli.parse_args(["--dataset=/d", "--size=8", "--verbose"])[1] == ["--verbose"]  # the dispatcher's option too


def test_options_used_by_some_variant_are_accepted() -> None:
    args, _ = cli.parse_args([*FAST, "--layouts=resized", "--full-encodings=png", "--resize=64"])
    assert args.resize == 64 and args.layouts == ["resized"]
    args, _ = cli.parse_args([*FAST, "--layouts=precrop", "--encodings=jpeg", "--jpeg_quality=40"])
    assert args.jpeg_quality == 40


def test_an_option_given_two_values_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # `--size 64 --size 32` built 32x32 variants without a word.
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["--input=x/**", "--size", "64", "--size", "32"])
    assert exited.value.code == 2
    assert "--size is given more than once with different values; give it once" in capsys.readouterr().err
    assert cli.parse_args(["--input=x/**", "--size", "64", "--size=64x64"])[0].size == (64, 64)  # the same value twice


@pytest.mark.parametrize(("typed", "meant"), [("--batch_size", "--batch-size"), ("--enc", "--encodings"), ("--siz", "--size"),
                                             ("--jpeg-quality", "--jpeg_quality"), ("--train-b", "--train-batch-size or --train-budget")])
def test_a_misspelt_compare_option_gets_compare_s_own_as_the_hint(typed: str, meant: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Passed to the build, `--batch_size` got "did you mean --size?", `--enc` "--encoding" (which compare refuses).
    with pytest.raises(SystemExit) as exited:
        cli.parse_args([*FAST, f"{typed}=8"])
    assert exited.value.code == 2 and f"unknown option {typed} (did you mean {meant}?)" in capsys.readouterr().err


def test_no_build_or_beam_option_is_taken_for_a_misspelt_compare_option() -> None:
    from cropshard.pipeline.arguments import known_options_parser, long_options

    parser = cli._parser()
    hinted = [flag for flag in long_options(known_options_parser()) if cli.own_option_meant(flag, parser)]
    assert set(hinted) <= {"--encoding", *parser._option_string_actions}  # --encoding: refused as compare's to set


def test_build_options_still_pass_through() -> None:
    _, passthrough = cli.parse_args([*FAST, "--split", "train=0.5,test=0.5", "--num_shards=2"])
    assert passthrough == ["--split", "train=0.5,test=0.5", "--num_shards=2"]


# ---- storage that cannot be read: one line and exit 3, not a traceback --------------------------


def storage_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "not a finding about the data" in lines[0]
    return lines[0]


@pytest.mark.parametrize(("argv", "named"), [
    (["--dataset=gs://bucket/ds"], "could not read gs://bucket/ds/cropshard.json: UnavailableError: connection refused"),
    (["--input=x/**", "--layouts=precrop", "--encodings=jpeg", "--workdir=gs://bucket/cmp"],
     "could not read gs://bucket/cmp/precrop-jpeg: UnavailableError: connection refused"),
])
def test_unreachable_storage_is_one_line_and_exit_3(argv: list[str], named: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # It printed TensorFlow's traceback (from load_info or workdir.foreign_contents) and exited 1.
    workdir = [] if any(a.startswith("--workdir") for a in argv) else [f"--workdir={tmp_path}"]
    with fileio.use(storage.unreachable()):
        assert cli.main([*argv, "--size=8", *workdir]) == EXIT_STORAGE == 3
    line = storage_error_line(capsys.readouterr().err)
    assert line.startswith("cropshard compare: error: ") and named in line


def test_an_unreadable_ledger_is_a_storage_error_not_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The ledger naming the folder as compare's could not be read: compare refused its own folder as "not written by
    # compare" (exit 2), and claim_folder would have rewritten the ledger without its other folders.
    (tmp_path / "cmp" / "precrop-jpeg").mkdir(parents=True)
    (tmp_path / "cmp" / "precrop-jpeg" / "cropshard.json").write_text("{}")
    (tmp_path / "cmp" / "compare-variants.json").write_text(json.dumps({"folders": ["precrop-jpeg"]}))
    bucket = storage.BucketOnDisk(str(tmp_path), fails=lambda path: storage.unavailable(path) if path.endswith("variants.json") else None)
    with fileio.use(bucket):
        assert cli.main(["--input=x/**", "--layouts=precrop", "--encodings=jpeg", "--workdir=gs://bucket/cmp", "--size=8"]) == 3
    line = storage_error_line(capsys.readouterr().err)
    assert "could not read gs://bucket/cmp/compare-variants.json: UnavailableError" in line


@pytest.mark.parametrize(("argv", "message"), [
    (["--min-seconds=nan"], "--min-seconds and --train-budget are seconds: finite numbers, not nan and 180.0"),
    (["--min-seconds=inf"], "finite numbers, not inf"),  # measured forever
    (["--train", "--train-budget=nan"], "finite numbers, not 3.0 and nan"),
    (["--encodings=raw,raw"], "--encodings names raw more than once"),  # two identical rows
    (["--full-encodings=png,jpeg,png"], "--full-encodings names png more than once"),
    (["--layouts=full,full"], "--layouts names full more than once"),
    (["--dataset=/d", "--dataset=/d/"], "--dataset names /d more than once"),
])
def test_values_that_measured_forever_or_twice_are_refused(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parse_args([*FAST, *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_blank_paths_and_a_workdir_that_is_a_file_are_refused_before_any_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A blank --input reached the build only after compare had claimed a folder in the workdir; a
    # --workdir file failed with "[Errno 17] File exists" once the first build started.
    (tmp_path / "afile").write_text("x")
    for argv, message in ((["--input="], "--input '' is blank"), (["--dataset=/d", "--dataset= "], "--dataset ' ' is blank"),
                          ([f"--workdir={tmp_path / 'afile'}"], f"--workdir {tmp_path / 'afile'} is a file"),
                          (["--workdir=runs [v2]"], "--workdir 'runs [v2]' holds one of * ? [ ]")):
        with pytest.raises(SystemExit) as exited:
            cli.parse_args([*FAST, *argv])
        assert exited.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["--manifest=", "--size=8"])
    assert "--manifest '' is blank" in capsys.readouterr().err
