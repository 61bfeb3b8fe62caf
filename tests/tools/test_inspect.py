"""`cropshard inspect`: the description, --verify naming the shard and byte offset of damage, the contact sheet."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from cropshard.pipeline.build import run  # noqa: E402
from cropshard.pipeline.cli import main as cli_main  # noqa: E402
from cropshard.reader import fileio, schema  # noqa: E402
from cropshard.reader.metadata import load_info  # noqa: E402
from cropshard.tools import EXIT_STORAGE, contact_sheet  # noqa: E402
from cropshard.tools.inspect import Progress  # noqa: E402

from tests import imagegen  # noqa: E402
from tests.reader.test_reader_verify import flip_byte, record_offsets  # noqa: E402 - the reader tests' framing helpers
from tests.tools import storage  # noqa: E402
from tests.tools.storage import BucketOnDisk  # noqa: E402

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]
PER_CLASS = 6


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    imagegen.class_tree(root, per_class=PER_CLASS, size=(120, 160))
    imagegen.broken_files(root / "cat")  # three rejections: truncated, empty_file, not_an_image
    return root


@pytest.fixture(scope="module")
def precropped(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("ds") / "precrop"
    run([f"--input={photos}/**", f"--output={out}", "--crop=center", "--size=64x64", "--split=train=0.7,test=0.3",
         "--num_shards=2", *IN_PROCESS], command_line=["test"])
    return str(out)


@pytest.fixture()
def damaged(precropped: str, tmp_path: Path) -> tuple[str, str, bytes]:
    """A copy of the dataset plus its largest train shard's path and original bytes."""
    target = str(tmp_path / "copy")
    shutil.copytree(precropped, target)
    info = load_info(target)
    shard = max(info.split("train").shards, key=lambda s: s.num_records)
    path = os.path.join(target, shard.file)
    return target, path, Path(path).read_bytes()


