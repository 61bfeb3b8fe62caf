"""The `cropshard` command line: every argument understood or refused (exit 2, one line), builds
that write nothing or reject too much fail (exit 1, nothing published), Ctrl-C (exit 130), quiet
output, and the help texts."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PortableOptions,
    StandardOptions,
    WorkerOptions,
)
from cropshard.pipeline import cli
from cropshard.pipeline.arguments import UsageError, check_build_arguments, glob_pattern_guess
from cropshard.pipeline.build import count_manifest_rows, prepare, shards_text
from cropshard.reader import metadata
from cropshard.transforms.examples import ImagesToExamples
from cropshard.transforms.write import FAILED_FILENAME, STARTED_FILENAME, ShardLayout

from tests import imagegen, rastergen

REPO = Path(__file__).resolve().parents[2]
CROPSHARD = REPO / ".venv" / "bin" / "cropshard"
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]


@pytest.fixture(autouse=True)
def logs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each build's log file goes below tmp_path, not the machine's temp dir."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / "cropshard-logs"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    imagegen.class_tree(root, per_class=3, size=(60, 80))
    return root


def cropshard(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    """(exit status, stderr lines, stdout) of the console script's main, in this process."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


# --- every argument understood or refused -----------------------------------------------------


def test_a_typo_in_a_cropshard_option_is_refused_with_a_suggestion(images: Path, tmp_path: Path, capsys) -> None:
    code, err, _ = cropshard(capsys, "build", "--input", f"{images}/**", "--output", str(tmp_path / "out"), "--size", "32", "--encodng", "jpeg")
    assert code == 2
    assert err == ["cropshard build: error: unknown option --encodng (did you mean --encoding?); cropshard build --help lists the options"]
    assert not (tmp_path / "out").exists()  # refused before any work
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={tmp_path / 'out'}", "--size=32", "--crops_per_imgae=8")
    assert code == 2 and err == ["cropshard build: error: unknown option --crops_per_imgae (did you mean --crops_per_image?); cropshard build --help lists the options"]


def test_a_typo_in_a_beam_option_is_refused_with_a_suggestion(images: Path, tmp_path: Path, capsys) -> None:
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={tmp_path / 'out'}", "--size=32", "--direct_num_worker=2")
    assert code == 2
    assert err == ["cropshard build: error: unknown option --direct_num_worker (did you mean --direct_num_workers?); cropshard build --help lists the options"]


def test_abbreviated_options_are_refused(images: Path, tmp_path: Path, capsys) -> None:
    # argparse (and Beam 2.62's own parsing) would read --out as --output, and --enc as --encoding.
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--out={tmp_path / 'out'}", "--size=32")
    assert code == 2 and err == ["cropshard build: error: unknown option --out (did you mean --output?); cropshard build --help lists the options"]


def test_a_cropshard_option_given_different_values_is_refused(images: Path, tmp_path: Path, capsys) -> None:
    # argparse keeps the last value without a word: this built 32x32 crops.
    code, err, _ = cropshard(capsys, "build", "--input", f"{images}/**", "--output", str(tmp_path / "out"), "--size", "64x64", "--crop=center",
                             "--size=32x32")
    assert code == 2 and err == ["cropshard build: error: --size is given 2 times with different values (64x64, 32x32); give it once"]
    assert not (tmp_path / "out").exists()
    # The same value twice means what it says; --input appends; Beam's options may repeat (the
    # launch scripts put their defaults before the user's).
    check_build_arguments(["--input=a", "--input=b", "--size=8", "--size=8", "--output=o", "--runner=DirectRunner", "--runner=PortableRunner",
                           "--machine_type=n2-standard-4", "--machine_type=n2-highmem-8"])


def test_inputs_that_match_nothing_are_a_usage_error(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "out")
    code, err, _ = cropshard(capsys, "build", f"--input={tmp_path}/nothing/**", f"--output={out}", "--size=32")
    assert code == 2 and err == [f"cropshard build: error: no input files: ['{tmp_path}/nothing/**'] matched nothing"]
    code, err, _ = cropshard(capsys, "build", f"--manifest={tmp_path}/missing.csv", f"--output={out}", "--size=32")
    assert code == 2 and err == [f"cropshard build: error: --manifest {tmp_path}/missing.csv does not exist"]
    (tmp_path / "empty.csv").write_text("path,label\n\n")
    code, err, _ = cropshard(capsys, "build", f"--manifest={tmp_path}/empty.csv", f"--output={out}", "--size=32")
    assert code == 2 and err == [f"cropshard build: error: --manifest {tmp_path}/empty.csv lists no inputs"]
    assert not Path(out).exists()  # a refused build leaves no empty --output behind


def test_every_input_pattern_must_match_a_file(images: Path, tmp_path: Path, capsys) -> None:
    # A pattern that matched nothing beside one that did was dropped: a whole class missing, no word.
    out = tmp_path / "out"
    code, err, _ = cropshard(capsys, "build", f"--input={images}/cat/**", f"--input={images}/dgo/**", f"--output={out}", "--size=32")
    assert code == 2 and err == [f"cropshard build: error: --input {images}/dgo/** matched nothing (every --input pattern must match a file)"]
    code, err, _ = cropshard(capsys, "build", f"--input={images}/cat/*.png,{images}/dog/*.jpeg", f"--output={out}", "--size=32")
    assert code == 2 and err == [f"cropshard build: error: --input {images}/dog/*.jpeg matched nothing (every --input pattern must match a file)"]
    assert not out.exists()  # refused before --output is touched
    # A pattern whose files an earlier one already lists still matches them: not an error.
    assert prepare([f"--input={images}/**", f"--input={images}/cat/**", f"--output={out}", "--size=32", *IN_PROCESS]).matched[0] == 6


