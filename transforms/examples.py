"""The per-image work: read bytes -> decode + crop -> encode -> tf.train.Example, per split.

`ImagesToExamples` is a thin DoFn around pure functions (`read_bytes`, `decode_crops`,
`encode_pixels`, `schema.encode_example`); everything it decides is a function of the input,
so a retried bundle emits exactly the same records. Raster sources reach it as tasks
(transforms/raster/tasks.py), so photos and raster chips leave one stage for the shard writer.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import stat
from collections.abc import Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from cropshard.reader import schema
from cropshard.transforms.crop import CropSpec, hash_split
from cropshard.transforms.decode import DEFAULT_MAX_PIXELS, decode_crops, open_image, stream_crops
from cropshard.transforms.encode import encode_pixels, reencode_format, verbatim_format
from cropshard.transforms.listing import file_kind
from cropshard.transforms.progress import ProgressWriter
from cropshard.transforms.raster.convert import Uint8Rule
from cropshard.transforms.raster.records import RasterSpec
from cropshard.transforms.raster.tasks import TASK_OUTCOMES, RasterTask, chip_task, rejected_task
from cropshard.transforms.rejects import REJECTED, Rejected, Rejection, rejection_stage
from cropshard.transforms.types import ImageSource
from cropshard.transforms.worker import setup_worker

IMAGES_WRITTEN = "images_written"  # output tag: per bundle, the number of photos it wrote (rasters: raster/tasks.py)


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """How every image becomes examples: the crop, channels, encoding and split rule."""

    crop: CropSpec
    channels: int = 3
    encoding: str = "raw"
    jpeg_quality: int = 90
    split_fractions: tuple[tuple[str, float], ...] | None = (("train", 1.0),)  # None: splits come from the input
    split_names: tuple[str, ...] = ("train",)
    max_pixels: int = DEFAULT_MAX_PIXELS
    raster: RasterSpec = RasterSpec()

    def __post_init__(self) -> None:
        if self.encoding == "original" and self.crop.strategy != "none":
            raise ValueError("--encoding original stores source files and needs --crop none")
        if self.encoding == "original" and self.crop.resize is not None:
            raise ValueError("--encoding original cannot be combined with --resize (resized pixels are not the original)")


def read_bytes(path: str, limit: int = -1) -> bytes:
    """The file's bytes (the first `limit` of them); Rejected('not_found' | 'unreadable') with the OS's message otherwise."""
    local = "://" not in path
    if local:
        check_local_file(path)
    try:
        # A local path opens directly: what Beam's LocalFileSystem.open does for an uncompressed
        # read (the same io.open, the same errors), without its per-call filesystem lookup.
        with open(path, "rb") if local else FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read(limit)
    except FileNotFoundError as err:
        raise Rejected("not_found", str(err)) from err
    except (PermissionError, IsADirectoryError) as err:
        raise Rejected("unreadable", f"{type(err).__name__}: {err}") from err
    except Exception as err:  # noqa: BLE001 - remote filesystems wrap errors in their own types
        text = f"{type(err).__name__}: {err}"
        if "notfound" in type(err).__name__.lower() or "not found" in text.lower() or "no such file" in text.lower():
            # The storage client's text is an HTTP dump (endpoint, URL-encoded name): say it as locally.
            raise Rejected("not_found", f"No such object: {path!r} ({type(err).__name__})") from err
        raise Rejected("unreadable", text) from err


def check_local_file(path: str) -> None:
    """Reject local paths that are not regular files before opening them: opening a FIFO blocks
    forever (one `photo.jpg` pipe would hang the worker) and a device such as /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as err:
        target = f" (broken symbolic link to {os.readlink(path)!r})" if os.path.islink(path) else ""
        raise Rejected("not_found", f"{err}{target}") from err
    except OSError as err:  # EACCES on a parent folder, ELOOP, ENAMETOOLONG, EIO
        raise Rejected("unreadable", f"{type(err).__name__}: {err}") from err
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # folders: open() gives IsADirectoryError below
        raise Rejected("unreadable", f"not a regular file ({file_kind(mode)})")


def wide_rule(spec: ExampleSpec) -> Uint8Rule | None:
    """How photos with samples over 8 bits become uint8: the --to_uint8 rule, or not at all (None)
    in a --dtype keep dataset."""
    return None if spec.raster.kept else spec.raster.to_uint8


