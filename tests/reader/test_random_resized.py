"""crop='random_resized': the window sampler, and decoded windows against a reference (crop of the full decode + resize)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from tests import reader_fixtures as fx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from cropshard import reader  # noqa: E402
from cropshard.reader import schema  # noqa: E402
from cropshard.reader.decode import random_resized_windows, resize_window  # noqa: E402

DEFAULTS = {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3)}


def sample(
    heights: list[int], widths: list[int], seed: tuple[int, int], flip: bool = False, **ranges: object
) -> np.ndarray:
    """Windows as an [n, 5] array of y, x, h, w, flipped."""
    options = {**DEFAULTS, **ranges}
    y, x, h, w, flipped = random_resized_windows(
        tf.constant(heights, tf.int32),
        tf.constant(widths, tf.int32),
        tf.constant(seed, tf.int64),
        options["scale"],
        options["ratio"],
        flip,
    )
    return np.stack([t.numpy().astype(np.int64) for t in (y, x, h, w, flipped)], axis=1)


def reference(stored: fx.Stored, window: np.ndarray, flipped: bool, size: tuple[int, int]) -> np.ndarray:
    """The window cut from the fully decoded image with numpy, resized as documented, flipped if reported."""
    y, x, h, w = (int(v) for v in window)
    part = stored.pixels[y : y + h, x : x + w]
    resized = tf.image.resize(part, size, method="bilinear", antialias=True).numpy()
    out = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return out[:, ::-1] if flipped else out


# ---- the window sampler ---------------------------------------------------------------------


def test_windows_never_leave_the_image() -> None:
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (1, 7), (9, 1), (2, 3000), (3000, 2), (3, 4), (375, 500), (500, 375), (4032, 3024)]
    sizes += [tuple(int(v) for v in rng.integers(1, 2000, 2)) for _ in range(200)]
    heights, widths = [s[0] for s in sizes] * 5, [s[1] for s in sizes] * 5
    for seed, ranges in enumerate([DEFAULTS, {"scale": (0.9, 1.0), "ratio": (0.2, 5.0)}, {"scale": (1.0, 1.0)}]):
        windows = sample(heights, widths, (seed, 11), **ranges)
        y, x, h, w = windows[:, :4].T
        assert (h >= 1).all() and (w >= 1).all()
        assert (y >= 0).all() and (x >= 0).all()
        assert (y + h <= np.array(heights)).all() and (x + w <= np.array(widths)).all()


def test_area_and_aspect_stay_in_their_ranges() -> None:
    height, width, n = 375, 500, 4000
    windows = sample([height] * n, [width] * n, (3, 4), flip=True)
    h, w = windows[:, 2].astype(float), windows[:, 3].astype(float)
    # Sides are rounded: allow half a pixel on each side of the exact (area, aspect) draw.
    area_low = (h + 0.5) * (w + 0.5) / (height * width)
    area_high = (h - 0.5) * (w - 0.5) / (height * width)
    assert (area_low >= 0.08).all() and (area_high <= 1.0).all()
    assert ((w + 0.5) / (h - 0.5) >= 3 / 4).all() and ((w - 0.5) / (h + 0.5) <= 4 / 3).all()
    fraction = h * w / (height * width)
    assert fraction.min() < 0.1 and fraction.max() > 0.9, "the whole scale range is used"
    assert 0.45 < windows[:, 4].mean() < 0.55, "about half the images flipped"


def test_draws_are_uniform_in_area_and_log_uniform_in_aspect() -> None:
    # On a 400x400 image every draw from these ranges fits, so nothing is rejected or biased.
    n = 6000
    windows = sample([400] * n, [400] * n, (5, 6), scale=(0.1, 0.5), ratio=(0.8, 1.25))
    y, x, h, w = (windows[:, i].astype(float) for i in range(4))
    quartiles = np.quantile(h * w / 400**2, [0.25, 0.5, 0.75])
    assert np.allclose(quartiles, [0.2, 0.3, 0.4], atol=0.015), quartiles
    log_aspect = np.quantile(np.log(w / h), [0.25, 0.5, 0.75])
    step = math.log(1.25 / 0.8) / 4
    assert np.allclose(log_aspect, [math.log(0.8) + step, 0.0, math.log(1.25) - step], atol=0.02), log_aspect
    # Offsets are uniform over every position that fits.
    assert 0.47 < np.mean(y / (400 - h)) < 0.53 and 0.47 < np.mean(x / (400 - w)) < 0.53


def test_fixed_ranges_give_the_rounded_window() -> None:
    windows = sample([100] * 50, [100] * 50, (1, 2), scale=(0.5, 0.5), ratio=(1.0, 1.0))
    assert (windows[:, 2:4] == round(math.sqrt(5000))).all()
    assert len({(int(a), int(b)) for a, b in windows[:, :2]}) > 10, "offsets vary"


def test_no_fitting_draw_falls_back_to_the_largest_centred_window_in_ratio() -> None:
    # 10x1000: every default window (area >= 800 px, aspect <= 4/3) is taller than 10 px.
    windows = sample([10, 1000, 300], [1000, 10, 400], (7, 8), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert windows[0, :4].tolist() == [0, (1000 - 10) // 2, 10, 10]
    assert windows[1, :4].tolist() == [(1000 - 10) // 2, 0, 10, 10]
    assert windows[2, :4].tolist() == [0, 50, 300, 300]  # area 1.0 at aspect 1 never fits 300x400
    wide = sample([10], [1000], (7, 8))
    assert wide[0, :4].tolist() == [0, (1000 - 13) // 2, 10, round(10 * 4 / 3)]


def test_windows_depend_only_on_the_seed() -> None:
    a, b = sample([375] * 64, [500] * 64, (9, 9), flip=True), sample([375] * 64, [500] * 64, (9, 9), flip=True)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample([375] * 64, [500] * 64, (9, 10), flip=True))



def test_an_asymmetric_ratio_range_gives_wide_windows() -> None:
    # Every other test uses a ratio range symmetric in log space, where swapping h and w is
    # invisible; with (1, 2) the swap gave tall windows (w/h in 1/2..1) for almost every draw.
    n = 2000
    windows = sample([400] * n, [400] * n, (13, 14), scale=(0.1, 0.5), ratio=(1.0, 2.0))
    h, w = windows[:, 2].astype(float), windows[:, 3].astype(float)
    # Sides are rounded: allow half a pixel on each side of the exact aspect draw.
    assert ((w + 0.5) / (h - 0.5) >= 1.0).all() and ((w - 0.5) / (h + 0.5) <= 2.0).all()
    assert np.mean(w / h > 1.2) > 0.5, "most windows are clearly wider than tall"


def test_the_fallback_of_a_too_tall_image_uses_the_lowest_ratio() -> None:
    # 1000x10 with area 1.0: no draw fits, so the fallback is the full width at the lowest
    # aspect 0.5, h = 10 / 0.5 = 20 (hand-computed), centred: y = (1000 - 20) // 2. Multiplying
    # by the ratio gave h = 5, aspect 2.0, outside the requested range.
    windows = sample([1000, 10], [10, 1000], (7, 8), scale=(1.0, 1.0), ratio=(0.5, 2.0))
    assert windows[0, :4].tolist() == [490, 0, 20, 10]
    assert windows[1, :4].tolist() == [0, 490, 10, 20]


def test_x_and_y_offsets_are_drawn_independently() -> None:
    # With the x offset reusing the y draw, every window lay on the image's diagonal while the
    # mean of each offset, checked alone, stayed at 0.5.
    n = 4000
    windows = sample([400] * n, [400] * n, (15, 16), scale=(0.1, 0.1), ratio=(1.0, 1.0))
    y, x, h, w = (windows[:, i].astype(float) for i in range(4))
    fy, fx = y / (400 - h), x / (400 - w)
    assert abs(np.corrcoef(fy, fx)[0, 1]) < 0.1


# ---- the resize: exactly tf.image.resize's samples -----------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_resize_window_gives_tf_image_resize_samples_bit_for_bit(dtype: type) -> None:
    # resize_window computes ScaleAndTranslate's two passes as two row passes; any change in
    # which products are summed, or in what order, shows here as a differing float sample.
    rng = np.random.default_rng(5)
    shapes = [((1, 1), (224, 224)), ((1, 700), (3, 2)), ((480, 1), (7, 224)), ((224, 224), (224, 224))]
    shapes += [((int(h), int(w)), (224, 224)) for h, w in rng.integers(2, 900, (12, 2))]
    shapes += [((int(h), int(w)), (int(a), int(b))) for h, w, a, b in rng.integers(1, 500, (12, 4))]
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    for i, ((height, width), size) in enumerate(shapes):
        channels = (1, 3, 4, 13)[i % 4]
        if info is None:
            image = rng.normal(0.0, 100.0, (height, width, channels)).astype(dtype)
        else:
            image = rng.integers(info.min, info.max, (height, width, channels), endpoint=True).astype(dtype)
        expected = tf.image.resize(image, size, method="bilinear", antialias=True)
        if info is not None:
            expected = tf.clip_by_value(tf.round(expected), float(info.min), float(info.max))
        got = resize_window(tf.constant(image), size)
        assert got.dtype == dtype and got.shape == (*size, channels)
        assert np.array_equal(got.numpy(), tf.cast(expected, dtype).numpy()), ((height, width), size, channels)


# ---- through reader.load: exact pixels ---------------------------------------------------------


@pytest.fixture(scope="module")
def full_jpeg_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """Full JPEG images (4:2:0, sizes not multiples of the 16 px MCU) and PNGs mixed."""
    path = str(tmp_path_factory.mktemp("full_rrc"))
    sizes = ((96, 128), (75, 100), (130, 61), (41, 203), (64, 64))
    return path, fx.full_image_dataset(path, (schema.FORMAT_JPEG, schema.FORMAT_PNG, schema.FORMAT_JPEG), sizes=sizes)


@pytest.fixture(scope="module")
def precropped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict]]:
    out = {}
    for fmt in (schema.FORMAT_RAW, schema.FORMAT_JPEG):
        path = str(tmp_path_factory.mktemp(f"pre_{fmt}"))
        out[fmt] = path, fx.precropped_dataset(path, fmt, size=(48, 40), counts={"train": 16}, shards=2)
    return out


def collect(dataset: tf.data.Dataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    images, metas = [], []
    for image, _label, meta in dataset.as_numpy_iterator():
        images.append(image)
        metas.append(meta)
    return np.concatenate(images), {key: np.concatenate([m[key] for m in metas]) for key in metas[0]}


def check_against_reference(
    images: np.ndarray, meta: dict[str, np.ndarray], stored: list[fx.Stored], size: tuple[int, int]
) -> None:
    by_name = fx.by_filename(stored)
    assert images.dtype == np.uint8 and images.shape[1:3] == size
    seen = []
    for image, name, window, flipped in zip(
        images, meta["filename"], meta["crop_window"], meta["flipped"], strict=True
    ):
        example = by_name[name.decode()]
        y, x, h, w = (int(v) for v in window)
        height, width = example.pixels.shape[:2]
        assert min(y, x) >= 0 and y + h <= height and x + w <= width
        assert np.array_equal(image, reference(example, window, bool(flipped), size)), name
        seen.append(name.decode())
    assert sorted(seen) == sorted(by_name), "every example once"


def test_full_images_match_the_reference(full_jpeg_ds: tuple[str, dict], batched_route: str) -> None:
    path, splits = full_jpeg_ds
    data = reader.load(
        path,
        batch_size=8,
        crop="random_resized",
        crop_size=(40, 48),
        flip=True,
        seed=5,
        normalize="none",
        with_metadata=True,
    )
    images, meta = collect(data)
    check_against_reference(images, meta, splits["train"], (40, 48))
    assert len({tuple(w) for w in meta["crop_window"]}) > 10, "windows vary"
    assert 0 < meta["flipped"].sum() < len(images)
    # Windows smaller than the output are upscaled, larger ones shrunk: both happen here.
    areas = meta["crop_window"][:, 2] * meta["crop_window"][:, 3]
    assert areas.min() < 40 * 48 < areas.max()


def test_full_images_unbatched_match_the_reference(full_jpeg_ds: tuple[str, dict]) -> None:
    path, splits = full_jpeg_ds
    data = reader.load(
        path,
        "validation",
        batch_size=None,
        crop="random_resized",
        crop_size=16,
        seed=1,
        normalize="none",
        with_metadata=True,
    )
    images, metas = [], []
    for image, _label, meta in data.as_numpy_iterator():
        images.append(image)
        metas.append({key: np.asarray(value)[None] for key, value in meta.items()})
    merged = {key: np.concatenate([m[key] for m in metas]) for key in metas[0]}
    check_against_reference(np.stack(images), merged, splits["validation"], (16, 16))


@pytest.mark.parametrize("fmt", [schema.FORMAT_RAW, schema.FORMAT_JPEG])
def test_precropped_images_match_the_reference(fmt: str, precropped: dict[str, tuple[str, dict]]) -> None:
    path, splits = precropped[fmt]
    # Larger than the stored 48x40 images: a random_resized window is resized, so any size is fine.
    data = reader.load(
        path,
        batch_size=6,
        crop="random_resized",
        crop_size=56,
        scale=(0.25, 1.0),
        ratio=(0.5, 2.0),
        flip=True,
        seed=2,
        normalize="none",
        with_metadata=True,
    )
    images, meta = collect(data)
    check_against_reference(images, meta, splits["train"], (56, 56))
    fraction = meta["crop_window"][:, 2] * meta["crop_window"][:, 3] / (48 * 40)
    assert fraction.min() >= 0.2 and fraction.max() <= 1.0


@pytest.mark.parametrize("fmt", [schema.FORMAT_RAW, schema.FORMAT_JPEG])
def test_same_seed_same_windows_and_pixels(fmt: str, precropped: dict[str, tuple[str, dict]]) -> None:
    path, _ = precropped[fmt]

    def run(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        options = dict(crop="random_resized", crop_size=20, flip=True, normalize="none", with_metadata=True)
        return collect(reader.load(path, batch_size=4, seed=seed, **options))

    (images_a, meta_a), (images_b, meta_b), (_, meta_c) = run(4), run(4), run(5)
    assert np.array_equal(images_a, images_b)
    for key in ("filename", "crop_window", "flipped"):
        assert np.array_equal(meta_a[key], meta_b[key]), key
    assert not np.array_equal(meta_a["crop_window"], meta_c["crop_window"])


def test_normalized_output_is_the_uint8_window_rescaled(precropped: dict[str, tuple[str, dict]]) -> None:
    path, _ = precropped[schema.FORMAT_JPEG]
    options = dict(batch_size=16, crop="random_resized", crop_size=12, seed=3, shuffle=False)
    (unit, _), (raw, _) = (
        next(reader.load(path, normalize=mode, **options).as_numpy_iterator()) for mode in ("unit", "none")
    )
    assert unit.dtype == np.float32 and np.allclose(unit, raw / 255.0)


# ---- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop": "random_resized"}, "needs crop_size"),
        ({"crop": "random_resized", "crop_size": 8, "scale": (0.5, 0.1)}, "scale must satisfy"),
        ({"crop": "random_resized", "crop_size": 8, "scale": (0.1, 1.5)}, "scale must satisfy"),
        ({"crop": "random_resized", "crop_size": 8, "scale": (0.0, 1.0)}, "scale must satisfy"),
        ({"crop": "random_resized", "crop_size": 8, "ratio": (1.0,)}, "ratio must be a"),
        ({"crop": "random_resized", "crop_size": 8, "ratio": (-1.0, 1.0)}, "ratio must satisfy"),
        ({"crop": "random", "crop_size": 8, "scale": (0.5, 1.0)}, "random_resized' only"),
        ({"crop": "center", "crop_size": 8, "ratio": (1.0, 1.0)}, "random_resized' only"),
    ],
)
def test_bad_options_fail_when_the_config_is_built(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reader.DecodeConfig(**kwargs)


def test_ranges_given_as_lists_equal_tuples() -> None:
    a = reader.DecodeConfig(crop="random_resized", crop_size=8, scale=[0.2, 1], ratio=[1, 2])
    assert a == reader.DecodeConfig(crop="random_resized", crop_size=8, scale=(0.2, 1.0), ratio=(1.0, 2.0))
    assert a.scale == (0.2, 1.0) and a.ratio == (1.0, 2.0)
