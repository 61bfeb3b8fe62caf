"""Assemble the writer pipeline.

    inputs ─ MatchImages / ReadManifest ─ Reshuffle ─ [DropDuplicates] ─ ImagesToExamples ─┬─ WriteSplit per split ─ DescribeShards ─┐
                                                    └─ label names ─ label map (side input) ┘  └─ rejected ─ WriteToText            ─┴─ WriteDatasetInfo

Raster sources: PlanRasters (checked, cut into tasks) ─ Reshuffle ─ ImagesToExamples with the photos; the
tasks' outcomes ─ ReconcileRasters (one verdict per source: written, or rejected) join the counts above.

With `listing_buckets` (the local DirectRunner) the sources skip the Reshuffle: MatchImages lists
the globs in hash buckets (ReadManifest reads the manifest in line-number buckets) spread over the
workers, and the label names come from a listing of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from cropshard.pipeline.options import BuildConfig
from cropshard.reader.version import __version__
from cropshard.transforms.dedup import DropDuplicates
from cropshard.transforms.examples import IMAGES_WRITTEN, ExampleSpec, ImagesToExamples, label_map
from cropshard.transforms.globs import LABELS_NONE, ListLabelNames, MatchImages
from cropshard.transforms.manifest import ReadManifest
from cropshard.transforms.raster.plan import PHOTOS, PlanRasters
from cropshard.transforms.raster.range_pass import PreviewStats, conversion_range
from cropshard.transforms.raster.stats import CombineBandStats, MergeBandStats
from cropshard.transforms.raster.tasks import (
    RASTER_FACTS,
    RASTER_STATS,
    RASTER_TASKS,
    SOURCES_WRITTEN,
    TASK_OUTCOMES,
    ReconcileRasters,
)
from cropshard.transforms.rejects import REJECTED, Rejection
from cropshard.transforms.write import (
    DatasetFacts,
    DescribeShards,
    ShardLayout,
    WriteDatasetInfo,
    WriteSplit,
    join,
    shard_contents,
    writes_runs,
)


def sorted_labels(names: Iterable[str]) -> list[str]:
    return list(label_map(list(names)))


def label_ids(names: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


def rejection_reason(line: str) -> str:
    return Rejection.from_json(line).reason


def original_formats(dtype: str) -> tuple[str, ...]:
    """The formats an `--encoding original` dataset holds: JPEG and PNG, PNG alone for samples
    wider than uint8 (JPEG stores uint8 only; photos are rejected from such a dataset)."""
    return ("jpeg", "png") if dtype == "uint8" else ("png",)


def dataset_facts(config: BuildConfig, command_line: Sequence[str], layouts: Iterable[ShardLayout]) -> DatasetFacts:
    """What cropshard.json records about the build options and the shard layouts."""
    spec = config.example
    return DatasetFacts(
        cropshard_version=__version__,
        encoding=spec.encoding,
        image_formats=original_formats(spec.raster.dtype) if spec.encoding == "original" else (spec.encoding,),
        channels=spec.channels,
        image_shape=(*spec.crop.output_shape, spec.channels) if spec.crop.output_shape else None,
        crop=spec.crop.to_dict(),
        compression=config.compression,
        split_names=tuple(spec.split_names),
        command_line=tuple(command_line),
        # Always the build's own raster options: a --to_uint8 rule alone does not make `requested`
        # (it changes no photo's path), yet it is how every wider raster found was converted.
        raster={**spec.raster.to_dict(), "requested": spec.raster.requested, "channels": spec.channels},
        shard_contents=shard_contents(layouts),
    )


def read_inputs(
    pipeline: beam.Pipeline, config: BuildConfig, listing_buckets: int | None
) -> tuple[beam.PCollection, beam.PCollection, list[beam.PCollection], beam.PCollection]:
    """(sources to encode, the input count, the rejections so far, the sorted label names): the
    inputs listed, spread over the workers and, with --dedup, without byte-identical copies."""
    split_names = config.split_names if config.splits_from_input else None
    if config.manifest:
        manifest = ReadManifest(config.manifest, split_names, listing_buckets)
        found = pipeline | "ReadManifest" >> manifest
        list_label_names = manifest.labels_only
    else:
        found = pipeline | "MatchImages" >> MatchImages(config.inputs, config.labels, split_names, listing_buckets)
        list_label_names = functools.partial(ListLabelNames, config.inputs, config.labels, split_names)
    sources, early_rejected = found["sources"], found[REJECTED]
    num_inputs = (
        (sources | "CountSources" >> beam.combiners.Count.Globally(), early_rejected | "CountEarlyRejected" >> beam.combiners.Count.Globally())
        | "Inputs" >> beam.Flatten()
        | "SumInputs" >> beam.CombineGlobally(sum)
    )
    if not listing_buckets:
        # Matching emits every file from one bundle; redistribute before the expensive decode.
        sources = sources | "Spread" >> beam.Reshuffle()
    rejected = [early_rejected]
    if config.dedup:
        deduped = sources | "Dedup" >> DropDuplicates()
        sources = deduped["sources"]
        rejected.append(deduped[REJECTED])
    if config.example.raster.labels:  # class maps label the chips: their names, in id order
        labels = pipeline | "ClassNames" >> beam.Create([list(config.example.raster.labels.names)])
    elif config.labels == LABELS_NONE and not config.manifest:  # every image unlabeled (-1): no names to gather
        labels = pipeline | "NoLabels" >> beam.Create([[]])
    elif listing_buckets:
        # The label map is a side input, complete before any image is encoded: from a listing of
        # its own, since waiting for the bucketed sources would make the runner hold them all.
        labels = pipeline | "ListLabelNames" >> list_label_names() | "Labels" >> SortedNames()
    else:
        labels = sources | "LabelNames" >> beam.Map(lambda source: source.label) | "Labels" >> SortedNames()
    return sources, num_inputs, rejected, labels


class SortedNames(beam.PTransform):
    """Label names, one per image -> one element: the distinct names in label-id order."""

    def expand(self, names: beam.PCollection[str]) -> beam.PCollection[list[str]]:
        return names | "Distinct" >> beam.Distinct() | "All" >> beam.combiners.ToList() | "Sort" >> beam.Map(sorted_labels)


def write_outputs(
    config: BuildConfig,
    layouts: dict[str, ShardLayout],
    results: dict[str, beam.PCollection],
    rejected: list[beam.PCollection],
    num_inputs: beam.PCollection,
    labels: beam.PCollection,
    facts: DatasetFacts,
    ranges: beam.PCollection | None = None,
) -> None:
    """The shards of every split, rejected.jsonl, then (waiting for both) labels.txt and cropshard.json."""
    shard_infos = []
    for split in config.split_names:
        files = results[split] | f"Write[{split}]" >> WriteSplit(config.output, split, layouts[split], config.compression)
        shard_infos.append(files | f"Describe[{split}]" >> DescribeShards(split, config.compression))
    all_rejected = rejected | "AllRejected" >> beam.Flatten()
    rejected_files = all_rejected | "WriteRejected" >> beam.io.WriteToText(
        join(config.output, "rejected"), file_name_suffix=".jsonl", shard_name_template="", num_shards=1,
        compression_type=CompressionTypes.UNCOMPRESSED,
    )
    rejected_counts = all_rejected | "Reasons" >> beam.Map(rejection_reason) | "CountReasons" >> beam.combiners.Count.PerElement()
    images_written = results[IMAGES_WRITTEN] | "CountWritten" >> beam.CombineGlobally(sum)  # per-bundle counts
    raster_facts = results[RASTER_FACTS] | "SumRasterFacts" >> beam.CombinePerKey(sum)  # CRSs seen, chips skipped
    raster_stats = results[RASTER_STATS] | "BandStats" >> beam.CombinePerKey(CombineBandStats())  # per split
    _ = {
        "shards": shard_infos | "AllShards" >> beam.Flatten(),
        "rejected_counts": rejected_counts,
        "num_inputs": num_inputs,
        "images_written": images_written,
        "labels": labels,
        "rejected_files": rejected_files,
        "raster_facts": raster_facts,
        "raster_stats": raster_stats,
        **({"raster_ranges": ranges} if ranges is not None else {}),
    } | "WriteDatasetInfo" >> WriteDatasetInfo(config.output, facts, config.max_rejected_fraction)


SPREAD_ALL, SPREAD_TASKS, SPREAD_NONE = "all", "tasks", "none"


def spread_mode(spec: ExampleSpec, listing_buckets: int | None) -> str:
    """How EncodeSources redistributes its work (see there): everything on Flink and Dataflow; on
    the local runner the raster tasks of a build that chips rasters (a grid crop or raster
    options), else nothing."""
    if listing_buckets is None:
        return SPREAD_ALL
    return SPREAD_TASKS if spec.crop.strategy == "grid" or spec.raster.requested else SPREAD_NONE


class EncodeSources(beam.PTransform):
    """Sources -> {split: examples, images_written, raster_facts, raster_stats, rejected}.

    Raster sources are planned into tasks; photos and tasks then meet in ImagesToExamples, the one
    producer of the examples (a Flatten of examples would be materialized by the local runner:
    every pixel held in the launcher). `spread`:

    - "all" (Flink, Dataflow): photos and tasks on one output of PlanRasters, one Reshuffle, no
      Flatten: Beam's Java fuser (job server 2.70) gave a Flatten of photos and reshuffled tasks
      two producers ("should have exactly one producing PTransformNode"); sources were reshuffled
      there anyway.
    - "tasks" (local runner, builds that chip rasters): the tasks reshuffled, so one huge raster is
      chipped by every worker, and flattened with the photos, which stay in their listing buckets.
      The local runner holds a Flatten's elements in the launcher: ~1.2 KB per photo source.
    - "none" (local runner, photo builds): one output, nothing redistributed, memory flat in the
      number of photos (the listing buckets already spread them)."""

    def __init__(self, spec: ExampleSpec, label_ids: beam.PCollection, ranges: beam.PCollection | None = None,
                 progress_dir: str | None = None, spread: str = SPREAD_TASKS, runs: bool = False) -> None:
        super().__init__()
        if spread not in (SPREAD_ALL, SPREAD_TASKS, SPREAD_NONE):
            raise ValueError(f"spread must be {SPREAD_ALL!r}, {SPREAD_TASKS!r} or {SPREAD_NONE!r}, not {spread!r}")
        self._spec, self._label_ids, self._ranges, self._progress_dir = spec, label_ids, ranges, progress_dir
        self._spread = spread
        self._runs = runs  # raster chips as RunRecords for the stable split writers (write.writes_runs)

    def expand(self, sources: beam.PCollection) -> dict[str, beam.PCollection]:
        spec = self._spec
        side = {"ranges": beam.pvalue.AsDict(self._ranges)} if self._ranges is not None else {}
        plan = PlanRasters(spec, PHOTOS if self._spread == SPREAD_TASKS else RASTER_TASKS, self._progress_dir)
        planned = sources | "PlanRasters" >> beam.ParDo(plan, **side).with_outputs(PHOTOS, RASTER_TASKS, REJECTED)
        if self._spread == SPREAD_ALL:
            work = planned[RASTER_TASKS] | "SpreadWork" >> beam.Reshuffle()
        elif self._spread == SPREAD_TASKS:
            work = (planned[PHOTOS], planned[RASTER_TASKS] | "SpreadTasks" >> beam.Reshuffle()) | "Work" >> beam.Flatten()
        else:
            work = planned[RASTER_TASKS]
        results = work | "ImagesToExamples" >> beam.ParDo(
            ImagesToExamples(spec, self._progress_dir, self._runs), label_ids=beam.pvalue.AsSingleton(self._label_ids), **side
        ).with_outputs(*spec.split_names, REJECTED, IMAGES_WRITTEN, RASTER_STATS, TASK_OUTCOMES)
        verdicts = results[TASK_OUTCOMES] | "ReconcileRasters" >> ReconcileRasters()
        return {
            **{split: results[split] for split in spec.split_names},
            # Photos: one count per bundle; rasters: one element (the split) per source written.
            IMAGES_WRITTEN: (results[IMAGES_WRITTEN], verdicts[SOURCES_WRITTEN] | "OneEach" >> beam.Map(lambda unused: 1))
            | "SourcesWritten" >> beam.Flatten(),
            RASTER_FACTS: verdicts[RASTER_FACTS],
            RASTER_STATS: results[RASTER_STATS],
            REJECTED: (planned[REJECTED], results[REJECTED], verdicts[REJECTED]) | "Rejected" >> beam.Flatten(),
        }


def build_pipeline(
    pipeline: beam.Pipeline,
    config: BuildConfig,
    layouts: dict[str, ShardLayout],
    command_line: Sequence[str] = (),
    progress_dir: str | None = None,
    listing_buckets: int | None = None,
) -> None:
    """Add the whole writer to `pipeline`. `listing_buckets`: spread the work by listing the
    inputs (or reading the manifest) in that many buckets instead of reshuffling the listed
    sources (see MatchImages; what the in-memory local runner needs)."""
    spec = config.example
    sources, num_inputs, rejected, labels = read_inputs(pipeline, config, listing_buckets)
    ranges = conversion_ranges(sources, config) if spec.raster.to_uint8.needs_dataset_range and spec.raster.dtype == "uint8" else None
    ids = labels | "LabelIds" >> beam.Map(label_ids)
    encode = EncodeSources(spec, ids, ranges, progress_dir, spread_mode(spec, listing_buckets), writes_runs(layouts.values()))
    results = sources | "Encode" >> encode
    rejected.append(results[REJECTED])
    write_outputs(config, layouts, results, rejected, num_inputs, labels, dataset_facts(config, command_line, layouts.values()), ranges)


def conversion_ranges(sources: beam.PCollection, config: BuildConfig) -> beam.PCollection:
    """--to_uint8 minmax|percentile: (source dtype, (low, high) per band) over every raster's preview."""
    spec = config.example
    return (
        sources
        | "PreviewStats" >> beam.ParDo(PreviewStats(spec.crop, spec.raster, spec.channels, spec.max_pixels))
        | "DatasetPreviewStats" >> beam.CombinePerKey(MergeBandStats())
        | "ConversionRange" >> beam.FlatMap(conversion_range, spec.raster.to_uint8)
    )