def inspect(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli_main(["inspect", *argv])
    return code, capsys.readouterr().out


def test_describe_shows_schema_crop_splits_shards_labels_and_rejections(precropped: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = inspect(capsys, precropped)
    assert code == 0
    info = load_info(precropped)
    assert "encoding     raw" in out and "64x64x3 (every image)" in out
    assert "crop         center 64x64" in out
    for name, split in info.splits.items():
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert f" {split.num_examples} " in line and f" {len(split.shards)} " in line
        assert line.count(" / ") == 4  # min / median / max for bytes and for records
    assert "shard size min / median / max" in out
    label_lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  cat ") or line.startswith("  dog ")}
    assert int(label_lines["cat"][-2]) == PER_CLASS and int(label_lines["dog"][-2]) == PER_CLASS  # totals column
    assert f"rejected     3 of {2 * PER_CLASS + 3} inputs" in out
    for reason in ("truncated", "empty_file", "not_an_image"):
        assert f"  {reason} " in out
    for key in schema.FEATURE_KEYS:
        assert key in out
    assert "image/crop/box        int64[4]" in out


def test_verify_passes_a_clean_dataset(precropped: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = inspect(capsys, precropped, "--verify", "--progress=log")
    assert code == 0
    assert f"verify: OK - 4 shards, {2 * PER_CLASS} records" in out


def test_verify_names_shard_and_offset_of_a_flipped_payload_byte(damaged: tuple[str, str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    path, shard, data = damaged
    offsets = record_offsets(data)
    bad = len(offsets) // 2
    (length,) = struct.unpack("<Q", data[offsets[bad] : offsets[bad] + 8])
    flip_byte(shard, offsets[bad] + 12 + length // 2)  # inside the payload: only the data CRC can notice
    code, out = inspect(capsys, path, "--verify", "--progress=off")
    assert code == 1
    bad_lines = [line for line in out.splitlines() if line.startswith("  BAD ")]
    assert len(bad_lines) == 1
    assert shard in bad_lines[0]
    assert f"at byte offset {offsets[bad]} " in bad_lines[0]
    assert "data CRC mismatch" in bad_lines[0] and f"(record index {bad})" in bad_lines[0]
    assert f"{bad} of {len(offsets)} records readable" in bad_lines[0]


def test_verify_names_shard_and_offset_of_a_truncated_tail(damaged: tuple[str, str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    path, shard, data = damaged
    offsets = record_offsets(data)
    Path(shard).write_bytes(data[:-7])  # the last record loses its footer and part of its payload
    code, out = inspect(capsys, path, "--verify", "--progress=off")
    assert code == 1
    (line,) = [line for line in out.splitlines() if line.startswith("  BAD ")]
    assert shard in line and f"at byte offset {offsets[-1]} " in line and "truncated record" in line


def test_verify_decodes_records_whose_crc_is_fine(damaged: tuple[str, str, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    """A well-framed record that lies about its shape is found by the parse/decode pass, not the CRC."""
    path, shard, data = damaged
    offsets = record_offsets(data)
    records = [record.numpy() for record in tf.data.TFRecordDataset(shard)]
    bad = len(records) - 1
    example = tf.train.Example.FromString(records[bad])
    example.features.feature[schema.IMAGE_HEIGHT].int64_list.value[0] = 32
    records[bad] = example.SerializeToString()
    with tf.io.TFRecordWriter(shard) as writer:
        for record in records:
            writer.write(record)
    code, out = inspect(capsys, path, "--verify", "--progress=off")
    assert code == 1
    (line,) = [line for line in out.splitlines() if line.startswith("  BAD ")]
    assert shard in line and f"at byte offset {offsets[bad]} " in line
    assert "does not parse" in line and "expected 32x64x3" in line


@pytest.mark.parametrize("change", ["missing", "extra line", "reordered"])
def test_verify_finds_a_labels_txt_that_disagrees_with_cropshard_json(damaged: tuple[str, str, bytes], change: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Other readers name the classes from labels.txt (line i = label id i): a file that lost a
    line, gained one or was reordered fails the check, even with every shard intact."""
    path = damaged[0]
    labels = Path(path, "labels.txt")
    names = labels.read_text().splitlines()
    if change == "missing":
        labels.unlink()
    else:
        labels.write_text("".join(f"{name}\n" for name in ([*names, "extra"] if change == "extra line" else names[::-1])))
    code, out = inspect(capsys, path, "--verify", "--progress=off")
    assert code == 1 and "verify: FAILED - 0 of 4 shards bad; 0 of 12 records unreadable; 1 other problem" in out
    (line,) = [line for line in out.splitlines() if line.startswith("  BAD ")]
    assert str(labels) in line and ("is missing" in line if change == "missing" else "does not match cropshard.json's labels" in line)


def test_verify_names_a_shard_holding_more_records_than_listed(precropped: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train's shard copied over test's: every record is readable, and that is the finding."""
    path = str(tmp_path / "copy")
    shutil.copytree(precropped, path)
    info = load_info(path)
    big, small = max(info.split("train").shards, key=lambda s: s.num_records), info.split("test").shards[0]
    shutil.copy(os.path.join(path, big.file), os.path.join(path, small.file))
    code, out = inspect(capsys, path, "--verify", "--progress=off")
    line = next(line for line in out.splitlines() if line.startswith("  BAD ") and small.file in line)
    assert code == 1
    assert f"has {big.num_records} records but cropshard.json lists {small.num_records} ({big.num_records - small.num_records} more:" in line
    assert "records readable" not in line


def test_verify_reports_a_damaged_gzip_shard_without_a_traceback(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gz"
    run([f"--input={photos}/**", f"--output={out}", "--crop=center", "--size=64x64", "--compression=gzip", "--num_shards=1",
         "--split=train=1.0", *IN_PROCESS], command_line=["test"])
    (shard,) = sorted(out.glob("train-*.tfrecord.gz"))
    flip_byte(str(shard), shard.stat().st_size // 2)  # inside the deflate stream: TensorFlow fails on its whole block
    code, text = inspect(capsys, str(out), "--verify", "--progress=off")
    assert code == 1 and "verify: FAILED - 1 of 1 shards bad" in text
    (line,) = [line for line in text.splitlines() if line.startswith("  BAD ")]
    assert str(shard) in line and "records readable" in line


def test_contact_sheet_of_full_images_draws_the_reader_windows(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "full"
    run([f"--input={photos}/**", f"--output={out}", "--crop=none", "--encoding=jpeg", "--num_shards=1", *IN_PROCESS], command_line=[])
    sheet = tmp_path / "sheet.png"
    code, text = inspect(capsys, str(out), "--no-labels", "--contact-sheet", str(sheet), "--samples", "6", "--crop-size", "48x40")
    assert code == 0
    assert f"contact sheet: {sheet} (6 images of split 'train': cat 3, dog 3;" in text and "reader crop='center'" in text
    with Image.open(sheet) as img:
        assert img.format == "PNG" and img.width >= 600 and img.height >= 400
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # real photos, not a blank canvas

    # The windows drawn are the reader's: center windows are centred, random ones inside the image.
    samples = contact_sheet.choose_samples(contact_sheet._read_samples(str(out), "train", 12, seed=0), 6, 2)
    center = contact_sheet.reader_windows(str(out), "train", "center", (48, 40), 0, samples)
    randoms = contact_sheet.reader_windows(str(out), "train", "random", (48, 40), 1, samples)
    for s in samples:
        h, w = s.height, s.width
        assert center[s.index] == ((h - 48) // 2, (w - 40) // 2, 48, 40)
        y, x, wh, ww = randoms[s.index]
        assert (wh, ww) == (48, 40) and 0 <= y <= h - 48 and 0 <= x <= w - 40


def test_contact_sheet_balances_labels() -> None:
    def sample(index: int, label: int) -> contact_sheet.Sample:
        return contact_sheet.Sample(index, np.zeros((2, 2, 3), np.uint8), 2, 2, label, str(label), f"{index}.jpg", (0, 0, 2, 2))

    stream = [sample(i, 0) for i in range(10)] + [sample(10 + i, 1) for i in range(3)] + [sample(20, 2)]
    chosen = contact_sheet.choose_samples(iter(stream), 7, 3)
    assert [s.label for s in chosen] == [0, 0, 0, 1, 1, 1, 2]


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, log = Terminal(), io.StringIO()
    for stream in (tty, log):
        bar = Progress(4, "verify", stream=stream, log_every=0)
        for _ in range(4):
            bar.add()
        bar.close()
    assert tty.getvalue().startswith("\rverify [") and " 4/4 " in tty.getvalue() and tty.getvalue().endswith("\n")
    assert "\r" not in log.getvalue() and log.getvalue().splitlines()[-1].startswith("verify [") and " 4/4 " in log.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rgb", "4,3,2"], "--rgb is an option of the contact sheet: add --contact-sheet PNG, or drop it"),
        (["--split", "test"], "--split is an option of the contact sheet"),
        (["--samples", "4"], "--samples is an option of the contact sheet"),
        (["--crop-size", "32x32"], "--crop-size is an option of the contact sheet"),
        (["--seed", "3"], "--seed is an option of the contact sheet"),
        (["--progress", "log"], "--progress shows the progress of --verify: add --verify, or drop it"),
    ],
)
def test_an_option_that_nothing_reads_is_refused(precropped: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Each printed the description and did nothing with the option, without a word.
    with pytest.raises(SystemExit) as exited:
        cli_main(["inspect", precropped, *argv])
    assert exited.value.code == 2
    assert f"cropshard inspect: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ver"], "unrecognized arguments: --ver"),  # ran --verify
        (["--cont", "SHEET"], "unrecognized arguments: --cont SHEET"),  # wrote a contact sheet
        (["--no"], "unrecognized arguments: --no"),  # meant --no-labels
        (["--contact-sheet", "SHEET", "--samples", "4", "--samples", "2"], "--samples is given more than once with different values"),
    ],
)
def test_abbreviations_and_an_option_given_two_values_are_refused(precropped: str, argv: list[str], message: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    sheet = str(tmp_path / "s.png")
    with pytest.raises(SystemExit) as exited:
        cli_main(["inspect", precropped, *(sheet if arg == "SHEET" else arg for arg in argv)])
    assert exited.value.code == 2 and message.replace("SHEET", sheet) in capsys.readouterr().err
    assert not Path(sheet).exists()


def test_crop_size_on_a_pre_cropped_dataset_is_refused(precropped: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The sheet of pre-crops draws no reader windows: --crop-size changed nothing, without a word.
    assert cli_main(["inspect", precropped, "--contact-sheet", str(tmp_path / "s.png"), "--crop-size", "32"]) == 2
    assert "--crop-size draws the reader's crop windows on full-image datasets;" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_the_contact_sheet_reported_is_the_file_written(precropped: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # matplotlib writes NAME.png for NAME; inspect reported NAME.
    code, text = inspect(capsys, precropped, "--no-labels", "--contact-sheet", str(tmp_path / "sheet"), "--samples", "2")
    assert code == 0 and f"contact sheet: {tmp_path / 'sheet.png'} (2 images" in text
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]
    assert cli_main(["inspect", precropped, "--contact-sheet", str(tmp_path)]) == 2
    assert f"--contact-sheet {tmp_path} is a folder: give a file name" in capsys.readouterr().err


def test_the_contact_sheet_replaces_only_a_sheet_inspect_wrote(precropped: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--contact-sheet photos/cat_000.jpg` replaced the source photo, exit 0; '' wrote nothing, exit 0."""
    sheet = tmp_path / "sheet.png"
    assert inspect(capsys, precropped, "--no-labels", "--contact-sheet", str(sheet), "--samples", "2")[0] == 0
    assert inspect(capsys, precropped, "--no-labels", "--contact-sheet", str(sheet), "--samples", "2")[0] == 0  # its own sheet: replaced
    photo = tmp_path / "photo.png"
    imagegen.save(photo, imagegen.photo(20, 20))
    before = photo.read_bytes()
    assert cli_main(["inspect", precropped, "--contact-sheet", str(photo)]) == 2
    assert f"--contact-sheet {photo} exists and is not a contact sheet inspect wrote: give a new file name" in capsys.readouterr().err
    assert photo.read_bytes() == before
    assert cli_main(["inspect", precropped, "--contact-sheet", ""]) == 2
    assert "--contact-sheet needs a file name" in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["inspect", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- storage that cannot be read: one line and exit 3, never 1 ("--verify found damage") ----------


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv", [[], ["--verify"], ["--no-labels"]])
def test_unreachable_storage_is_one_line_and_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # It printed TensorFlow's traceback and exited 1, which for --verify reads as "the dataset is damaged".
    with fileio.use(storage.unreachable()):
        assert cli_main(["inspect", "gs://bucket/ds", *argv]) == EXIT_STORAGE == 3
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("cropshard inspect: error: could not read gs://bucket/ds/cropshard.json: UnavailableError:")
    assert "connection refused by the storage service" in line and "not a finding about the data" in line


def test_storage_failing_during_verify_is_not_reported_as_damage(precropped: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # cropshard.json reads fine, then the shards cannot be opened (permission on the objects, or the network went).
    shutil.copytree(precropped, tmp_path / "ds")
    denied = BucketOnDisk(str(tmp_path), fails=lambda path: tf.errors.PermissionDeniedError(None, None, "403 Forbidden")
                          if ".tfrecord" in path else None)
    with fileio.use(denied):
        assert cli_main(["inspect", "gs://bucket/ds", "--verify", "--progress=off"]) == 3
    out, err = capsys.readouterr()
    assert "verify: FAILED" not in out
    line = one_error_line(err)
    assert "could not read gs://bucket/ds/" in line and ".tfrecord: PermissionDeniedError: 403 Forbidden" in line


def test_tensorflow_failing_to_read_a_shard_is_not_reported_as_damage(precropped: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # The framing scan read every byte; TensorFlow's own read of the shard then fails for a reason
    # that is storage (FailedPrecondition, as for an unresolvable host): "unreadable by TensorFlow" was reported as damage.
    shutil.copytree(precropped, tmp_path / "ds")
    (tmp_path / "a-folder").mkdir()
    bucket = BucketOnDisk(str(tmp_path), tf_path=lambda path: str(tmp_path / "a-folder"))
    with fileio.use(bucket):
        assert cli_main(["inspect", "gs://bucket/ds", "--verify", "--progress=off"]) == 3
    out, err = capsys.readouterr()
    assert "verify: FAILED" not in out
    assert "FailedPreconditionError" in one_error_line(err) and "Is a directory" in err


@pytest.mark.slow  # a fresh interpreter
def test_the_inspect_command_imports_no_beam(precropped: str) -> None:
    """`python -m cropshard.pipeline inspect --verify` (the `cropshard` dispatcher) never loads Beam: it is the
    build's dependency, seconds of start-up that describing or verifying a dataset does not need."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['cropshard', 'inspect', '--verify', '--progress=off', {precropped!r}]\n"
        "try:\n"
        "    runpy.run_module('cropshard.pipeline', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        "print('exit', status, 'beam', sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"verify: OK - 4 shards, {2 * PER_CLASS} records" in proc.stdout and "  cat " in proc.stdout
    assert proc.stdout.splitlines()[-1] == "exit 0 beam []"


def test_a_missing_shard_is_still_a_finding_about_the_dataset_not_a_storage_error(precropped: str, tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # Storage errors exit 3; a shard that is not there is the dataset's problem: described, and --verify finds it.
    target = tmp_path / "ds"
    shutil.copytree(precropped, target)
    os.remove(target / load_info(str(target)).split("train").shards[0].file)
    code, out = inspect(capsys, str(target))
    assert code == 0 and "histogram unavailable: NotFoundError; run with --verify" in out
    code, out = inspect(capsys, str(target), "--verify", "--progress=off")
    assert code == 1 and "shard file listed in cropshard.json is missing" in out
