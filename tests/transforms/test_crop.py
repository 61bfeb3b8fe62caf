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


def test_a_box_past_the_right_edge_of_a_tall_image_is_rejected():
    # Without the guard the width check compared x + w with the height: a 60x40 image accepted
    # a box reaching x=55, and the crop came out zero-padded past the right edge.
    with pytest.raises(Rejected) as err:
        plan_boxes(CropSpec("box", box=(0, 35, 10, 20)), 60, 40, "k")
    assert err.value.reason == "box_outside_image"
    with pytest.raises(Rejected) as err:
        plan_boxes(CropSpec("manifest"), 60, 40, "k", manifest_box=(0, 35, 10, 20))
    assert err.value.reason == "box_outside_image"


def test_small_pad_still_rejects_a_box_that_starts_outside_the_image():
    # Without the guard a box starting right of the image (x=50 in a 40-wide image) was kept
    # under --small pad: an all-padding (black) example.
    for box in ((0, 50, 10, 10), (35, 0, 10, 10)):
        with pytest.raises(Rejected) as err:
            plan_boxes(CropSpec("box", box=box, small="pad"), 30, 40, "k")
        assert err.value.reason == "box_outside_image"
    assert plan_boxes(CropSpec("box", box=(25, 35, 10, 10), small="pad"), 30, 40, "k") == [(25, 35, 10, 10)]


def test_small_upscale_does_not_pad_a_box_that_crosses_the_edge():
    # Without the guard --small upscale padded a box crossing the bottom edge like --small pad.
    with pytest.raises(Rejected) as err:
        plan_boxes(CropSpec("box", box=(25, 2, 10, 10), small="upscale"), 30, 40, "k")
    assert err.value.reason == "box_outside_image"


def test_box_output_shape_is_height_then_width():
    # output_shape becomes cropshard.json's image_shape, which the reader reshapes raw records
    # with; a (width, height) answer turns every non-square box crop into garbage.
    assert CropSpec("box", box=(0, 0, 10, 30)).output_shape == (10, 30)
    assert CropSpec("box", box=(5, 7, 40, 3)).output_shape == (40, 3)


def test_grid_with_small_pad_gives_one_centred_padded_tile():
    # Without the fallback a grid crop of an image smaller than the tile gave no crops at all:
    # the image silently produced nothing.
    assert plan_boxes(CropSpec("grid", size=(64, 64), small="pad"), 30, 40, "k") == [(-17, -12, 64, 64)]


def test_grid_with_small_upscale_scales_the_image_up_first():
    # Without grid in working_shape, --small upscale kept a 30x40 image at 30x40 and padded it.
    assert working_shape(CropSpec("grid", size=(64, 64), small="upscale"), 30, 40) == (64, 86)


def test_grid_stride_is_height_then_width():
    # With the stride axes swapped a (50, 100) stride stepped 100 down and 50 across: 10 other tiles.
    assert grid_boxes(250, 300, (100, 100), (50, 100)) == [
        (0, 0, 100, 100), (0, 100, 100, 100), (0, 200, 100, 100),
        (50, 0, 100, 100), (50, 100, 100, 100), (50, 200, 100, 100),
        (100, 0, 100, 100), (100, 100, 100, 100), (100, 200, 100, 100),
        (150, 0, 100, 100), (150, 100, 100, 100), (150, 200, 100, 100),
    ]  # fmt: skip


def test_random_crops_with_small_pad_are_centred_on_the_short_side():
    # Without the guard the padded side got offset 0 (all padding after the image), not the
    # centred layout the center strategy and the reader use.
    for y, x, h, w in random_boxes(30, 100, (64, 64), 5, "k"):
        assert y == -17 and 0 <= x <= 36 and (h, w) == (64, 64)
    for y, x, _, _ in random_boxes(100, 30, (64, 64), 5, "k"):
        assert x == -17 and 0 <= y <= 36


def test_split_spec_refuses_negative_fractions_and_path_like_names():
    # A negative fraction summing to 1 ("1.5" and "-0.5") left one split empty; a name like
    # "../train" becomes part of the shard paths.
    for bad in ("train=1.5,test=-0.5", "train=-0.5,validation=0.5,test=1.0", "../train=0.5,test=0.5", "a/b=1", "a.b=1"):
        with pytest.raises(ValueError):
            parse_split_spec(bad)
    with pytest.raises(ValueError):
        parse_split_spec("train,../test")


def test_hash_split_assignments_are_pinned():
    # The split of a key must not change between versions: a rebuilt dataset would silently
    # move images between train and test. Expected values: sha256("split\0" "0\0" key), first
    # 8 bytes big-endian / 2**64, computed once outside cropshard.
    fractions = (("train", 0.5), ("validation", 0.25), ("test", 0.25))
    expected = {
        "cats/001.jpg": "test",  # 0.939
        "dogs/002.jpg": "validation",  # 0.543
        "a.jpg": "test",  # 0.759
        "b.jpg": "train",  # 0.262
        "c.jpg": "test",  # 0.977
        "d.jpg": "validation",  # 0.586
        "f.jpg": "train",  # 0.371
    }
    assert {key: hash_split(key, fractions) for key in expected} == expected


def test_random_offsets_reach_the_last_position():
    # With the offset range one short, the last row and column of positions were never drawn.
    boxes = random_boxes(3, 3, (2, 2), 200, "k")
    assert {b[0] for b in boxes} == {0, 1} and {b[1] for b in boxes} == {0, 1}


def test_a_box_touching_the_bottom_and_right_edges_fits():
    # An off-by-one in fits() rejected boxes ending exactly on the last row or column.
    assert plan_boxes(CropSpec("box", box=(20, 0, 10, 10)), 30, 40, "k") == [(20, 0, 10, 10)]
    assert plan_boxes(CropSpec("box", box=(0, 30, 30, 10)), 30, 40, "k") == [(0, 30, 30, 10)]


def test_resize_and_upscale_shapes_round_as_documented():
    # 499 * 224 / 300 = 372.59 rounds to 373 (truncation gave 372); 47 * 64 / 30 = 100.27 is
    # covered only by 101 columns (rounding gave 100, narrower than needed).
    assert resized_shape(300, 499, 224) == (224, 373)
    assert resized_shape(499, 300, 224) == (373, 224)
    assert upscaled_shape(30, 47, (64, 64)) == (64, 101)
    assert upscaled_shape(47, 30, (64, 64)) == (101, 64)


def test_box_in_source_rounds_and_clips_padding():
    # 100 * 300 / 224 = 133.9 -> 134 (truncation gave 133); a padded box maps to the image only.
    assert box_in_source((0, 0, 100, 100), (224, 373), (300, 500)) == (0, 0, 134, 134)
    assert box_in_source((-17, -12, 64, 64), (30, 40), (30, 40)) == (0, 0, 30, 40)


def test_grid_stride_is_recorded():
    # cropshard.json recorded the crop size as the stride, whatever --stride said.
    assert CropSpec("grid", size=(64, 64), stride=(32, 16)).to_dict()["stride"] == [32, 16]
    assert CropSpec("grid", size=(64, 48)).to_dict()["stride"] == [64, 48]
