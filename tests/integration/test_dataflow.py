"""Dataflow submission without Google Cloud: the real DataflowRunner builds the job with
--dry_run (nothing is submitted; no network), from the exact command launch/dataflow.sh runs, and
the sdist it stages for workers (--setup_file) installs into a clean virtualenv and imports.

What cannot be checked here: the submission itself, worker start-up on Dataflow, and the
launch/Dockerfile image (no Docker engine on these machines).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.options.pipeline_options import (
    TestOptions as BeamTestOptions,  # aliased: pytest would try to collect a Test* class
)
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient
from cropshard.pipeline.build import BuildResult, run
from cropshard.reader.version import __version__ as VERSION

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "transforms", "reader", "tools")
IMAGE = "us-docker.pkg.dev/my-project/images/cropshard:test"
SCRIPT_ENV = {"PROJECT": "my-project", "BUCKET": "my-bucket", "REGION": "europe-west4", "MACHINE_TYPE": "n2-standard-8",
              "MAX_WORKERS": "40", "JOB_NAME": "cropshard-dry-run", "SDK_CONTAINER_IMAGE": IMAGE, "DRY_RUN": "1"}
BUILD_ARGS = ["--input=gs://my-bucket/images/**", "--output=gs://my-bucket/datasets/photos-224", "--crop=center",
              "--size=224x224", "--encoding=jpeg", "--split=train=0.9,validation=0.1", "--num_shards=64"]


def script_command(env: dict[str, str], *args: str) -> list[str]:
    """The `cropshard` arguments launch/dataflow.sh would run, via its PRINT_ONLY mode."""
    out = subprocess.run(["bash", str(REPO / "launch" / "dataflow.sh"), *args], env={**os.environ, **env, "PRINT_ONLY": "1"},
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Python-level connection or DNS lookup fails the test: the dry run must be offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access during a dry run: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def staged_dir() -> Iterator[list[Path]]:
    """Beam stages into a fresh tempfile.mkdtemp() per job and leaves it behind; collect and remove them."""
    dirs: list[Path] = []
    yield dirs
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


def dry_run(argv: list[str], staged: list[Path]) -> tuple[BuildResult, apiclient.Job, dict[str, Path]]:
    result = run(argv, command_line=["cropshard", *argv])
    job = result.pipeline_result.job
    artifacts = {}
    for environment in job.proto_pipeline.components.environments.values():
        for dep in environment.dependencies:
            path = Path(beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path)
            artifacts[beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name] = path
            staged.append(path.parent)
    return result, job, artifacts


@pytest.mark.slow
def test_dataflow_dry_run_job(no_network: None, staged_dir: list[Path]) -> None:
    argv = script_command(SCRIPT_ENV, *BUILD_ARGS)
    assert argv[0] == "build"
    result, job, artifacts = dry_run(argv[1:], staged_dir)
    assert result.dry_run and result.info is None
    assert "dry run" in result.summary() and "not submitted" in result.summary()

    # The graph: every stage of the writer is in the job, per split.
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    for step in ("MatchImages", "Spread", "Encode/PlanRasters", "Encode/SpreadWork", "Encode/ImagesToExamples", "Write[train]/WriteShardsWithoutGrouping", "Write[validation]/WriteShardsWithoutGrouping",
                 "Describe[train]", "Describe[validation]", "WriteRejected", "WriteDatasetInfo"):
        assert step in names, step
    assert not any(name.startswith("ReadManifest") for name in names)

    # Worker environment: the custom image, this repo's sdist, no pickled __main__.
    (environment,) = {e.SerializeToString(): e for e in job.proto_pipeline.components.environments.values()}.values()
    assert environment.urn == "beam:env:docker:v1"
    assert beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image == IMAGE
    assert "workflow.tar.gz" in artifacts and artifacts["workflow.tar.gz"].name == f"cropshard-{VERSION}.tar.gz"
    assert "pickled_main_session" not in artifacts

    # Options as the runner holds them (they become the job's sdkPipelineOptions).
    options = job.options
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(BeamTestOptions).dry_run
    assert options.view_as(SetupOptions).setup_file == str(REPO / "setup.py")
    assert options.view_as(SetupOptions).save_main_session is False
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region, cloud.job_name) == ("my-project", "europe-west4", "cropshard-dry-run")
    assert cloud.temp_location.startswith("gs://my-bucket/cropshard/tmp/cropshard-dry-run.")  # Beam adds a per-job suffix
    assert cloud.staging_location.startswith("gs://my-bucket/cropshard/staging/cropshard-dry-run.")
    assert "use_runner_v2" in options.view_as(DebugOptions).experiments
    workers = options.view_as(WorkerOptions)
    assert (workers.machine_type, workers.max_num_workers, workers.sdk_container_image) == ("n2-standard-8", 40, IMAGE)
    assert job.proto.name == "cropshard-dry-run"

    # The job's environment section as it would be sent. At submission the runner builds it in
    # create_job_description, which also uploads; the Environment wrapper alone is offline.
    environment_proto = apiclient.Environment(
        packages=sorted(artifacts), options=options, environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url=f"{cloud.staging_location}/pipeline.pb", proto_pipeline=job.proto_pipeline).proto
    # Beam's Dataflow client (google-cloud-dataflow-client) messages are proto-plus: their own JSON.
    environment_json = json.loads(type(environment_proto).to_json(environment_proto))
    (pool,) = environment_json["workerPools"]
    assert pool["machineType"] == "n2-standard-8" and pool["autoscalingSettings"]["maxNumWorkers"] == 40
    assert [image["containerImage"] for image in pool["sdkHarnessContainerImages"]] == [IMAGE]
    assert any(package["name"] == "workflow.tar.gz" for package in pool["packages"])
    assert "use_runner_v2" in environment_json["experiments"]
    sdk_options = environment_json["sdkPipelineOptions"]["options"]
    assert sdk_options["setup_file"] == str(REPO / "setup.py") and sdk_options["save_main_session"] is False
    assert sdk_options["output"] == "gs://my-bucket/datasets/photos-224" and sdk_options["num_shards"] == 64


def test_dry_run_launch_rules(no_network: None) -> None:
    """Runners that ignore --dry_run would really build, so it is refused for them, with or
    without --num_shards (remote runners size shards from what the workers write, so a dry run
    needs no shard count)."""
    for shards in (["--num_shards=1"], []):
        with pytest.raises(ValueError, match="only honoured by DataflowRunner"):
            run(["--runner=DirectRunner", "--dry_run=True", "--input=/nonexistent/in/**", "--output=/nonexistent/out", "--size=8", *shards])


@pytest.mark.slow
def test_dataflow_script_dry_run_end_to_end(tmp_path: Path) -> None:
    """launch/dataflow.sh itself, as a user runs it (DRY_RUN=1): `python -m cropshard.pipeline build` exits 0."""
    env = {**os.environ, **SCRIPT_ENV, "PYTHON": sys.executable}
    env.pop("STORAGE_EMULATOR_HOST", None)
    done = subprocess.run(["bash", str(REPO / "launch" / "dataflow.sh"), *BUILD_ARGS], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: built job 'cropshard-dry-run', not submitted" in done.stdout


@pytest.mark.slow
def test_staged_sdist_installs_into_a_clean_venv(tmp_path: Path, staged_dir: list[Path]) -> None:
    """The sdist Dataflow would stage for --setup_file holds every module of the packages, and a
    worker-like environment that gets cropshard *only* from it imports all of them.

    Workers run `pip install workflow.tar.gz` (build a wheel, install it); here the wheel is built
    offline from the staged sdist and installed into a virtualenv without system site-packages.
    The dependencies (Beam, TensorFlow, ...) cannot be downloaded here, so that venv sees this
    venv's site-packages through a plain path line in a .pth file: a path line does not process
    the .pth files in that directory, so the editable install of this repo stays invisible and
    every cropshard module must come from the sdist.
    """
    _, _, artifacts = dry_run(script_command({**SCRIPT_ENV, "SDK_CONTAINER_IMAGE": ""}, *BUILD_ARGS)[1:], staged_dir)
    sdist = artifacts["workflow.tar.gz"]

    expected = sorted(
        path.relative_to(REPO).as_posix()
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert set(expected) <= in_sdist, sorted(set(expected) - in_sdist)

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(sdist)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob(f"cropshard-{VERSION}-*.whl")
    clean = tmp_path / "clean-venv"
    venv.create(clean, with_pip=False, system_site_packages=False)
    python = clean / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # This venv's pip installs into the clean one (`pip --python`): skips a slow ensurepip.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                   check=True, env=env, cwd=tmp_path)

    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, env=env, capture_output=True, text=True).stdout.strip())
    installed = sorted(p.relative_to(site / "cropshard").as_posix() for p in (site / "cropshard").rglob("*.py")
                       if "__pycache__" not in p.parts)
    assert installed == expected
    # Nothing but the one `cropshard` name goes into site-packages (besides the dist-info).
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name not in ("_distutils_hack", "distutils-precedence.pth")) == ["cropshard"]
    (dist_info,) = site.glob("cropshard-*.dist-info")
    assert (dist_info / "top_level.txt").read_text().split() == ["cropshard"]
    (site / "zz_dependencies_from_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    check = f"""
