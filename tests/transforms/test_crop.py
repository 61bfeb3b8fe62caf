"""Crop geometry and split hashing: pure functions, no Beam, no pixels."""

import collections

import pytest
from cropshard.transforms.crop import (
    CropSpec,
    box_in_source,
    center_box,
    grid_boxes,
    hash_split,
    parse_box,
    parse_size,
    parse_split_spec,
    plan_boxes,
    random_boxes,
    resized_shape,
    upscaled_shape,
    working_shape,
)
from cropshard.transforms.rejects import Rejected


def test_parse_size_and_box():
    assert parse_size("128x96") == (128, 96)
    assert parse_size("64") == (64, 64)
    assert parse_box("1,2,3,4") == (1, 2, 3, 4)
    assert parse_box("[1, 2, 3, 4]") == (1, 2, 3, 4)
    assert parse_box("1 2 3 4") == (1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "1,2,0,4", "-1,0,3,3"):
        with pytest.raises(ValueError):
            parse_box(bad)
    with pytest.raises(ValueError):
        parse_size("12y5")


def test_center_box_is_centred_and_pads_when_small():
    assert center_box(100, 200, (50, 50)) == (25, 75, 50, 50)
    assert center_box(101, 201, (50, 50)) == (25, 75, 50, 50)
    assert center_box(10, 10, (20, 20)) == (-5, -5, 20, 20)


def test_random_boxes_are_keyed_by_image_and_inside():
    first = random_boxes(300, 400, (64, 32), 20, key="a/b.jpg", seed=1)
    assert first == random_boxes(300, 400, (64, 32), 20, key="a/b.jpg", seed=1)
    assert first != random_boxes(300, 400, (64, 32), 20, key="a/c.jpg", seed=1)
    assert first != random_boxes(300, 400, (64, 32), 20, key="a/b.jpg", seed=2)
    for y, x, h, w in first:
        assert 0 <= y <= 300 - 64 and 0 <= x <= 400 - 32 and (h, w) == (64, 32)
    assert len({b[:2] for b in first}) > 10  # positions vary


def test_grid_boxes_cover_full_tiles_only():
    boxes = grid_boxes(250, 300, (100, 100))
    assert boxes == [(0, 0, 100, 100), (0, 100, 100, 100), (0, 200, 100, 100), (100, 0, 100, 100), (100, 100, 100, 100), (100, 200, 100, 100)]
    assert len(grid_boxes(250, 300, (100, 100), (50, 50))) == 4 * 5
    assert grid_boxes(50, 50, (100, 100)) == []


def test_resize_and_upscale_shapes():
    assert resized_shape(3000, 4000, 256) == (256, 341)
    assert resized_shape(4000, 3000, 256) == (341, 256)
    assert upscaled_shape(50, 100, (64, 64)) == (64, 128)
    spec = CropSpec("center", size=(224, 224), resize=256)
    assert working_shape(spec, 3000, 4000) == (256, 341)
    assert working_shape(CropSpec("center", size=(64, 64), small="upscale"), 50, 100) == (64, 128)


def test_plan_boxes_strategies_and_rejections():
    assert plan_boxes(CropSpec("none"), 30, 40, "k") == [(0, 0, 30, 40)]
    assert plan_boxes(CropSpec("box", box=(1, 2, 10, 10)), 30, 40, "k") == [(1, 2, 10, 10)]
    with pytest.raises(Rejected) as err:
        plan_boxes(CropSpec("box", box=(25, 2, 10, 10)), 30, 40, "k")
    assert err.value.reason == "box_outside_image"
    with pytest.raises(Rejected) as err:
        plan_boxes(CropSpec("center", size=(64, 64)), 30, 40, "k")
    assert err.value.reason == "too_small"
    assert plan_boxes(CropSpec("center", size=(64, 64), small="pad"), 30, 40, "k") == [(-17, -12, 64, 64)]
    with pytest.raises(Rejected) as err:
        plan_boxes(CropSpec("manifest"), 30, 40, "k", manifest_box=None)
    assert err.value.reason == "missing_box"
    assert len(plan_boxes(CropSpec("random", size=(8, 8), crops_per_image=5), 30, 40, "k")) == 5


def test_box_in_source_maps_back_through_resize():
    # a 128x128 window at (64, 100) in a 256x341 resize of a 3000x4000 image
    y, x, h, w = box_in_source((64, 100, 128, 128), (256, 341), (3000, 4000))
    assert (y, x) == (750, 1173)
    assert abs(h - 1500) <= 1 and abs(w - 1501) <= 2


def test_crop_spec_validation():
    with pytest.raises(ValueError, match="needs --size"):
        CropSpec("center")
    with pytest.raises(ValueError, match="needs --box"):
        CropSpec("box")
    with pytest.raises(ValueError, match="unknown crop strategy"):
        CropSpec("diagonal", size=(1, 1))


def test_split_spec_parsing():
    assert parse_split_spec("train=0.8,validation=0.2") == (("train", 0.8), ("validation", 0.2))
    assert parse_split_spec("train,test") == ("train", "test")
    for bad in ("train=0.5,test=0.4", "train=0.5,test", "tr ain=1", "a=1,a=0"):
        with pytest.raises(ValueError):
            parse_split_spec(bad)


def test_hash_split_is_stable_and_proportional():
    fractions = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
    keys = [f"class{i % 7}/img_{i}.jpg" for i in range(20000)]
    first = [hash_split(k, fractions) for k in keys]
    assert first == [hash_split(k, fractions) for k in keys]
    counts = collections.Counter(first)
    assert abs(counts["train"] / len(keys) - 0.8) < 0.02
    assert abs(counts["test"] / len(keys) - 0.1) < 0.02
    assert hash_split("x", (("train", 1.0), ("test", 0.0))) == "train"
