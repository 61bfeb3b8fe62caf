"""The options of `reader.load`, grouped by the stage they steer (Python and NumPy, no TensorFlow).

One rule decides where an option lives, as TFDS's `ReadConfig` does:

* `ReadConfig` — which serialized records reach the decoder, and in what order: shard
  shuffling and the record shuffle buffer, the seed and the order guarantee it implies,
  repetition, the worker's share of the split, what to do with a corrupt shard, and the I/O
  knobs (files read concurrently, their read buffer).
* `DecodeConfig` — what each record becomes: the crop window, flips, normalisation, and whether
  its metadata comes along.

`path`, `split`, `batch_size` and `drop_remainder` stay plain arguments of `load`. Each
config checks its own values when it is built, so a bad option fails before any file is read;
the checks that need the dataset (channel count, stored image size) happen in `load`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .corruption import CorruptionReport  # TensorFlow-free to import, like this module

CROP_MODES = ("random", "center", "random_resized")
# Inception's / torchvision's RandomResizedCrop ranges: window area as a fraction of the image,
# and window aspect ratio (width / height).
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
NORMALIZE_MODES = ("unit", "none", "dataset")
ON_CORRUPT = ("raise", "skip")
# TensorFlow's JPEG IDCTs. INTEGER_ACCURATE is libjpeg's accurate integer IDCT: the writer's decode,
# Pillow's and DALI's CPU decoder give the same pixels. "" (TensorFlow's default) is the fast IDCT.
DCT_METHODS = ("INTEGER_ACCURATE", "INTEGER_FAST", "")


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become the output: 'unit' (x/255), 'none' (uint8) or 'meanstd' ((x/255 - mean) / std);
    'dataset': (x - mean) / std with the raster dataset's per-band statistics, in stored units
    (`mean`/`std` are filled in from cropshard.json by `load`)."""

    mode: str
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


def parse_normalize(normalize: Any) -> Normalization:
    """'unit' | 'none' | (mean, std), each a number or one value per channel, in [0, 1] units."""
    if isinstance(normalize, str):
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be 'unit', 'none', 'dataset' or (mean, std); got {normalize!r}")
        return Normalization(normalize)
    try:
        mean, std = normalize
        mean, std = _floats(mean), _floats(std)
    except (TypeError, ValueError) as err:
        raise ValueError(f"normalize must be 'unit', 'none' or (mean, std); got {normalize!r}") from err
    if min(std, default=1.0) <= 0:
        raise ValueError(f"normalize std must be positive, got {list(std)}")
    return Normalization("meanstd", mean, std)


def _floats(values: Any) -> tuple[float, ...]:
    """A number, or one per channel: a sequence or a NumPy array (np.ndarray is no Sequence);
    TypeError for text or a nested array."""
    import numpy as np

    array = np.asarray(values)
    if array.ndim > 1 or array.dtype.kind not in "iuf":
        raise TypeError(f"not a number or a list of numbers: {values!r}")
    return tuple(float(v) for v in array.reshape(-1))


def check_channels(norm: Normalization, channels: int) -> None:
    """Mean and std hold one value, or one per channel of the dataset."""
    for name, values in (("mean", norm.mean), ("std", norm.std)):
        if norm.mode == "meanstd" and len(values) not in (1, channels):
            raise ValueError(f"normalize {name} needs 1 or {channels} values (one per channel), got {list(values)}")


