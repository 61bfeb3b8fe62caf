"""Run a build from the command line's arguments: runner defaults, checks before the job, shard
planning (pipeline/shards.py), the pipeline (pipeline/assemble.py), then the dataset's metadata
and the summary text (pipeline/summary.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner
from cropshard.pipeline import summary
from cropshard.pipeline.arguments import check_build_arguments
from cropshard.pipeline.assemble import build_pipeline
from cropshard.pipeline.options import BuildConfig, build_config
from cropshard.pipeline.shards import plan_shards
from cropshard.reader import metadata
from cropshard.transforms.listing import bucket_must_exist, check_explicit_paths, count_inputs, iter_matches
from cropshard.transforms.manifest import manifest_kind
from cropshard.transforms.progress import ProgressMonitor
from cropshard.transforms.raster.launch import resolve_keep_dtype, resolve_label_names
from cropshard.transforms.raster.records import RasterSpec
from cropshard.transforms.write import (
    FAILED_FILENAME,
    ShardLayout,
    join,
    prepare_output,
    remove_shards,
    remove_temp_dirs,
    write_failure,
)

_LOGGER = logging.getLogger("cropshard")


class BuildFailed(RuntimeError):
    """The job ran but its dataset was refused (see transforms.write.refusal): exit 1, nothing published."""


def count_manifest_rows(manifest: str) -> tuple[int, int]:
    """(rows, 0) of a manifest, as count_inputs counts globs: its non-empty lines after the header
    row of a CSV/TSV (ReadManifest skips that line); 0 bytes: the sizes are not listed."""
    rows = 0
    with FileSystems.open(manifest, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        if manifest_kind(manifest) == "csv":
            next(handle, None)
        for line in handle:
            rows += bool(line.strip())
    return rows, 0


def shards_text(layouts: dict[str, ShardLayout]) -> str:
    """'train=auto, validation=4, test=~128 MiB' for the log (auto: one shard per worker bundle)."""
    def text(layout: ShardLayout) -> str:
        if layout.num_shards:
            return str(layout.num_shards)
        return f"~{layout.target_bytes / 2**20:g} MiB" if layout.target_bytes else "auto"

    return ", ".join(f"{split}={text(layout)}" for split, layout in layouts.items())


def listing_buckets(options: PipelineOptions) -> int:
    """Buckets for listing the inputs (globs or manifest) on the local DirectRunner: a few per
    worker, so the workers' shares stay even (the runner hands each worker a fixed part of them)."""
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers == 0:  # the FnApiRunner's "one per core"
        workers = os.cpu_count() or 1
    return 4 * max(1, workers or 1)


# Beam's runner names by the lower-case class name, as its create_runner resolves --runner:
# `Direct`, `directrunner` and `DirectRunner` are one runner.
_KNOWN_RUNNERS = {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}


def runner_name(runner: str | None) -> str | None:
    """The class name of the runner Beam runs for `--runner` (`direct` -> `DirectRunner`); an
    unknown name (a qualified path of another class) as given; None for no --runner."""
    if runner is None:
        return None
    lower = runner.lower()
    path = _KNOWN_RUNNERS.get(lower) or _KNOWN_RUNNERS.get(lower + "runner")
    if path is None and runner in StandardOptions.ALL_KNOWN_RUNNERS:
        path = runner
    return path.rsplit(".", 1)[-1] if path else runner


