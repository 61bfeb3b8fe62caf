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
import psutil
import pytest
from cropshard.reader import metadata

from tests import imagegen

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
        assert rc == 0, f"launch/flink_cluster.sh start exited {rc}:\n{tail(out, 80)}"
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


def test_flink_build_matches_direct_runner(
    flink_cluster: FlinkCluster, tmp_path: Path, record_property: Callable[[str, object], None], request: pytest.FixtureRequest
) -> None:
    record_property("flink_versions", flink_cluster.versions)
    inputs = tmp_path / "images"
    expected_rejections = make_inputs(inputs)
    flink_out, direct_out = tmp_path / "flink", tmp_path / "direct"
    jobs_before = {job["jid"] for job in rest(flink_cluster.rest_url, "/jobs/overview")["jobs"]}

    # The DirectRunner reference runs while flink.sh imports and the job server stages ~150 MB of
    # jars to Flink (mostly waiting), which keeps the module inside its time budget on 2 cores.
    reference_cmd = [sys.executable, "-m", "cropshard.pipeline", "build", "--runner=DirectRunner", "--direct_running_mode=in_memory", f"--input={inputs}", f"--output={direct_out}", *BUILD_ARGS]
    reference_log = tmp_path / "direct.log"
    started = time.monotonic()
    with reference_log.open("wb") as handle:
        reference = subprocess.Popen(reference_cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=flink_cluster.env)
        try:
            rc, flink_log = run_logged(["bash", str(LAUNCH / "flink.sh"), f"--input={inputs}", f"--output={flink_out}", *BUILD_ARGS], flink_cluster.env, tmp_path / "flink.log", timeout=900)
            flink_seconds = time.monotonic() - started
            reference_rc = reference.wait(timeout=600)
        finally:
            if reference.poll() is None:
                reference.kill()
                reference.wait()
    flink_cluster.timings["flink build"] = flink_seconds
    flink_cluster.timings["flink + reference"] = time.monotonic() - started
    context = f"{flink_cluster.versions}\nflink.sh log tail:\n{tail(flink_log)}"
    assert rc == 0, f"launch/flink.sh exited {rc}\n{context}\njob server log tail:\n{tail((flink_cluster.run_dir / 'log' / 'jobserver.log').read_text(errors='replace'))}"
    assert reference_rc == 0, f"DirectRunner reference exited {reference_rc}:\n{tail(reference_log.read_text(errors='replace'))}"
    assert "--runner=PortableRunner" in flink_log and "--parallelism=2" in flink_log, context
    assert "--environment_type=PROCESS" in flink_log and "--sdk_worker_parallelism=1" in flink_log, context
    assert "Traceback" not in flink_log, f"a successful run printed a traceback\n{context}"

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
        # A rolled part passes the target by less than a record; packed remainders stay below it,
        # and at most one shard of a split is under half the target (first-fit-decreasing).
        assert all(shard.num_bytes <= target + largest_record for shard in split.shards), f"{name}: {split.shards}"
        assert sum(shard.num_bytes < target / 2 for shard in split.shards) <= 1, f"{name}: {split.shards}"
    assert not list(flink_out.glob("beam-temp-*")), "Beam temp dirs left behind"

    # Same as the DirectRunner: identical multiset of records per split, rejections, labels, counts.
    reference_info = metadata.load_info(str(direct_out))
    flink_records = records_by_split(flink_out, info)
    assert {k: len(v) for k, v in flink_records.items()} == {name: split.num_examples for name, split in info.splits.items()}
    assert sum(len(v) for v in flink_records.values()) == 2 * good  # --crops_per_image=2
    assert flink_records == records_by_split(direct_out, reference_info), "Flink and DirectRunner records differ"
    assert rejections(flink_out) == rejections(direct_out)
    assert (flink_out / "labels.txt").read_text() == (direct_out / "labels.txt").read_text()
    assert {n: s.num_examples for n, s in info.splits.items()} == {n: s.num_examples for n, s in reference_info.splits.items()}
    assert info.rejected == reference_info.rejected
    # Stable contents (a local output): the very same shard and index files as the DirectRunner's.
    assert info.shard_contents == reference_info.shard_contents == metadata.SHARD_CONTENTS_STABLE
    assert info.splits == reference_info.splits, "Flink and DirectRunner shard layouts differ"
    different = [shard.file for split in info.splits.values() for shard in split.shards
                 if any((flink_out / f).read_bytes() != (direct_out / f).read_bytes() for f in (shard.file, shard.index))]
    assert not different, f"shard files differ from the DirectRunner's: {different}"

    # Flink's view: one new job, FINISHED, every vertex on both TaskManagers, and the decode
    # step's inputs split between them.
    new_jobs = [job for job in rest(flink_cluster.rest_url, "/jobs/overview")["jobs"] if job["jid"] not in jobs_before]
    assert len(new_jobs) == 1, new_jobs
    job = new_jobs[0]
    assert job["state"] == "FINISHED" and job["tasks"]["failed"] == 0 and job["tasks"]["finished"] == job["tasks"]["total"], job
    report = flink_job_report(flink_cluster.rest_url, job["jid"])
    flink_cluster.timings["flink job"] = job["duration"] / 1000
    # SDK workers in processes, one per slot, kept for the whole job: each TaskManager's log has
    # exactly one worker start (sdk_worker_main logs its options once when it starts).
    for i in (1, 2):
        starts = (flink_cluster.run_dir / "log" / f"taskmanager-{i}.log").read_text(errors="replace").count("Pipeline_options:")
        assert starts == 1, f"taskmanager-{i} started {starts} SDK workers"
    not_on_both = {name: v["taskmanagers"] for name, v in report["vertices"].items() if set(v["taskmanagers"]) != TASKMANAGER_IDS or v["status"] != "FINISHED"}
    assert not not_on_both, f"vertices not FINISHED on both TaskManagers: {not_on_both}"
    decode = [v["taskmanagers"] for name, v in report["vertices"].items() if "ImagesToExamples" in name]
    assert len(decode) == 1, list(report["vertices"])
    assert all(n > 0 for n in decode[0].values()) and sum(decode[0].values()) == info.num_inputs, decode[0]
    summary = (
        f"[test_flink] job {job['jid']} FINISHED in {job['duration'] / 1000:.1f} s: {job['tasks']['total']} tasks, "
        f"{len(report['vertices'])} vertices on {', '.join(sorted(TASKMANAGER_IDS))}; decode inputs per TaskManager {dict(sorted(decode[0].items()))}; "
        f"{info.num_inputs} inputs = {info.num_images_written} written + {info.num_rejected} rejected; shard files byte-identical to DirectRunner's"
    )
    record_property("flink_job", summary)
    announce(request.config, summary)
