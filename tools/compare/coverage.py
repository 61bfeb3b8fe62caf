"""What a variant keeps of its sources for training: augmentation coverage and context (pure).

Every number is computed from the stored images' own records: where each stored image sits in its
source (`image/crop/box`, in the EXIF-oriented source) and its stored size. Positions are counted
in the variant's working resolution (the source scaled by stored size / box size), so a
downscaled full image has every position of its own, smaller grid.

* Augmentation coverage of a training crop of `window` (height, width):
  - the distinct windows the reader can cut from one source image's stored images: a plain read
    or a 'center' crop gives one per stored image; a 'random' crop gives every position of the
    window inside each stored image, the union over the source's stored images;
  - the share of the full-image window distribution that is reachable: those windows over the
    positions the same crop has on the whole source at the same resolution (a centre pre-crop:
    1 of them; a full or downscaled-full image: all of them).
  Flips double every count alike, so they are left out.
* Random-resized crops (the reader's crop='random_resized', Inception-style scale and aspect
  sampling): windows are continuous in size and position, so instead of a count the share of the
  full image's random-resized window distribution whose windows lie inside a stored image (any
  such window is one the reader can also cut from that stored image: it resizes anyway), by a
  seeded Monte-Carlo draw of the reader's own sampling rule.
* Context kept: the share of the source image's area (its field of view) that the stored images
  cover, and the effective resolution: stored pixels per source pixel, as a linear scale
  (1.0 = source resolution, 0.5 = half the height and width).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

import numpy as np
from cropshard.reader.config import DEFAULT_RATIO, DEFAULT_SCALE

Box = tuple[int, int, int, int]  # (y, x, height, width)
Rect = tuple[int, int, int, int]  # (top, left, bottom, right), half-open

# Crop modes whose windows these functions count: None is a plain read of the stored images.
COUNTED_CROP_MODES = (None, "center", "random")
RRC_SAMPLES = 4096  # Monte-Carlo windows per source image: the share's standard error is <= 0.008
RRC_ATTEMPTS = 10  # draws per window before the centred fallback, as the reader samples


@dataclasses.dataclass(frozen=True)
class StoredImage:
    """One record's geometry: where it sits in its source and the size it is stored at."""

    box: Box  # (y, x, height, width) in the EXIF-oriented source
    height: int
    width: int

    @property
    def scale(self) -> tuple[float, float]:
        """Stored pixels per source pixel, (vertical, horizontal)."""
        return self.height / self.box[2], self.width / self.box[3]


@dataclasses.dataclass(frozen=True)
class SourceCoverage:
    """One source image: its windows, and what its stored images keep of it."""

    windows: int  # distinct training windows its stored images allow
    full_windows: int | None  # positions of the same crop on the whole source at the same resolution
    context: float | None  # share of the source's area the stored images cover
    resolution: float  # stored pixels per source pixel (linear, geometric mean of both axes)
    rrc_share: float | None = None  # share of the full image's random-resized windows inside a stored image


@dataclasses.dataclass(frozen=True)
class Coverage:
    """A variant's means over its source images; None where no source size was known."""

    windows_per_image: float
    window_share: float | None
    context_kept: float | None
    resolution: float
    images: int  # source images the means are over
    images_sized: int  # of which the source size was known (window_share, context_kept, rrc_share)
    rrc_share: float | None = None  # mean share of the full images' random-resized windows reachable


def union_area(rects: Sequence[Rect]) -> int:
    """Area of the union of half-open integer rectangles (coordinate compression; exact)."""
    rects = [r for r in rects if r[2] > r[0] and r[3] > r[1]]
    if not rects:
        return 0
    ys = sorted({r[0] for r in rects} | {r[2] for r in rects})
    area = 0
    for top, bottom in zip(ys, ys[1:], strict=False):
        spans = sorted((r[1], r[3]) for r in rects if r[0] <= top and r[2] >= bottom)
        covered, reach = 0, None
        for left, right in spans:
            if reach is None or left > reach:
                covered += right - left
                reach = right
            elif right > reach:
                covered += right - reach
                reach = right
        area += covered * (bottom - top)
    return area


def window_positions(height: int, width: int, window: tuple[int, int]) -> int:
    """Positions of a `window` inside a height x width image; one (the centred, padded one) when it does not fit."""
    return (max(height - window[0], 0) + 1) * (max(width - window[1], 0) + 1)


def _position_rect(image: StoredImage, window: tuple[int, int]) -> Rect:
    """The top-left corners a random `window` can take inside `image`, in working-resolution coordinates."""
    sy, sx = image.scale
    top, left = round(image.box[0] * sy), round(image.box[1] * sx)
    return top, left, top + max(image.height - window[0], 0) + 1, left + max(image.width - window[1], 0) + 1