def test_a_bad_value_is_one_line(images: Path, tmp_path: Path, capsys) -> None:
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={tmp_path / 'out'}", "--size=32", "--encoding=jpg")
    assert code == 2
    assert err == ["cropshard build: error: argument --encoding: invalid choice: 'jpg' (choose from 'raw', 'jpeg', 'png', 'original')"]


def test_valid_direct_flink_and_dataflow_options_pass_through_unchanged(images: Path, tmp_path: Path) -> None:
    common = [f"--input={images}/**", "--size=32"]
    direct = [*common, f"--output={tmp_path / 'direct'}", "--runner=DirectRunner", "--direct_num_workers=2",
              "--direct_running_mode=multi_processing", "--max_rejected_fraction=0.5", "--verbose", "--progress=log"]
    # What launch/flink.sh passes, its trailing --output_executable_path= included.
    flink = ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=LOOPBACK", "--parallelism=4",
             *common, f"--output={tmp_path / 'flink'}", "--environment_config=localhost:50000", "--output_executable_path="]
    dataflow = [*common, "--output=gs://bucket/ds", "--runner=DataflowRunner", "--project=my-project", "--region=europe-west4",
                "--temp_location=gs://bucket/tmp", "--staging_location=gs://bucket/staging", "--setup_file=./setup.py",
                "--num_workers=3", "--max_num_workers=8", "--machine_type=n2-standard-4", "--sdk_container_image=img:1",
                "--experiments=use_runner_v2", "--dataflow_service_options=enable_prime", "--job_name=cropshard-x",
                "--no_use_public_ips", "--dry_run=True", "--num_shards=4"]
    for argv in (direct, flink, dataflow):
        check_build_arguments(argv)
    options = prepare(direct).options
    assert options.view_as(DirectOptions).direct_num_workers == 2 and options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    options = prepare(flink).options
    portable = options.view_as(PortableOptions)
    assert (options.view_as(StandardOptions).runner, portable.job_endpoint, portable.environment_type) == ("PortableRunner", "localhost:8099", "LOOPBACK")
    assert portable.environment_config == "localhost:50000" and not portable.output_executable_path
    built = prepare(dataflow)  # a dry run touches no storage
    cloud, workers = built.options.view_as(GoogleCloudOptions), built.options.view_as(WorkerOptions)
    assert (cloud.project, cloud.region, cloud.temp_location, cloud.job_name) == ("my-project", "europe-west4", "gs://bucket/tmp", "cropshard-x")
    assert (workers.num_workers, workers.max_num_workers, workers.machine_type) == (3, 8, "n2-standard-4")
    assert built.dry_run and built.layouts == {"train": ShardLayout(num_shards=4)}


def test_unknown_commands_are_refused_with_the_list(capsys) -> None:
    code, err, _ = cropshard(capsys, "biuld", "--input", "x")
    assert code == 2 and err == ["cropshard: error: unknown command 'biuld' (did you mean build?); commands: build, inspect, compare, demo-images"]
    code, err, _ = cropshard(capsys, "inpsect", "demo/dataset")
    assert code == 2 and err == ["cropshard: error: unknown command 'inpsect' (did you mean inspect?); commands: build, inspect, compare, demo-images"]
    code, err, _ = cropshard(capsys, "--input", "x/**", "--output", "o")
    assert code == 2
    assert err == ["cropshard: error: no command before --input; did you mean: cropshard build --input x/** --output o? commands: build, inspect, compare, demo-images"]


