"""Per-band statistics of the stored chips, per split, by a Beam combiner.

Each raster source contributes one partial `BandStats` per split it wrote chips to (count, sum,
sum of squares, min, max and a histogram per band); `CombineBandStats` merges them (Beam lifts
the merge before the shuffle, so partials never travel one per chip). Pixels that are not data
(the raster's nodata or mask, --small padding) are counted as `masked` and left out, as GDAL's
statistics leave them out: a scene's nodata border would otherwise pull every mean. Integer samples are
histogrammed exactly for uint8 and in 16-value bins for 16-bit types (percentiles to within
16); float32 gets moments and extremes only, of its finite samples: NaN and infinities (NaN is
how float rasters mark nodata) are counted per band as `nonfinite`, never summed. `summary()` is
what cropshard.json records (strict JSON: a band without samples has null statistics, never NaN
or Infinity) and what `reader.load(normalize='dataset')` uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import apache_beam as beam
import numpy as np

PERCENTILES = (1, 2, 98, 99)
_BINS = {"uint8": (0, 1, 256), "uint16": (0, 16, 4096), "int16": (-32768, 16, 4096)}  # (lowest value, bin width, bins)
_LEVELS = np.arange(256, dtype=np.float64)
_SQUARES = _LEVELS * _LEVELS


_PILLOW_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # band-interleaved uint8 Pillow histograms in one pass


def uint8_histograms(values: np.ndarray) -> np.ndarray:
    """(bands, 256) counts of (pixels, bands) uint8 samples: Pillow's histogram, one pass over the
    bytes for up to 4 interleaved bands (np.bincount first widens every sample to int64: twice the
    time on a 256x256 chip), one per band beyond that."""
    from PIL import Image

    pixels, bands = values.shape
    mode = _PILLOW_MODES.get(bands)
    if mode:
        image = Image.frombuffer(mode, (pixels, 1), np.ascontiguousarray(values), "raw", mode, 0, 1)
        return np.asarray(image.histogram(), np.int64).reshape(bands, 256)
    planes = (Image.frombuffer("L", (pixels, 1), np.ascontiguousarray(values[:, band]), "raw", "L", 0, 1) for band in range(bands))
    return np.array([plane.histogram() for plane in planes], np.int64)


@dataclasses.dataclass
class BandStats:
    """Moments, extremes and histogram per band. uint8 keeps only the exact histogram, from which
    `total`, `squares`, `low` and `high` follow (the per-chip cost is then one histogram pass)."""

    dtype: str
    count: int
    sums: np.ndarray  # per band, float64 (zeros for uint8: see `total`)
    sum_squares: np.ndarray
    lows: np.ndarray
    highs: np.ndarray
    histogram: np.ndarray | None  # (bands, bins) int64, None for float32
    images: int = 0  # chips added: what the statistics cover, against the split's example count
    nonfinite: np.ndarray | None = None  # per band, int64: float samples left out (NaN, +-inf); None: none yet
    masked: int = 0  # pixels left out: nodata, masked or padding (every band of such a pixel)

    @classmethod
    def empty(cls, dtype: str, bands: int) -> BandStats:
        bins = _BINS.get(dtype)
        return cls(
            dtype, 0, np.zeros(bands), np.zeros(bands), np.full(bands, np.inf), np.full(bands, -np.inf),
            np.zeros((bands, bins[2]), np.int64) if bins else None,
        )

    @property
    def _from_histogram(self) -> bool:
        return self.dtype == "uint8"

    @property
    def total(self) -> np.ndarray:
        return self.histogram @ _LEVELS if self._from_histogram else self.sums

    @property
    def squares(self) -> np.ndarray:
        return self.histogram @ _SQUARES if self._from_histogram else self.sum_squares

    @property
    def low(self) -> np.ndarray:
        if not self._from_histogram:
            return self.lows
        present = self.histogram > 0
        return np.where(present.any(axis=1), np.argmax(present, axis=1), np.inf)

    @property
    def high(self) -> np.ndarray:
        if not self._from_histogram:
            return self.highs
        present = self.histogram[:, ::-1] > 0
        return np.where(present.any(axis=1), 255 - np.argmax(present, axis=1), -np.inf)

    def add(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one chip (height, width, bands), or (pixels, bands). `valid`: True where a pixel is
        data, None for all; the others count as `masked` and stay out of every statistic, as in
        GDAL's. Sums are exact for integer samples: uint8 from its exact histogram, 16-bit types
        in int64 (a 65536-pixel chip's squares stay < 2**48)."""
        values = pixels.reshape(-1, pixels.shape[-1])
        self.count += values.shape[0]
        self.images += 1
        if valid is not None:
            keep = valid.reshape(-1)
            values = values[keep]
            self.masked += keep.size - values.shape[0]
            if not values.shape[0]:
                return
        if self._from_histogram:
            self.histogram += uint8_histograms(values)
            return
        if values.dtype.kind == "f":
            self._add_float(values)
            return
        wide = values.astype(np.int64)
        self.sums += wide.sum(axis=0)
        self.sum_squares += np.einsum("ij,ij->j", wide, wide)
        self.lows = np.minimum(self.lows, values.min(axis=0))
        self.highs = np.maximum(self.highs, values.max(axis=0))
        if self.histogram is not None:
            lowest, width, bins = _BINS[self.dtype]
            for band in range(values.shape[1]):
                self.histogram[band] += np.bincount((wide[:, band] - lowest) // width, minlength=bins)

    def _add_float(self, values: np.ndarray) -> None:
        """Float samples: only the finite ones count; one NaN (a nodata pixel) would otherwise
        make the band's sums, and so every normalized pixel, NaN."""
        wide = values.astype(np.float64)
        finite = np.isfinite(wide)
        lows, highs = values, values
        if not finite.all():
            self.nonfinite = self._nonfinite + np.count_nonzero(~finite, axis=0)
            wide = np.where(finite, wide, 0.0)
            lows, highs = np.where(finite, values, np.inf), np.where(finite, values, -np.inf)
        self.sums += wide.sum(axis=0)
        self.sum_squares += np.einsum("ij,ij->j", wide, wide)
        self.lows = np.minimum(self.lows, lows.min(axis=0))
        self.highs = np.maximum(self.highs, highs.max(axis=0))

    @property
    def _nonfinite(self) -> np.ndarray:
        return self.nonfinite if self.nonfinite is not None else np.zeros(len(self.sums), np.int64)

    @property
    def samples(self) -> np.ndarray:
        """Per band, the samples the statistics cover: every pixel's but the masked and the
        non-finite ones."""
        return self.count - self.masked - self._nonfinite

    def merge(self, other: BandStats) -> BandStats:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        histogram = None if self.histogram is None else self.histogram + other.histogram
        nonfinite = None if self.nonfinite is None and other.nonfinite is None else self._nonfinite + other._nonfinite
        return BandStats(
            self.dtype, self.count + other.count, self.sums + other.sums, self.sum_squares + other.sum_squares,
            np.minimum(self.lows, other.lows), np.maximum(self.highs, other.highs), histogram, self.images + other.images, nonfinite,
            self.masked + other.masked,
        )

    def summary(self) -> dict[str, Any]:
        """Strict-JSON statistics: a band without samples (or whose moments overflow) gets null."""
        samples = self.samples
        present = samples > 0
        with np.errstate(invalid="ignore", over="ignore"):
            mean = self.total / np.maximum(samples, 1)
            std = np.sqrt(np.maximum(self.squares / np.maximum(samples, 1) - mean * mean, 0.0))
        out = {
            "images": int(self.images), "pixels": int(self.count), "masked": int(self.masked), "mean": _listed(mean.round(6), present),
            "std": _listed(std.round(6), present), "min": _listed(self.low, present), "max": _listed(self.high, present),
        }
        if self.dtype.startswith("float"):
            out["nonfinite"] = self._nonfinite.tolist()
        if self.histogram is not None:
            for q in PERCENTILES:
                out[f"p{q}"] = _listed(self.percentile(q), present)
        return out

    def percentile(self, q: float) -> np.ndarray:
        """Per band: the lowest value of the histogram bin holding the q-th percentile (exact for
        uint8, within the 16-value bin for 16-bit types); ValueError for float32 (no histogram)."""
        if self.histogram is None:
            raise ValueError(f"{self.dtype} samples have no histogram, so no percentiles")
        lowest, width, _ = _BINS[self.dtype]
        cumulative = np.cumsum(self.histogram, axis=1)
        rank = np.ceil(q / 100 * cumulative[:, -1:]).clip(min=1)
        return (lowest + width * np.argmax(cumulative >= rank, axis=1)).astype(float)


def _listed(values: np.ndarray, present: np.ndarray) -> list[float | None]:
    """Per band as JSON numbers; None (null) for a band without samples or a non-finite value."""
    return [float(v) if keep and np.isfinite(v) else None for v, keep in zip(values.tolist(), present.tolist(), strict=True)]


class CombineBandStats(beam.CombineFn):
    def create_accumulator(self) -> BandStats | None:
        return None

    def add_input(self, accumulator: BandStats | None, element: BandStats) -> BandStats:
        return element if accumulator is None else accumulator.merge(element)

    def merge_accumulators(self, accumulators: Any) -> BandStats | None:
        merged = None
        for accumulator in accumulators:
            if accumulator is not None:
                merged = accumulator if merged is None else merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: BandStats | None) -> dict[str, Any]:
        return accumulator.summary() if accumulator is not None else {}


class MergeBandStats(CombineBandStats):
    """The merged BandStats itself (for the --to_uint8 range pass)."""

    def extract_output(self, accumulator: BandStats | None) -> BandStats | None:
        return accumulator
