"""Write the dataset: one `WriteToTFRecord` per split, each shard described (record count, bytes,
and its record index file), then labels.txt, TFDS's dataset_info.json + features.json,
croissant.json and cropshard.json last; and `prepare_output`, which clears --output before a build.

The metadata step takes every shard's final file name (the output of WriteToTFRecord's
finalize) as a side input, so it cannot run before all shards are renamed into place: the
presence of cropshard.json means the dataset is complete.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from cropshard.reader import integrity, metadata, schema, shard_index
from cropshard.transforms import croissant, tfds_info
from cropshard.transforms.listing import bucket_must_exist, is_folder_placeholder
from cropshard.transforms.raster.chips import mixed_crs_refusal
from cropshard.transforms.raster.records import RasterSpec
from cropshard.transforms.rejects import REASONS, rejection_summary
from cropshard.transforms.sharding import WriteShardsWithoutGrouping, WriteStableShards, unique_temp_dir
from cropshard.transforms.types import unicode_twins
from cropshard.transforms.worker import setup_worker

SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
# Written instead of cropshard.json when a build is refused (no example, too many rejected):
# the directory is then incomplete, and this file says why.
FAILED_FILENAME = "build_failed.json"
# Written first, before any shard, and removed once cropshard.json or build_failed.json is: a
# build cut short (killed, the machine lost) is told from another tool's TFRecords by it.
STARTED_FILENAME = "build_started.json"
# Part size when only a shard count is given: parts are then split by records anyway.
DEFAULT_PART_BYTES = 128 * 2**20
# cropshard.json is written under this prefix, then renamed into place (publish_text).
PARTIAL_PREFIX = ".partial-"
_LOGGER = logging.getLogger(__name__)


def shard_suffix(compression: str) -> str:
    return ".tfrecord.gz" if compression == metadata.COMPRESSION_GZIP else ".tfrecord"


def shard_file_name(path: str) -> str:
    """The file name of a written shard, from its local or gs:// path (as cropshard.json lists it)."""
    return re.split(r"[/\\]", path)[-1]


def beam_compression(compression: str) -> str:
    return CompressionTypes.GZIP if compression == metadata.COMPRESSION_GZIP else CompressionTypes.UNCOMPRESSED


def join(directory: str, name: str) -> str:
    return FileSystems.join(directory, name)


def record_spans(path: str, compression: str) -> list[tuple[int, int]]:
    """(offset, size) of every record in one shard, each checked against its CRCs by the reader's
    TFRecord scanner (the project's one framing parser), reading through Beam's filesystems so
    gs:// works on workers. Offsets are into the decompressed stream for gzip."""
    spans: list[tuple[int, int]] = []
    with FileSystems.open(path, compression_type=beam_compression(compression)) as handle:
        count, error, offset = integrity.scan_records(handle, on_record=lambda start, size: spans.append((start, size)))
    if error is not None:
        raise ValueError(f"shard {path} just written is damaged: {error} at byte offset {offset} (record index {count})")
    return spans