def test_an_unquoted_glob_gets_the_quoted_command(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    for label in ("forest", "urban", "water"):
        (tmp_path / "demo" / "images" / label).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    # What the shell hands over for `--input demo/images/**` unquoted (without globstar ** is *).
    expanded = sorted(glob.glob("demo/images/**"))
    assert expanded == ["demo/images/forest", "demo/images/urban", "demo/images/water"]
    code, err, _ = cropshard(capsys, "build", "--input", *expanded, "--output", "demo/dataset", "--size", "128")
    assert code == 2
    assert err == ["cropshard build: error: 3 paths follow --input: the shell expanded an unquoted pattern; quote it, e.g. "
                   "cropshard build --input 'demo/images/**' --output demo/dataset --size 128"]
    assert not (tmp_path / "demo" / "dataset").exists()
    code, err, _ = cropshard(capsys, "build", "--output", "demo/dataset", "stray", "--size", "128")
    assert code == 2 and err == ["cropshard build: error: unexpected argument 'stray': every value belongs to an --option (a path with spaces needs quotes)"]


def test_glob_pattern_guess(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.png"):
        (tmp_path / name).write_bytes(b"")
    assert glob_pattern_guess([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]) == f"{tmp_path}/*.jpg"
    assert glob_pattern_guess([str(tmp_path / "a.jpg"), str(tmp_path / "c.png")]) == f"{tmp_path}/*"


def test_check_build_arguments_accepts_every_cropshard_option() -> None:
    check_build_arguments(["--input=a", "--manifest=m.csv", "--output=o", "--crop=grid", "--size=8", "--box=1,2,3,4", "--crops_per_image=2",
                           "--stride=4", "--small=pad", "--resize=9", "--channels=1", "--encoding=png", "--jpeg_quality=80",
                           "--split=train", "--label_from=none", "--num_shards=2", "--target_shard_mb=3", "--compression=gzip",
                           "--max_pixels=99", "--seed=3", "--dedup", "--overwrite", "--progress=off", "--max_rejected_fraction=0.1", "--verbose"])
    with pytest.raises(UsageError, match="unknown option --input_glob"):
        check_build_arguments(["--input_glob=x"])


# --- failing builds fail ----------------------------------------------------------------------------


def test_a_build_that_writes_no_example_fails_and_names_the_remedy(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, err, stdout = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=2000", *IN_PROCESS)
    assert code == 1, err
    assert err[-1] == (f"cropshard build: failed: no example was written: all 6 inputs were rejected: too_small 6 "
                       f"(try: --small pad|upscale, or a smaller --size); nothing published (details: {out}/rejected.jsonl)")
    assert "cropshard build ->" not in stdout
    assert not (out / metadata.INFO_FILENAME).exists()
    assert json.loads((out / FAILED_FILENAME).read_text())["dataset_info"]["rejected"]["by_reason"] == {"too_small": 6}
    assert len((out / "rejected.jsonl").read_text().splitlines()) == 6
    assert sorted(p.name for p in out.iterdir()) == [FAILED_FILENAME, "rejected.jsonl"]  # no (empty) shard of the failed build
    with pytest.raises(metadata.DatasetError):
        metadata.load_info(str(out))
    # --overwrite replaces the refused build like any other.
    code, _, stdout = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=2000", "--small=pad", "--overwrite", *IN_PROCESS)
    assert code == 0 and "inputs 6 = 6 images written + 0 rejected" in stdout
    assert not (out / FAILED_FILENAME).exists() and (out / metadata.INFO_FILENAME).exists()


def test_class_folders_named_alike_in_two_unicode_forms_fail_the_build(tmp_path: Path, capsys) -> None:
    """`café` precomposed (as Linux tools write it) and with a combining accent (as macOS does):
    two classes that look alike in labels.txt, each with part of one class's images."""
    import unicodedata

    for form in ("NFC", "NFD"):
        imagegen.save(tmp_path / "in" / unicodedata.normalize(form, "café") / f"{form}.jpg", imagegen.photo(40, 40))
    imagegen.save(tmp_path / "in" / "tea" / "t.jpg", imagegen.photo(40, 40))
    out = tmp_path / "out"
    code, err, _ = cropshard(capsys, "build", f"--input={tmp_path / 'in'}", f"--output={out}", "--size=32", *IN_PROCESS)
    assert code == 1, err
    assert err[-1].startswith("cropshard build: failed: 1 label name is one name in two Unicode forms, e.g. ")
    assert "'cafe\\u0301'" in err[-1] and "'caf\\xe9'" in err[-1] and "convmv -r --nfc" in err[-1]
    assert err[-1].endswith(f"nothing published (details: {out}/{FAILED_FILENAME})")  # no rejection to read about
    assert not (out / metadata.INFO_FILENAME).exists()


def test_a_rejected_share_over_the_limit_fails_after_writing_rejected_jsonl(images: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    imagegen.class_tree(folder, per_class=3, size=(60, 80))
    (folder / "cat" / "notes.jpg").write_text("not an image")  # 1 of 7 rejected: 14.3%
    argv = ["build", f"--input={folder}/**", "--size=32", *IN_PROCESS]
    code, err, _ = cropshard(capsys, *argv, f"--output={tmp_path / 'strict'}", "--max_rejected_fraction=0.1")
    assert code == 1, err
    assert err[-1] == (f"cropshard build: failed: 1 of 7 inputs rejected (14.3%), over --max_rejected_fraction 0.1: not_an_image 1 "
                       f"(try: narrow --input to image files, e.g. '**/*.jpg'); nothing published (details: {tmp_path}/strict/rejected.jsonl)")
    assert not (tmp_path / "strict" / metadata.INFO_FILENAME).exists()
    assert [json.loads(line)["reason"] for line in (tmp_path / "strict" / "rejected.jsonl").read_text().splitlines()] == ["not_an_image"]
    # The 6 accepted images' shards went with the refusal: nothing a glob could read as the dataset.
    assert sorted(p.name for p in (tmp_path / "strict").iterdir()) == [FAILED_FILENAME, "rejected.jsonl"]
    code, err, stdout = cropshard(capsys, *argv, f"--output={tmp_path / 'lenient'}", "--max_rejected_fraction=0.2")
    assert code == 0, err
    assert "inputs 7 = 6 images written + 1 rejected" in stdout
    assert metadata.load_info(str(tmp_path / "lenient")).num_rejected == 1


def test_a_raster_damaged_past_its_first_chip_fails_the_build_naming_the_file(tmp_path: Path, capsys) -> None:
    # 2048 px with a 2x overview, so the checks before the first chip read the overview and the
    # damage shows only while chipping, after chips of the source were emitted: the build stops.
    # Its one line is cropshard's message (file, rows, GDAL's cause), not the first line of the
    # traceback a worker process sends back, which was GDAL's alone and named no file.
    scene = rastergen.write_raster(tmp_path / "scene.tif", rastergen.multispectral(2048, 2048, bands=1), block=256, overviews=(2,))
    broken = rastergen.damage_tile(scene, tmp_path / "in" / "broken.tif", row=5, col=3)
    out = tmp_path / "out"
    code, err, _ = cropshard(capsys, "build", f"--input={broken.parent}", f"--output={out}", "--crop=grid", "--size=256x256",
                             "--channels=1", "--to_uint8=bits:11", "--label_from=none",
                             "--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=1", "--progress=off")
    assert code == 1
    assert re.match(rf"cropshard build: failed: RuntimeError: {re.escape(str(broken))}: task \d+ of \d+ \(rows \d+-\d+\) failed after \d+ chips: ", err[-1]), err[-1]
    assert "(cause: " in err[-1] and "[while running" not in err[-1]
    assert not (out / metadata.INFO_FILENAME).exists()
    # What the exit-status table promises: why, in build_failed.json, and no Beam temp folders left.
    failed = json.loads((out / FAILED_FILENAME).read_text())
    assert failed == {"reason": "the job failed: " + err[-1].split("failed: ", 1)[1].split(" (traceback in ")[0], "dataset_info": None}
    assert not list(out.glob("beam-temp-*"))


class FailingExamples(ImagesToExamples):
    """Test-only: every element fails, so the job fails (not a refused dataset)."""

    def process(self, source, label_ids):  # noqa: ANN001, ANN201
        raise RuntimeError(f"injected failure at {source.key}")


def test_a_failed_job_leaves_build_failed_json_and_no_temp_files(images: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    # A failed job left only Beam's temp folders: no word of why, although exit 1 promises one.
    from cropshard.pipeline import assemble

    monkeypatch.setattr(assemble, "ImagesToExamples", FailingExamples)
    out = tmp_path / "out"
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=32", *IN_PROCESS)
    assert code == 1 and re.match(r"cropshard build: failed: RuntimeError: injected failure at \w+/\w+\.\w+ ", err[-1]), err
    reason = json.loads((out / FAILED_FILENAME).read_text())["reason"]
    assert re.match(r"the job failed: RuntimeError: injected failure at \w+/\w+\.\w+$", reason), reason
    assert not list(out.glob("beam-temp-*")) and not (out / metadata.INFO_FILENAME).exists()
    monkeypatch.undo()
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=32", *IN_PROCESS)
    assert code == 2 and err[-1].endswith("pass --overwrite to replace the dataset there")
    code, err, stdout = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=32", "--overwrite", *IN_PROCESS)
    assert code == 0 and "inputs 6 = 6 images written + 0 rejected" in stdout, err
    assert not (out / FAILED_FILENAME).exists()


def test_a_failed_job_removes_the_shards_one_split_had_renamed_into_place(tmp_path: Path) -> None:
    from cropshard.pipeline.build import record_failure

    out = tmp_path / "out"
    for name in ("train-00000-of-00001.tfrecord", "train-00000-of-00001.tfrecord.idx", "beam-temp-test-1/part-0"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("")
    record_failure(str(out), RuntimeError("boom"))
    assert sorted(p.name for p in out.iterdir()) == [FAILED_FILENAME]


def test_max_rejected_fraction_must_be_a_fraction(images: Path, tmp_path: Path, capsys) -> None:
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={tmp_path / 'o'}", "--size=8", "--max_rejected_fraction=5")
    assert code == 2 and err == ["cropshard build: error: --max_rejected_fraction must be 0..1, got 5.0"]


# --- --output: what --overwrite may replace ---------------------------------------------------------


def test_overwrite_refuses_a_folder_that_holds_no_cropshard_dataset(images: Path, tmp_path: Path, capsys) -> None:
    # --overwrite deleted another tool's TFRecords and replaced the user's labels.txt.
    other = tmp_path / "other"
    other.mkdir()
    (other / "my_training_data.tfrecord").write_bytes(b"x")
    (other / "labels.txt").write_text("cat\ndog\n")
    for overwrite in ([], ["--overwrite"]):
        code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={other}", "--size=32", *overwrite, *IN_PROCESS)
        assert code == 2 and err == [f"cropshard build: error: output {other} is not empty (2 files) and holds files that are not a cropshard"
                                     " dataset (e.g. my_training_data.tfrecord): pick an empty or new --output (--overwrite replaces only"
                                     " a cropshard dataset)"]
    assert sorted(p.name for p in other.iterdir()) == ["labels.txt", "my_training_data.tfrecord"]
    assert (other / "labels.txt").read_text() == "cat\ndog\n"


LEGACY_INFO = json.dumps({"format_version": 1, "cropshard_version": "0.2.0"})


def folder_of(out: Path, files: dict[str, str]) -> Path:
    """`out` holding `files` ({relative path: text})."""
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return out


@pytest.mark.parametrize("left", [
    {"cropshard.json": "{}", "notes.txt": "mine"},  # a published dataset (the user's own files stay)
    {FAILED_FILENAME: "{}", "rejected.jsonl": ""},  # a refused or failed build
    {"dataset_info.json": LEGACY_INFO, "train-00000-of-00001.tfrecord": ""},  # a format-1 dataset
    {"beam-temp-train-1234/part-0": "", "notes.txt": "mine"},  # a build killed mid-write
    {".partial-cropshard.json": "{"},  # killed while publishing
    # Cut short after its shards were renamed into place (Ctrl-C removes only the temp folders).
    {"train-00000-of-00002.tfrecord": "", "train-00000-of-00002.tfrecord.idx": "", "rejected.jsonl": ""},
    {"rejected.jsonl": ""},
    {STARTED_FILENAME: "{}", "train-00000-of-00002.tfrecord": ""},  # killed before any index was written
], ids=lambda left: ",".join(left))
def test_overwrite_replaces_what_a_cropshard_build_left(tmp_path: Path, left: dict[str, str]) -> None:
    from cropshard.transforms.write import prepare_output

    out = folder_of(tmp_path / "out", left)
    with pytest.raises(FileExistsError, match="pass --overwrite to replace the dataset there"):
        prepare_output(str(out), overwrite=False)
    prepare_output(str(out), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [STARTED_FILENAME] + (["notes.txt"] if "notes.txt" in left else [])


@pytest.mark.parametrize("left", [
    {"labels.txt": "cat\n"},  # a name a build writes, but no shard, rejected.jsonl or marker beside it
    {"train-00000-of-00002.tfrecord": "", "notes.txt": "mine"},  # shards among other files: not ours to delete
    {"dataset_info.json": json.dumps({"name": "tfds"}), "train.tfrecord-00000-of-00001": ""},  # TFDS's own dataset
    {"sub/train-00000-of-00001.tfrecord": ""},
    # Another tool's TFRecords named as Beam's WriteToTFRecord names shards: --overwrite deleted them.
    {"mydata-00000-of-00002.tfrecord": "", "mydata-00001-of-00002.tfrecord": ""},
], ids=lambda left: ",".join(left))
def test_overwrite_refuses_folders_a_cropshard_build_did_not_leave(tmp_path: Path, left: dict[str, str]) -> None:
    from cropshard.transforms.write import prepare_output

    out = folder_of(tmp_path / "out", left)
    with pytest.raises(FileExistsError, match=r"holds files that are not a cropshard dataset \(e.g. .+\): pick an empty or new --output"):
        prepare_output(str(out), overwrite=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(left)


def test_an_output_that_is_a_file_is_refused_before_the_job(images: Path, tmp_path: Path, capsys) -> None:
    # The job started, then failed (exit 1) on .../beam-temp-rejected-...: Not a directory.
    afile = tmp_path / "afile.txt"
    afile.write_text("x\n")
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={afile}", "--size=32", *IN_PROCESS)
    assert code == 2 and err == [f"cropshard build: error: --output {afile} is a file, not a folder: pick an empty or new folder for the dataset"]
    # Below a file (NotADirectoryError from the job, exit 1, before).
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={afile}/sub/ds", "--size=32", *IN_PROCESS)
    assert code == 2 and err == [f"cropshard build: error: --output {afile}/sub/ds is below {afile}, which is a file: pick a folder for the dataset"]


# --- options the local runner reads -----------------------------------------------------------------


def test_negative_direct_num_workers_is_a_usage_error(images: Path, tmp_path: Path, capsys) -> None:
    # It was an IndexError from inside Beam, exit 1; 0 is Beam's "one per core".
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={tmp_path / 'o'}", "--size=32", "--direct_num_workers=-1")
    assert code == 2 and err == ["cropshard build: error: --direct_num_workers must be 1 or more (0: one per core), got -1"]
    assert not (tmp_path / "o").exists()
    from apache_beam.options.pipeline_options import PipelineOptions
    from cropshard.pipeline.build import listing_buckets

    assert listing_buckets(PipelineOptions(["--direct_num_workers=0"])) == 4 * (os.cpu_count() or 1)


@pytest.mark.parametrize(("option", "named"), [("--num_workers=8", "--num_workers"), ("--max_num_workers=50", "--max_num_workers"),
                                               ("--worker_machine_type=n2-highmem-8", "--machine_type")])
def test_a_dataflow_worker_pool_option_on_a_local_build_is_a_usage_error(images: Path, tmp_path: Path, capsys, option: str, named: str) -> None:
    # `--num_workers 8` on a laptop ran one worker per core without a word.
    code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={tmp_path / 'o'}", "--size=32", option)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"cropshard build: error: {named} sizes Dataflow's worker pool, and this build runs locally") and "--direct_num_workers N" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["Direct", "directrunner", "direct", "DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner"])
def test_every_name_beam_reads_as_direct_runner_takes_the_local_path(images: Path, tmp_path: Path, name: str) -> None:
    # `--runner Direct` ran Beam's DirectRunner (Prism first), uncounted and with one in-memory worker.
    from cropshard.pipeline.build import is_local, with_runner_defaults

    argv = with_runner_defaults([f"--runner={name}"])
    assert "--direct_running_mode=multi_processing" in argv and f"--direct_num_workers={os.cpu_count() or 1}" in argv
    built = prepare([f"--input={images}/**", f"--output={tmp_path / 'o'}", "--size=32", f"--runner={name}", "--direct_running_mode=in_memory"])
    assert built.local and built.matched[0] == 6
    assert not is_local("PortableRunner") and not is_local("dataflow") and not is_local("BundleBasedDirectRunner")
    assert "--no_save_main_session" in with_runner_defaults(["--runner=dataflow"])


def test_raster_options_on_a_build_without_rasters_are_refused(images: Path, tmp_path: Path, capsys) -> None:
    # --bands 3,2,1 on photos changed no pixel, yet cropshard.json recorded it.
    out = tmp_path / "out"
    for option in ("--bands=3,2,1", "--max_nodata=0.2", "--split_by=block:100", "--dtype=uint16"):
        code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=32", "--split=train=0.8,test=0.2", option, *IN_PROCESS)
        flag, value = option.split("=", 1)
        assert code == 2 and err == [f"cropshard build: error: {flag} {value} has no effect without raster inputs (GeoTIFF/COG or JPEG 2000),"
                                     " and no input is one: drop it"], err
    assert not out.exists()
    # --to_uint8 also converts 16-bit greyscale photos: never refused for want of rasters.
    from apache_beam.options.pipeline_options import PipelineOptions
    from cropshard.pipeline.build import raster_options_given
    from cropshard.pipeline.options import build_config as options_config

    assert raster_options_given(options_config(PipelineOptions([f"--input={images}/**", f"--output={out}", "--size=32", "--to_uint8=bits:12"])).example.raster) == []
    # A file named as a raster among the inputs: the options may apply (the job reads it).
    from cropshard.pipeline.build import check_raster_options_apply

    rasters = tmp_path / "rasters"
    rasters.mkdir()
    (rasters / "scene.TIF").write_bytes(b"")
    options = [f"--input={images}/**", f"--input={rasters}/*", f"--output={out}", "--size=32", "--bands=1"]
    check_raster_options_apply(prepare_config(options), local=True)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{images}/cat/0.png,cat\n")
    with pytest.raises(ValueError, match="^--bands 1 has no effect without raster inputs"):
        check_raster_options_apply(prepare_config([f"--manifest={manifest}", f"--output={out}", "--size=32", "--bands=1"]), local=True)


def prepare_config(argv: list[str]):
    from apache_beam.options.pipeline_options import PipelineOptions
    from cropshard.pipeline.options import build_config

    return build_config(PipelineOptions(argv))


@pytest.mark.parametrize("published", [False, True])
def test_an_interrupt_says_whether_the_dataset_was_published(images: Path, tmp_path: Path, capsys, monkeypatch, published: bool) -> None:
    # Ctrl-C in a build's last moments, after the job wrote cropshard.json (last), had said
    # "nothing published; rerun with --overwrite" beside a complete dataset.
    from cropshard.pipeline import build

    real_execute = build.execute

    def interrupted(prepared):
        if published:
            real_execute(prepared)
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "execute", interrupted)
    out = tmp_path / "out"
    code, err, stdout = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=16", "--progress=off",
                                  "--direct_running_mode=in_memory", "--direct_num_workers=1")
    assert code == cli.EXIT_INTERRUPTED and stdout == ""
    assert err[-1] == (f"interrupted after the dataset was published: {out} is complete" if published else cli.INTERRUPTED)
    assert (out / "cropshard.json").exists() == published


def test_storage_refusing_the_listing_is_one_line_not_a_traceback(images: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """A bucket the credentials may not list (403), or no network, failed the launcher's listing
    with a Beam traceback; a 404 bucket is a usage error (test_gcs), anything else one line."""
    from apache_beam.io.filesystem import BeamIOError
    from cropshard.pipeline import build

    def forbidden(pattern, keep=None):
        raise BeamIOError("Match operation failed", {pattern: PermissionError("403 GET storage.googleapis.com: forbidden")})

    monkeypatch.setattr(build, "iter_matches", forbidden)
    code, err, stdout = cropshard(capsys, "build", f"--input={images}/**", f"--output={tmp_path / 'out'}", "--size=16", "--progress=off")
    assert code == cli.EXIT_FAILED and stdout == "" and len(err) == 1
    assert err[0].startswith("cropshard build: failed: ") and "403" in err[0] and "Traceback" not in err[0]


# --- the real command: Ctrl-C, quiet output -------------------------------------------------------


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp_path)}  # the log file goes below tmp_path


def temp_bytes(out: Path) -> int:
    """Bytes in Beam's temp files under `out` (a part can be renamed into place between the listing and its stat)."""
    total = 0
    for path in glob.glob(f"{out}/beam-temp-*/*"):
        with contextlib.suppress(FileNotFoundError):
            total += os.path.getsize(path)
    return total


def foreground_signals() -> None:
    """In the child: Ctrl-C's default action, as a terminal's foreground job has it. A suite run as
    a background job (`make test &`, nohup) hands its children SIGINT ignored, and Python then
    never installs its handler: the build ran to the end through every interrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_mid_write(inputs: Path, out: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str, str, float]:
    """A multi-worker build of `inputs`, sent Ctrl-C once 16 of its ~67 MB of records are in part
    files: the workers die in the middle of their bundles, and the launcher's Beam threads after
    the command has returned. The process, its stdout and stderr, and when Ctrl-C was sent."""
    proc = subprocess.Popen([str(CROPSHARD), "build", f"--input={inputs}", f"--output={out}", "--crop=random", "--size=96",
                             "--crops_per_image=4", "--direct_num_workers=2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True, text=True, preexec_fn=foreground_signals)
    deadline = time.monotonic() + 240
    while temp_bytes(out) < 16 * 2**20:
        assert proc.poll() is None, f"build ended ({proc.returncode}) before it was interrupted:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "not 16 MiB of shard temp files within 240 s"
        time.sleep(0.02)
    sent = time.time()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    stdout, stderr = proc.communicate(timeout=120)
    return proc, stdout, stderr, sent


def test_an_interrupted_compare_says_so_not_the_builds_rerun_with_overwrite(images: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    # Ctrl-C in compare printed build's "nothing published; rerun with --overwrite", an option that
    # compare's rerun does not need (it rebuilds its own variants) and that means something else there.
    from cropshard.pipeline import build

    def interrupted(argv, command_line):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "run", interrupted)
    code, err, stdout = cropshard(capsys, "compare", f"--input={images}/**", "--size=16x16", f"--workdir={tmp_path / 'w'}")
    assert code == cli.EXIT_INTERRUPTED
    assert err[-1] == cli.COMPARE_INTERRUPTED and "--overwrite" not in err[-1]


def child_pids(pid: int) -> list[int]:
    """The children of process `pid` (Linux /proc; a thread that ends between the listing and the
    read has none, as the product's own walk in cli._descendants takes it)."""
    found = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in Path(path).read_text().split()]
    return found


def running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        return "zombie" not in status.read_text()
    return False


@pytest.mark.slow  # a build in a child process, interrupted twice
def test_a_second_ctrl_c_ends_the_launcher_and_its_workers_at_once(images: Path, tmp_path: Path) -> None:
    # A SIGINT that reached the launcher alone while its workers started could leave it waiting for
    # ever (futex), and a second one did nothing: only SIGTERM ended it, its workers left running.
    proc = subprocess.Popen([str(CROPSHARD), "build", f"--input={images}/**", f"--output={tmp_path / 'out'}", "--size=32", "--progress=off",
                             "--direct_num_workers=2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env(tmp_path),
                            start_new_session=True, text=True, preexec_fn=foreground_signals)
    deadline = time.monotonic() + 120
    while not child_pids(proc.pid):  # its worker processes have started
        assert proc.poll() is None and time.monotonic() < deadline, f"the build ended or started no worker within 120 s: {proc.returncode}"
        time.sleep(0.05)
    workers = child_pids(proc.pid)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED, stderr
    assert stderr.splitlines()[-1] in (cli.FORCED_EXIT, cli.INTERRUPTED), stderr
    time.sleep(1)
    assert not [pid for pid in workers if running(pid)], "workers left running"


@pytest.mark.slow  # a 600-image build in a child process, interrupted
def test_ctrl_c_exits_130_with_one_line_and_removes_beam_temp_files(tmp_path: Path) -> None:
    for i in range(600):
        imagegen.save(tmp_path / "in" / f"class_{i % 3}" / f"img_{i:03d}.jpg", imagegen.photo(240, 320, seed=i), quality=90)
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        proc, stdout, stderr, sent = interrupt_mid_write(tmp_path / "in", out, subprocess_env(tmp_path))
        if not (out / "cropshard.json").exists():
            break
        # On a loaded machine this process can be scheduled only after the job has finished: the
        # interrupt then lands on a published dataset (or an exiting process), not mid-write. A
        # dataset published after the interrupt, though, is an interrupt lost.
        published = (out / "cropshard.json").stat().st_mtime
        assert published <= sent, f"the build went on {published - sent:.2f} s after Ctrl-C and published: {proc.returncode}, {stderr[-2000:]}"
    else:
        pytest.fail("3 interrupts in a row arrived after the build had published its dataset")
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "interrupted: nothing published; rerun with --overwrite"
    assert "Traceback" not in stderr, stderr
    assert [line for line in stderr.splitlines() if not line.startswith("INFO cropshard")] == [cli.INTERRUPTED], stderr
    assert stdout == ""
    assert not glob.glob(f"{out}/beam-temp-*") and not (out / metadata.INFO_FILENAME).exists()
    assert not glob.glob(f"{out}/*.tfrecord*")  # nor a shard already in place, as after a failed job


@pytest.mark.slow  # a multi-process build in a child process
def test_a_multi_process_build_shows_no_warning_and_no_traceback(images: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(CROPSHARD), "build", f"--input={images}/**", f"--output={tmp_path / 'out'}", "--size=32",
                           "--direct_num_workers=2", "--split=train=0.5,validation=0.5"],
                          capture_output=True, text=True, env=subprocess_env(tmp_path), timeout=600)
    both = done.stdout + done.stderr
    assert done.returncode == 0, both
    assert "inputs 6 = 6 images written + 0 rejected" in done.stdout
    assert not [line for line in both.splitlines() if "Warning" in line or "WARNING" in line], both
    assert "Traceback" not in both, both
    # The libraries' output went to the build's log instead (the workers' Beam notices among it).
    (log,) = (tmp_path / "cropshard-logs").glob("build-*.log")
    assert "Discarding unparseable args" in log.read_text()


# --- help, inspect, small pure parts ---------------------------------------------------------------


def test_build_help_shows_cropshard_options_grouped_with_defaults(capsys) -> None:
    assert cli.main(["build", "--help"]) == 0
    text = capsys.readouterr().out
    titles = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert titles[:5] == ["inputs", "crop", "encoding", "output", "runner"]
    options = [line.split()[0] for line in text.split("\ninputs:")[1].split("\nBeam's")[0].splitlines() if line.startswith("  --")]
    assert {"--input", "--crop", "--encoding", "--output", "--num_shards", "--max_rejected_fraction", "--verbose"} <= set(options)
    entries = text.split("\ninputs:")[1].split("\nBeam's")[0].split("\n  --")[1:]
    assert all("(default: " in " ".join(entry.split()) for entry in entries), entries
    assert "--num_shards N" in text and "one shard per worker and split" in " ".join(text.split())
    assert "--dataflow_endpoint" not in text and len(text.splitlines()) < 120
    assert cli.main(["build", "--help-beam"]) == 0
    beam = capsys.readouterr().out
    assert "--dataflow_endpoint" in beam and "--direct_num_workers" in beam and "--flink_master" in beam and "--encoding" not in beam


def test_inspect_refuses_a_contact_sheet_in_a_missing_folder(capsys) -> None:
    code, err, _ = cropshard(capsys, "inspect", "/no/such/dataset", "--contact-sheet", "/no/such/dir/x.png")
    assert code == 2 and err == ["cropshard inspect: error: --contact-sheet /no/such/dir/x.png: folder /no/such/dir does not exist"]


def test_manifest_counts_exclude_the_header(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\na.jpg,cat\nb.jpg,dog\n\n")
    (tmp_path / "m.jsonl").write_text('{"path": "a.jpg"}\n{"path": "b.jpg"}\n')
    assert count_manifest_rows(str(tmp_path / "m.csv")) == (2, 0)
    assert count_manifest_rows(str(tmp_path / "m.jsonl")) == (2, 0)


def test_shard_counts_are_logged_as_auto_not_zero() -> None:
    assert shards_text({"train": ShardLayout(), "validation": ShardLayout(num_shards=4), "test": ShardLayout(target_bytes=2**27)}) == "train=auto, validation=4, test=~128 MiB"


@pytest.mark.slow  # fresh interpreters
def test_the_console_script_and_the_module_are_the_same_command() -> None:
    done = subprocess.run([sys.executable, "-m", "cropshard.pipeline", "biuld"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "cropshard: error: unknown command 'biuld' (did you mean build?); commands: build, inspect, compare, demo-images"]


def test_the_log_file_falls_back_to_the_temp_dir_when_the_log_folder_is_not_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cropshard.pipeline import console

    assert Path(console.new_log_path("build")).parent == tmp_path / "cropshard-logs"

    def refuse(path: str, exist_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(console.os, "makedirs", refuse)
    path = Path(console.new_log_path("build"))
    assert path.parent == tmp_path and path.name.startswith("cropshard-build-") and path.exists()


# A process that ends right after the command returns, as `cropshard build` does after Ctrl-C:
# threads that die after the return (Beam's, as the interpreter shuts down) and writes to
# descriptor 2 must reach the log, not the terminal after cropshard's last line.
_AFTER_RETURN = """
import logging, os, sys, threading
from cropshard.pipeline.console import quiet_output

with quiet_output("build", verbose=False) as console:
    print("interrupted", file=sys.stderr)
    if sys.argv[1] == "keep":
        console.keep_until_exit()
    log_path = console.log_path
print("LOG", log_path)

def dies() -> None:
    raise RuntimeError("Worker subprocess exited with return code -2")

thread = threading.Thread(target=dies, name="run_worker")
thread.start()
thread.join()
logging.getLogger("apache_beam.runners.worker.data_plane").error("Failed to read inputs in the data plane.")
os.write(2, b"written to descriptor 2\\n")
"""


@pytest.mark.slow  # fresh interpreters
@pytest.mark.parametrize("keep", [True, False])
def test_after_keep_until_exit_what_dies_after_the_command_goes_to_the_log(tmp_path: Path, keep: bool) -> None:
    done = subprocess.run([sys.executable, "-c", _AFTER_RETURN, "keep" if keep else "restore"], capture_output=True, text=True,
                          env=subprocess_env(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    log = Path(done.stdout.split("LOG ", 1)[1].strip()).read_text()
    late = ("Worker subprocess exited with return code -2", "Failed to read inputs in the data plane.", "written to descriptor 2")
    if keep:
        assert done.stderr.splitlines() == ["interrupted"]
        assert all(text in log for text in late), log
    else:  # the command's usual exit: everything restored, so the same lines reach the terminal
        assert done.stderr.splitlines()[0] == "interrupted"
        assert all(text in done.stderr for text in late), done.stderr


def test_a_runner_that_cannot_run_is_a_usage_error_before_overwrite_removes_anything(images: Path, tmp_path: Path, capsys) -> None:
    """`--runner DirectRuner --overwrite` (or DataflowRunner without --project, PortableRunner
    without --job_endpoint) failed in the job with exit 1, after --overwrite had removed the
    published dataset: only build_failed.json was left."""
    out = tmp_path / "out"
    code, _, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=32", *IN_PROCESS)
    assert code == 0
    before = sorted(p.name for p in out.iterdir())
    for runner, message in (("DirectRuner", "Unexpected pipeline runner: DirectRuner"), ("DataflowRunner", "Missing required option: project"),
                            ("PortableRunner", "needs --job_endpoint")):
        code, err, _ = cropshard(capsys, "build", f"--input={images}/**", f"--output={out}", "--size=32", "--overwrite", f"--runner={runner}", "--progress=off")
        assert code == 2 and len(err) == 1 and err[0].startswith(f"cropshard build: error: --runner {runner}") and message in err[0], err
        assert sorted(p.name for p in out.iterdir()) == before


def test_ctrl_c_before_a_commands_own_handler_is_one_line_and_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Ctrl-C in the first second or so (the imports, before build's and compare's handlers are
    in place) printed a 20-line KeyboardInterrupt traceback."""
    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_command", interrupted)
    code, err, _ = cropshard(capsys, "build", "--input=x", "--output=y")
    assert code == 130 and err == ["cropshard build: interrupted before any work"]


def test_a_manifest_mixing_labelled_and_unlabelled_rows_is_a_usage_error(images: Path, tmp_path: Path, capsys) -> None:
    """A row without a label (a JSONL row with no "label" key, an empty CSV cell) was written as
    unlabelled (-1) beside the labelled rows, exit 0, without a word."""
    cats = sorted((images / "cat").iterdir())
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": str(cats[0]), "label": "cat"}) + "\n" + json.dumps({"path": str(cats[1])}) + "\n")
    out = tmp_path / "out"
    code, err, _ = cropshard(capsys, "build", f"--manifest={manifest}", f"--output={out}", "--size=32", *IN_PROCESS)
    assert code == 2 and err == [f"cropshard build: error: 1 of the 2 rows of the manifest {manifest} have no label (the first: {cats[1]}),"
                                 " and would be written unlabelled (-1) beside the labelled ones: give every row its label, or none for an unlabelled dataset"]
    assert not out.exists()
    manifest.write_text("".join(json.dumps({"path": str(path)}) + "\n" for path in cats[:2]))  # none labelled: an unlabelled dataset
    assert cropshard(capsys, "build", f"--manifest={manifest}", f"--output={out}", "--size=32", *IN_PROCESS)[0] == 0
