"""Sample types: what a dataset stores (`--dtype`) and how wider samples become uint8 (`--to_uint8`).

`--dtype keep` stores the source's own samples losslessly (uint8, uint16, int16, float32);
`--dtype uint8` converts by the rule `--to_uint8`, recorded in the metadata:

- `bits` keeps the top 8 of the file's significant bits: v >> (bits - 8), with `bits` from the
  file (GDAL's NBITS, i.e. TIFF BitsPerSample; 16 for uint16, 15 for int16); negative samples
  become 0, and a signed source with more than NEGATIVE_SHARE of its valid samples negative (a
  DEM below sea level, SAR, centred data) is rejected `band_mismatch` rather than cut in half;
  for a 16-bit file that is the top byte, the rule 16-bit photos always had;
- `bits:N` the same with N given, for files that declare 16 bits but hold fewer (the WorldView
  panchromatic TIFFs declare 16 and hold 11: `bits:11`); a source with more than SATURATED_SHARE
  of its valid samples above N bits (which would all be 255) is rejected `band_mismatch`;
- `minmax` and `percentile:LO,HI` stretch each band linearly from a low to a high value onto
  0..255 (clipped), those values being the band's minimum and maximum, or its LO-th and HI-th
  percentiles, over the whole dataset (per source sample type): a first pass of the build
  computes them from every raster's preview (`chips.preview`, at most 1024 pixels on a side,
  from the overviews when the file has them), and cropshard.json records them.

No rule may make an image silently black: `RangeTracker` watches a source's converted chips,
and a source whose values vary but whose converted values span fewer than `COLLAPSE_LEVELS`
of the 256 levels is rejected (`range_collapsed`) with the options that would keep it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from cropshard.transforms.rejects import Rejected

KEPT_DTYPES = ("uint8", "uint16", "int16", "float32")
DTYPE_CHOICES = ("uint8", "keep", "uint16", "int16", "float32")
KEPT_NOTE = "--dtype keep: the type of its first raster in path order, never converted"
COLLAPSE_LEVELS = 16  # fewer converted levels than this (of 256) is a collapsed range


@dataclasses.dataclass(frozen=True)
class Uint8Rule:
    """`--to_uint8`: `bits` (declared bit depth), `bits:N`, `minmax` or `percentile:LO,HI`."""

    kind: str = "bits"
    bits: int | None = None  # bits: None means from the file
    percentiles: tuple[float, float] | None = None  # percentile: (LO, HI)

    @property
    def needs_dataset_range(self) -> bool:
        return self.kind in ("minmax", "percentile")

    def __str__(self) -> str:
        if self.kind == "percentile":
            return f"percentile:{self.percentiles[0]:g},{self.percentiles[1]:g}"
        return self.kind if self.bits is None else f"{self.kind}:{self.bits}"


DEFAULT_RULE = Uint8Rule()


def parse_uint8_rule(text: str) -> Uint8Rule:
    if text.strip() == "minmax":
        return Uint8Rule("minmax")
    percentile = re.fullmatch(r"\s*percentile:([\d.]+),([\d.]+)\s*", text)
    if percentile:
        low, high = float(percentile.group(1)), float(percentile.group(2))
        if not 0 <= low < high <= 100:
            raise ValueError(f"--to_uint8 percentile:LO,HI needs 0 <= LO < HI <= 100, got {text!r}")
        return Uint8Rule("percentile", percentiles=(low, high))
    match = re.fullmatch(r"\s*bits(?::(\d+))?\s*", text)
    if not match:
        raise ValueError(f"--to_uint8 must be bits, bits:N (N = significant bits, 1..16), minmax or percentile:LO,HI; got {text!r}")
    bits = int(match.group(1)) if match.group(1) else None
    if bits is not None and not 1 <= bits <= 16:
        raise ValueError(f"--to_uint8 bits:N needs N in 1..16, got {bits}")
    return Uint8Rule("bits", bits)


def declared_bits(dtype: str, nbits: str | None) -> int | None:
    """Significant bits a file declares for its samples; None for floating point."""
    if nbits:
        return int(nbits)
    return {"uint8": 8, "int8": 7, "uint16": 16, "int16": 15, "uint32": 32, "int32": 31}.get(dtype)


def to_uint8(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Integer samples of `bits` significant bits -> uint8 by the bits rule (see module docstring)."""
    wide = np.clip(pixels.astype(np.int64), 0, None)
    if bits >= 8:
        return np.clip(wide >> (bits - 8), 0, 255).astype(np.uint8)
    top = (1 << bits) - 1  # fewer than 8 bits (e.g. 1-bit masks): stretch to 0..255
    return (np.clip(wide, 0, top) * 255 // top).astype(np.uint8)


def conversion_bits(dtype: str, nbits: str | None, rule: Uint8Rule) -> int:
    """The bit depth the rule uses for this source; Rejected when the rule does not apply."""
    if dtype == "uint8" and not nbits:
        return 8
    bits = rule.bits if rule.bits is not None else declared_bits(dtype, nbits)
    if bits is None:
        keep = ", or store them with --dtype keep" if dtype in KEPT_DTYPES else ""  # float64 cannot be kept: keep refused it
        raise Rejected(
            "band_mismatch",
            f"{dtype} samples have no bit depth, so --to_uint8 {rule} cannot make them the dataset's uint8: stretch them by the"
            f" dataset's range with --to_uint8 minmax{keep}",
        )
    return bits


def stretch_to_uint8(pixels: np.ndarray, low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """Per band (last axis): low -> 0, high -> 255, linear, clipped and rounded."""
    low = np.asarray(low, np.float64)
    span = np.maximum(np.asarray(high, np.float64) - low, 1e-12)
    return np.clip(np.rint((pixels.astype(np.float64) - low) * 255.0 / span), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Converter:
    """One source's conversion to uint8: the bits rule, or a stretch by the dataset's range."""

    rule: Uint8Rule
    bits: int | None = None
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(..., bands) samples -> uint8."""
        if self.bits is not None:
            return to_uint8(pixels, self.bits)
        return stretch_to_uint8(pixels, self.low, self.high)

    def check(self, values: np.ndarray, dtype: str) -> None:
        """Rejected('range_collapsed') when `values` (bands, n: a preview) would collapse."""
        tracker = RangeTracker(self.bits)
        tracker.add(values, self.apply(values.T))
        tracker.check(self.rule, self.bits, dtype)


def dataset_range(rule: Uint8Rule, low: Sequence[float], high: Sequence[float], percentile: Any) -> tuple[list[float], list[float]]:
    """(low, high) per band for minmax / percentile rules; `percentile(q)` gives per-band values."""
    if rule.kind == "minmax":
        return [float(v) for v in low], [float(v) for v in high]
    lo, hi = rule.percentiles
    return [float(v) for v in percentile(lo)], [float(v) for v in percentile(hi)]


# The bits rule maps negative samples to 0: noise around zero (reflectance) may be, a real share of
# the data may not (`RangeTracker.check`). Likewise for samples above the rule's bits, which all
# become 255 (bits:12 on 14-bit data whitens most of the image).
NEGATIVE_SHARE = 0.01
SATURATED_SHARE = 0.01


class RangeTracker:
    """Source and converted value ranges over one source's chips, for the collapse check."""

    def __init__(self, bits: int | None = None) -> None:
        self.bits = bits  # the bits rule's depth, None for a stretch: samples above it saturate
        self.source_min: float | None = None
        self.source_max: float | None = None
        self.out_min = 255
        self.out_max = 0
        self.samples = 0
        self.negatives = 0
        self.saturated = 0

    def add(self, source: np.ndarray, converted: np.ndarray) -> None:
        if not source.size:
            return
        self.samples += source.size
        self.negatives += int(np.count_nonzero(source < 0)) if source.dtype.kind in "if" else 0
        if self.bits is not None:
            self.saturated += int(np.count_nonzero(source > (1 << self.bits) - 1))
        low, high = source.min(), source.max()
        self.source_min = low if self.source_min is None else min(self.source_min, low)
        self.source_max = high if self.source_max is None else max(self.source_max, high)
        self.out_min = min(self.out_min, int(converted.min()))
        self.out_max = max(self.out_max, int(converted.max()))

    def check(self, rule: Uint8Rule, bits: int | None, dtype: str, keepable: bool = True) -> None:
        """Rejected('range_collapsed') when varying values became (nearly) one grey level, and
        Rejected('band_mismatch') when the bits rule would zero a real share of negative samples
        or saturate a real share above its bits. `keepable`: whether --dtype keep could store the
        source (a raster; photos are always decoded to uint8), so the message may offer it."""
        if bits is not None and self.negatives > NEGATIVE_SHARE * self.samples:
            keep = ", or store it with --dtype keep" if keepable and dtype in KEPT_DTYPES else ""
            raise Rejected(
                "band_mismatch",
                f"--to_uint8 {rule} ({bits} bits) maps this {dtype} source's negative values ({self.negatives / self.samples:.0%}"
                f" of its samples, down to {self.source_min}) to 0; stretch it with --to_uint8 minmax or percentile:2,98{keep}",
            )
        if bits is not None and self.saturated > SATURATED_SHARE * self.samples:
            needed = int(self.source_max).bit_length()
            raise Rejected(
                "band_mismatch",
                f"--to_uint8 {rule} ({bits} bits) saturates this {dtype} source: {self.saturated / self.samples:.0%} of its samples"
                f" exceed {(1 << bits) - 1} (up to {self.source_max}) and would all be 255; its values fit in {needed} bits:"
                f" pass --to_uint8 bits:{needed}, or stretch it with minmax or percentile:2,98",
            )
        if self.source_min is None or self.source_max == self.source_min:
            return  # a constant source stays constant under any rule: nothing collapsed
        if self.out_max - self.out_min >= COLLAPSE_LEVELS:
            return
        if bits is None:
            raise Rejected(
                "range_collapsed",
                f"--to_uint8 {rule} maps this {dtype} source's values {self.source_min}..{self.source_max} to"
                f" {self.out_min}..{self.out_max} of 0..255 with the dataset's range: it is (nearly) one grey level;"
                " store it with --dtype keep, or build it apart from the rest",
            )
        needed = max(int(self.source_max).bit_length(), 8)
        raise Rejected(
            "range_collapsed",
            f"--to_uint8 {rule} ({bits} bits) maps this {dtype} source's values {self.source_min}..{self.source_max}"
            f" to {self.out_min}..{self.out_max} of 0..255 (a near-black image); its values fit in {needed} bits:"
            f" pass --to_uint8 bits:{needed}" + (", or --dtype keep to store them exactly" if keepable else ""),
        )