import importlib, json, pkgutil, sys
site = {str(site)!r}
loaded = []
for top in {["cropshard." + p for p in PACKAGES]!r}:
    package = importlib.import_module(top)
    loaded.append(package)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if not info.name.endswith(".__main__"):  # `python -m cropshard.pipeline`: runs the CLI when imported
            loaded.append(importlib.import_module(info.name))
outside = [m.__name__ + ": " + m.__file__ for m in loaded if not m.__file__.startswith(site)]
assert not outside, outside
from importlib.metadata import version
import apache_beam
print(json.dumps({{"modules": sorted(m.__name__ for m in loaded), "version": version("cropshard"), "beam": apache_beam.__version__}}))
"""
    done = subprocess.run([str(python), "-c", check], env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), (done.stdout, done.stderr[-3000:])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    modules = {"cropshard." + path[: -len(".py")].replace("/", ".").removesuffix(".__init__") for path in expected}
    modules = {name for name in modules if not name.endswith(".__main__")}  # not imported above: they run a CLI
    assert set(report["modules"]) == modules
    beam_pin = re.search(r"^apache-beam==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert report["version"] == VERSION and report["beam"] == beam_pin


@pytest.mark.parametrize("bucket", ["b", "gs://my-bucket", "My_Bucket", "my-bucket-", "a" * 64])
def test_dataflow_script_refuses_a_bucket_name_gcs_would_not_have(bucket: str) -> None:
    # BUCKET=b went to the network even with DRY_RUN=1 (120 s, then a RetryError naming a default staging bucket).
    done = subprocess.run(["bash", str(REPO / "launch" / "dataflow.sh"), *BUILD_ARGS],
                          env={**os.environ, "PROJECT": "p", "BUCKET": bucket, "PRINT_ONLY": "1"}, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (f"dataflow.sh: error: BUCKET={bucket} is not a GCS bucket name (3-63 characters: a-z 0-9 - _ ."
                                   " starting and ending with a letter or digit; no gs://)")
    assert script_command({"PROJECT": "p", "BUCKET": "my.bucket_2"}, *BUILD_ARGS)  # a valid name passes
