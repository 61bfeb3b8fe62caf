"""Per-band statistics of float rasters with NaN nodata (and infinities): finite, strict-JSON
summaries; and `normalize='dataset'` refusing statistics it cannot normalize by."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from cropshard.reader.dataset import dataset_normalization
from cropshard.reader.metadata import DatasetError
from cropshard.transforms.raster.stats import BandStats, CombineBandStats


def _float_chips() -> list[np.ndarray]:
    """Three float32 chips (h, w, 3): NaN nodata in a corner of one, +-inf in another."""
    rng = np.random.default_rng(5)
    chips_in = [rng.normal(0.3, 0.1, (16, 16, 3)).astype(np.float32) for _ in range(3)]
    chips_in[0][:5, :5, :] = np.nan  # nodata in every band
    chips_in[1][0, :3, 1] = np.inf
    chips_in[1][1, :2, 2] = -np.inf
    return chips_in


def _combined(chips_in: list[np.ndarray], dtype: str = "float32") -> dict:
    partials = []
    for chip in chips_in:
        part = BandStats.empty(dtype, chip.shape[-1])
        part.add(chip)
        partials.append(part)
    combine = CombineBandStats()
    return combine.extract_output(combine.merge_accumulators([combine.add_input(None, p) for p in partials]))


def test_float_band_stats_leave_out_nan_and_infinite_samples() -> None:
    chips_in = _float_chips()
    merged = _combined(chips_in)
    values = np.concatenate([c.reshape(-1, 3) for c in chips_in]).astype(np.float64)
    finite = np.where(np.isfinite(values), values, np.nan)
    assert (merged["images"], merged["pixels"]) == (3, len(values))  # every pixel of every chip
    assert merged["nonfinite"] == [25, 28, 27]  # 25 NaN each, 3 inf in band 1, 2 -inf in band 2
    np.testing.assert_allclose(merged["mean"], np.nanmean(finite, axis=0), atol=1e-6)
    np.testing.assert_allclose(merged["std"], np.nanstd(finite, axis=0), atol=1e-5)
    assert merged["min"] == np.nanmin(finite, axis=0).tolist() and merged["max"] == np.nanmax(finite, axis=0).tolist()
    json.dumps(merged, allow_nan=False)  # strict JSON: what cropshard.json records
    whole = BandStats.empty("float32", 3)
    for chip in chips_in:
        whole.add(chip)
    assert whole.summary() == merged  # one pass == merged partials


def test_a_band_without_finite_samples_has_null_statistics_in_strict_json() -> None:
    chip = np.random.default_rng(1).random((8, 8, 2)).astype(np.float32)
    chip[..., 1] = np.nan  # band 2 all nodata
    summary = _combined([chip])
    assert summary["nonfinite"] == [0, 64]
    assert [summary[key][1] for key in ("mean", "std", "min", "max")] == [None] * 4
    assert all(isinstance(summary[key][0], float) for key in ("mean", "std", "min", "max"))
    json.dumps(summary, allow_nan=False)
    for dtype in ("uint8", "uint16", "float32"):  # no chip at all: nulls too, never +-Infinity
        json.dumps(BandStats.empty(dtype, 3).summary(), allow_nan=False)


def test_integer_band_stats_record_no_nonfinite_count() -> None:
    summary = _combined([np.arange(48, dtype=np.uint16).reshape(4, 4, 3)], "uint16")
    assert "nonfinite" not in summary and summary["pixels"] == 16


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_pixels_that_are_not_data_stay_out_of_every_statistic(dtype: str) -> None:
    """A chip's nodata/padding pixels (valid False) count as `masked`, not as samples: the
    statistics equal numpy's over the valid pixels alone, one pass or merged partials."""
    rng = np.random.default_rng(7)
    chips_in = [rng.integers(1, 250, (8, 8, 2)).astype(dtype) for _ in range(3)]
    valid = [np.ones((8, 8), bool), rng.random((8, 8)) > 0.4, np.zeros((8, 8), bool)]  # a chip with no data at all too
    for chip, keep in zip(chips_in, valid, strict=True):
        chip[~keep] = 0  # what a nodata=0 border holds
    partials = []
    for chip, keep in zip(chips_in, valid, strict=True):
        part = BandStats.empty(dtype, 2)
        part.add(chip, keep)
        partials.append(part)
    merged = partials[0].merge(partials[1]).merge(partials[2]).summary()
    data = np.concatenate([chip[keep] for chip, keep in zip(chips_in, valid, strict=True)]).astype(np.float64)
    assert (merged["images"], merged["pixels"], merged["masked"]) == (3, 192, 192 - len(data))
    np.testing.assert_allclose(merged["mean"], data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(merged["std"], data.std(axis=0), rtol=1e-5)
    assert merged["min"] == data.min(axis=0).tolist() and merged["max"] == data.max(axis=0).tolist()
    if dtype == "uint8":
        assert merged["p1"] == np.percentile(data, 1, axis=0, method="inverted_cdf").tolist()
    whole = BandStats.empty(dtype, 2)
    for chip, keep in zip(chips_in, valid, strict=True):
        whole.add(chip, keep)
    assert whole.summary() == merged


def _meta(split_stats: dict, channels: int = 2, examples: int = 4) -> SimpleNamespace:
    """The part of DatasetInfo `dataset_normalization` reads."""
    return SimpleNamespace(raster={"stats": {"train": split_stats}}, splits={"train": SimpleNamespace(num_examples=examples)}, channels=channels)


@pytest.mark.parametrize(
    ("mean", "std", "why"),
    [
        ([float("nan"), 0.5], [0.1, 0.2], "not finite for band"),  # a build before the fix: NaN in cropshard.json
        ([0.5, 0.5], [0.1, float("inf")], "not finite for band"),
        ([0.5, None], [0.1, None], r"not finite for band\(s\) \[1\]"),  # a band with no finite sample
        ([0.5, 0.5], [0.1, -1.0], "not finite for band"),
        ([0.5], [0.1], "for each of the 2 channels"),
        ([0.5, 0.5], None, "needs the per-band statistics"),
    ],
)
def test_normalize_dataset_refuses_missing_or_non_finite_statistics(mean, std, why: str) -> None:
    with pytest.raises(DatasetError, match=why):
        dataset_normalization(_meta({"images": 4, "mean": mean, "std": std}))


def test_normalize_dataset_takes_finite_statistics_and_centres_a_constant_band() -> None:
    norm = dataset_normalization(_meta({"images": 4, "mean": [0.5, 7], "std": [0.25, 0.0]}))
    assert (norm.mode, norm.mean, norm.std) == ("dataset", (0.5, 7.0), (0.25, 1.0))