def with_runner_defaults(argv: Sequence[str]) -> list[str]:
    """No --runner means a local DirectRunner; a local DirectRunner without --direct_running_mode
    gets multi-process workers, one per core unless --direct_num_workers is given; every runner
    gets an empty --output_executable_path; Dataflow gets --no_save_main_session unless told."""
    argv = list(argv)
    flags = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    runner = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--runner=")), None)
    if runner is None and "--runner" in argv:
        runner = argv[argv.index("--runner") + 1]
    if runner is None:
        argv.append("--runner=DirectRunner")
    if is_local(runner) and "--direct_running_mode" not in flags:
        argv.append("--direct_running_mode=multi_processing")
        if "--direct_num_workers" not in flags:
            argv.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if "--output_executable_path" not in flags:
        # Beam 2.62 lets every options view accept abbreviated flags, so PortableOptions would read
        # cropshard's --output as --output_executable_path and the Flink job server would write a
        # jar there instead of running the job. An explicit empty value keeps it unset.
        argv.append("--output_executable_path=")
    if (runner_name(runner) or "").endswith("DataflowRunner") and not flags & {"--save_main_session", "--no_save_main_session"}:
        # Every function the workers run lives in the installed packages (--setup_file); Beam 2.77
        # would otherwise pickle the launcher's __main__ (the CLI) for Dataflow with cloudpickle.
        argv.append("--no_save_main_session")
    return argv


@dataclasses.dataclass
class BuildResult:
    info: metadata.DatasetInfo | None  # None when the launcher did not wait for the job (--dry_run, --no_wait_until_finish)
    wall_seconds: float
    output: str
    pipeline_result: PipelineResult | None = None  # the runner's result; with DataflowRunner --dry_run, `.job` is the built job
    dry_run: bool = False

    def summary(self) -> str:
        if self.dry_run:
            job = getattr(self.pipeline_result, "job", None)
            return summary.dry_run_summary(self.output, job.proto.name if job else "?")
        if self.info is None:
            job_id = self.pipeline_result.job_id() if hasattr(self.pipeline_result, "job_id") else "(unknown id)"
            return summary.submitted_summary(self.output, job_id)
        return summary.built_summary(self.output, self.info, self.wall_seconds)


