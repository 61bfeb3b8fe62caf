"""Assemble and run the writer pipeline.

    inputs ─ MatchImages / ReadManifest ─ Reshuffle ─ [DropDuplicates] ─ ImagesToExamples ─┬─ WriteSplit per split ─ DescribeShards ─┐
                                                    └─ label names ─ label map (side input) ┘  └─ rejected ─ WriteToText            ─┴─ WriteDatasetInfo

On the local DirectRunner the sources skip the Reshuffle: MatchImages lists the globs in hash
buckets (ReadManifest reads the manifest in line-number buckets) spread over the workers, and
the label names come from a listing of their own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TestOptions
from apache_beam.runners.runner import PipelineResult
from cropshard.pipeline.options import BuildConfig, build_config
from cropshard.reader import metadata
from cropshard.reader.version import __version__
from cropshard.transforms.dedup import DropDuplicates
from cropshard.transforms.discover import (
    REJECTED,
    ListLabelNames,
    MatchImages,
    ReadManifest,
    count_inputs,
    iter_matches,
)
from cropshard.transforms.examples import IMAGES_WRITTEN, RASTER_FACTS, ImagesToExamples, label_map
from cropshard.transforms.progress import ProgressMonitor
from cropshard.transforms.raster.launch import resolve_keep_dtype
from cropshard.transforms.rejects import Rejection
from cropshard.transforms.write import DescribeShards, WriteDatasetInfo, WriteSplit, join, prepare_output, shards_for

_LOGGER = logging.getLogger("cropshard")


def sorted_labels(names: Iterable[str]) -> list[str]:
    return list(label_map(list(names)))


def rejection_reason(line: str) -> str:
    return Rejection.from_json(line).reason


def build_pipeline(
    pipeline: beam.Pipeline,
    config: BuildConfig,
    num_shards: dict[str, int],
    command_line: Sequence[str] = (),
    progress_dir: str | None = None,
    listing_buckets: int | None = None,
) -> None:
    """Add the whole writer to `pipeline`. `listing_buckets`: spread the work by listing the
    inputs (or reading the manifest) in that many buckets instead of reshuffling the listed
    sources (see MatchImages; what the in-memory local runner needs)."""
    spec = config.example
    split_names = config.split_names if config.splits_from_input else None
    if config.manifest:
        manifest = ReadManifest(config.manifest, split_names, listing_buckets)
        found = pipeline | "ReadManifest" >> manifest
    else:
        found = pipeline | "MatchImages" >> MatchImages(config.inputs, config.labels, split_names, listing_buckets)
    sources, early_rejected = found["sources"], found[REJECTED]
    num_inputs = (
        (sources | "CountSources" >> beam.combiners.Count.Globally(), early_rejected | "CountEarlyRejected" >> beam.combiners.Count.Globally())
        | "Inputs" >> beam.Flatten()
        | "SumInputs" >> beam.CombineGlobally(sum)
    )
    if not listing_buckets:
        # Matching emits every file from one bundle; redistribute before the expensive decode.
        sources = sources | "Spread" >> beam.Reshuffle()
    rejected_parts = [early_rejected]
    if config.dedup:
        deduped = sources | "Dedup" >> DropDuplicates()
        sources = deduped["sources"]
        rejected_parts.append(deduped[REJECTED])

    if listing_buckets:
        # The label map is a side input, complete before any image is encoded: from a listing of
        # its own, since waiting for the bucketed sources would make the runner hold them all.
        if config.manifest:
            label_names = pipeline | "ListLabelNames" >> manifest.labels_only()
        else:
            label_names = pipeline | "ListLabelNames" >> ListLabelNames(config.inputs, config.labels, split_names)
    else:
        label_names = sources | "LabelNames" >> beam.Map(lambda source: source.label)
    labels = (
        label_names
        | "DistinctLabels" >> beam.Distinct()
        | "AllLabels" >> beam.combiners.ToList()
        | "SortLabels" >> beam.Map(sorted_labels)
    )
    results = sources | "ImagesToExamples" >> beam.ParDo(
        ImagesToExamples(spec, progress_dir), label_ids=beam.pvalue.AsSingleton(labels | "LabelIds" >> beam.Map(lambda names: {n: i for i, n in enumerate(names)}))
    ).with_outputs(*spec.split_names, REJECTED, IMAGES_WRITTEN, RASTER_FACTS)
    rejected_parts.append(results[REJECTED])

    shard_infos = []
    for split in spec.split_names:
        files = results[split] | f"Write[{split}]" >> WriteSplit(config.output, split, num_shards[split], config.compression)
        shard_infos.append(files | f"Describe[{split}]" >> DescribeShards(split, config.compression))

    rejected = rejected_parts | "AllRejected" >> beam.Flatten()
    rejected_files = rejected | "WriteRejected" >> beam.io.WriteToText(
        join(config.output, "rejected"), file_name_suffix=".jsonl", shard_name_template="", num_shards=1,
        compression_type=CompressionTypes.UNCOMPRESSED,
    )
    rejected_counts = rejected | "Reasons" >> beam.Map(rejection_reason) | "CountReasons" >> beam.combiners.Count.PerElement()
    images_written = results[IMAGES_WRITTEN] | "CountWritten" >> beam.combiners.Count.Globally()

    base = {
        "cropshard_version": __version__,
        "encoding": spec.encoding,
        "image_formats": ["jpeg", "png"] if spec.encoding == "original" else [spec.encoding],
        "channels": spec.channels,
        "image_shape": [*spec.crop.output_shape, spec.channels] if spec.crop.output_shape else None,
        "crop": spec.crop.to_dict(),
        "compression": config.compression,
        "split_names": list(spec.split_names),
        "command_line": list(command_line),
        "raster": {**spec.raster.to_dict(), "requested": spec.raster.requested, "channels": spec.channels},
    }
    raster_facts = results[RASTER_FACTS] | "SumRasterFacts" >> beam.CombinePerKey(sum)
    _ = {
        "shards": shard_infos | "AllShards" >> beam.Flatten(),
        "rejected_counts": rejected_counts,
        "num_inputs": num_inputs,
        "images_written": images_written,
        "labels": labels,
        "rejected_files": rejected_files,
        "raster_facts": raster_facts,
    } | "WriteDatasetInfo" >> WriteDatasetInfo(config.output, base)


# --- launcher-side planning ------------------------------------------------------------------


def estimated_record_bytes(config: BuildConfig, mean_source_bytes: float) -> float:
    """Rough bytes per example, only for choosing a shard count."""
    spec = config.example
    crop = spec.crop
    if spec.encoding == "original":
        return mean_source_bytes
    shape = crop.output_shape
    if shape is not None:
        raw = shape[0] * shape[1] * spec.channels
    elif crop.resize is not None:
        raw = crop.resize * crop.resize * 4 / 3 * spec.channels
    else:
        raw = mean_source_bytes * 10  # a typical JPEG stores a tenth of its decoded size
    return raw * {"raw": 1.0, "jpeg": 0.1, "png": 0.5}[spec.encoding]


def records_per_image(config: BuildConfig, mean_source_bytes: float) -> float:
    crop = config.example.crop
    if crop.strategy == "random":
        return crop.crops_per_image
    if crop.strategy == "grid" and crop.size:
        stride = crop.stride or crop.size
        return max(1.0, mean_source_bytes * 10 / 3 / (stride[0] * stride[1]))
    return 1.0


def count_manifest_rows(manifest: str) -> tuple[int, int]:
    rows = 0
    with FileSystems.open(manifest, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for line in handle:
            rows += bool(line.strip())
    return rows, 0


def plan_shards(config: BuildConfig, matched: tuple[int, int] | None, local: bool = False) -> dict[str, int]:
    """Shards per split: --num_shards; else 0 (runner-chosen) on the local DirectRunner; else an
    estimate from the matched count and sizes that puts shards near --target_shard_mb.

    Why 0 locally: WriteToTFRecord with a fixed shard count groups every serialized example by
    shard, and the DirectRunner holds grouped data in the launcher's memory, so its RSS would grow
    with the dataset (100k 128x128 raw crops = 4.8 GiB). With 0, each worker bundle streams into
    its own shard (one per worker and split) and memory stays flat. Flink and Dataflow shuffle
    outside memory, so they get the size-based count."""
    names = config.split_names
    if config.num_shards:
        return {name: config.num_shards for name in names}
    if local:
        return {name: 0 for name in names}
    files, total_bytes = matched or (0, 0)
    mean_source = total_bytes / files if files and total_bytes else 1_000_000
    total = files * records_per_image(config, mean_source) * estimated_record_bytes(config, mean_source)
    fractions = dict(config.example.split_fractions or ((name, 1 / len(names)) for name in names))
    return {name: shards_for(total * fractions[name], config.target_shard_mb) for name in names}


def listing_buckets(options: PipelineOptions) -> int:
    """Buckets for listing the inputs (globs or manifest) on the local DirectRunner: a few per
    worker, so the workers' shares stay even (the runner hands each worker a fixed part of them)."""
    workers = options.view_as(DirectOptions).direct_num_workers or 1
    return 4 * max(1, workers)


