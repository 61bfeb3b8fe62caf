"""Crop geometry and split assignment: pure functions of their inputs, no Beam, no pixels.

Every decision here is a function of (image size, crop spec, image key), so a retried
bundle produces exactly the same crops and the same split for every image.

Boxes are `(y, x, height, width)` tuples in the coordinates of the EXIF-oriented image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Sequence

from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import Box

STRATEGIES = ("center", "box", "random", "grid", "manifest", "none")
SMALL_POLICIES = ("reject", "pad", "upscale")


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """What to cut out of every image. Recorded verbatim in cropshard.json."""

    strategy: str = "center"
    size: tuple[int, int] | None = None  # (height, width) of every output crop
    box: Box | None = None  # for strategy `box`
    crops_per_image: int = 1  # for strategy `random`
    stride: tuple[int, int] | None = None  # for strategy `grid`; default: the crop size (no overlap)
    small: str = "reject"  # images smaller than the crop: reject | pad | upscale
    resize: int | None = None  # resize the shorter side to this before cropping
    seed: int = 0  # mixed into the per-image random crop positions

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown crop strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.small not in SMALL_POLICIES:
            raise ValueError(f"unknown --small policy {self.small!r}; choose one of {SMALL_POLICIES}")
        if self.strategy in ("center", "random", "grid") and self.size is None:
            raise ValueError(f"--crop {self.strategy} needs --size HxW")
        if self.strategy == "box" and self.box is None:
            raise ValueError("--crop box needs --box y,x,height,width")
        if self.size is not None and min(self.size) < 1:
            raise ValueError(f"crop size must be positive, got {self.size}")
        if self.crops_per_image < 1:
            raise ValueError(f"--crops_per_image must be at least 1, got {self.crops_per_image}")
        if self.stride is not None and min(self.stride) < 1:
            raise ValueError(f"--stride must be positive, got {self.stride}")
        if self.resize is not None and self.resize < 1:
            raise ValueError(f"--resize must be positive, got {self.resize}")
        if self.box is not None and (min(self.box[2:]) < 1 or min(self.box[:2]) < 0):
            raise ValueError(f"--box needs y,x >= 0 and height,width >= 1, got {self.box}")

    @property
    def output_shape(self) -> tuple[int, int] | None:
        """(height, width) shared by every output image, or None when sizes vary."""
        if self.size is not None and self.strategy != "none":
            return self.size
        if self.strategy == "box" and self.box is not None:
            return self.box[2], self.box[3]
        return None

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "size": list(self.size) if self.size else None,
            "box": list(self.box) if self.box else None,
            "crops_per_image": self.crops_per_image,
            "stride": list(self.stride or self.size) if self.strategy == "grid" and self.size else None,
            "small": self.small,
            "resize": self.resize,
            "seed": self.seed,
        }


def parse_size(text: str) -> tuple[int, int]:
    """'128x128' or '128' -> (128, 128); '224x320' -> (224, 320) as (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,]\s*(\d+))?\s*", text)
    if not match:
        raise ValueError(f"size must look like HxW or N, got {text!r}")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return height, width


def parse_box(text: str | Sequence) -> Box:
    """'y,x,h,w', 'y x h w', 'y;x;h;w', '[y, x, h, w]' or a 4-sequence -> Box; ValueError otherwise."""
    if isinstance(text, str):
        parts = [p for p in re.split(r"[\s,;\[\]]+", text.strip()) if p]
    else:
        parts = list(text)
    if len(parts) != 4:
        raise ValueError(f"box must have 4 numbers y,x,height,width, got {text!r}")
    try:
        values = [int(p) if isinstance(p, int) else int(str(p)) for p in parts]
    except ValueError as err:
        raise ValueError(f"box must hold integers y,x,height,width, got {text!r}") from err
    y, x, h, w = values
    if y < 0 or x < 0 or h < 1 or w < 1:
        raise ValueError(f"box needs y,x >= 0 and height,width >= 1, got {text!r}")
    return y, x, h, w


def resized_shape(height: int, width: int, shorter: int) -> tuple[int, int]:
    """Size after scaling so the shorter side is exactly `shorter`, keeping the aspect ratio."""
    if height <= width:
        return shorter, max(1, round(width * shorter / height))
    return max(1, round(height * shorter / width)), shorter


def upscaled_shape(height: int, width: int, crop: tuple[int, int]) -> tuple[int, int]:
    """Smallest aspect-preserving size that covers a crop of `crop` (for --small upscale)."""
    scale = max(crop[0] / height, crop[1] / width)
    return max(crop[0], math.ceil(height * scale - 1e-9)), max(crop[1], math.ceil(width * scale - 1e-9))


def centred_offset(size: int, window: int) -> int:
    """The centred window's offset along one side. For a window larger than the image (--small
    pad) it goes negative, the odd padding row or column falling after the image, as the
    reader's centre crop (and tf.image.resize_with_crop_or_pad) pads: the two layouts agree."""
    return (size - window) // 2 if size >= window else -((window - size) // 2)


def center_box(height: int, width: int, crop: tuple[int, int]) -> Box:
    """The centred window; for a window larger than the image, the offsets go negative (padding)."""
    ch, cw = crop
    return centred_offset(height, ch), centred_offset(width, cw), ch, cw


