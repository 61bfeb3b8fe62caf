"""`reader.load`: a cropshard dataset directory -> a fast, shardable `tf.data.Dataset`.

Pipeline, and why each step is where it is:

1. dataset_info.json names every shard with its record count, so nothing is globbed: a missing
   file is reported by name before anything is read, and gs:// needs no listing per shard.
2. Multi-worker sharding happens first, on the fixed metadata order, so workers agree on the
   partition even without a seed. With at least as many shard files as workers each worker
   reads whole files (`files[index::num_shards]`); with fewer files than workers every worker
   reads every file in a fixed order and keeps every num_shards-th record (correct but each
   worker pays the full I/O: write more shards than you have workers).
3. The worker's files are shuffled with the seed and read with a parallel `interleave` of
   `TFRecordDataset`s. Each file's records are capped/padded to the count in the metadata
   (`ignore_errors` + marker records). This is how a corrupted, truncated or unreadable shard
   is reported *by file name*: TensorFlow's own DataLossError names only a byte offset, and
   `ignore_errors` alone would hide the loss. With `on_corrupt='raise'` the filler is one
   element that fails, when pulled, with an error naming the shard (no per-record check); with
   'skip' it is marker records, filtered and counted per shard (see `CorruptionReport`).
4. Records are shuffled as serialized strings (cheap to move).
5. Fixed-shape `raw` images (pre-cropped datasets) are parsed and decoded record by record in a
   parallel map (`parse_single_example` + `decode_raw`, while the record is still in cache),
   batched as uint8, then sub-cropped (vectorised gathers, exact pixels), flipped and
   normalised per batch only if asked. Everything else is batched and parsed with one
   vectorised `tf.io.parse_example` per batch: other pre-cropped (fixed-size) batches are
   then decoded image by image with `tf.map_fn` inside one parallel map call per batch (cheap
   images: per-element overhead matters); full images are unbatched and decoded in a per-image
   parallel map (expensive images: fine-grained parallelism matters). JPEG crops use
   `tf.image.decode_and_crop_jpeg`, which decodes only the window (a big win for baseline
   JPEGs; progressive JPEGs must be decoded whole, so they gain little). Random windows are drawn
   per batch from `tf.data.Dataset.random` (stateless, so a seed gives the same crops however
   many threads run), then travel with each image.
6. AUTOTUNE everywhere and a final `prefetch`. Order is deterministic when a seed is given and
   left free (faster) otherwise, unless `deterministic` says otherwise.

Images smaller than the crop window (full-image datasets only; pre-cropped ones are checked up
front) are not upscaled: the window is clamped to the image and the result is zero-padded
equally on each side to the requested size. Pixels are never resampled by the reader, so what
comes out is always an exact window of what was stored (`with_metadata=True` says which).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from . import fileio, schema
from .metadata import DatasetError, DatasetInfo, ShardInfo, join, load_info

log = logging.getLogger(__name__)

CROP_MODES = ("random", "center")
NORMALIZE_MODES = ("unit", "none")
ON_CORRUPT = ("raise", "skip")

# A marker stands in for each record a shard failed to deliver; it cannot be a valid Example
# (protobuf field number 0 is illegal) so it can never be confused with data.
_MARKER_PREFIX = b"\x00cropshard-unreadable-record:"
_MARKER_INDEX_DIGITS = 8
_PARSE_BATCH = 64  # records per parse_example call when images are decoded one by one
_JPEG_MARGIN = 2  # extra columns decoded each side of a JPEG window (see _decode_window)

_PARSED_KEYS = (
    schema.IMAGE_ENCODED,
    schema.IMAGE_FORMAT,
    schema.IMAGE_HEIGHT,
    schema.IMAGE_WIDTH,
    schema.LABEL,
)
_META_KEYS = (schema.FILENAME, schema.LABEL_TEXT, schema.CROP_BOX, schema.SOURCE_SHA256)
_GEO_KEYS = (schema.GEO_CRS, schema.GEO_TRANSFORM)  # raster datasets: metadata also georeferences each chip
# normalize='unit' divides integer samples by their type's maximum; float32 is passed through.
_UNIT_SCALE = {"uint8": 255.0, "uint16": 65535.0, "int16": 32767.0, "float32": 1.0}


def info(path: str) -> DatasetInfo:
    """The parsed dataset_info.json of the dataset at `path` (local or gs://)."""
    return load_info(path)


class CorruptionReport:
    """Counts what `load(..., on_corrupt='skip')` skipped, per shard file.

    Pass one to `load` and read it while or after iterating; the counts are cumulative over
    every iteration (epoch) of the dataset. A corrupt record makes the rest of its shard
    unreadable (TFRecord framing cannot be resynchronised), so "skipped" counts all records of
    that shard from the first bad one on; `reader.verify` gives the exact byte offset.
    """

    def __init__(self) -> None:
        self._files: tuple[str, ...] = ()
        self._counts: Any = None

    def _bind(self, files: Sequence[str]) -> Any:
        import tensorflow as tf

        self._files = tuple(files)
        self._counts = tf.Variable(tf.zeros([max(len(files), 1)], tf.int64), trainable=False, name="cropshard_skipped")
        return self._counts

    @property
    def skipped_records(self) -> int:
        return 0 if self._counts is None else int(self._counts.numpy().sum())

    @property
    def by_shard(self) -> dict[str, int]:
        """Shard file -> records skipped, for shards that lost any."""
        if self._counts is None:
            return {}
        return {name: int(count) for name, count in zip(self._files, self._counts.numpy(), strict=False) if count}

    def __repr__(self) -> str:
        return f"CorruptionReport(skipped_records={self.skipped_records}, by_shard={self.by_shard})"


def _crop_hw(crop_size: int | Sequence[int] | None) -> tuple[int, int]:
    if crop_size is None:
        raise ValueError("crop='random'|'center' needs crop_size (an int or (height, width))")
    if isinstance(crop_size, int):
        size = (crop_size, crop_size)
    else:
        size = tuple(int(v) for v in crop_size)
        if len(size) != 2:
            raise ValueError(f"crop_size must be an int or (height, width), got {crop_size!r}")
    if min(size) <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size!r}")
    return size[0], size[1]