def is_int(value: Any) -> bool:
    """A Python or NumPy integer, not a bool (True is an int to Python, never a size or a seed here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(name: str, value: Any, minimum: int | None = None, optional: bool = False) -> None:
    """`value` is an integer (>= `minimum` if given), or None when `optional`; ValueError otherwise."""
    if value is None and optional:
        return
    if not is_int(value):
        raise ValueError(f"{name} must be an int{' or None' if optional else ''}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_bool(name: str, value: Any, optional: bool = False) -> None:
    """`value` is True or False (or None when `optional`): a string such as 'False' is truthy, so it is refused."""
    if (value is None and optional) or isinstance(value, (bool, np.bool_)):
        return
    raise ValueError(f"{name} must be True or False{' or None' if optional else ''}, got {value!r}")


def crop_hw(crop_size: int | Sequence[int] | None) -> tuple[int, int]:
    """crop_size as (height, width): an int means a square."""
    if crop_size is None:
        raise ValueError("crop='random'|'center'|'random_resized' needs crop_size (an int or (height, width))")
    if is_int(crop_size):
        size = (int(crop_size), int(crop_size))
    else:
        if isinstance(crop_size, (str, bytes)) or not isinstance(crop_size, Iterable):
            raise ValueError(f"crop_size must be an int or (height, width), got {crop_size!r}")
        size = tuple(crop_size)
        if len(size) != 2 or not all(is_int(v) for v in size):
            raise ValueError(f"crop_size must be an int or (height, width), got {crop_size!r}")
        size = (int(size[0]), int(size[1]))
    if min(size) <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size!r}")
    return size[0], size[1]


def float_range(name: str, value: Sequence[float], upper: float | None) -> tuple[float, float]:
    """`value` as an ordered (low, high) pair of positive floats, high at most `upper` if given."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from err
    if not 0 < low <= high or (upper is not None and high > upper):
        bound = f" <= {upper:g}" if upper is not None else ""
        raise ValueError(f"{name} must satisfy 0 < low <= high{bound}, got {value!r}")
    return low, high