def image_to_records(data: bytes, source: ImageSource, spec: ExampleSpec, label_id: int) -> tuple[list[bytes], str]:
    """Serialized tf.train.Examples for one source image, and the decode path taken."""
    digest = hashlib.sha256(data).hexdigest()
    if spec.encoding == "original":
        return [_original_record(data, source, spec, label_id, digest)], "original"
    # Crops are cut one at a time and their pixels dropped once encoded: with --crop grid on a
    # huge scan, holding them all would be a second copy of the decoded image. The records are
    # still collected so that an image is written whole or rejected, never half.
    decoded = stream_crops(data, spec.crop, source.key, spec.channels, source.box, spec.max_pixels, wide_rule=wide_rule(spec))
    records = []
    for crop in decoded.crops:
        encoded, image_format = encode_pixels(crop.pixels, spec.encoding, spec.jpeg_quality)
        height, width = crop.pixels.shape[:2]
        records.append(
            schema.encode_example(
                schema.ImageRecord(
                    encoded=encoded,
                    format=image_format,
                    height=height,
                    width=width,
                    channels=spec.channels,
                    label=label_id,
                    label_text=source.label,
                    filename=source.path,
                    crop_box=tuple(crop.source_box),
                    sha256=digest,
                )
            )
        )
    return records, decoded.path


def _original_record(data: bytes, source: ImageSource, spec: ExampleSpec, label_id: int, digest: str) -> bytes:
    img = open_image(data, spec.max_pixels)
    decoded = decode_crops(data, spec.crop, source.key, spec.channels, None, spec.max_pixels, wide_rule=wide_rule(spec))
    (crop,) = decoded.crops
    height, width = crop.pixels.shape[:2]
    image_format = verbatim_format(img, decoded.orientation, spec.channels, data)
    encoded = data
    if image_format is None:
        image_format = reencode_format(decoded.source_format, data)
        encoded, image_format = encode_pixels(crop.pixels, image_format, spec.jpeg_quality)
    return schema.encode_example(
        schema.ImageRecord(encoded, image_format, height, width, spec.channels, label_id, source.label, source.path, (0, 0, height, width), digest)
    )