def _normalize_spec(normalize: Any, channels: int) -> tuple[str, Any, Any]:
    if isinstance(normalize, str):
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be 'unit', 'none' or (mean, std); got {normalize!r}")
        return normalize, None, None
    try:
        mean, std = normalize
        mean = [float(v) for v in (mean if isinstance(mean, Sequence) else [mean])]
        std = [float(v) for v in (std if isinstance(std, Sequence) else [std])]
    except (TypeError, ValueError) as err:
        raise ValueError(f"normalize must be 'unit', 'none' or (mean, std); got {normalize!r}") from err
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"normalize {name} needs 1 or {channels} values (one per channel), got {values}")
    if min(std) <= 0:
        raise ValueError(f"normalize std must be positive, got {std}")
    return "meanstd", mean, std


def _resolve_sharding(input_context: Any, num_shards: int | None, index: int | None) -> tuple[int, int]:
    if input_context is not None:
        if num_shards is not None or index is not None:
            raise ValueError("pass either input_context or num_shards/index, not both")
        return int(input_context.num_input_pipelines), int(input_context.input_pipeline_id)
    if num_shards is None and index is None:
        return 1, 0
    if num_shards is None or index is None:
        raise ValueError("num_shards and index go together")
    if not 0 <= index < num_shards:
        raise ValueError(f"index must be in [0, num_shards={num_shards}), got {index}")
    return int(num_shards), int(index)


def _check_shards_exist(path: str, shards: Sequence[ShardInfo]) -> None:
    """One listing for the whole directory (one request on gs://), then name what is missing."""
    fs = fileio.get()
    flat = [shard.file for shard in shards if "/" not in shard.file]
    present = set(fs.listdir(path)) if flat else set()
    missing = [shard.file for shard in shards if shard.file not in present and not fs.exists(join(path, shard.file))]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DatasetError(
            f"shard file {join(path, missing[0])!r}{more} listed in dataset_info.json is missing"
            " (the dataset was moved or partly deleted)"
        )