def resolve_workers(input_context: Any, num_shards: int | None, index: int | None) -> tuple[int, int]:
    """(number of workers, this worker's index) from an InputContext or num_shards/index."""
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


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """Which records are read, and in what order.

    Attributes:
      shuffle: shuffle shard order and records (buffer `shuffle_buffer` serialized records, at
        most this worker's record count). shuffle=False reads in the stored order (shards in
        metadata order, interleaved record by record), the same on every pass.
      seed: makes shuffling, crops and flips reproducible, and the order deterministic.
      repeat: repeat indefinitely. Unshuffled, pass after pass in that order. Shuffled
        (shard order reshuffled every pass), passes stream back to back through the shuffle
        buffer without a pause, so around a pass boundary some records come twice before others
        come once (tf.data's repeat-then-shuffle); for exact epochs leave repeat=False and let
        `model.fit(..., epochs=N)` iterate the dataset N times.
      deterministic: override the order guarantee (default: deterministic iff a seed is given or
        shuffle=False; deterministic=False with shuffle=False lets parallel reads and decodes
        reorder nearby records, a little faster).
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
      cycle_length, read_buffer_bytes: shard files read concurrently, and their read buffer
        (TensorFlow's default 256 KiB measured faster than 1 MiB for 150 KB raw records).
    """

    shuffle: bool = True
    shuffle_buffer: int = 1024
    seed: int | None = None
    repeat: bool = False
    deterministic: bool | None = None
    input_context: Any = None
    num_shards: int | None = None
    index: int | None = None
    on_corrupt: str = "raise"
    corruption_report: CorruptionReport | None = None
    cycle_length: int = 8
    read_buffer_bytes: int = 256 << 10

    def __post_init__(self) -> None:
        for name in ("shuffle", "repeat"):
            check_bool(name, getattr(self, name))
        check_bool("deterministic", self.deterministic, optional=True)
        check_int("seed", self.seed, optional=True)
        for name in ("shuffle_buffer", "cycle_length"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("read_buffer_bytes", self.read_buffer_bytes, minimum=0)  # 0: TFRecordDataset's unbuffered read
        check_int("num_shards", self.num_shards, minimum=1, optional=True)
        check_int("index", self.index, optional=True)
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be 'raise' or 'skip'; got {self.on_corrupt!r}")
        resolve_workers(self.input_context, self.num_shards, self.index)

    @property
    def workers(self) -> tuple[int, int]:
        """(number of workers, this worker's index)."""
        return resolve_workers(self.input_context, self.num_shards, self.index)

    @property
    def ordered(self) -> bool:
        """Whether the output order is guaranteed: `deterministic`, else iff a seed is given or
        shuffle is off (an unshuffled read is expected in its stored order, pass after pass)."""
        if self.deterministic is None:
            return self.seed is not None or not self.shuffle
        return bool(self.deterministic)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """What each record becomes.

    Attributes:
      crop: None, 'random', 'center' or 'random_resized', with `crop_size` (int or (h, w)). On a
        full-image dataset 'random'/'center' cut the training window; on a pre-cropped dataset
        a smaller `crop_size` sub-crops (augmentation still possible); larger than the stored
        images is an error. Images smaller than the window are zero-padded (centered), never
        upscaled.
        'random_resized' is Inception's / torchvision's RandomResizedCrop: per image, a window
        whose area is a uniform fraction `scale` of the image and whose aspect ratio
        (width / height) is log-uniform in `ratio` (10 tries, then the largest centred window
        with an aspect ratio in `ratio`), resized to `crop_size` (bilinear, antialiased, rounded
        to uint8). JPEGs decode only that window. Works on full-image and pre-cropped datasets.
      scale, ratio: the (low, high) ranges of 'random_resized'; defaults (0.08, 1.0) and
        (3/4, 4/3). Other crop modes take neither.
      flip: random horizontal flips.
      normalize: 'unit' -> float32 in [0, 1]; 'none' -> uint8 as stored (cheapest; normalise
        on the accelerator); (mean, std) per channel -> float32 (x/255 - mean) / std, i.e.
        mean/std are in [0, 1] units, as in torchvision. Raster datasets stored as uint16 or
        int16 divide by 65535 or 32767 instead of 255 (so int16's 'unit' spans [-1.00003, 1]), float32 ones are not scaled, and 'none'
        returns the stored type; 'dataset' -> float32 (x - mean) / std per band, with the mean
        and std of the raster dataset's train split (its `raster.stats` in cropshard.json).
      with_metadata: add a third element, a dict: filename, label_text, sha256,
        source_crop_box (where the stored image sits in its source), crop_window ([y, x, h, w]
        of the stored image actually used) and flipped; for raster datasets also geo_crs and
        geo_transform (the stored chip's, 6 float64 in GDAL order; NaN for a record whose source
        was not georeferenced, with geo_crs '', e.g. a photo built beside GeoTIFFs). Keras would read a third element as
        sample weights, so keep it for inspection.
      dct_method: the JPEG IDCT. "INTEGER_ACCURATE" (default) gives the pixels the writer
        verified, as Pillow and DALI's CPU decoder do; "INTEGER_FAST" or "" (TensorFlow's own
        default, the fast IDCT) differ by a few levels per pixel (bench/RESULTS.md has the cost).
    """

    crop: str | None = None
    crop_size: int | Sequence[int] | None = None
    scale: Sequence[float] = DEFAULT_SCALE
    ratio: Sequence[float] = DEFAULT_RATIO
    flip: bool = False
    normalize: str | tuple[Sequence[float], Sequence[float]] = "unit"
    with_metadata: bool = False
    dct_method: str = "INTEGER_ACCURATE"

    def __post_init__(self) -> None:
        for name in ("flip", "with_metadata"):
            check_bool(name, getattr(self, name))
        if self.crop is not None and self.crop not in CROP_MODES:
            raise ValueError(f"crop must be None, 'random', 'center' or 'random_resized'; got {self.crop!r}")
        if self.crop is None and self.crop_size is not None:
            raise ValueError("crop_size given without crop='random', 'center' or 'random_resized'")
        if self.crop is not None:
            crop_hw(self.crop_size)
        # Stored as float pairs, so a config built from lists equals one built from tuples.
        object.__setattr__(self, "scale", float_range("scale", self.scale, upper=1.0))
        object.__setattr__(self, "ratio", float_range("ratio", self.ratio, upper=None))
        if self.crop != "random_resized" and (self.scale != DEFAULT_SCALE or self.ratio != DEFAULT_RATIO):
            raise ValueError("scale and ratio apply to crop='random_resized' only")
        parse_normalize(self.normalize)
        if self.dct_method not in DCT_METHODS:
            raise ValueError(f"dct_method must be one of {list(DCT_METHODS)}; got {self.dct_method!r}")

    @property
    def window(self) -> tuple[int, int] | None:
        """The (height, width) to cut, or None without a crop."""
        return crop_hw(self.crop_size) if self.crop is not None else None

    @property
    def normalization(self) -> Normalization:
        return parse_normalize(self.normalize)
