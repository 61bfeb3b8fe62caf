"""Faults and interruptions: a retried bundle, a build killed halfway, shards damaged after
writing, a huge source image, counts that do not add up.

What the local runners do on a failing DoFn (checked here, not assumed): Beam's FnApiRunner
(DirectRunner's default in_memory and multi_processing modes) does NOT retry a failed bundle; the
first exception fails the job. The BundleBasedDirectRunner retries a failed bundle (up to 4
attempts, discarding the failed attempt's outputs), as Dataflow does, so retries are tested on it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import cropshard.pipeline.assemble
import numpy as np
import psutil
import pytest
from cropshard.pipeline.build import run
from cropshard.reader import metadata
from cropshard.transforms.examples import ImagesToExamples
from cropshard.transforms.types import ImageSource
from cropshard.transforms.write import DatasetFacts, _WriteDatasetInfo, written_files
from PIL import Image

from tests import imagegen

pytestmark = pytest.mark.slow  # child processes, kills and a 15000x15000 image

REPO = Path(__file__).resolve().parents[2]
CROPSHARD = REPO / ".venv" / "bin" / "cropshard"
# `python -m cropshard.pipeline` is the same entry point as the `cropshard` script.
INSPECT = [sys.executable, "-m", "cropshard.pipeline", "inspect"]
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
BUILD = ["--crop=random", "--size=96x96", "--crops_per_image=4", "--split=train=0.8,test=0.2", "--progress=off"]
FAIL_MARKER = "CROPSHARD_TEST_FAIL_ONCE_MARKER"  # env: path of the file that records the one injected failure


def make_images(root: Path, count: int, size: tuple[int, int] = (240, 320)) -> None:
    for i in range(count):
        imagegen.save(root / f"class_{i % 3}" / f"img_{i:03d}.jpg", imagegen.photo(*size, seed=i), quality=90)


def records_by_split(out: Path) -> dict[str, list[bytes]]:
    """Every serialized record of a finished dataset, sorted per split (shard layout ignored)."""
    import tensorflow as tf

    info = metadata.load_info(str(out))
    found = {}
    for name, split in info.splits.items():
        files = [str(out / shard.file) for shard in split.shards]
        found[name] = sorted(r.numpy() for r in tf.data.TFRecordDataset(files)) if files else []
    return found


def records_in_files(out: Path) -> dict[str, list[bytes]]:
    """Every record of every shard file in `out`, sorted per split, without cropshard.json."""
    import tensorflow as tf

    found: dict[str, list[bytes]] = {}
    for path in sorted(out.glob("*.tfrecord")):
        found.setdefault(path.name.split("-", 1)[0], []).extend(r.numpy() for r in tf.data.TFRecordDataset(str(path)))
    return {name: sorted(records) for name, records in found.items()}


def temp_files(out: Path) -> list[Path]:
    return [p for d in out.glob("beam-temp-*") for p in d.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, dict[str, list[bytes]]]:
    """24 images and the records of an undisturbed in-process build of them (the reference)."""
    base = tmp_path_factory.mktemp("small")
    make_images(base / "in", 24)
    run([f"--input={base / 'in'}", f"--output={base / 'reference'}", *BUILD, *IN_PROCESS], command_line=[])
    return base / "in", records_by_split(base / "reference")


# --- a bundle that fails once, mid-bundle ---------------------------------------------------------


class FailOnceMidBundle(ImagesToExamples):
    """Test-only: the first time any bundle reaches its second element, emit that element's first
    record and then raise. By then the bundle has already emitted everything for its first element,
    so a runner that kept a failed attempt's output would duplicate records, and one that dropped
    the bundle would lose them. Only one failure per build: the marker file is created atomically."""

    def start_bundle(self) -> None:
        super().start_bundle()
        self._in_bundle = 0

    def process(self, source: ImageSource, label_ids: Mapping[str, int]) -> Iterator:
        self._in_bundle += 1
        for n, output in enumerate(super().process(source, label_ids)):
            yield output
            if n == 0 and self._in_bundle >= 2 and _claim_failure(source.key, self._in_bundle):
                raise RuntimeError(f"injected failure in the middle of a bundle at {source.key}")


def _claim_failure(key: str, position: int) -> bool:
    try:
        fd = os.open(os.environ[FAIL_MARKER], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump({"key": key, "position_in_bundle": position}, handle)
    return True


@pytest.fixture
def fail_once(monkeypatch, tmp_path: Path) -> Path:
    marker = tmp_path / "failed-once.json"
    monkeypatch.setenv(FAIL_MARKER, str(marker))
    monkeypatch.setattr(cropshard.pipeline.assemble, "ImagesToExamples", FailOnceMidBundle)
    return marker


def test_retried_bundle_neither_duplicates_nor_loses_records(small_set, fail_once: Path, tmp_path: Path) -> None:
    images, reference = small_set
    out = tmp_path / "retried"
    # Not a local DirectRunner, so the shards are sized from the parts the bundles wrote
    # (transforms/sharding.py). With Beam's WriteToTFRecord this runner handed WriteDatasetInfo an
    # incomplete shard list (its side input fired early) and the build refused to publish; through
    # the parts (one plan over every committed part) the build completes, with exact counts.
    run([f"--input={images}", f"--output={out}", *BUILD, "--runner=BundleBasedDirectRunner"], command_line=[])
    failure = json.loads(fail_once.read_text())  # the failure really happened...
    assert failure["position_in_bundle"] >= 2, failure  # ...after other elements of its bundle
    # Same records as the undisturbed build: none twice, none missing, read from the final shards;
    # the retried bundle's parts are gone with the temp dir.
    assert records_in_files(out) == reference
    assert metadata.load_info(str(out)).num_examples == sum(len(records) for records in reference.values())
    assert not list(out.glob("beam-temp-*"))


def test_fnapi_runner_fails_the_job_without_retry_and_publishes_nothing(small_set, fail_once: Path, tmp_path: Path) -> None:
    images, reference = small_set
    out = tmp_path / "failed"
    with pytest.raises(Exception, match="injected failure"):
        run([f"--input={images}", f"--output={out}", *BUILD, *IN_PROCESS], command_line=[])
    assert fail_once.exists()
    assert not (out / metadata.INFO_FILENAME).exists()
    with pytest.raises(metadata.DatasetError):
        metadata.load_info(str(out))
    # The marker makes the rerun succeed: --overwrite gives the reference records and no leftovers.
    run([f"--input={images}", f"--output={out}", *BUILD, *IN_PROCESS, "--overwrite"], command_line=[])
    assert records_by_split(out) == reference
    assert not list(out.glob("beam-temp-*"))


# --- SIGKILL halfway, then --overwrite -------------------------------------------------------------


def test_sigkill_halfway_leaves_an_incomplete_dataset_that_overwrite_replaces(tmp_path: Path) -> None:
    from cropshard import reader

    make_images(tmp_path / "in", 300)
    args = [f"--input={tmp_path / 'in'}", *BUILD]
    run([*args, f"--output={tmp_path / 'reference'}", *IN_PROCESS], command_line=[])
    reference = records_by_split(tmp_path / "reference")

    # The real command, default runner (multi-process workers), killed with its workers once shard
    # temp files are being written.
    out = tmp_path / "out"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([str(CROPSHARD), "build", *args, f"--output={out}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    group = os.getpgid(proc.pid)
    deadline = time.monotonic() + 240
    while not temp_files(out):
        assert proc.poll() is None, f"build ended ({proc.returncode}) before it was killed:\n{proc.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, "no shard temp files within 240 s"
        time.sleep(0.02)
    os.killpg(group, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # Workers notice the dead launcher through their control channel and exit; give them a moment.
    deadline = time.monotonic() + 30
    while (survivors := [p for p in _group_members(group) if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not survivors, f"workers outlived the kill by 30 s: {survivors}"

    stale_dirs = sorted(out.glob("beam-temp-*"))
    assert stale_dirs and temp_files(out)
    print(f"\nkilled: {len(temp_files(out))} temp files in {len(stale_dirs)} beam-temp dirs,"
          f" {len(list(out.glob('*.tfrecord')))} final shards, no {metadata.INFO_FILENAME}")
    assert not (out / metadata.INFO_FILENAME).exists()
    with pytest.raises(metadata.IncompleteDatasetError, match="incomplete"):
        metadata.load_info(str(out))
    with pytest.raises(metadata.IncompleteDatasetError, match="incomplete"):
        reader.load(str(out), split="train")
    inspect = subprocess.run([*INSPECT, str(out)], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert inspect.returncode == 2 and "incomplete" in inspect.stderr, inspect.stderr
    with pytest.raises(FileExistsError, match="--overwrite"):
        run([*args, f"--output={out}", *IN_PROCESS], command_line=[])

    rerun = subprocess.run([str(CROPSHARD), "build", *args, f"--output={out}", "--overwrite"], capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.search(r"inputs 300 = 300 images written \+ 0 rejected\s+\(reconciled\)", rerun.stdout), rerun.stdout
    assert not list(out.glob("beam-temp-*")) and not any(d.exists() for d in stale_dirs)
    assert records_by_split(out) == reference
    info = metadata.load_info(str(out))
    assert sorted(p.name for p in out.iterdir()) == written_files(info)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(group: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == group:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


# --- shards damaged after writing ------------------------------------------------------------------


def record_offsets(path: Path) -> list[int]:
    """Start offset of every record, by walking the TFRecord framing (independent of the reader)."""
    data = path.read_bytes()
    offsets, position = [], 0
    while position < len(data):
        offsets.append(position)
        (length,) = struct.unpack("<Q", data[position : position + 8])
        position += 12 + length + 4
    return offsets


def test_corrupt_shards_are_named_with_offsets_and_can_be_skipped(small_set, tmp_path: Path) -> None:
    from cropshard import reader

    images, _ = small_set
    out = tmp_path / "ds"
    run([f"--input={images}", f"--output={out}", *BUILD, "--num_shards=3", *IN_PROCESS], command_line=[])
    info = metadata.load_info(str(out))
    shards = [out / s.file for s in info.split("train").shards]
    flipped, truncated = shards[0], shards[1]
    flipped_offsets, truncated_offsets = record_offsets(flipped), record_offsets(truncated)
    assert len(flipped_offsets) >= 8 and len(truncated_offsets) >= 2

    bad_record = 5  # flip one byte inside record 5's data
    data = bytearray(flipped.read_bytes())
    data[flipped_offsets[bad_record] + 12 + 100] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with truncated.open("r+b") as handle:  # lose the tail of the last record
        handle.truncate(truncated.stat().st_size - 100)
    lost = {flipped.name: len(flipped_offsets) - bad_record, truncated.name: 1}

    report = reader.verify(str(out), split="train")
    bad = {Path(s.file).name: s for s in report.bad_shards}
    assert set(bad) == set(lost)
    assert bad[flipped.name].offset == flipped_offsets[bad_record] and bad[flipped.name].good_records == bad_record
    assert bad[truncated.name].offset == truncated_offsets[-1] and bad[truncated.name].good_records == len(truncated_offsets) - 1
    assert report.lost_records == sum(lost.values())

    inspect = subprocess.run([*INSPECT, str(out), "--verify", "--progress=off"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert inspect.returncode == 1, inspect.stdout + inspect.stderr
    for name, shard in bad.items():
        assert re.search(rf"BAD .*{re.escape(name)}.*byte offset {shard.offset}\b", inspect.stdout), inspect.stdout

    total = info.split("train").num_examples
    with pytest.raises(Exception) as raised:
        for _ in reader.load(str(out), split="train", batch_size=None, shuffle=False, normalize="none"):
            pass
    assert flipped.name in str(raised.value) or truncated.name in str(raised.value), str(raised.value)

    skipped = reader.CorruptionReport()
    kept = sum(1 for _ in reader.load(str(out), split="train", batch_size=None, shuffle=False, normalize="none", on_corrupt="skip", corruption_report=skipped))
    assert kept == total - sum(lost.values())
    assert skipped.skipped_records == sum(lost.values())
    assert {Path(name).name: count for name, count in skipped.by_shard.items()} == lost
    print(f"\n{report}\nreader.load(on_corrupt='skip'): {kept} of {total} records, {skipped!r}")


# --- a 15000x15000 source ---------------------------------------------------------------------------


# Runs the command and prints its own peak RSS. A separate small launcher because Linux's ru_maxrss
# keeps the high-water mark of the process image before exec: a build forked straight from pytest
# (which holds TensorFlow and the test's 15000x15000 array) would report pytest's RSS.
_MEASURE = """
import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss, "stdout": out.decode()}))
"""


def peak_rss_mib(args: list[str], timeout: float = 300) -> tuple[float, str]:
    """Run `cropshard build` and return its own peak RSS (MiB) and its stdout."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(CROPSHARD), "build", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["exit"] == 0, result["stdout"]
    return result["maxrss_kib"] / 1024, result["stdout"]