def _marker(index: int, name: str) -> bytes:
    return _MARKER_PREFIX + b"%0*d:" % (_MARKER_INDEX_DIGITS, index) + name.encode("utf-8")


def load(
    path: str,
    split: str = "train",
    batch_size: int | None = 32,
    crop: str | None = None,
    crop_size: int | Sequence[int] | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    repeat: bool = False,
    flip: bool = False,
    normalize: str | tuple[Sequence[float], Sequence[float]] = "unit",
    input_context: Any = None,
    with_metadata: bool = False,
    *,
    num_shards: int | None = None,
    index: int | None = None,
    shuffle_buffer: int = 1024,
    drop_remainder: bool = False,
    deterministic: bool | None = None,
    on_corrupt: str = "raise",
    corruption_report: CorruptionReport | None = None,
    cycle_length: int = 8,
    read_buffer_bytes: int = 256 << 10,
) -> Any:
    """Read split `split` of the cropshard dataset at `path` (local or gs://) as a tf.data.Dataset.

    Yields `(image, label)` batches, or `(image, label, metadata)` with `with_metadata=True`
    (metadata is a dict: filename, label_text, sha256, source_crop_box = where the stored image
    sits in its source, crop_window = [y, x, h, w] of the stored image actually used, flipped).
    Keras would read a third element as sample weights, so keep `with_metadata` for inspection.

    Args:
      batch_size: images per batch; None yields single images (the only way to read a
        full-image dataset whose sizes vary without `crop`; there is no ragged batching).
      crop: None, 'random' or 'center' with `crop_size` (int or (h, w)). On a full-image
        dataset this cuts the training window; on a pre-cropped dataset a smaller `crop_size`
        sub-crops (augmentation still possible); larger than the stored images is an error.
        Images smaller than the window are zero-padded (centered), never upscaled.
      shuffle: shuffle shard order and records (buffer `shuffle_buffer`).
      seed: makes shuffling, crops and flips reproducible, and the order deterministic.
      repeat: repeat indefinitely (shard order reshuffled every pass).
      flip: random horizontal flips.
      normalize: 'unit' -> float32 in [0, 1]; 'none' -> uint8 as stored (cheapest; normalise
        on the accelerator); (mean, std) per channel -> float32 (x/255 - mean) / std, i.e.
        mean/std are in [0, 1] units, as in torchvision. Raster datasets stored as uint16/int16
        divide by 65535/32767 instead of 255, float32 ones are not scaled, and 'none' returns
        the stored type; with_metadata adds geo_crs and geo_transform (6 float64, GDAL order).
      input_context: a `tf.distribute.InputContext`; or give `num_shards`/`index` directly.
        `batch_size` is then this worker's batch size, e.g.
        `strategy.distribute_datasets_from_function(lambda ctx: load(path, input_context=ctx,
        batch_size=ctx.get_per_replica_batch_size(256)))`. Workers get whole shard files when
        there are at least as many files as workers, else every num_shards-th record of a fixed
        order (each worker then reads all files). Either way the workers' examples are disjoint
        and together make the whole split; auto-sharding by the strategy is switched off.
      on_corrupt: 'raise' (default) fails with an error naming the shard that did not yield
        all its records; 'skip' drops the unreadable records and counts them per shard in
        `corruption_report` (also logged once per shard).
      deterministic: override the order guarantee (default: deterministic iff seed is given).
      cycle_length, read_buffer_bytes: shard files read concurrently, and their read buffer
        (TensorFlow's default 256 KiB measured faster than 1 MiB for 150 KB raw records).
    """
    import tensorflow as tf

    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be positive or None, got {batch_size}")
    if crop is not None and crop not in CROP_MODES:
        raise ValueError(f"crop must be None, 'random' or 'center'; got {crop!r}")
    if crop is None and crop_size is not None:
        raise ValueError("crop_size given without crop='random' or 'center'")
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"on_corrupt must be 'raise' or 'skip'; got {on_corrupt!r}")
    workers, worker = _resolve_sharding(input_context, num_shards, index)

    meta = load_info(path)
    split_info = meta.split(split)
    unknown = sorted(set(meta.image_formats) - set(schema.IMAGE_FORMATS))
    if unknown or not meta.image_formats:
        raise DatasetError(
            f"dataset at {path!r} has image formats {list(meta.image_formats)}; this reader knows {list(schema.IMAGE_FORMATS)}"
        )
    channels = int(meta.channels)
    norm_mode, mean, std = _normalize_spec(normalize, channels)
    window = _crop_hw(crop_size) if crop is not None else None
    fixed_shape = tuple(meta.image_shape) if meta.image_shape else None
    too_big = (
        window is not None and fixed_shape is not None and (window[0] > fixed_shape[0] or window[1] > fixed_shape[1])
    )
    if too_big and meta.is_precropped:
        raise DatasetError(
            f"crop_size {window[0]}x{window[1]} is larger than this pre-cropped dataset's images"
            f" ({fixed_shape[0]}x{fixed_shape[1]}); use a crop_size <= the stored size"
        )
    if window is None and fixed_shape is None and batch_size is not None:
        raise DatasetError(
            f"dataset at {path!r} holds full images of varying sizes (crop strategy"
            f" {meta.crop.get('strategy')!r}): pass crop='random'|'center' with crop_size, or batch_size=None"
            " to get single images of their own size"
        )
    _check_shards_exist(path, split_info.shards)
    if deterministic is None:
        deterministic = seed is not None

    fs = fileio.get()
    names = [join(path, shard.file) for shard in split_info.shards]
    counts = [shard.num_records for shard in split_info.shards]
    markers = [_marker(i, name) for i, name in enumerate(names)]
    tf_names = [fs.tf_path(name) for name in names]
    by_record = workers > 1 and len(names) < workers
    if workers > 1 and not by_record:
        keep = list(range(worker, len(names), workers))
    else:
        keep = list(range(len(names)))
        if by_record:
            log.info(
                "%d shard files for %d workers: sharding by record (every worker reads every file)", len(names), workers
            )

    files = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant([tf_names[i] for i in keep], tf.string, shape=[len(keep)]),
            tf.constant([counts[i] for i in keep], tf.int64, shape=[len(keep)]),
            tf.constant([markers[i] for i in keep], tf.string, shape=[len(keep)]),
        )
    )
    if shuffle and not by_record and len(keep) > 1:
        files = files.shuffle(len(keep), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    compression = "GZIP" if meta.compression == "gzip" else ""

    @tf.autograph.experimental.do_not_convert
    def read_shard(filename: Any, num_records: Any, marker: Any) -> Any:
        records = tf.data.TFRecordDataset(filename, compression_type=compression, buffer_size=read_buffer_bytes)
        # Exactly num_records elements: the shard's records, then, for any it failed to deliver,
        # an error naming the shard ('raise') or markers that the skip filter counts ('skip').
        if on_corrupt == "raise":
            missing = tf.data.Dataset.from_tensors(marker).map(tf.autograph.experimental.do_not_convert(_fail_unreadable_shard))
        else:
            missing = tf.data.Dataset.from_tensors(marker).repeat()
        return records.ignore_errors().concatenate(missing).take(num_records)

    records = files.interleave(
        read_shard,
        cycle_length=max(1, min(cycle_length, len(keep))),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True if by_record else deterministic,
    )
    if by_record:
        records = records.shard(workers, worker)
    if on_corrupt == "skip":
        records = records.filter(_skip_filter(corruption_report or CorruptionReport(), names))
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    plan = _Plan(
        crop=crop,
        window=window,
        fixed_shape=fixed_shape,
        channels=channels,
        formats=tuple(f for f in schema.IMAGE_FORMATS if f in meta.image_formats),
        flip=flip,
        norm_mode=norm_mode,
        mean=mean,
        std=std,
        with_metadata=with_metadata,
        dtype=meta.dtype,
        geo=meta.raster is not None,
    )
    # No AutoGraph: the functions use tf.cond explicitly, and skipping the source-to-source
    # conversion makes graph building faster and independent of the .py files on disk.
    plain = tf.autograph.experimental.do_not_convert
    random_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    fixed_raw = batch_size is not None and plan.formats == (schema.FORMAT_RAW,) and fixed_shape is not None
    # Pre-cropped (fixed-size) images are cheap to decode, so copies and per-element overhead
    # decide throughput. Fixed-shape raw: parse + decode_raw each record in a parallel map while
    # it is still in cache, then batch the uint8 images (measured 0.95-0.98x the bare TFRecord
    # ceiling shuffled, 1.0x unshuffled, against 0.64-0.75x for batch -> parse_example ->
    # decode_raw, whose batching of 150 KB strings is one more serial copy). Other fixed-size
    # batches are decoded image by image with `tf.map_fn` inside one parallel map call per batch;
    # full images are unbatched and decoded in a per-image parallel map (expensive images:
    # fine-grained parallelism matters).
    per_batch = batch_size is not None and fixed_shape is not None and not fixed_raw
    if fixed_raw:
        images = records.map(
            plain(plan.decode_raw_record), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
        )
        out = images.batch(batch_size, drop_remainder=drop_remainder)
        if plan.raw_batch_needs_finishing:
            out = tf.data.Dataset.zip((out, random_seeds)).map(
                plain(plan.finish_raw_batch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
            )
    else:
        batches = records.batch(
            batch_size if per_batch else _PARSE_BATCH,
            drop_remainder=per_batch and drop_remainder,
            num_parallel_calls=tf.data.AUTOTUNE,  # copying 64 large records is worth spreading over cores
            deterministic=deterministic,
        )
        batches = tf.data.Dataset.zip((batches, random_seeds))
        if per_batch:
            out = batches.map(
                plain(plan.decode_batch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
            )
        else:
            examples = batches.map(
                plain(plan.parse_batch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
            )
            examples = examples.unbatch()
            out = examples.map(
                plain(plan.decode_one), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
            )
            if batch_size is not None:
                out = out.batch(
                    batch_size,
                    drop_remainder=drop_remainder,
                    num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=deterministic,
                )
    out = out.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.deterministic = deterministic
    if workers > 1:
        # Already sharded here; a distribution strategy must not shard a second time.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return out.with_options(options)


def _fail_unreadable_shard(marker: Any) -> Any:
    """Raise, when pulled, the error naming the shard whose records ran out early."""
    import tensorflow as tf

    shard = tf.strings.substr(marker, len(_MARKER_PREFIX) + _MARKER_INDEX_DIGITS + 1, -1)
    check = tf.debugging.Assert(
        tf.strings.length(marker) < 0,  # always false, but only known when it runs
        [
            "cropshard reader: shard file is corrupted, truncated or unreadable (it yielded fewer records"
            " than dataset_info.json lists; reader.verify(path) gives the byte offset,"
            " on_corrupt='skip' reads past it):",
            shard,
        ],
        summarize=1,
    )
    with tf.control_dependencies([check]):
        return tf.identity(marker)


def _skip_filter(report: CorruptionReport, names: Sequence[str]) -> Any:
    import tensorflow as tf

    counts = report._bind(names)
    prefix_len = len(_MARKER_PREFIX)

    @tf.autograph.experimental.do_not_convert
    def keep(record: Any) -> Any:
        def skip() -> Any:
            index = tf.strings.to_number(tf.strings.substr(record, prefix_len, _MARKER_INDEX_DIGITS), tf.int64)
            updated = counts.assign_add(tf.one_hot(index, tf.shape(counts)[0], dtype=tf.int64))
            shard = tf.strings.substr(record, prefix_len + _MARKER_INDEX_DIGITS + 1, -1)

            def warn() -> Any:
                tf.print("cropshard reader: skipping unreadable records of shard", shard, output_stream=sys.stderr)
                return tf.constant(False)

            return tf.cond(tf.gather(updated, index) == 1, warn, lambda: tf.constant(False))

        is_marker = tf.strings.substr(record, 0, prefix_len) == _MARKER_PREFIX
        return tf.cond(is_marker, skip, lambda: tf.constant(True))

    return keep


class _Plan:
    """The per-batch and per-image graph functions for one `load` call."""

    def __init__(
        self,
        *,
        crop: str | None,
        window: tuple[int, int] | None,
        fixed_shape: tuple[int, ...] | None,
        channels: int,
        formats: tuple[str, ...],
        flip: bool,
        norm_mode: str,
        mean: list[float] | None,
        std: list[float] | None,
        with_metadata: bool,
        dtype: str = "uint8",
        geo: bool = False,
    ) -> None:
        self.crop = crop
        self.window = window
        self.fixed_shape = fixed_shape
        self.channels = channels
        self.formats = formats
        self.flip = flip
        self.norm_mode = norm_mode
        self.mean = mean
        self.std = std
        self.with_metadata = with_metadata
        import tensorflow as tf

        self.dtype_name = dtype
        self.dtype = tf.as_dtype(dtype)
        self.geo = geo and with_metadata
        full_spec = schema.feature_spec()
        meta_keys = (_META_KEYS + (_GEO_KEYS if self.geo else ())) if with_metadata else ()
        keys = _PARSED_KEYS + meta_keys
        self.spec = {key: full_spec[key] for key in keys}
        # Fixed-shape raw needs no per-record format or size: the metadata gives both.
        self.raw_spec = {key: spec for key, spec in self.spec.items() if key in (schema.IMAGE_ENCODED, schema.LABEL, *meta_keys)}

    # ---- shared pieces -------------------------------------------------------------------

    def _windows(self, height: Any, width: Any, seed: Any) -> tuple[Any, Any, Any, Any, Any]:
        """Per-example window [y, x, h, w] in the stored image, plus flip flags (vectorised)."""
        import tensorflow as tf

        n = tf.shape(height)[0]
        draws = tf.random.stateless_uniform([n, 3], seed=seed, dtype=tf.float32)
        if self.window is None:
            y = x = tf.zeros_like(height)
            h, w = height, width
        else:
            h = tf.minimum(height, self.window[0])
            w = tf.minimum(width, self.window[1])
            if self.crop == "random":
                y = tf.minimum(tf.cast(draws[:, 0] * tf.cast(height - h + 1, tf.float32), tf.int32), height - h)
                x = tf.minimum(tf.cast(draws[:, 1] * tf.cast(width - w + 1, tf.float32), tf.int32), width - w)
            else:
                y, x = (height - h) // 2, (width - w) // 2
        flipped = draws[:, 2] < 0.5 if self.flip else tf.zeros([n], tf.bool)
        return y, x, h, w, flipped

    def _normalize(self, images: Any) -> Any:
        import tensorflow as tf

        if self.norm_mode == "none":
            return images
        images = tf.cast(images, tf.float32) * (1.0 / _UNIT_SCALE[self.dtype_name])
        if self.norm_mode == "meanstd":
            images = (images - tf.constant(self.mean, tf.float32)) * tf.constant(
                [1.0 / s for s in self.std], tf.float32
            )
        return images

    def _metadata(self, parsed: dict[str, Any], y: Any, x: Any, h: Any, w: Any, flipped: Any) -> dict[str, Any]:
        import tensorflow as tf

        meta = {
            "filename": parsed[schema.FILENAME],
            "label_text": parsed[schema.LABEL_TEXT],
            "sha256": parsed[schema.SOURCE_SHA256],
            "source_crop_box": parsed[schema.CROP_BOX],
            "crop_window": tf.stack([y, x, h, w], axis=-1),
            "flipped": flipped,
        }
        if self.geo:
            # The stored chip's transform; a reader sub-crop or flip is in crop_window/flipped.
            meta["geo_crs"] = parsed[schema.GEO_CRS]
            transform = tf.io.decode_raw(parsed[schema.GEO_TRANSFORM], tf.float64)
            meta["geo_transform"] = tf.reshape(transform, tf.concat([tf.shape(parsed[schema.GEO_CRS]), [6]], axis=0))
        return meta

    # ---- fixed-shape raw: per-record parse + decode_raw, then batch --------------------------

    @property
    def raw_batch_needs_finishing(self) -> bool:
        """Whether batched raw images need a second pass (sub-crop, flip, normalise, metadata)."""
        resized = self.window is not None and self.window != tuple(self.fixed_shape[:2])  # type: ignore[index]
        return resized or self.flip or self.norm_mode != "none" or self.with_metadata

    def decode_raw_record(self, record: Any) -> Any:
        """One record -> uint8 image of the metadata shape (+ label, or the parsed features)."""
        import tensorflow as tf

        parsed = tf.io.parse_single_example(record, self.raw_spec)
        parsed[schema.IMAGE_ENCODED] = tf.reshape(
            tf.io.decode_raw(parsed[schema.IMAGE_ENCODED], self.dtype), self.fixed_shape
        )
        if self.raw_batch_needs_finishing:
            return parsed
        return parsed[schema.IMAGE_ENCODED], parsed[schema.LABEL]

    def finish_raw_batch(self, parsed: dict[str, Any], seed: Any) -> Any:
        """Vectorised random/center sub-crops (gathers, exact pixels), flips and normalisation."""
        import tensorflow as tf

        images = parsed[schema.IMAGE_ENCODED]
        height, width, _ = self.fixed_shape  # type: ignore[misc]
        n = tf.shape(images)[0]
        y, x, h, w, flipped = self._windows(tf.fill([n], height), tf.fill([n], width), seed)
        if self.window is not None and self.window != (height, width):
            ch, cw = self.window
            if self.crop == "center":
                oy, ox = (height - ch) // 2, (width - cw) // 2
                images = images[:, oy : oy + ch, ox : ox + cw, :]
            else:
                rows = y[:, None] + tf.range(ch)[None, :]
                cols = x[:, None] + tf.range(cw)[None, :]
                images = tf.gather(images, rows, axis=1, batch_dims=1)
                images = tf.gather(images, cols, axis=2, batch_dims=1)
        if self.flip:
            images = tf.where(flipped[:, None, None, None], tf.reverse(images, axis=[2]), images)
        images = self._normalize(images)
        label = parsed[schema.LABEL]
        if self.with_metadata:
            return images, label, self._metadata(parsed, y, x, h, w, flipped)
        return images, label

    # ---- per-image path: JPEG / PNG / variable-size raw -----------------------------------

    def parse_batch(self, records: Any, seed: Any) -> dict[str, Any]:
        import tensorflow as tf

        parsed = tf.io.parse_example(records, self.spec)
        height = tf.cast(parsed[schema.IMAGE_HEIGHT], tf.int32)
        width = tf.cast(parsed[schema.IMAGE_WIDTH], tf.int32)
        y, x, h, w, flipped = self._windows(height, width, seed)
        parsed.update({"_height": height, "_width": width, "_y": y, "_x": x, "_h": h, "_w": w, "_flip": flipped})
        return parsed

    def _decode_window(self, ex: dict[str, Any]) -> Any:
        """uint8 [h, w, C] of the window, decoding only what the format allows."""
        import tensorflow as tf

        c = self.channels
        encoded = ex[schema.IMAGE_ENCODED]
        y, x, h, w = ex["_y"], ex["_x"], ex["_h"], ex["_w"]
        cropping = self.window is not None

        def jpeg() -> Any:
            if not cropping:
                return tf.io.decode_jpeg(encoded, channels=c)
            # libjpeg-turbo upsamples chroma at the crop's left/right edge as if it were the image
            # edge, so those columns would differ from a full decode. Decoding a margin and
            # slicing it off gives exactly the full decode's pixels at negligible cost.
            x0 = tf.maximum(x - _JPEG_MARGIN, 0)
            x1 = tf.minimum(x + w + _JPEG_MARGIN, ex["_width"])
            wide = tf.image.decode_and_crop_jpeg(encoded, tf.stack([y, x0, h, x1 - x0]), channels=c)
            return wide[:, x - x0 : x - x0 + w, :]

        def png() -> Any:
            image = tf.io.decode_png(encoded, channels=c, dtype=self.dtype)
            return image[y : y + h, x : x + w, :] if cropping else image

        def raw() -> Any:
            image = tf.reshape(tf.io.decode_raw(encoded, self.dtype), tf.stack([ex["_height"], ex["_width"], c]))
            return image[y : y + h, x : x + w, :] if cropping else image

        decoders = {schema.FORMAT_JPEG: jpeg, schema.FORMAT_PNG: png, schema.FORMAT_RAW: raw}
        if len(self.formats) == 1:
            return decoders[self.formats[0]]()
        fmt = ex[schema.IMAGE_FORMAT]
        known = tf.reduce_any(tf.stack([tf.equal(fmt, f) for f in self.formats]))
        check = tf.debugging.Assert(
            known, ["cropshard reader: unexpected image/format", fmt, "expected one of", list(self.formats)]
        )
        with tf.control_dependencies([check]):
            branch = tf.add_n([tf.cast(tf.equal(fmt, f), tf.int32) * i for i, f in enumerate(self.formats)])
        return tf.switch_case(branch, [decoders[f] for f in self.formats])

    def _image_one(self, ex: dict[str, Any]) -> Any:
        """Decode, pad and flip one image (uint8)."""
        import tensorflow as tf

        image = self._decode_window(ex)
        image = tf.ensure_shape(image, [None, None, self.channels])
        if self.window is not None:
            ch, cw = self.window
            image = tf.image.pad_to_bounding_box(image, (ch - ex["_h"]) // 2, (cw - ex["_w"]) // 2, ch, cw)
            image.set_shape([ch, cw, self.channels])
        elif self.fixed_shape is not None:
            image = tf.ensure_shape(image, self.fixed_shape)
        if self.flip:
            image = tf.cond(ex["_flip"], lambda: tf.reverse(image, axis=[1]), lambda: image)
        return image

    def _output(self, images: Any, ex: dict[str, Any]) -> Any:
        images = self._normalize(images)
        label = ex[schema.LABEL]
        if self.with_metadata:
            return images, label, self._metadata(ex, ex["_y"], ex["_x"], ex["_h"], ex["_w"], ex["_flip"])
        return images, label

    def decode_one(self, ex: dict[str, Any]) -> Any:
        return self._output(self._image_one(ex), ex)

    def decode_batch(self, records: Any, seed: Any) -> Any:
        """Parse a batch and decode its images with tf.map_fn; output shape is fixed (window or image_shape)."""
        import tensorflow as tf

        ex = self.parse_batch(records, seed)
        needed = (schema.IMAGE_ENCODED, schema.IMAGE_FORMAT, "_height", "_width", "_y", "_x", "_h", "_w", "_flip")
        shape = (*self.window, self.channels) if self.window is not None else self.fixed_shape
        images = tf.map_fn(
            self._image_one,
            {key: ex[key] for key in needed},
            fn_output_signature=tf.TensorSpec(shape, self.dtype),
            parallel_iterations=4,
        )
        return self._output(images, ex)


def as_numpy(path: str, split: str = "train", **kwargs: Any) -> Iterator[Any]:
    """`load(...)` as NumPy batches, for training loops that are not TensorFlow (JAX, PyTorch, ...)."""
    yield from load(path, split, **kwargs).as_numpy_iterator()