def describe_shard(path: str, compression: str) -> metadata.ShardInfo:
    """Scan one final shard and write its record index next to it."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    spans = record_spans(path, compression)
    write_text(path + shard_index.INDEX_SUFFIX, shard_index.format_index(spans))
    return metadata.ShardInfo(shard_file_name(path), len(spans), size, shard_index.index_file_name(shard_file_name(path)))


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """How one split's records become shard files: exactly `num_shards` if > 0; else shards near
    `target_bytes` if > 0; else one shard per worker bundle (Beam's runner-chosen sharding).
    `stable`: which records a shard holds, and their order, depend on the records alone
    (transforms/sharding.py's WriteStableShards); needs a count or a target size."""

    num_shards: int = 0
    target_bytes: int = 0
    stable: bool = False

    def __post_init__(self) -> None:
        if self.stable and not (self.num_shards or self.target_bytes):
            raise ValueError("stable shard contents need a shard count or a target size")

    def __str__(self) -> str:
        if self.num_shards:
            text = f"{self.num_shards} shards"
        elif self.target_bytes:
            text = f"shards near {self.target_bytes / 2**20:g} MiB"
        else:
            return "one shard per worker bundle"
        return text + (", stable contents" if self.stable else "")


def shard_contents(layouts: Iterable[ShardLayout]) -> str:
    """cropshard.json's `shard_contents`: stable only when every split's shards are."""
    flags = [layout.stable for layout in layouts]
    stable = bool(flags) and all(flags)
    return metadata.SHARD_CONTENTS_STABLE if stable else metadata.SHARD_CONTENTS_RUNNER_CHOSEN


def writes_runs(layouts: Iterable[ShardLayout]) -> bool:
    """Whether raster tasks' chips reach the split writers as RunRecords, shards of their own with
    no second copy (transforms/sharding.py): with stable contents by target size in every split
    (an exact --num_shards cuts all of a split's records by count)."""
    layouts = list(layouts)
    return bool(layouts) and all(layout.stable and not layout.num_shards for layout in layouts)


class WriteSplit(beam.PTransform):
    """Serialized examples -> `<output>/<split>-SSSSS-of-NNNNN.tfrecord[.gz]`; outputs final file names.

    A fixed count or a target size goes through `WriteShardsWithoutGrouping` (part files per
    bundle, then renamed or concatenated): no runner ever holds a shard's records as one grouped
    value, which is what Beam's `WriteToTFRecord(num_shards=N)` does; with `layout.stable` through
    `WriteStableShards` (the same parts, then records copied into shards in key order; raster tasks'
    RunRecords into shards of their own, renamed parts). Runner-chosen
    sharding is Beam's own per-bundle write (one shard per worker and split on the local runner)."""

    def __init__(self, output: str, split: str, layout: ShardLayout, compression: str) -> None:
        super().__init__()
        self._output = output
        self._prefix = join(output, split)
        self._split = split
        self._layout = layout
        self._compression = compression

    def expand(self, examples: beam.PCollection) -> beam.PCollection:
        suffix = shard_suffix(self._compression)
        if self._layout.num_shards or self._layout.target_bytes:
            write = WriteStableShards if self._layout.stable else WriteShardsWithoutGrouping
            return examples | write(
                self._prefix,
                suffix,
                unique_temp_dir(self._output, self._split),
                beam_compression(self._compression),
                self._layout.num_shards,
                self._layout.target_bytes or DEFAULT_PART_BYTES,
            )
        return examples | beam.io.WriteToTFRecord(
            self._prefix,
            file_name_suffix=suffix,
            num_shards=0,
            shard_name_template=SHARD_TEMPLATE,
            compression_type=beam_compression(self._compression),
        )


class _ShardInfo(beam.DoFn):
    def __init__(self, split: str, compression: str) -> None:
        self._split = split
        self._compression = compression

    def setup(self) -> None:
        setup_worker()  # the fast CRC32C for the shard check

    def process(self, path: str) -> Iterator[tuple[str, metadata.ShardInfo]]:
        yield self._split, describe_shard(path, self._compression)


class DescribeShards(beam.PTransform):
    """Final shard file names of one split -> (split, ShardInfo) with record counts, bytes and
    index file; writes each shard's record index (reader.shard_index) next to it."""

    def __init__(self, split: str, compression: str) -> None:
        super().__init__()
        self._split = split
        self._compression = compression

    def expand(self, files: beam.PCollection) -> beam.PCollection:
        return files | beam.Reshuffle() | beam.ParDo(_ShardInfo(self._split, self._compression))


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """The cropshard.json fields the launcher knows before any image is read."""

    cropshard_version: str
    encoding: str
    image_formats: tuple[str, ...]
    channels: int
    image_shape: tuple[int, int, int] | None  # None when image sizes vary
    crop: Mapping[str, Any]  # CropSpec.to_dict()
    compression: str
    split_names: tuple[str, ...]
    command_line: tuple[str, ...]
    # RasterSpec.to_dict() plus `requested` (raster options given) and `channels`; None: the defaults
    raster: Mapping[str, Any] | None = None
    shard_contents: str = metadata.SHARD_CONTENTS_RUNNER_CHOSEN


def group_splits(split_names: Sequence[str], shards: Iterable[tuple[str, metadata.ShardInfo]]) -> dict[str, metadata.SplitInfo]:
    """(split, ShardInfo) pairs -> SplitInfo per split, shards sorted by file name; every named
    split is present, even one that received no shard."""
    by_split: dict[str, list[metadata.ShardInfo]] = {name: [] for name in split_names}
    for split, shard in shards:
        by_split.setdefault(split, []).append(shard)
    return {
        name: metadata.SplitInfo(name, sum(s.num_records for s in files), tuple(sorted(files, key=lambda s: s.file)))
        for name, files in by_split.items()
    }


def dataset_info(
    facts: DatasetFacts,
    splits: Mapping[str, metadata.SplitInfo],
    labels: Sequence[str],
    rejected: Mapping[str, int],
    num_inputs: int,
    images_written: int,
    created: str,
    raster_facts: Mapping[tuple[str, str], int] | None = None,
    raster_stats: Mapping[str, Mapping[str, Any]] | None = None,
    raster_ranges: Mapping[str, Any] | None = None,
) -> metadata.DatasetInfo:
    # Without raster options, rasters found among the inputs were read with the defaults.
    defaults = {**RasterSpec().to_dict(), "requested": False, "channels": facts.channels}
    raster = raster_section(facts.raster or defaults, raster_facts or {}, raster_stats or {})
    if raster is not None and raster_ranges is not None:  # --to_uint8 minmax|percentile: what was stretched by
        raster["to_uint8_range"] = {dtype: {"low": list(low), "high": list(high)} for dtype, (low, high) in sorted(raster_ranges.items())}
    return metadata.DatasetInfo(
        cropshard_version=facts.cropshard_version,
        created=created,
        encoding=facts.encoding,
        image_formats=facts.image_formats,
        channels=facts.channels,
        image_shape=facts.image_shape,
        crop=dict(facts.crop),
        labels=tuple(labels),
        splits=dict(splits),
        compression=facts.compression,
        num_inputs=num_inputs,
        num_images_written=images_written,
        rejected={reason: int(count) for reason, count in rejected.items()},
        schema=schema.schema_description(raster=raster is not None),
        command_line=facts.command_line,
        raster=raster,
        shard_contents=facts.shard_contents,
    )


def check_publishable(info: metadata.DatasetInfo) -> None:
    """RuntimeError unless the counts reconcile, the shard list is complete and every rejection
    reason is documented: such a dataset is never published."""
    if info.num_inputs != info.num_images_written + info.num_rejected:
        # A dropped or double-counted input is a bug in cropshard.
        raise RuntimeError(
            f"counts do not reconcile: {info.num_inputs} inputs != {info.num_images_written} written"
            f" + {info.num_rejected} rejected"
        )
    if info.num_examples < info.num_images_written:
        # Every written image has at least one record. Fewer records than images means the
        # shard list arrived incomplete (seen on BundleBasedDirectRunner), not a real dataset.
        raise RuntimeError(
            f"shards describe {info.num_examples} records but {info.num_images_written} images were written;"
            " the shard list is incomplete"
        )
    unknown = set(info.rejected) - set(REASONS)
    if unknown:
        raise RuntimeError(f"undocumented rejection reasons {sorted(unknown)}")


def refusal(info: metadata.DatasetInfo, max_rejected_fraction: float | None) -> str | None:
    """Why a reconciled dataset must not be published, or None: it holds no example, more than
    `max_rejected_fraction` of its inputs were rejected, two of its label names are one name
    in two Unicode forms, or its --split_by blocks are cut in several CRSs."""
    if info.num_examples == 0:
        if not info.num_rejected:
            return f"no example was written from {info.num_inputs} inputs"
        return f"no example was written: all {info.num_inputs} inputs were rejected: {rejection_summary(info.rejected)}"
    if max_rejected_fraction is not None and info.num_rejected > max_rejected_fraction * info.num_inputs:
        return (f"{info.num_rejected} of {info.num_inputs} inputs rejected ({info.num_rejected / info.num_inputs:.1%}),"
                f" over --max_rejected_fraction {max_rejected_fraction:g}: {rejection_summary(info.rejected)}")
    twins = unicode_twins(info.labels)
    if twins:
        first, second = twins[0]
        return (f"{len(twins)} label name{'s are' if len(twins) > 1 else ' is'} one name in two Unicode forms, e.g. {ascii(first)} and {ascii(second)}"
                f" (composed and decomposed accents, as macOS and Linux tools write names): two classes that look alike, each with part"
                f" of the images; rename the folders (or labels) to one form, e.g. convmv -r --nfc --notest DIR")
    return mixed_crs_refusal(info.raster)


class _WriteDatasetInfo(beam.DoFn):
    def __init__(self, output: str, facts: DatasetFacts, max_rejected_fraction: float | None = None) -> None:
        self._output = output
        self._facts = facts
        self._max_rejected_fraction = max_rejected_fraction

    def process(
        self,
        unused: object,
        shards: Sequence[tuple[str, metadata.ShardInfo]],
        rejected: Mapping[str, int],
        num_inputs: int,
        images_written: int,
        labels: Sequence[str],
        unused_rejected_files: Sequence[str],
        raster_facts: Mapping[tuple[str, str], int] | None = None,
        raster_stats: Mapping[str, Mapping[str, Any]] | None = None,
        raster_ranges: Mapping[str, Any] | None = None,
    ) -> Iterator[str]:
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        splits = group_splits(self._facts.split_names, shards)
        info = dataset_info(
            self._facts, splits, labels, rejected, num_inputs, images_written, created, raster_facts or {}, raster_stats or {}, raster_ranges
        )
        check_publishable(info)
        refused = refusal(info, self._max_rejected_fraction)
        if refused:
            failed = write_failure(self._output, refused, json.loads(info.to_json()))
            remove_shards(self._output, [name for _, shard in shards for name in (shard.file, shard.index) if name])
            yield failed
            return
        write_text(join(self._output, metadata.LABELS_FILENAME), metadata.labels_text(labels))
        write_descriptions(self._output, info)
        info_path = join(self._output, metadata.INFO_FILENAME)
        publish_text(info_path, info.to_json())  # last: its presence marks the dataset complete
        _remove_started(self._output)
        _LOGGER.info("wrote %s", info_path)
        yield info_path


def _remove_started(output: str) -> None:
    started = join(output, STARTED_FILENAME)
    if FileSystems.exists(started):
        FileSystems.delete([started])


def raster_section(base: Mapping, facts: Mapping[tuple[str, str], int], stats: Mapping[str, Mapping[str, Any]]) -> dict | None:
    """cropshard.json's `raster` section: the options plus what the build saw (CRSs, chips
    skipped by reason, per-band statistics of the stored chips per split); None for a build
    where no raster was read and no raster option given."""
    if not facts and not base["requested"]:
        return None
    section = {key: value for key, value in base.items() if key != "requested"}
    section["crs_seen"] = sorted(value for (kind, value), _ in facts.items() if kind == "crs")
    section["num_rasters"] = sum(count for (kind, _), count in facts.items() if kind == "crs")
    section["chips_skipped"] = {value: int(count) for (kind, value), count in sorted(facts.items()) if kind == "chips_skipped"}
    section["stats"] = {split: dict(summary) for split, summary in sorted(stats.items())}
    return section


def write_descriptions(output: str, info: metadata.DatasetInfo) -> None:
    """The descriptions other readers open: TFDS's two files (uncompressed shards only: TFDS reads
    no gzip TFRecords) and croissant.json."""
    if info.compression != metadata.COMPRESSION_GZIP:
        if info.labels:
            write_text(join(output, tfds_info.LABEL_NAMES_FILENAME), metadata.labels_text(info.labels))
        write_text(join(output, metadata.TFDS_INFO_FILENAME), tfds_info.dataset_info_json(info))
        write_text(join(output, metadata.TFDS_FEATURES_FILENAME), tfds_info.features_json(info))
    write_text(join(output, metadata.CROISSANT_FILENAME), croissant.croissant_json(info))


def written_files(info: metadata.DatasetInfo) -> list[str]:
    """Every file name a finished build leaves in --output: shards and their indexes, then the metadata."""
    names = [name for split in info.splits.values() for shard in split.shards for name in (shard.file, shard.index) if name]
    names += [metadata.INFO_FILENAME, metadata.LABELS_FILENAME, metadata.REJECTED_FILENAME, metadata.CROISSANT_FILENAME]
    if info.compression != metadata.COMPRESSION_GZIP:
        names += [metadata.TFDS_INFO_FILENAME, metadata.TFDS_FEATURES_FILENAME]
        names += [tfds_info.LABEL_NAMES_FILENAME] if info.labels else []
    return sorted(names)


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        handle.write(text.encode("utf-8"))


def write_failure(output: str, reason: str, dataset_info: Mapping[str, Any] | None) -> str:
    """build_failed.json in `output`: why nothing was published, and the counts when the job got as
    far as making them (None: the job itself failed). Returns its path."""
    path = join(output, FAILED_FILENAME)
    write_text(path, json.dumps({"reason": reason, "dataset_info": dataset_info}, indent=2) + "\n")
    _remove_started(output)  # build_failed.json now says what the folder is
    return path


def publish_text(path: str, text: str) -> None:
    """`write_text` for the file whose presence marks the dataset complete: on a local or mounted
    disk it is written beside its name and renamed into place, so a worker killed mid-write never
    leaves a half-written cropshard.json that looks published (object stores such as gs:// make an
    object visible only once it is fully written)."""
    if "://" in path:
        write_text(path, text)
        return
    partial = join(os.path.dirname(path), PARTIAL_PREFIX + os.path.basename(path))
    try:
        write_text(partial, text)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


class WriteDatasetInfo(beam.PTransform):
    """Waits (through side inputs) for every shard and rejected.jsonl, then writes labels.txt, the
    TFDS and Croissant descriptions and cropshard.json."""

    def __init__(self, output: str, facts: DatasetFacts, max_rejected_fraction: float | None = None) -> None:
        super().__init__()
        self._output = output
        self._facts = facts
        self._max_rejected_fraction = max_rejected_fraction

    def expand(self, pcolls: Mapping[str, beam.PCollection]) -> beam.PCollection:
        side = beam.pvalue
        rasters = {key: side.AsDict(pcolls[key]) for key in ("raster_facts", "raster_stats", "raster_ranges") if key in pcolls}
        return (
            pcolls["shards"].pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.ParDo(
                _WriteDatasetInfo(self._output, self._facts, self._max_rejected_fraction),
                shards=side.AsList(pcolls["shards"]),
                rejected=side.AsDict(pcolls["rejected_counts"]),
                num_inputs=side.AsSingleton(pcolls["num_inputs"]),
                images_written=side.AsSingleton(pcolls["images_written"]),
                labels=side.AsSingleton(pcolls["labels"]),
                unused_rejected_files=side.AsList(pcolls["rejected_files"]),
                **rasters,
            )
        )


# The metadata files a build writes in --output, beside its shards.
DATASET_NAMES = (
    metadata.INFO_FILENAME,
    metadata.TFDS_INFO_FILENAME,
    metadata.TFDS_FEATURES_FILENAME,
    metadata.CROISSANT_FILENAME,
    tfds_info.LABEL_NAMES_FILENAME,
    metadata.LABELS_FILENAME,
    metadata.REJECTED_FILENAME,
    FAILED_FILENAME,
    STARTED_FILENAME,
)
# A shard (or its index) as a build names it: `train-00000-of-00004.tfrecord[.gz][.idx]`.
_SHARD_NAME = re.compile(r"[^/]+-\d{5,}-of-\d{5,}\.tfrecord(?:\.gz)?(?:" + re.escape(shard_index.INDEX_SUFFIX) + ")?")


def dataset_files(output: str) -> list[str]:
    """Files a previous build left in `output` that `--overwrite` removes (nothing else is touched:
    of the TFRecords there, only shard names, so a TFRecord of the user's own beside the dataset stays)."""
    found = []
    for pattern in ("*.tfrecord*", *DATASET_NAMES, PARTIAL_PREFIX + metadata.INFO_FILENAME):
        for match in FileSystems.match([join(output, pattern)])[0].metadata_list:
            if pattern != "*.tfrecord*" or _SHARD_NAME.fullmatch(shard_file_name(match.path)):
                found.append(match.path)
    return found


def remove_shards(output: str, names: Iterable[str] | None = None) -> int:
    """Delete the shards and indexes a failed build wrote, so that nothing it refused is where a glob
    (`train-*.tfrecord`) or a reader that ignores cropshard.json would take it for data: `names`,
    those this build described, or with None every shard-named file in `output` (prepare_output left
    none from before: the output was empty, or --overwrite removed them). Returns how many."""
    if names is None:
        paths = [path for path in dataset_files(output) if _SHARD_NAME.fullmatch(shard_file_name(path))]
    else:  # a retried step finds some already gone
        paths = [path for path in (join(output, name) for name in names) if FileSystems.exists(path)]
    if paths:
        FileSystems.delete(paths)
    return len(paths)


def remove_temp_dirs(output: str) -> int:
    """Delete Beam's `beam-temp-*` directories left by an interrupted build; returns how many files were in them."""
    files = [m.path for m in FileSystems.match([join(output, "beam-temp-*/**")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if "://" not in output:  # local directories outlive their files
        dirs = glob.glob(join(glob.escape(output), "beam-temp-*"))
        if dirs:
            FileSystems.delete(dirs)
    return len(files)


def not_a_dataset(output: str, existing: Sequence[str]) -> str | None:
    """The first of `existing` (the files below `output`) that shows `output` holds no cropshard
    dataset, or None when it holds one: published (cropshard.json, or a format-1 dataset_info.json),
    refused (build_failed.json) or cut short (build_started.json, beam-temp-* folders, the partial
    cropshard.json, or only files named as a build names them, with rejected.jsonl or a shard's
    index among them: TFRecords named as Beam names shards alone may be another tool's)."""
    names = [path[len(output):].lstrip("/") if path.startswith(output) else shard_file_name(path) for path in existing]
    markers = {metadata.INFO_FILENAME, FAILED_FILENAME, STARTED_FILENAME, PARTIAL_PREFIX + metadata.INFO_FILENAME}
    if markers & set(names) or any(name.startswith("beam-temp-") for name in names):
        return None
    if metadata.LEGACY_INFO_FILENAME in names:
        with FileSystems.open(join(output, metadata.LEGACY_INFO_FILENAME), compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            if metadata.is_legacy_info(handle.read().decode("utf-8", "replace")):
                return None
    foreign = [name for name in names if name not in DATASET_NAMES and not _SHARD_NAME.fullmatch(name)]
    # Shards or rejected.jsonl, and nothing a build does not write: a build killed before it
    # published (Ctrl-C removes the temp folders, not the shards already renamed into place).
    cut_short = any(name.endswith(shard_index.INDEX_SUFFIX) and _SHARD_NAME.fullmatch(name) or name == metadata.REJECTED_FILENAME
                    for name in names)
    if not foreign and cut_short:
        return None
    return sorted(foreign or names)[0]


def check_output_is_a_folder(output: str) -> None:
    """FileExistsError when --output names a file: a local one, or on an object store an object of
    that very name (the dataset would go below it, `file.bin/...`, and gcsfuse or the console would
    show a file and a folder of one name)."""
    if "://" not in output:
        is_file = os.path.lexists(output) and not os.path.isdir(output)
        parent = os.path.dirname(os.path.abspath(output))
        while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):  # --output notes.txt/ds: no folder can be made below a file
            raise FileExistsError(f"--output {output} is below {parent}, which is a file: pick a folder for the dataset")
    else:
        below_bucket = "/" in output.partition("://")[2]  # a bucket's root is no object
        is_file = below_bucket and not FileSystems.get_filesystem(output).has_dirs() and FileSystems.exists(output)
    if is_file:
        raise FileExistsError(f"--output {output} is a file, not a folder: pick an empty or new folder for the dataset")


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuse a non-empty output unless --overwrite, and with it one that holds no cropshard dataset
    (not_a_dataset: --overwrite must never delete another tool's files); with it, remove the old
    cropshard.json (and a format-1 dataset's dataset_info.json) first, so an interrupted overwrite
    never looks complete, then old shards, their indexes, the other metadata and temp dirs; then
    write build_started.json."""
    check_output_is_a_folder(output)
    _prepare_output(output, overwrite)
    write_text(join(output, STARTED_FILENAME), json.dumps({"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}) + "\n")


def _prepare_output(output: str, overwrite: bool) -> None:
    if FileSystems.get_filesystem(output).has_dirs() and not FileSystems.exists(output):
        if "://" not in output:
            os.makedirs(output, exist_ok=True)
        return
    # Object stores (gs://) have no directories: exists(output) is False even when objects sit
    # below it, so the listing below is the only emptiness check there. Folder placeholders are
    # folders, as invisible here as a local empty folder: a console-made --output is empty.
    with bucket_must_exist("--output", output):
        existing = [m.path for m in FileSystems.match([join(output, "**")])[0].metadata_list if not is_folder_placeholder(m)]
    if not existing:
        return
    foreign = not_a_dataset(output, existing)
    if foreign is not None:
        raise FileExistsError(f"output {output} is not empty ({len(existing)} files) and holds files that are not a cropshard dataset"
                              f" (e.g. {foreign}): pick an empty or new --output (--overwrite replaces only a cropshard dataset)")
    if not overwrite:
        raise FileExistsError(f"output {output} is not empty ({len(existing)} files); pass --overwrite to replace the dataset there")
    markers = [join(output, metadata.INFO_FILENAME), join(output, metadata.LEGACY_INFO_FILENAME)]
    present = [path for path in markers if FileSystems.exists(path)]
    if present:
        FileSystems.delete(present)
    stale = [path for path in dataset_files(output) if path not in markers]
    if stale:
        FileSystems.delete(stale)
    temp_files = remove_temp_dirs(output)
    _LOGGER.info("--overwrite: removed %d old dataset files and %d temp files from %s", len(stale), temp_files, output)
