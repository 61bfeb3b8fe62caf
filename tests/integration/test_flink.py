"""Flink integration: `cropshard build` through launch/flink.sh on a real local Flink cluster
(1 JobManager + 2 TaskManagers + Beam's job server, started by launch/flink_cluster.sh), compared
record for record with a DirectRunner build of the same inputs.

The module fixture fetches Flink and the job server (launch/fetch_flink.sh, cached under
${CROPSHARD_CACHE:-~/.cache/cropshard}), starts the cluster on free ports in a temporary run dir
and always stops it. Missing Java or a failed fetch skips the test locally and fails it under
CI (CI=true): CI must never pass by silently not running it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import apache_beam
import numpy as np
import psutil
import pytest
from cropshard.reader import metadata

from tests import imagegen, rastergen

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
pytestmark = [
    pytest.mark.flink,
    # A cold cache downloads ~380 MB (pip + Maven) before the cluster starts; every subprocess
    # below has its own, tighter timeout.
    pytest.mark.timeout(1800),
]

# Thousands of small images, shards of 1 MiB: every split gets several shards (about 26 train,
# 5-6 validation and test), so the write path that replaced the grouped one (part files per bundle,
# renamed or packed into shards) runs with several parts per split on both TaskManagers.
PER_CLASS = 700
CLASSES = ("bird", "cat", "dog")
IMAGE_SIZE = (96, 128)
TARGET_SHARD_MB = 1.0
BUILD_ARGS = [
    "--crop=random",  # seeded per image key: must give the same crops on any runner
    "--crops_per_image=2",
    "--size=64x64",
    "--encoding=png",
    "--split=train=0.7,validation=0.15,test=0.15",
    f"--target_shard_mb={TARGET_SHARD_MB}",
    "--progress=off",
]
TASKMANAGER_IDS = {"cropshard-tm-1", "cropshard-tm-2"}  # flink_cluster.sh's taskmanager.resource-id


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """Locally a missing prerequisite skips; under CI it fails, so a green CI means it ran."""
    if in_ci():
        pytest.fail(f"CI=true, so not skipping the Flink test: {reason}", pytrace=False)
    pytest.skip(reason)


def versions_env() -> dict[str, str]:
    """launch/versions.env: plain KEY=value lines (the scripts' single source of versions)."""
    values = {}
    for line in (LAUNCH / "versions.env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def free_ports(count: int) -> list[int]:
    """Distinct ports free right now on all interfaces (the job server binds 0.0.0.0). Held
    open together so the kernel cannot hand out the same one twice."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in socks]


def run_logged(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, str]:
    """Run `cmd` in its own process group with stdout+stderr to `log`; on timeout kill that
    group (mvn / pip / java children included). Returns (exit status, output)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = -9
            out.write(f"\n[test_flink] killed after {timeout:.0f} s\n".encode())
    return rc, log.read_text(errors="replace")


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def script_errors(text: str) -> str:
    """The launch scripts' own ERROR lines, first in a failure message: the log tails that
    follow them are long enough to push them out of a truncated CI report."""
    return "; ".join(line for line in text.splitlines() if line.startswith("[") and "] ERROR: " in line) or "no ERROR line"


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for init to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def rest(base: str, path: str) -> Any:
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        return json.load(response)


def announce(config: pytest.Config, line: str) -> None:
    """Show `line` in the CI log even under pytest's output capture (also to captured stdout,
    so it is in the failure report)."""
    print(line)
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(line)
        else:
            print(line, file=sys.__stdout__, flush=True)


@dataclasses.dataclass
class FlinkCluster:
    env: dict[str, str]  # everything launch/*.sh need to address this cluster
    rest_url: str
    run_dir: Path
    versions: str  # the CI log line
    timings: dict[str, float]


def flink_sdk_python(base: Path, pins: dict[str, str]) -> tuple[str, str]:
    """(interpreter, its apache-beam version) of the venv that submits: launch/flink_sdk_venv.sh
    makes it once per checkout with the job server's Beam, which is older than the test venv's."""
    env = {**os.environ, "BASE_PYTHON": sys.executable}
    rc, out = run_logged(["bash", str(LAUNCH / "flink_sdk_venv.sh")], env, base / "sdk-venv.log", timeout=1200)
    if rc != 0:
        skip_or_fail(f"launch/flink_sdk_venv.sh exited {rc}:\n{tail(out, 15)}")
    python = out.strip().splitlines()[-1]
    version = subprocess.run([python, "-c", "import apache_beam; print(apache_beam.__version__)"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == pins["BEAM_VERSION"], f"{python} has apache-beam {version}, the job server is {pins['BEAM_VERSION']}"
    return python, version


@pytest.fixture(scope="module")
def flink_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkCluster]:
    pins = versions_env()
    for tool, why in (("java", "a Java 17 runtime runs Flink and Beam's job server"), ("curl", "the launch scripts poll Flink's REST API")):
        if shutil.which(tool) is None:
            skip_or_fail(f"'{tool}' not found on PATH ({why})")

    base = tmp_path_factory.mktemp("flink")
    submit_python, submit_beam = flink_sdk_python(base, pins)
    run_dir = base / "run"
    rest_port, rpc_port, job_port, artifact_port = free_ports(4)
    env = {
        **os.environ,
        "PYTHON": submit_python,  # the job server's Beam, in its own venv (launch/flink_sdk_venv.sh)
        "CROPSHARD_FLINK_HOME": str(run_dir),
        "FLINK_REST_PORT": str(rest_port),
        "FLINK_RPC_PORT": str(rpc_port),
        "BEAM_JOB_PORT": str(job_port),
        "BEAM_ARTIFACT_PORT": str(artifact_port),
        "FLINK_TASKMANAGERS": "2",
        "FLINK_TM_SLOTS": "1",
    }
    timings: dict[str, float] = {}

    start = time.monotonic()
    rc, out = run_logged(["bash", str(LAUNCH / "fetch_flink.sh")], env, base / "fetch.log", timeout=1200)
    timings["fetch"] = time.monotonic() - start
    if rc != 0:
        what = "Maven could not resolve Beam's Flink job server" if rc == 3 else f"launch/fetch_flink.sh exited {rc}"
        if shutil.which("mvn") is None:
            what += " ('mvn' not found on PATH: it assembles the job server on a cold cache)"
        skip_or_fail(f"{what}:\n{tail(out, 15)}")

    stop_cmd = ["bash", str(LAUNCH / "flink_cluster.sh"), "stop"]
    try:
        start = time.monotonic()
        rc, out = run_logged(["bash", str(LAUNCH / "flink_cluster.sh"), "start"], env, base / "start.log", timeout=300)
        timings["start"] = time.monotonic() - start
        assert rc == 0, f"launch/flink_cluster.sh start exited {rc}: {script_errors(out)}\n{tail(out, 80)}"
        rest_url = f"http://localhost:{rest_port}"
        overview = rest(rest_url, "/overview")
        tm_ids = sorted(tm["id"] for tm in rest(rest_url, "/taskmanagers")["taskmanagers"])
        ready = next((line for line in out.splitlines() if "] ready in " in line), "")
        job_server = ready.split(", ", 1)[1].split(" at ")[0] if ", " in ready else "(no job server line in the start output)"
        versions = (
            f"[test_flink] Flink {overview['flink-version']} (commit {overview['flink-commit']}), {job_server}, "
            f"Python SDK apache-beam {submit_beam} ({submit_python}; the DirectRunner reference: apache-beam {apache_beam.__version__}); "
            f"{overview['taskmanagers']} TaskManagers ({', '.join(tm_ids)}), {overview['slots-total']} slots; "
            f"REST localhost:{rest_port}, job endpoint localhost:{job_port}; fetch {timings['fetch']:.1f} s, start {timings['start']:.1f} s"
        )
        announce(request.config, versions)
        assert overview["flink-version"] == pins["FLINK_PATCH_VERSION"], versions
        assert f"Beam {pins['BEAM_VERSION']} job server" in job_server, versions
        assert overview["taskmanagers"] == 2 and set(tm_ids) == TASKMANAGER_IDS and overview["slots-total"] == 2, versions
        yield FlinkCluster(env, rest_url, run_dir, versions, timings)
    finally:
        # Always, even after a failed or interrupted start: stop only touches processes whose
        # command line names this run dir.
        pids = {f.stem: int(f.read_text()) for f in (run_dir / "pids").glob("*.pid")}
        start = time.monotonic()
        rc, out = run_logged(stop_cmd, env, base / "stop.log", timeout=120)
        timings["stop"] = time.monotonic() - start
        survivors = {name: pid for name, pid in pids.items() if alive(pid)}
        # While a job runs, blob/ holds the ~150 MB job-server classpath staged for it and tmp/
        # the shuffle files; a killed cluster leaves them behind. pytest keeps the last three
        # basetemps, so drop the bulk and keep conf/ and log/ for diagnosis.
        for bulky in ("blob", "tmp", "web", "artifacts"):
            shutil.rmtree(run_dir / bulky, ignore_errors=True)
        announce(request.config, f"[test_flink] stopped the cluster (exit {rc}); timings " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        if (rc != 0 or survivors) and sys.exc_info()[0] is None:  # never mask the setup's own error
            pytest.fail(f"launch/flink_cluster.sh stop exited {rc}, still running: {survivors}\n{tail(out)}")


# --- inputs ------------------------------------------------------------------------------------


def make_inputs(root: Path) -> dict[str, str]:
    """2,100 small photo-like JPEG/PNG images in three class folders, plus files that must be
    rejected; returns path -> expected rejection reason."""
    imagegen.class_tree(root, per_class=PER_CLASS, size=IMAGE_SIZE, classes=CLASSES)
    expected = imagegen.broken_files(root / "cat")  # truncated JPEG, zero bytes, text named .jpg
    small = imagegen.save(root / "dog" / "tiny.jpg", imagegen.photo(40, 48, seed=7), quality=90)
    expected[str(small)] = "too_small"  # smaller than the 64x64 crop, and --small reject
    return expected


def records_by_split(out: Path, info: metadata.DatasetInfo) -> dict[str, list[bytes]]:
    """Every serialized record per split, sorted (the shard a record lands in is the runner's choice)."""
    import tensorflow as tf

    return {
        name: sorted(r.numpy() for r in tf.data.TFRecordDataset([str(out / shard.file) for shard in split.shards]))
        for name, split in info.splits.items()
    }


def rejections(out: Path) -> dict[str, str]:
    lines = (out / metadata.REJECTED_FILENAME).read_text().splitlines()
    return {body["path"]: body["reason"] for body in map(json.loads, filter(None, lines))}


def flink_job_report(rest_url: str, jid: str) -> dict[str, Any]:
    """Per vertex: the TaskManagers its subtasks ran on, with their records read."""
    job = rest(rest_url, f"/jobs/{jid}")
    vertices = {}
    for vertex in job["vertices"]:
        tms = rest(rest_url, f"/jobs/{jid}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]
        # Keyed by name + id: Beam's graphs repeat names (one "DataSource (Impulse)" per source).
        vertices[f"{vertex['name']} [{vertex['id']}]"] = {
            "status": vertex["status"],
            "taskmanagers": {tm["taskmanager-id"]: tm["metrics"]["read-records"] for tm in tms},
        }
    return {"state": job["state"], "vertices": vertices}


# --- the test ----------------------------------------------------------------------------------


@dataclasses.dataclass
class BothBuilds:
    flink_out: Path
    direct_out: Path
    flink_log: str
    context: str  # for assertion messages: the versions and the flink.sh log's tail
    job: dict[str, Any]  # the one Flink job the build ran (/jobs/overview entry)
    worker_starts: dict[int, int]  # SDK worker processes each TaskManager started for it


def build_on_both(cluster: FlinkCluster, tmp_path: Path, args: list[str], timing: str) -> BothBuilds:
    """`cropshard build ARGS` through launch/flink.sh and, at the same time, on the DirectRunner
    (the reference); both must succeed, and the Flink build must be one FINISHED job."""
    flink_out, direct_out = tmp_path / "flink", tmp_path / "direct"
    jobs_before = {job["jid"] for job in rest(cluster.rest_url, "/jobs/overview")["jobs"]}
    starts_before = sdk_worker_starts(cluster)
    # The DirectRunner reference runs while flink.sh imports and the job server stages ~150 MB of
    # jars to Flink (mostly waiting), which keeps the module inside its time budget on 2 cores.
    reference_cmd = [sys.executable, "-m", "cropshard.pipeline", "build", "--runner=DirectRunner", "--direct_running_mode=in_memory", f"--output={direct_out}", *args]
    reference_log = tmp_path / "direct.log"
    started = time.monotonic()
    with reference_log.open("wb") as handle:
        reference = subprocess.Popen(reference_cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=cluster.env)
        try:
            rc, flink_log = run_logged(["bash", str(LAUNCH / "flink.sh"), f"--output={flink_out}", *args], cluster.env, tmp_path / "flink.log", timeout=900)
            cluster.timings[timing] = time.monotonic() - started
            reference_rc = reference.wait(timeout=600)
        finally:
            if reference.poll() is None:
                reference.kill()
                reference.wait()
    cluster.timings[f"{timing} + reference"] = time.monotonic() - started
    context = f"{cluster.versions}\nflink.sh log tail:\n{tail(flink_log)}"
    assert rc == 0, f"launch/flink.sh exited {rc}\n{context}\njob server log tail:\n{tail((cluster.run_dir / 'log' / 'jobserver.log').read_text(errors='replace'))}"
    assert reference_rc == 0, f"DirectRunner reference exited {reference_rc}:\n{tail(reference_log.read_text(errors='replace'))}"
    assert "--runner=PortableRunner" in flink_log and "--parallelism=2" in flink_log, context
    assert "--environment_type=PROCESS" in flink_log and "--sdk_worker_parallelism=1" in flink_log, context
    assert "Traceback" not in flink_log, f"a successful run printed a traceback\n{context}"
    new_jobs = [job for job in rest(cluster.rest_url, "/jobs/overview")["jobs"] if job["jid"] not in jobs_before]
    assert len(new_jobs) == 1, new_jobs
    job = new_jobs[0]
    assert job["state"] == "FINISHED" and job["tasks"]["failed"] == 0 and job["tasks"]["finished"] == job["tasks"]["total"], job
    starts = {tm: count - starts_before[tm] for tm, count in sdk_worker_starts(cluster).items()}
    return BothBuilds(flink_out, direct_out, flink_log, context, job, starts)


def sdk_worker_starts(cluster: FlinkCluster) -> dict[int, int]:
    """Per TaskManager, the SDK workers started so far (sdk_worker_main logs its options once when it starts)."""
    return {i: (cluster.run_dir / "log" / f"taskmanager-{i}.log").read_text(errors="replace").count("Pipeline_options:") for i in (1, 2)}


def assert_same_dataset(both: BothBuilds) -> tuple[metadata.DatasetInfo, dict[str, list[bytes]]]:
    """Flink's dataset equals the DirectRunner's: the multiset of records per split, rejections,
    labels, counts (reconciled). Returns Flink's metadata and records."""
    info, reference_info = metadata.load_info(str(both.flink_out)), metadata.load_info(str(both.direct_out))
    assert info.num_inputs == info.num_images_written + info.num_rejected, both.context
    flink_records = records_by_split(both.flink_out, info)
    assert {k: len(v) for k, v in flink_records.items()} == {name: split.num_examples for name, split in info.splits.items()}
    assert flink_records == records_by_split(both.direct_out, reference_info), "Flink and DirectRunner records differ"
    assert rejections(both.flink_out) == rejections(both.direct_out)
    assert (both.flink_out / "labels.txt").read_text() == (both.direct_out / "labels.txt").read_text()
    assert info.labels == reference_info.labels
    assert {n: s.num_examples for n, s in info.splits.items()} == {n: s.num_examples for n, s in reference_info.splits.items()}
    assert (info.num_inputs, info.num_images_written, info.rejected) == (reference_info.num_inputs, reference_info.num_images_written, reference_info.rejected)
    assert not list(both.flink_out.glob("beam-temp-*")), "Beam temp dirs left behind"
    # Stable contents (a local output): the very same shard and index files as the DirectRunner's.
    assert info.shard_contents == reference_info.shard_contents == metadata.SHARD_CONTENTS_STABLE
    assert info.splits == reference_info.splits, "Flink and DirectRunner shard layouts differ"
    different = [shard.file for split in info.splits.values() for shard in split.shards
                 if any((both.flink_out / f).read_bytes() != (both.direct_out / f).read_bytes() for f in (shard.file, shard.index))]
    assert not different, f"shard files differ from the DirectRunner's: {different}"
    return info, flink_records


def test_flink_build_matches_direct_runner(
    flink_cluster: FlinkCluster, tmp_path: Path, record_property: Callable[[str, object], None], request: pytest.FixtureRequest
) -> None:
    record_property("flink_versions", flink_cluster.versions)
    inputs = tmp_path / "images"
    expected_rejections = make_inputs(inputs)
    both = build_on_both(flink_cluster, tmp_path, [f"--input={inputs}", *BUILD_ARGS], "flink build")
    flink_out, context, job = both.flink_out, both.context, both.job

    # Dataset: reconciled counts, the rejections expected, several shards per split near the target.
    info = metadata.load_info(str(flink_out))
    good = PER_CLASS * len(CLASSES)
    assert info.num_inputs == good + len(expected_rejections) == info.num_images_written + info.num_rejected, context
    assert info.num_images_written == good, context
    assert rejections(flink_out) == expected_rejections, context
    assert set(info.splits) == {"train", "validation", "test"}, context
    target = TARGET_SHARD_MB * 2**20
    largest_record = 2 * 64 * 64 * 3  # a 64x64 RGB PNG crop and its Example fields stay below twice the raw pixels
    for name, split in info.splits.items():
        count = len(split.shards)
        assert count >= 3, f"{name}: {split.shards}"
        assert sorted(p.name for p in flink_out.glob(f"{name}-*.tfrecord")) == [f"{name}-{i:05d}-of-{count:05d}.tfrecord" for i in range(count)]
        # Stable shards cut the split into equal-size ranges of at most the target (plus a record),
        # so at most one shard of a split (a split under half the target) is under half of it.
        assert all(shard.num_bytes <= target + largest_record for shard in split.shards), f"{name}: {split.shards}"
        assert sum(shard.num_bytes < target / 2 for shard in split.shards) <= 1, f"{name}: {split.shards}"

    # Same as the DirectRunner: identical multiset of records per split, rejections, labels, counts.
    _, flink_records = assert_same_dataset(both)
    assert sum(len(v) for v in flink_records.values()) == 2 * good  # --crops_per_image=2

    # Flink's view: every vertex on both TaskManagers, and the decode step's inputs split between them.
    report = flink_job_report(flink_cluster.rest_url, job["jid"])
    flink_cluster.timings["flink job"] = job["duration"] / 1000
    # SDK workers in processes, one per slot, kept for the whole job: one worker start per TaskManager.
    assert both.worker_starts == {1: 1, 2: 1}, f"SDK workers started per TaskManager: {both.worker_starts}"
    not_on_both = {name: v["taskmanagers"] for name, v in report["vertices"].items() if set(v["taskmanagers"]) != TASKMANAGER_IDS or v["status"] != "FINISHED"}
    assert not not_on_both, f"vertices not FINISHED on both TaskManagers: {not_on_both}"
    # Flink names a fused stage by the top-level transforms in it: the decode stage is the one where
    # Encode (its ImagesToExamples) is fused with the shard writers' part files.
    decode = [v["taskmanagers"] for name, v in report["vertices"].items() if "Encode" in name and "Write[" in name]
    assert len(decode) == 1, [name for name in report["vertices"] if "Encode" in name]
    assert all(n > 0 for n in decode[0].values()) and sum(decode[0].values()) == info.num_inputs, decode[0]
    summary = (
        f"[test_flink] job {job['jid']} FINISHED in {job['duration'] / 1000:.1f} s: {job['tasks']['total']} tasks, "
        f"{len(report['vertices'])} vertices on {', '.join(sorted(TASKMANAGER_IDS))}; decode inputs per TaskManager {dict(sorted(decode[0].items()))}; "
        f"{info.num_inputs} inputs = {info.num_images_written} written + {info.num_rejected} rejected; shard files byte-identical to DirectRunner's"
    )
    record_property("flink_job", summary)
    announce(request.config, summary)


# --- a raster build -----------------------------------------------------------------------------

# 4-band uint16 scenes (2 m pixels, UTM 13N, nodata 0) on a 256 m block grid, one class map for all
# of them on a grid shifted by a few pixels, its class names from its own category table (GDAL's
# .aux.xml sidecar, no --label_names): so the workers open rasters and class maps with GDAL, warp the
# class map, read the sidecar and cut leakage-safe splits, on Flink as on the DirectRunner.
RASTER_ORIGIN = (487424.0, 4443648.0)  # a multiple of the 256 m --split_by block
RASTER_CLASSES = ["", "water", "crops", "trees"]  # category names: value i is entry i ('' names nothing)
RASTER_ARGS = [
    "--crop=grid", "--size=64x64", "--dtype=keep", "--bands=1,2,3,4", "--encoding=raw",
    "--split=train=0.6,validation=0.2,test=0.2", "--split_by=block:256", "--max_nodata=0.25",
    "--label_raster={dir}/../landcover/classes.tif", "--label_mode=majority", "--progress=off",
]


def make_raster_inputs(root: Path) -> dict[str, str]:
    """Two overlapping scenes with nodata, one far from the class map, a 3-band scene and a VRT
    named .tif, plus the class map (outside the input folder); returns path -> expected rejection."""
    scenes = root / "scenes"
    a = rastergen.multispectral(384, 384, bands=4, seed=1)
    a[:, :100, :100] = 0  # nodata: the top-left chips are skipped (--max_nodata 0.25)
    rastergen.write_raster(scenes / "a.tif", a, origin=RASTER_ORIGIN, nodata=0)
    # 96 m (48 pixels) east and south of a: overlaps it, and some chips straddle 256 m blocks.
    rastergen.write_raster(scenes / "b.tif", rastergen.multispectral(192, 192, bands=4, seed=2), origin=(RASTER_ORIGIN[0] + 96, RASTER_ORIGIN[1] - 96), nodata=0, compress="lzw")
    rastergen.write_raster(scenes / "far.tif", rastergen.multispectral(64, 64, bands=4, seed=3), origin=(RASTER_ORIGIN[0] + 50000, RASTER_ORIGIN[1]), nodata=0)
    rastergen.write_raster(scenes / "rgb.tif", rastergen.multispectral(64, 64, bands=3, seed=4), origin=RASTER_ORIGIN)
    (scenes / "hostile.tif").write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{root / "secret.tif"}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>'
    )
    rastergen.write_raster(root / "secret.tif", np.full((1, 64, 64), 7, np.uint16))  # what the VRT would read
    rng = np.random.default_rng(5)
    classes = np.kron(rng.choice([1, 2, 3], size=(50, 50)), np.ones((8, 8), np.uint8)).astype(np.uint8)  # 400x400
    # 6 m west and 10 m north of a (3 and 5 pixels): GDAL warps it onto each scene's grid.
    class_map = rastergen.write_raster(root / "landcover" / "classes.tif", classes[None], origin=(RASTER_ORIGIN[0] - 6, RASTER_ORIGIN[1] + 10))
    rastergen.write_category_table(class_map, names=RASTER_CLASSES)
    return {
        str(scenes / "far.tif"): "label_raster_mismatch",
        str(scenes / "rgb.tif"): "band_mismatch",
        str(scenes / "hostile.tif"): "raster_reference",
    }


def test_flink_raster_build_matches_direct_runner(flink_cluster: FlinkCluster, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    import rasterio
    from cropshard.reader import schema
    from rasterio.windows import Window

    expected_rejections = make_raster_inputs(tmp_path / "in")
    both = build_on_both(flink_cluster, tmp_path, [f"--input={tmp_path / 'in' / 'scenes'}", *RASTER_ARGS], "flink raster build")
    info, records = assert_same_dataset(both)
    reference = metadata.load_info(str(both.direct_out))

    assert rejections(both.flink_out) == expected_rejections, both.context
    assert (info.num_inputs, info.num_images_written, info.num_rejected) == (5, 2, 3), both.context
    assert info.labels == ("water", "crops", "trees") and info.channels == 4 and info.image_shape == (64, 64, 4)
    raster = info.raster
    assert raster["labels"]["names_from"] == f"category table of {tmp_path / 'in' / 'landcover' / 'classes.tif'}"
    assert raster["dtype"] == "uint16" and raster["crs_seen"] == ["EPSG:32613"] and raster["num_rasters"] == 2
    assert raster["chips_skipped"] == reference.raster["chips_skipped"] and raster["chips_skipped"]["nodata"] >= 1
    assert raster["chips_skipped"]["split_boundary"] >= 1
    assert info.num_examples + sum(raster["chips_skipped"].values()) == 36 + 9  # every chip of a (6x6) and b (3x3): stored or counted
    # Per-band statistics per split, from Beam combiners on both runners: present and equal.
    assert set(raster["stats"]) == {name for name, split in info.splits.items() if split.num_examples} and raster["stats"] == reference.raster["stats"]
    assert all(len(stats["mean"]) == 4 and stats["pixels"] == info.splits[split].num_examples * 64 * 64 and stats["images"] == info.splits[split].num_examples for split, stats in raster["stats"].items())

    # Each chip: the source's window read by rasterio, its own transform and CRS, in one split per 256 m block.
    split_of_block: dict[tuple[int, int], set[str]] = {}
    for split, serialized in records.items():
        for raw in serialized:
            record = schema.decode_example(raw)
            y, x, h, w = record.crop_box
            with rasterio.open(record.filename) as ds:
                window = Window(x, y, w, h)
                expected = np.moveaxis(ds.read(window=window), 0, -1)
                assert tuple(record.geo_transform) == ds.window_transform(window).to_gdal()
            assert record.geo_crs == "EPSG:32613" and record.dtype == "uint16" and record.label_text == info.labels[record.label]
            np.testing.assert_array_equal(np.frombuffer(record.encoded, "<u2").reshape(64, 64, 4), expected)
            x0, pixel_w, _, y0, _, pixel_h = record.geo_transform
            centre = (x0 + pixel_w * w / 2, y0 + pixel_h * h / 2)  # a chip inside one block: the centre's block
            split_of_block.setdefault((int(centre[0] // 256), int(centre[1] // 256)), set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_block.values()), split_of_block
    assert len(list(both.flink_out.glob("*.idx"))) == sum(len(split.shards) for split in info.splits.values())
    assert len(split_of_block) > 1, split_of_block

    flink_cluster.timings["flink raster job"] = both.job["duration"] / 1000
    summary = (
        f"[test_flink] raster job {both.job['jid']} FINISHED in {both.job['duration'] / 1000:.1f} s: {info.num_inputs} inputs = "
        f"{info.num_images_written} written + {info.num_rejected} rejected; {info.num_examples} chips "
        f"({', '.join(f'{n} {s.num_examples}' for n, s in info.splits.items())}), skipped {raster['chips_skipped']}; "
        f"SDK workers started per TaskManager {both.worker_starts}; shard files byte-identical to DirectRunner's"
    )
    announce(request.config, summary)