def test_memory_holds_one_decoded_image_on_a_15000x15000_jpeg(tmp_path: Path) -> None:
    side = 15000
    tile = imagegen.photo(1000, 1000, seed=1)
    big = Image.fromarray(np.tile(tile, (side // 1000, side // 1000, 1)))
    (tmp_path / "huge").mkdir()
    big.save(tmp_path / "huge" / "scan.jpg", quality=85)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the crop path must not keep a rotated copy next to the stored one
    big.save(tmp_path / "huge" / "rotated.jpg", quality=85, exif=exif)
    del big
    (tmp_path / "base").mkdir()
    Image.fromarray(imagegen.photo(2048, 2048, seed=2)).save(tmp_path / "base" / "small.jpg", quality=85)

    common = ["--crop=grid", "--size=1024", "--encoding=jpeg", "--max_pixels=300000000", "--label_from=none", "--progress=off", *IN_PROCESS]
    baseline, _ = peak_rss_mib([f"--input={tmp_path / 'base'}", f"--output={tmp_path / 'out_base'}", *common])
    peak, stdout = peak_rss_mib([f"--input={tmp_path / 'huge'}", f"--output={tmp_path / 'out_huge'}", *common])
    assert "inputs 2 = 2 images written" in stdout, stdout
    info = metadata.load_info(str(tmp_path / "out_huge"))
    assert info.num_examples == 2 * (side // 1024) ** 2

    decoded = side * side * 4 / 2**20  # Pillow keeps RGB as 4 bytes per pixel: 858 MiB
    file_mib = max(p.stat().st_size for p in (tmp_path / "huge").iterdir()) / 2**20
    extra = peak - baseline
    print(f"peak RSS {peak:.0f} MiB, baseline {baseline:.0f} MiB: +{extra:.0f} MiB for a {decoded:.0f} MiB decoded image")
    # One decoded image (and the file's bytes) at a time, with 15% slack; a second copy of the
    # image (all crops, a rotated or converted copy, or the first image still alive) is +858 MiB.
    assert extra < 1.15 * (decoded + file_mib), f"peak {peak:.0f} MiB is {extra:.0f} MiB over the {baseline:.0f} MiB baseline"


# --- counts that do not reconcile ---------------------------------------------------------------------


def test_dataset_info_is_not_written_when_counts_do_not_reconcile(tmp_path: Path) -> None:
    facts = DatasetFacts(
        cropshard_version="test", encoding="raw", image_formats=("raw",), channels=3, image_shape=None,
        crop={"strategy": "none"}, compression="none", split_names=("train",), command_line=(),
    )
    step = _WriteDatasetInfo(str(tmp_path), facts)
    shard = ("train", metadata.ShardInfo("train-00000-of-00001.tfrecord", 2, 100))
    with pytest.raises(RuntimeError, match="do not reconcile: 3 inputs != 2 written \\+ 0 rejected"):
        list(step.process(None, shards=[shard], rejected={}, num_inputs=3, images_written=2, labels=[], unused_rejected_files=[]))
    assert not (tmp_path / metadata.INFO_FILENAME).exists()
    assert list(step.process(None, shards=[shard], rejected={"truncated": 1}, num_inputs=3, images_written=2, labels=[], unused_rejected_files=[]))
    assert metadata.load_info(str(tmp_path)).num_inputs == 3


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