def _key_seed(key: str, seed: int, purpose: str) -> int:
    digest = hashlib.sha256(f"{purpose}\0{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def random_boxes(height: int, width: int, crop: tuple[int, int], count: int, key: str, seed: int = 0) -> list[Box]:
    """`count` windows at positions drawn from a generator seeded by (key, seed): retry-stable."""
    import numpy as np

    ch, cw = crop
    rng = np.random.default_rng(_key_seed(key, seed, "random_crop"))
    # For a window larger than the image (--small pad) the only position is the centred one.
    ys = rng.integers(0, height - ch + 1, size=count) if height >= ch else [centred_offset(height, ch)] * count
    xs = rng.integers(0, width - cw + 1, size=count) if width >= cw else [centred_offset(width, cw)] * count
    return [(int(y), int(x), ch, cw) for y, x in zip(ys, xs, strict=True)]


def grid_boxes(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int] | None = None) -> list[Box]:
    """Full tiles of `crop` every `stride` pixels, row-major. Strips narrower than a tile at the
    bottom and right edges are not covered (no partial tiles); see --small pad for small images."""
    ch, cw = crop
    sy, sx = stride or crop
    return [(y, x, ch, cw) for y in range(0, height - ch + 1, sy) for x in range(0, width - cw + 1, sx)]


def fits(box: Box, height: int, width: int) -> bool:
    y, x, h, w = box
    return y >= 0 and x >= 0 and y + h <= height and x + w <= width


def plan_boxes(spec: CropSpec, height: int, width: int, key: str, manifest_box: Box | None = None) -> list[Box]:
    """The windows to cut from an image of `height`x`width` (after any resize/upscale).

    Raises `Rejected` (`too_small`, `box_outside_image`, `missing_box`) instead of returning
    windows that cannot be cut. With `small='pad'` windows may extend past the image edges.
    """
    strategy = spec.strategy
    if strategy == "none":
        return [(0, 0, height, width)]
    if strategy in ("box", "manifest"):
        box = spec.box if strategy == "box" else manifest_box
        if box is None:
            raise Rejected("missing_box", "--crop manifest needs a box for every row; this row has none")
        if not fits(box, height, width):
            if spec.small == "pad" and box[0] < height and box[1] < width:
                return [box]
            raise Rejected("box_outside_image", f"box {list(box)} does not fit in the {height}x{width} image")
        return [box]
    assert spec.size is not None
    ch, cw = spec.size
    if (height < ch or width < cw) and spec.small == "reject":
        raise Rejected("too_small", f"image is {height}x{width}, smaller than the {ch}x{cw} crop")
    if strategy == "center":
        return [center_box(height, width, spec.size)]
    if strategy == "random":
        return random_boxes(height, width, spec.size, spec.crops_per_image, key, spec.seed)
    if strategy == "grid":
        boxes = grid_boxes(height, width, spec.size, spec.stride)
        return boxes or [center_box(height, width, spec.size)]  # only reachable with --small pad
    raise AssertionError(strategy)


def working_shape(spec: CropSpec, height: int, width: int) -> tuple[int, int]:
    """The size the decoded image is scaled to before cropping: --resize, then --small upscale."""
    if spec.resize is not None:
        height, width = resized_shape(height, width, spec.resize)
    crop = spec.size if spec.strategy in ("center", "random", "grid") else None
    if crop is not None and spec.small == "upscale" and (height < crop[0] or width < crop[1]):
        height, width = upscaled_shape(height, width, crop)
    return height, width


def box_in_source(box: Box, working: tuple[int, int], source: tuple[int, int]) -> Box:
    """Map a window in the working (resized) image back to the oriented source image, clipped to it."""
    sy, sx = source[0] / working[0], source[1] / working[1]
    y0, x0 = max(0, box[0]), max(0, box[1])
    y1, x1 = min(working[0], box[0] + box[2]), min(working[1], box[1] + box[3])
    top, left = round(y0 * sy), round(x0 * sx)
    bottom, right = round(y1 * sy), round(x1 * sx)
    return top, left, max(1, bottom - top), max(1, right - left)


# --- splits -------------------------------------------------------------------------------


def parse_split_spec(text: str) -> tuple[tuple[str, float], ...] | tuple[str, ...]:
    """'train=0.8,validation=0.2' -> ((name, fraction), ...) for hash splits;
    'train,validation,test' -> (name, ...): splits taken from folders or the manifest."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("--split needs at least one split name")
    if all("=" in item for item in items):
        pairs = []
        for item in items:
            name, _, value = item.partition("=")
            try:
                fraction = float(value)
            except ValueError as err:
                raise ValueError(f"split fraction for {name!r} is not a number: {value!r}") from err
            if fraction < 0:
                raise ValueError(f"split fraction for {name!r} is negative")
            pairs.append((_split_name(name), fraction))
        total = sum(f for _, f in pairs)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must add up to 1, got {total:g} from {text!r}")
        _no_repeats([n for n, _ in pairs])
        return tuple(pairs)
    if any("=" in item for item in items):
        raise ValueError(f"--split mixes fractions and plain names: {text!r}")
    names = tuple(_split_name(item) for item in items)
    _no_repeats(names)
    return names


def _split_name(name: str) -> str:
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"split names are letters, digits and underscores; got {name!r}")
    return name


def _no_repeats(names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"split names repeat: {list(names)}")


def hash_split(key: str, fractions: Sequence[tuple[str, float]]) -> str:
    """Assign `key` to a split by a hash of the key alone: stable across runs, retries and runners."""
    point = _key_seed(key, 0, "split") / 2**64
    cumulative = 0.0
    for name, fraction in fractions:
        cumulative += fraction
        if point < cumulative:
            return name
    return next(name for name, fraction in reversed(fractions) if fraction > 0)