def with_runner_defaults(argv: Sequence[str]) -> list[str]:
    """No --runner means a local DirectRunner using every core (multi-process workers); no
    pickled main session on any runner."""
    argv = list(argv)
    flags = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    runner = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--runner=")), None)
    if runner is None and "--runner" in argv:
        runner = argv[argv.index("--runner") + 1]
    if runner is None:
        argv.append("--runner=DirectRunner")
    if runner in (None, "DirectRunner", "direct") and "--direct_running_mode" not in flags:
        argv.append("--direct_running_mode=multi_processing")
        if "--direct_num_workers" not in flags:
            argv.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if "--output_executable_path" not in flags:
        # Beam 2.62 lets every options view accept abbreviated flags, so PortableOptions would read
        # cropshard's --output as --output_executable_path and the Flink job server would write a
        # jar there instead of running the job. An explicit empty value keeps it unset.
        argv.append("--output_executable_path=")
    # Nothing needs --save_main_session: every function the workers run lives in the installed
    # packages (--setup_file), and Beam 2.62 does not pickle __main__ unless asked to.
    return argv


@dataclasses.dataclass
class BuildResult:
    info: metadata.DatasetInfo | None  # None when the launcher did not wait for the job (--dry_run, --no_wait_until_finish)
    wall_seconds: float
    output: str
    pipeline_result: PipelineResult | None = None  # the runner's result; with DataflowRunner --dry_run, `.job` is the built job
    dry_run: bool = False

    @property
    def images_per_second(self) -> float:
        return self.info.num_inputs / self.wall_seconds if self.info and self.wall_seconds else 0.0

    def summary(self) -> str:
        info = self.info
        if self.dry_run:
            job = getattr(self.pipeline_result, "job", None)
            return f"cropshard build -> {self.output}\n  dry run: built job {job.proto.name if job else '?'!r}, not submitted"
        if info is None:
            job_id = self.pipeline_result.job_id() if hasattr(self.pipeline_result, "job_id") else "(unknown id)"
            return f"cropshard build -> {self.output}\n  submitted job {job_id}, not waiting; {metadata.INFO_FILENAME} appears there when it succeeds"
        lines = [
            f"cropshard build -> {self.output}",
            f"  inputs {info.num_inputs} = {info.num_images_written} images written + {info.num_rejected} rejected  (reconciled)",
        ]
        for name, split in sorted(info.splits.items()):
            lines.append(f"  split {name:<12} {split.num_examples:>9} examples  {len(split.shards):>4} shards  {split.num_bytes / 2**20:10.2f} MiB")
        for reason, count in sorted(info.rejected.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  rejected {reason:<18} {count:>7}")
        if info.num_rejected:
            lines.append(f"  (details: {join(self.output, metadata.REJECTED_FILENAME)})")
        total_bytes = sum(split.num_bytes for split in info.splits.values())
        lines.append(f"  bytes written {total_bytes / 2**20:.2f} MiB   wall {self.wall_seconds:.1f} s   {self.images_per_second:.1f} images/s")
        return "\n".join(lines)


def read_info(output: str) -> metadata.DatasetInfo:
    path = join(output, metadata.INFO_FILENAME)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return metadata.DatasetInfo.from_json(handle.read().decode("utf-8"), source=path)


def is_dry_run(options: PipelineOptions) -> bool:
    """Beam's --dry_run (TestOptions) as DataflowRunner reads it: an untyped flag, so any value,
    even `--dry_run=False`, counts as set."""
    return bool(options.view_as(TestOptions).dry_run)


def has_inputs(config: BuildConfig) -> bool:
    """At least one input exists: one listing page, not the whole listing."""
    if config.manifest:
        return FileSystems.exists(config.manifest)
    return any(next(iter_matches(pattern), None) is not None for pattern in config.inputs)


def no_inputs_error(config: BuildConfig) -> FileNotFoundError:
    # gs:// has no directories: without a wildcard, gs://bucket/images names one object.
    bare = [p for p in config.inputs if "://" in p and not any(c in p for c in "*?[")]
    hint = f"; a folder on gs:// needs a trailing / or /** (e.g. {bare[0]}/)" if bare else ""
    return FileNotFoundError(f"no input files: {config.manifest or list(config.inputs)} matched nothing{hint}")


def run(argv: Sequence[str], command_line: Sequence[str] | None = None) -> BuildResult:
    """Parse `argv` (cropshard and Beam options), build the dataset, return its metadata and timing."""
    argv = with_runner_defaults(argv)
    options = PipelineOptions(argv)
    config = build_config(options)
    config = resolve_keep_dtype(config)  # --dtype keep -> the first raster's sample type
    start = time.monotonic()
    runner = options.view_as(StandardOptions).runner
    local = runner in ("DirectRunner", "direct", None)
    dry_run = is_dry_run(options)
    if dry_run:
        # A dry run only builds the job: it must not touch storage (no credentials needed, and
        # with --overwrite it must not delete anything), so it cannot check --output or list inputs.
        if (runner or "").split(".")[-1] not in ("DataflowRunner", "TestDataflowRunner"):
            raise ValueError(f"--dry_run is only honoured by DataflowRunner; with {runner} the build would really run")
        if not config.num_shards:
            raise ValueError("--dry_run does not list the inputs, so it cannot size shards: pass --num_shards")
        matched = None
    else:
        prepare_output(config.output, config.overwrite)
        if config.num_shards and not local:
            # Nothing needs the total (shard count given; progress is only shown for local runners):
            # skip listing every input from the launcher, ~500 list requests for 500k objects on gs://.
            if not has_inputs(config):
                raise no_inputs_error(config)
            matched = None
        else:
            matched = count_manifest_rows(config.manifest) if config.manifest else count_inputs(config.inputs)
            if matched[0] == 0:
                raise no_inputs_error(config)
    num_shards = plan_shards(config, matched, local)
    _LOGGER.info("building from %s inputs; shards per split %s; runner %s", matched[0] if matched else "(uncounted)", num_shards, runner)
    with tempfile.TemporaryDirectory(prefix="cropshard-progress-") as progress_dir:
        monitor = ProgressMonitor(progress_dir, matched[0], config.progress).start() if local and config.progress != "off" else None
        try:
            with beam.Pipeline(options=options) as pipeline:
                build_pipeline(
                    pipeline,
                    config,
                    num_shards,
                    command_line if command_line is not None else sys.argv,
                    progress_dir if monitor else None,
                    listing_buckets(options) if local else None,
                )
        finally:
            if monitor:
                monitor.stop()
    if dry_run or options.view_as(StandardOptions).no_wait_until_finish:
        return BuildResult(None, time.monotonic() - start, config.output, pipeline.result, dry_run=dry_run)
    return BuildResult(read_info(config.output), time.monotonic() - start, config.output, pipeline.result)


def main(argv: Sequence[str]) -> int:
    print(run(argv).summary())
    return 0