def reachable_windows(images: Sequence[StoredImage], window: tuple[int, int], crop_mode: str | None) -> int:
    """Distinct training windows the reader's `crop_mode` can cut from one source's stored images."""
    if crop_mode is None or crop_mode == "center":
        return len({(image.box, image.height, image.width) for image in images})
    if crop_mode == "random":
        return union_area([_position_rect(image, window) for image in images])
    raise ValueError(f"no window count for crop mode {crop_mode!r}; counted: {list(COUNTED_CROP_MODES)}")


def random_resized_windows(height: int, width: int, count: int, seed: int, scale: Sequence[float] = DEFAULT_SCALE,
                           ratio: Sequence[float] = DEFAULT_RATIO) -> np.ndarray:
    """`count` random-resized windows [y, x, h, w] in a height x width image, by the reader's rule: up to
    RRC_ATTEMPTS draws of an area fraction uniform in `scale` and an aspect (w/h) log-uniform in `ratio`,
    the first that fits at a uniform offset, else the largest centred window with its aspect clamped."""
    rng = np.random.default_rng(seed)
    area = height * width * rng.uniform(scale[0], scale[1], (count, RRC_ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (count, RRC_ATTEMPTS)))
    tries_h, tries_w = np.rint(np.sqrt(area / aspect)).astype(int), np.rint(np.sqrt(area * aspect)).astype(int)
    fits = (tries_h >= 1) & (tries_w >= 1) & (tries_h <= height) & (tries_w <= width)
    first, found = fits.argmax(axis=1), fits.any(axis=1)
    rows = np.arange(count)
    image_aspect = width / height
    fallback_h = min(height, max(1, round(width / ratio[0]))) if image_aspect < ratio[0] else height
    fallback_w = min(width, max(1, round(height * ratio[1]))) if image_aspect > ratio[1] else width
    h = np.where(found, tries_h[rows, first], fallback_h)
    w = np.where(found, tries_w[rows, first], fallback_w)
    y = np.where(found, np.minimum((rng.random(count) * (height - h + 1)).astype(int), height - h), (height - h) // 2)
    x = np.where(found, np.minimum((rng.random(count) * (width - w + 1)).astype(int), width - w), (width - w) // 2)
    return np.stack([y, x, h, w], axis=1)


def random_resized_share(images: Sequence[StoredImage], source: tuple[int, int], samples: int = RRC_SAMPLES, seed: int = 0) -> float:
    """Share of the full source's random-resized windows that lie inside one of its stored images' boxes."""
    windows = random_resized_windows(source[0], source[1], samples, seed)
    y, x, h, w = (windows[:, i : i + 1] for i in range(4))
    boxes = np.array([image.box for image in images])
    by, bx, bh, bw = (boxes[None, :, i] for i in range(4))
    inside = (y >= by) & (x >= bx) & (y + h <= by + bh) & (x + w <= bx + bw)
    return float(inside.any(axis=1).mean())


def source_coverage(images: Sequence[StoredImage], source: tuple[int, int] | None, window: tuple[int, int],
                    crop_mode: str | None) -> SourceCoverage:
    """One source image's coverage; `source` is its (height, width), None when unknown."""
    if not images:
        raise ValueError("a source image needs at least one stored image")
    sy = statistics.fmean(image.scale[0] for image in images)
    sx = statistics.fmean(image.scale[1] for image in images)
    windows = reachable_windows(images, window, crop_mode)
    if source is None:
        return SourceCoverage(windows, None, None, math.sqrt(sy * sx))
    full = window_positions(max(1, round(source[0] * sy)), max(1, round(source[1] * sx)), window)
    boxes = [(max(b[0], 0), max(b[1], 0), min(b[0] + b[2], source[0]), min(b[1] + b[3], source[1])) for b in (i.box for i in images)]
    context = union_area(boxes) / (source[0] * source[1])
    return SourceCoverage(windows, full, context, math.sqrt(sy * sx), random_resized_share(images, source))


def summarize_coverage(sources: Sequence[SourceCoverage]) -> Coverage:
    """Means over source images (the share and context over those whose size is known)."""
    if not sources:
        raise ValueError("no source images to summarize")
    sized = [s for s in sources if s.full_windows is not None and s.context is not None]
    return Coverage(
        windows_per_image=statistics.fmean(s.windows for s in sources),
        window_share=statistics.fmean(min(1.0, s.windows / s.full_windows) for s in sized) if sized else None,
        context_kept=statistics.fmean(s.context for s in sized) if sized else None,
        resolution=statistics.fmean(s.resolution for s in sources),
        images=len(sources),
        images_sized=len(sized),
        rrc_share=statistics.fmean(s.rrc_share for s in sized if s.rrc_share is not None) if sized else None,
    )


def variant_coverage(by_source: dict[str, Sequence[StoredImage]], sizes: dict[str, tuple[int, int]], window: tuple[int, int],
                     crop_mode: str | None) -> Coverage:
    """A variant's coverage from its stored images grouped by source key, with the source sizes known."""
    return summarize_coverage([source_coverage(images, sizes.get(key), window, crop_mode) for key, images in sorted(by_source.items())])