class ImagesToExamples(beam.DoFn):
    """ImageSource -> serialized examples on one output per split, rejections on `rejected`,
    and per bundle the number of photos written on `images_written` (for reconciliation).
    RasterTask -> its chips on the split outputs (with `runs`, as sharding.RunRecords: the task is
    the run), plus `raster_stats` and `raster_task_outcomes` (the raster's verdict comes from its
    summed outcomes: tasks.ReconcileRasters).

    The Beam counters (images_read, images_decoded, crops_written, bytes_read, rejected_<reason>,
    decode_path_<path>) are tallied in the bundle and reported in finish_bundle, like the written
    count: a failed bundle reports nothing, as its counters would not be committed either, and an
    image costs no per-element counter or output calls."""

    def __init__(self, spec: ExampleSpec, progress_dir: str | None = None, runs: bool = False) -> None:
        self._spec = spec
        self._runs = runs  # stable shard contents: a task's chips as RunRecords (transforms/sharding.py)
        self._progress_dir = progress_dir  # local runs only: see transforms/progress.py
        self._progress: ProgressWriter | None = None
        self._counters: dict[str, Metrics.DelegatingCounter] = {}  # name -> counter, made on first use
        self._tally: collections.Counter[str] = collections.Counter()  # counter name -> this bundle's increments
        self._written = 0  # photos written in this bundle

    def setup(self) -> None:
        setup_worker(self._spec.max_pixels)
        # Build the Example classes (reader/example_proto.py) once per worker, not inside the first element.
        schema.encode_example(schema.ImageRecord(b"\0", "raw", 1, 1, 1, -1, "", "", (0, 0, 1, 1), ""))
        if self._progress_dir:
            self._progress = ProgressWriter(self._progress_dir)

    def start_bundle(self) -> None:
        self._tally = collections.Counter()
        self._written = 0

    def finish_bundle(self) -> Iterator[beam.pvalue.TaggedOutput]:
        for name, value in self._tally.items():
            if name not in self._counters:
                self._counters[name] = Metrics.counter("cropshard", name)
            self._counters[name].inc(value)
        if self._written:
            yield beam.pvalue.TaggedOutput(IMAGES_WRITTEN, WindowedValue(self._written, GlobalWindow().max_timestamp(), [GlobalWindow()]))
        if self._progress:
            self._progress.flush()

    def process(self, work: ImageSource | RasterTask, label_ids: Mapping[str, int], ranges: Mapping | None = None) -> Iterator:
        """A photo, or a task of a raster source planned by PlanRasters (transforms/raster/plan.py).
        `ranges`: with --to_uint8 minmax|percentile, the dataset's (low, high) per band by source
        sample type (transforms/raster/range_pass.py)."""
        if isinstance(work, RasterTask):
            yield from self._chip(work, label_ids, ranges)
        else:
            yield from self._process(work, label_ids)
        if self._progress and (not isinstance(work, RasterTask) or work.index == 0):  # a source counts once
            self._progress.add()

    def _reject(self, source: ImageSource, stage: str, err: Rejected) -> beam.pvalue.TaggedOutput:
        self._tally[f"rejected_{err.reason}"] += 1
        return beam.pvalue.TaggedOutput(REJECTED, Rejection(source.path, stage, err.reason, err.message).to_json())

    def _split_and_label(self, source: ImageSource, label_ids: Mapping[str, int]) -> tuple[str, int]:
        """The source's split and label id; Rejected('label_not_listed') for a label missing from the
        map, Rejected('no_label') for an image without a label in a labelled dataset."""
        if source.label and source.label not in label_ids:
            # Labels are listed apart from the images on the local runner; never mislabel silently.
            raise Rejected("label_not_listed", f"label {source.label!r} is not in the label map")
        if not source.label and label_ids and self._spec.raster.labels is None:
            # A stray file beside the class folders was written unlabelled (-1) among the labelled ones.
            # (A manifest mixing labelled and unlabelled rows is refused by the launcher.)
            raise Rejected("no_label", f"the image has no label (no class folder between it and its --input root) while the"
                                       f" dataset's {len(label_ids)} classes come from folders")
        if source.split is not None:
            split = source.split
        else:
            assert self._spec.split_fractions is not None
            split = hash_split(source.key, self._spec.split_fractions)
        return split, label_ids[source.label] if source.label else schema.UNLABELED

    def _process(self, source: ImageSource, label_ids: Mapping[str, int]) -> Iterator:
        spec = self._spec
        try:
            split, label_id = self._split_and_label(source, label_ids)
        except Rejected as err:
            yield self._reject(source, "match", err)
            return
        if spec.raster.labels is not None:
            yield self._reject(source, "decode", Rejected("label_raster_missing", "--label_raster labels rasters; a photo has no class map"))
            return
        if spec.channels not in (1, 3) or spec.raster.dtype != "uint8":
            detail = f"{spec.channels} bands of {spec.raster.dtype} (--bands, --dtype)"
            yield self._reject(source, "decode", Rejected("band_mismatch", f"photos are decoded to 1 or 3 channels of uint8; this dataset stores {detail}"))
            return
        try:
            data = read_bytes(source.path)
        except Rejected as err:
            yield self._reject(source, "read", err)
            return
        self._tally["images_read"] += 1
        self._tally["bytes_read"] += len(data)
        try:
            records, path = image_to_records(data, source, spec, label_id)
        except Rejected as err:
            yield self._reject(source, rejection_stage(err.reason), err)
            return
        except Exception as err:  # noqa: BLE001 - one bad file must never fail a long job
            yield self._reject(source, "decode", Rejected("decode_error", f"{type(err).__name__}: {err}"))
            return
        self._tally["images_decoded"] += 1
        self._tally[f"decode_path_{path}"] += 1
        self._tally["crops_written"] += len(records)
        self._written += 1
        for record in records:
            yield beam.pvalue.TaggedOutput(split, record)

    def _chip(self, task: RasterTask, label_ids: Mapping[str, int], ranges: Mapping | None) -> Iterator:
        """One task of a raster source: its chips per split, band statistics, and its outcome (transforms/raster/tasks.py)."""
        spec = self._spec
        try:
            split, label_id = self._split_and_label(task.source, label_ids)
        except Rejected as err:  # every task says so; the source's verdict rejects it once
            yield beam.pvalue.TaggedOutput(TASK_OUTCOMES, rejected_task(task, "match", err))
            return
        run = f"{task.digest}-{task.index:08d}-{task.source.path}"
        for position, (tag, element) in enumerate(chip_task(task, spec.crop, spec.raster, spec.channels, spec.max_pixels, ranges,
                                                            split, label_id, spec.split_fractions, spec.encoding, spec.jpeg_quality)):
            if tag == TASK_OUTCOMES:
                self._tally["crops_written"] += element[1].kept
            elif self._runs and tag in spec.split_names:
                element = (run, position, element)
            yield beam.pvalue.TaggedOutput(tag, element)


def label_map(names: Sequence[str]) -> dict[str, int]:
    """0-based ids over the sorted label names (numerically when every name is an integer)."""
    unique = {name for name in names if name}
    if unique and all(name.lstrip("-").isdigit() for name in unique):
        ordered = sorted(unique, key=int)
    else:
        ordered = sorted(unique)
    return {name: index for index, name in enumerate(ordered)}