def read_info(output: str) -> metadata.DatasetInfo:
    """The cropshard.json the job wrote; BuildFailed with the job's reason when it refused the dataset."""
    path = join(output, metadata.INFO_FILENAME)
    failed = join(output, FAILED_FILENAME)
    if not FileSystems.exists(path) and FileSystems.exists(failed):
        with FileSystems.open(failed, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            failure = json.loads(handle.read().decode("utf-8"))
        counts = failure.get("dataset_info") or {}
        # rejected.jsonl where the refusal is about rejections; else the reason is all there is to read.
        details = join(output, metadata.REJECTED_FILENAME if (counts.get("rejected") or {}).get("count") else FAILED_FILENAME)
        raise BuildFailed(f"{failure['reason']}; nothing published (details: {details})")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return metadata.DatasetInfo.from_json(handle.read().decode("utf-8"), source=path)


def published(output: str) -> bool:
    """Whether `output` holds a complete dataset: its cropshard.json, written last, is there and
    reads (a build never starts on an output that has one: see write.prepare_output)."""
    try:
        read_info(output)
    except Exception:  # noqa: BLE001 - missing, refused or cut short: not published
        return False
    return True


def is_dry_run(options: PipelineOptions) -> bool:
    """Beam's --dry_run (TestOptions) as DataflowRunner reads it: an untyped flag, so any value,
    even `--dry_run=False`, counts as set."""
    return bool(options.view_as(TestOptions).dry_run)


def is_local(runner: str | None) -> bool:
    """Whether the build runs on the launcher's machine: no --runner, or any name Beam reads as DirectRunner."""
    return runner_name(runner) in ("DirectRunner", None)


def local_runner(options: PipelineOptions) -> PipelineRunner:
    """The runner of a local build: Beam's FnApiRunner, made as DirectRunner makes it. DirectRunner
    itself first tries PrismRunner, which it downloads from GitHub where it can: a runner the local
    build's worker settings (--direct_running_mode, --direct_num_workers) do not apply to and that
    cropshard is not tested on; where it cannot, the try costs a pipeline translation (0.6 s here)
    before the fallback."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # The workers read the pipeline options from the provision info, as under DirectRunner.
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(provision))


def unmatched_patterns(config: BuildConfig) -> list[str]:
    """The --input patterns that match nothing: one listing page each, not the whole listing."""
    unmatched = []
    for pattern in config.inputs:
        with bucket_must_exist("--input", pattern):
            if next(iter_matches(pattern), None) is None:
                unmatched.append(pattern)
    return unmatched


def no_inputs_error(config: BuildConfig, manifest_exists: bool = True, unmatched: Sequence[str] | None = None) -> FileNotFoundError:
    """What matched nothing: the manifest, every pattern, or (`unmatched`) some of the patterns."""
    unmatched = list(config.inputs) if unmatched is None else list(unmatched)
    # gs:// has no directories: without a wildcard, gs://bucket/images names one object.
    bare = [p for p in unmatched if "://" in p and not any(c in p for c in "*?[")]
    hint = f"; a folder on gs:// needs a trailing / or /** (e.g. {bare[0]}/)" if bare else ""
    if config.manifest:
        return FileNotFoundError(f"--manifest {config.manifest} " + ("lists no inputs" if manifest_exists else "does not exist"))
    if len(unmatched) < len(config.inputs):  # the others match: this one would be dropped without a word
        return FileNotFoundError(f"--input {unmatched[0]} matched nothing (every --input pattern must match a file){hint}")
    return FileNotFoundError(f"no input files: {unmatched} matched nothing{hint}")


def check_inputs_exist(config: BuildConfig) -> None:
    """FileNotFoundError for a missing manifest or an --input pattern that matches nothing."""
    if config.manifest:
        if not FileSystems.exists(config.manifest):
            raise no_inputs_error(config, manifest_exists=False)
        return
    check_explicit_paths(config.inputs)
    unmatched = unmatched_patterns(config)
    if unmatched:
        raise no_inputs_error(config, unmatched=unmatched)


def check_raster_options_apply(config: BuildConfig, local: bool) -> None:
    """ValueError for raster options (--bands, --dtype, ...) on a build with no raster input:
    they would change nothing but cropshard.json. Known only by looking at the inputs' names
    (rasters are told by extension, transforms/raster/open_raster.py), so only where that is
    cheap: on the local runner, which lists every input anyway, or for local inputs and manifests."""
    given = raster_options_given(config.example.raster)
    remote = any("://" in path for path in (*config.inputs, config.manifest or ""))
    if not given or (remote and not local):
        return
    from cropshard.transforms.raster.launch import candidate_paths  # the launcher's one walk over raster inputs

    if next(candidate_paths(config), None) is None:
        raise ValueError(f"{given[0]} has no effect without raster inputs (GeoTIFF/COG or JPEG 2000), and no input is one: drop it")


def raster_options_given(raster: RasterSpec) -> list[str]:
    """The raster-only options a build sets, as typed (`--bands 3,2,1`), from its RasterSpec
    (not --to_uint8: it also converts 16-bit greyscale photos, PNG or TIFF)."""
    given = {
        "--bands": ",".join(map(str, raster.bands)) if raster.bands else None,
        "--dtype": raster.dtype if raster.dtype != RasterSpec.dtype else None,
        "--max_nodata": f"{raster.max_nodata:g}" if raster.max_nodata is not None else None,
        "--split_by": f"block:{raster.split_block:g}" if raster.split_block else None,
        "--split_crs": raster.split_crs,
    }
    if raster.labels is not None:
        given["--label_raster"] = raster.labels.pattern or "(the manifest's label_raster column)"
    return [f"{flag} {value}" for flag, value in given.items() if value is not None]


# Dataflow's worker-pool options (WorkerOptions): a local build reads none of them. `--num_workers 8`
# on a laptop ran one worker per core without a word.
_WORKER_POOL_OPTIONS = ("num_workers", "max_num_workers", "autoscaling_algorithm", "machine_type", "disk_size_gb")


def check_local_options(options: PipelineOptions) -> None:
    """ValueError for a bad --direct_num_workers, or a Dataflow worker-pool option on the local runner."""
    from apache_beam.options.pipeline_options import WorkerOptions

    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise ValueError(f"--direct_num_workers must be 1 or more (0: one per core), got {workers}")
    pool = options.view_as(WorkerOptions)
    given = [name for name in _WORKER_POOL_OPTIONS if getattr(pool, name) is not None]
    if given:
        raise ValueError(f"--{given[0]} sizes Dataflow's worker pool, and this build runs locally (DirectRunner), which ignores it:"
                         " --direct_num_workers N sets the local worker processes; or add --runner DataflowRunner")


def check_runner(options: PipelineOptions, runner: str) -> None:
    """ValueError for a --runner Beam does not know, PortableRunner without a job server, or
    DataflowRunner options its validator refuses (no --project, ...), before --output is touched:
    the job used to fail there, after --overwrite had removed the old dataset."""
    from apache_beam.options.pipeline_options import PortableOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.runner import create_runner

    try:
        instance = create_runner(runner)
    except ValueError as err:  # an unknown name: Beam's message lists the known ones
        raise ValueError(f"--runner {runner}: {err}") from err
    except Exception as err:  # noqa: BLE001 - a runner whose module does not import here (InteractiveRunner with this pandas)
        raise ValueError(f"--runner {runner} cannot be loaded here: {type(err).__name__}: {err}") from err
    name = type(instance).__name__
    if name == "InteractiveRunner":
        raise ValueError("--runner InteractiveRunner is for notebooks; a build runs on DirectRunner (the default), FlinkRunner, DataflowRunner or PortableRunner")
    if name == "PortableRunner" and not options.view_as(PortableOptions).job_endpoint:
        raise ValueError("--runner PortableRunner needs --job_endpoint HOST:PORT, a running job server (launch/flink.sh starts one)")
    if "Dataflow" not in name:
        return  # the validator is DataflowRunner's own check; it refuses options the portable runners accept
    errors = [" ".join(str(error).split()) for error in PipelineOptionsValidator(options, instance).validate()]
    if errors:
        raise ValueError(f"--runner {runner} cannot run with these options: {'; '.join(errors)}")


def check_dry_run(runner: str | None) -> None:
    """A dry run only builds the job: it must not touch storage (no credentials needed, and with
    --overwrite it must not delete anything), so it neither checks --output nor lists inputs."""
    if runner_name(runner) not in ("DataflowRunner", "TestDataflowRunner"):
        raise ValueError(f"--dry_run is only honoured by DataflowRunner; with {runner} the build would really run")


def prepare_build(config: BuildConfig, local: bool) -> tuple[int, int] | None:
    """Check the inputs exist and the raster options apply, prepare --output; returns the matched
    (inputs, bytes) on the local runner (its progress display needs the total), else None."""
    check_inputs_exist(config)
    check_raster_options_apply(config, local)
    matched = None
    # Shards are sized from what the workers write: off the local runner, skip listing every
    # input from the launcher (~500 list requests for 500k objects on gs://).
    if local:
        matched = count_manifest_rows(config.manifest) if config.manifest else count_inputs(config.inputs)
        if matched[0] == 0:
            raise no_inputs_error(config)  # before --output is made: a refused build leaves nothing behind
    prepare_output(config.output, config.overwrite)
    return matched


@dataclasses.dataclass
class PreparedBuild:
    """A checked command line, its output prepared and its shards planned: what `execute` runs."""

    options: PipelineOptions
    config: BuildConfig
    runner: str | None
    dry_run: bool
    matched: tuple[int, int] | None  # (inputs, bytes) when they were counted
    layouts: dict[str, ShardLayout]
    command_line: Sequence[str]
    start: float  # time.monotonic() when the work began

    @property
    def local(self) -> bool:
        return is_local(self.runner)


def check(argv: Sequence[str]) -> tuple[PipelineOptions, BuildConfig, str | None, dict[str, ShardLayout]]:
    """Every argument understood (UsageError otherwise) and every option validated (ValueError),
    --dtype keep and the class names resolved, shards planned: nothing is written. `compare`
    checks all its variants so before building the first."""
    check_build_arguments(argv)
    options = PipelineOptions(with_runner_defaults(argv))
    config = build_config(options)
    config = resolve_keep_dtype(config)  # --dtype keep -> the first raster's sample type
    config = resolve_label_names(config)  # no --label_names -> the first class map's category table
    runner = options.view_as(StandardOptions).runner
    layouts = plan_shards(config, is_local(runner))  # before --output is touched: it can refuse the options
    if is_local(runner):
        check_local_options(options)
    else:
        check_runner(options, runner)
    return options, config, runner, layouts


def prepare(argv: Sequence[str], command_line: Sequence[str] | None = None) -> PreparedBuild:
    """Everything before the job: `check`, then --output prepared (FileExistsError) and inputs
    found (FileNotFoundError)."""
    options, config, runner, layouts = check(argv)
    start = time.monotonic()
    dry_run = is_dry_run(options)
    if dry_run:
        check_dry_run(runner)
        matched = None
    else:
        matched = prepare_build(config, is_local(runner))
    return PreparedBuild(options, config, runner, dry_run, matched, layouts, command_line if command_line is not None else sys.argv, start)


def execute(build: PreparedBuild) -> BuildResult:
    """Run the job; BuildFailed when it refused the dataset. Interrupted (KeyboardInterrupt), it
    removes Beam's temp files and, unless the dataset was published, its shards from --output
    before the interrupt goes on."""
    config, options = build.config, build.options
    _LOGGER.info("building from %s inputs; shards per split: %s; runner %s",
                 build.matched[0] if build.matched else "(uncounted)", shards_text(build.layouts), build.runner)
    with tempfile.TemporaryDirectory(prefix="cropshard-progress-") as progress_dir:
        show_progress = build.local and config.progress != "off"
        monitor = ProgressMonitor(progress_dir, build.matched[0], config.progress).start() if show_progress else None
        finished = False
        try:
            runner = local_runner(options) if build.local else None
            with beam.Pipeline(runner=runner, options=options) as pipeline:
                build_pipeline(pipeline, config, build.layouts, build.command_line, progress_dir if monitor else None,
                               listing_buckets(options) if build.local else None)
            finished = True
        except KeyboardInterrupt:
            if not build.dry_run:
                remove_unpublished(config.output)
            raise
        except Exception as err:
            if not build.dry_run:
                record_failure(config.output, err)
            raise
        finally:
            if monitor:
                monitor.stop(final_line=finished)
    seconds = time.monotonic() - build.start
    if build.dry_run or options.view_as(StandardOptions).no_wait_until_finish:
        return BuildResult(None, seconds, config.output, pipeline.result, dry_run=build.dry_run)
    return BuildResult(read_info(config.output), seconds, config.output, pipeline.result)


def remove_unpublished(output: str) -> None:
    """What a job that stopped early leaves in `output`: Beam's temp files, and unless it published
    the dataset, the shards it had written (a split may rename its shards into place before the
    job ends), where a glob (`train-*.tfrecord`) would take them for data."""
    remove_temp_dirs(output)
    if not published(output):
        remove_shards(output)


def record_failure(output: str, err: BaseException) -> None:
    """After a failed job, what a refused build leaves: no Beam temp files nor shards, and build_failed.json
    (write.py's format; no dataset_info: the job never counted) with the job's error, so the
    folder says why and --overwrite knows it for a cropshard build. Best effort: the job's error
    is what the caller reports, not a second one from here."""
    from cropshard.pipeline.cli import failure_line

    try:
        remove_unpublished(output)
        write_failure(output, f"the job failed: {failure_line(err)}", None)
    except Exception:  # noqa: BLE001 - e.g. no write access left to the output
        _LOGGER.warning("could not record the failure in %s", output, exc_info=True)


def run(argv: Sequence[str], command_line: Sequence[str] | None = None) -> BuildResult:
    """Parse `argv` (cropshard and Beam options), build the dataset, return its metadata and timing."""
    return execute(prepare(argv, command_line))
