"""`reader.load`: a cropshard dataset directory -> a fast, shardable `tf.data.Dataset`.

`load` checks its options against the dataset's metadata, then joins two stages:

* records.py — the read stage (`ReadConfig`): this worker's shard files, read in parallel,
  damaged shards named or skipped (corruption.py), records shuffled as serialized strings.
* decode.py — the decode stage (`DecodeConfig`): one of three routes turns records into
  (image, label[, metadata]) batches (fixed-shape raw, fixed-size JPEG/PNG, full images).

AUTOTUNE everywhere and a final `prefetch`. Order is deterministic when a seed is given and left
free (faster) otherwise, unless `deterministic` says otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from . import decode, records, schema
from .config import (
    DEFAULT_RATIO,
    DEFAULT_SCALE,
    DecodeConfig,
    Normalization,
    ReadConfig,
    check_bool,
    check_channels,
    is_int,
)
from .corruption import CorruptionReport
from .metadata import DatasetError, DatasetInfo, SplitInfo, load_info

__all__ = ["CorruptionReport", "DecodeConfig", "ReadConfig", "as_numpy", "info", "load"]


def info(path: str) -> DatasetInfo:
    """The parsed cropshard.json of the dataset at `path` (local or gs://)."""
    return load_info(path)


def _one_way_to_configure(load_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse a config object together with any of the arguments it groups, as given by the caller
    (an argument equal to its default included: it would be silently overridden by the object)."""
    signature = inspect.signature(load_fn)
    grouped = {"read_config": ReadConfig, "decode_config": DecodeConfig}

    @functools.wraps(load_fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        given = signature.bind(*args, **kwargs).arguments
        for name, cls in grouped.items():
            also = [field.name for field in dataclasses.fields(cls) if field.name in given]
            if given.get(name) is not None and also:
                raise ValueError(f"pass {name} or the arguments it groups, not both (also given: {', '.join(also)})")
        return load_fn(*args, **kwargs)

    return checked


@_one_way_to_configure
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
    dct_method: str = "INTEGER_ACCURATE",
    num_shards: int | None = None,
    index: int | None = None,
    shuffle_buffer: int = 1024,
    drop_remainder: bool = False,
    deterministic: bool | None = None,
    on_corrupt: str = "raise",
    corruption_report: CorruptionReport | None = None,
    cycle_length: int = 8,
    read_buffer_bytes: int = 256 << 10,
    scale: Sequence[float] = DEFAULT_SCALE,
    ratio: Sequence[float] = DEFAULT_RATIO,
    read_config: ReadConfig | None = None,
    decode_config: DecodeConfig | None = None,
) -> Any:
    """Read split `split` of the cropshard dataset at `path` (local or gs://) as a tf.data.Dataset.

    Yields `(image, label)` batches of `batch_size` (None: single images, the only way to read a
    full-image dataset whose sizes vary without `crop`; there is no ragged batching), or
    `(image, label, metadata)` with `with_metadata=True` (see `DecodeConfig`). `drop_remainder`
    drops a last, smaller batch. The other arguments are the fields of `ReadConfig` (shuffle,
    seed, repeat, sharding, corruption, I/O) and `DecodeConfig` (crop, crop_size, scale,
    ratio, flip, normalize, with_metadata, dct_method), documented there; `read_config=` / `decode_config=` pass one such
    object instead, and giving an object together with one of its fields as an argument is an error.
    """
    arguments = dict(locals())  # before anything else is bound: exactly the parameters
    import tensorflow as tf

    if batch_size is not None and (not is_int(batch_size) or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    check_bool("drop_remainder", drop_remainder)
    read = _config(ReadConfig, read_config, arguments)
    image = _config(DecodeConfig, decode_config, arguments)
    meta = load_info(path)
    split_info = meta.split(split)
    shards = split_info.shards
    check_against_dataset(path, meta, image, batch_size)
    records.check_shards_exist(path, shards)
    stream = records.record_stream(path, shards, meta.compression, read)
    out = _decode_stage(stream, meta, split_info, image, read, batch_size, drop_remainder)
    return _with_options(out.prefetch(tf.data.AUTOTUNE), read)


def as_numpy(path: str, split: str = "train", **kwargs: Any) -> Iterator[Any]:
    """`load(...)` as NumPy batches, for training loops that are not TensorFlow (JAX, PyTorch, ...)."""
    yield from load(path, split, **kwargs).as_numpy_iterator()


def _config(cls: type, given: Any, arguments: dict[str, Any]) -> Any:
    """`given`, or a `cls` built from `load`'s arguments (both at once: refused by `_one_way_to_configure`)."""
    if given is not None:
        return given
    return cls(**{field.name: arguments[field.name] for field in dataclasses.fields(cls)})


def check_against_dataset(path: str, meta: DatasetInfo, image: DecodeConfig, batch_size: int | None) -> None:
    """The checks that need the metadata: known formats, channels, crop size, batchable images."""
    unknown = sorted(set(meta.image_formats) - set(schema.IMAGE_FORMATS))
    if unknown or not meta.image_formats:
        raise DatasetError(
            f"dataset at {path!r} has image formats {list(meta.image_formats)}; this reader knows {list(schema.IMAGE_FORMATS)}"
        )
    check_channels(image.normalization, int(meta.channels))
    window, stored = image.window, meta.image_shape
    cuts = window is not None and image.crop != "random_resized"  # random_resized windows are resized, any size
    if cuts and stored and meta.is_precropped and (window[0] > stored[0] or window[1] > stored[1]):
        raise DatasetError(
            f"crop_size {window[0]}x{window[1]} is larger than this pre-cropped dataset's images"
            f" ({stored[0]}x{stored[1]}); use a crop_size <= the stored size"
        )
    if window is None and not stored and batch_size is not None:
        raise DatasetError(
            f"dataset at {path!r} holds full images of varying sizes (crop strategy"
            f" {meta.crop.get('strategy')!r}): pass crop='random'|'center'|'random_resized' with crop_size, or batch_size=None"
            " to get single images of their own size"
        )


def _decode_stage(
    stream: Any,
    meta: DatasetInfo,
    split: SplitInfo,
    image: DecodeConfig,
    read: ReadConfig,
    batch_size: int | None,
    drop_remainder: bool,
) -> Any:
    import tensorflow as tf

    formats = tuple(f for f in schema.IMAGE_FORMATS if f in meta.image_formats)
    fixed_shape = tuple(meta.image_shape) if meta.image_shape else None
    record_bytes = split.num_bytes / split.num_examples if split.num_examples else 0.0
    route_class = decode.ROUTES[decode.choose_route(batch_size, formats, fixed_shape, image.window, record_bytes)]
    route = route_class(
        image, fixed_shape=fixed_shape, channels=int(meta.channels), formats=formats, dtype=meta.dtype, geo=meta.raster is not None, mask=meta.label_mode == "mask",
        norm=dataset_normalization(meta) if image.normalization.mode == "dataset" else None,
    )
    # One [2] stateless seed per batch of records, for crop and flip draws.
    seeds = tf.data.Dataset.random(seed=read.seed, rerandomize_each_iteration=True).batch(2)
    return route.build(stream, seeds, batch_size, drop_remainder, read.ordered)


def dataset_normalization(meta: DatasetInfo) -> Normalization:
    """normalize='dataset': the train split's per-band mean and std (stored units) from the metadata."""
    stats = (meta.raster or {}).get("stats") or {}
    name = "train" if "train" in stats else next(iter(stats), None)
    split = stats.get(name) if name else None
    if not split or not split.get("std"):
        raise DatasetError("normalize='dataset' needs the per-band statistics of a raster dataset (raster.stats in cropshard.json)")
    examples = meta.splits[name].num_examples if name in meta.splits else None
    if "images" in split and examples is not None and split["images"] != examples:
        # A build of photos beside rasters: only the raster chips have statistics.
        raise DatasetError(
            f"normalize='dataset': the {name} split's statistics cover {split['images']} of its {examples} examples"
            " (the raster chips; its other images are photos); pass normalize=(mean, std) instead"
        )
    mean, std = _finite_band_stats(name, split, int(meta.channels))
    std = [s if s > 0 else 1.0 for s in std]  # a constant band: centred, not scaled
    return Normalization("dataset", tuple(mean), tuple(std))


def _finite_band_stats(name: str, split: dict[str, Any], channels: int) -> tuple[list[float], list[float]]:
    """The split's per-band mean and std, or DatasetError: one NaN, infinite or missing value
    would silently turn that band of every image NaN (a build before non-finite float samples
    were left out of the statistics wrote NaN there, which Python's json still parses)."""
    mean, std = split.get("mean"), split.get("std")
    if not isinstance(mean, list) or not isinstance(std, list) or not len(mean) == len(std) == channels:
        raise DatasetError(
            f"normalize='dataset': the {name} split's statistics need a mean and a std for each of the {channels} channels;"
            f" cropshard.json has mean {mean!r}, std {std!r}"
        )

    def usable(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    bad = [band for band, (m, s) in enumerate(zip(mean, std, strict=True)) if not (usable(m) and usable(s) and s >= 0)]
    if bad:
        raise DatasetError(
            f"normalize='dataset': the {name} split's statistics are missing or not finite for band(s) {bad} (mean {mean}, std {std});"
            " a band with no finite sample (all NaN or nodata) has none. Pass normalize=(mean, std) instead"
        )
    return [float(m) for m in mean], [float(s) for s in std]


def _with_options(dataset: Any, read: ReadConfig) -> Any:
    import tensorflow as tf

    options = tf.data.Options()
    options.deterministic = read.ordered
    if read.workers[0] > 1:
        # Already sharded here; a distribution strategy must not shard a second time.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)
