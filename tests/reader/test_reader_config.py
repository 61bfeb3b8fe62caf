"""The reader's pure pieces, tested directly: option validation, worker sharding, route choice, crop window math."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests import reader_fixtures as fx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from cropshard import reader  # noqa: E402
from cropshard.reader import config, corruption, decode, records, schema  # noqa: E402

# ---- option validation ------------------------------------------------------------------------


def test_configs_are_frozen_and_default_to_loads_defaults() -> None:
    read, image = reader.ReadConfig(), reader.DecodeConfig()
    assert (read.shuffle, read.shuffle_buffer, read.on_corrupt, read.cycle_length, read.read_buffer_bytes) == (
        True, 1024, "raise", 8, 256 << 10,
    )
    assert (image.crop, image.flip, image.normalize, image.with_metadata, image.window) == (None, False, "unit", False, None)
    with pytest.raises(AttributeError):
        read.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop": "corner", "crop_size": 8}, "crop must be None"),
        ({"crop_size": 8}, "crop_size given without crop"),
        ({"crop": "random"}, "needs crop_size"),
        ({"crop": "center", "crop_size": (8, 8, 3)}, r"int or \(height, width\)"),
        ({"crop": "center", "crop_size": 0}, "positive"),
        ({"normalize": "imagenet"}, "normalize must be"),
        ({"normalize": (0.5,)}, "normalize must be"),
        ({"normalize": ((0.5,), (0.0,))}, "std must be positive"),
        ({"normalize": ("0.5", "0.2")}, "normalize must be"),  # text is not a number
        ({"normalize": (True, 0.2)}, "normalize must be"),
        ({"normalize": (np.array([[0.5]]), 0.2)}, "normalize must be"),
        ({"crop": "center", "crop_size": (224.7, 224)}, r"int or \(height, width\)"),  # never truncated to 224
        ({"crop": "center", "crop_size": "224"}, r"int or \(height, width\)"),
        ({"crop": "center", "crop_size": True}, r"int or \(height, width\)"),
        ({"flip": "yes"}, "flip must be True or False, got 'yes'"),
        ({"with_metadata": 1}, "with_metadata must be True or False"),
    ],
)
def test_decode_config_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reader.DecodeConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_corrupt": "ignore"}, "on_corrupt must be"),
        ({"num_shards": 2}, "go together"),
        ({"index": 0}, "go together"),
        ({"num_shards": 2, "index": 2}, r"index must be in \[0, num_shards=2\)"),
        ({"num_shards": 2, "index": -1}, "index must be"),
        (
            {"input_context": tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0), "num_shards": 2},
            "either input_context or num_shards",
        ),
        ({"shuffle": "False"}, "shuffle must be True or False, got 'False'"),  # a truthy string would shuffle
        ({"repeat": 2}, "repeat must be True or False, got 2"),  # not two epochs
        ({"deterministic": "no"}, "deterministic must be True or False or None"),
        ({"seed": "1"}, "seed must be an int or None, got '1'"),
        ({"seed": 1.5}, "seed must be an int or None"),
        ({"shuffle_buffer": 0}, "shuffle_buffer must be >= 1, got 0"),
        ({"cycle_length": 0}, "cycle_length must be >= 1"),
        ({"read_buffer_bytes": -1}, "read_buffer_bytes must be >= 0"),
        ({"num_shards": 2.0, "index": 0}, "num_shards must be an int"),
    ],
)
def test_read_config_rejects(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reader.ReadConfig(**kwargs)


def test_workers_and_order_guarantee() -> None:
    assert reader.ReadConfig().workers == (1, 0)
    assert reader.ReadConfig(num_shards=4, index=3).workers == (4, 3)
    ctx = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=1)
    assert reader.ReadConfig(input_context=ctx).workers == (3, 1)
    assert not reader.ReadConfig().ordered and reader.ReadConfig(seed=0).ordered
    assert reader.ReadConfig(deterministic=True).ordered and not reader.ReadConfig(seed=0, deterministic=False).ordered


def test_crop_hw_and_normalization() -> None:
    assert config.crop_hw(7) == (7, 7) and config.crop_hw([5, 9]) == (5, 9)
    assert config.crop_hw(np.int64(7)) == (7, 7) and config.crop_hw(np.array([5, 9])) == (5, 9)  # NumPy integers are ints
    assert reader.ReadConfig(seed=np.int32(3), shuffle=np.bool_(False)).seed == 3
    assert config.parse_normalize("none") == config.Normalization("none")
    assert config.parse_normalize((0.5, [0.2, 0.25, 0.5])) == config.Normalization("meanstd", (0.5,), (0.2, 0.25, 0.5))
    # NumPy arrays, as computed means and stds usually are (np.ndarray is no Sequence: refused before)
    assert config.parse_normalize((np.array([0.5, 0.25]), np.array([0.5, 0.5]))) == config.Normalization("meanstd", (0.5, 0.25), (0.5, 0.5))
    config.check_channels(config.parse_normalize(((0.1, 0.2, 0.3), 0.5)), 3)
    config.check_channels(config.parse_normalize("unit"), 3)
    with pytest.raises(ValueError, match="mean needs 1 or 3 values"):
        config.check_channels(config.parse_normalize(((0.1, 0.2), 0.5)), 3)
    with pytest.raises(ValueError, match="std needs 1 or 1 values"):
        config.check_channels(config.parse_normalize((0.1, (0.5, 0.5))), 1)


# ---- load takes the configs in place of the arguments -----------------------------------------


@pytest.fixture(scope="module")
def raw_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("raw"))
    fx.precropped_dataset(path, schema.FORMAT_RAW, counts={"train": 12}, shards=3)
    return path


def test_config_objects_give_the_same_stream_as_arguments(raw_path: str) -> None:
    options = {"seed": 4, "shuffle_buffer": 5, "num_shards": 3, "index": 1}
    image = {"crop": "random", "crop_size": (10, 12), "flip": True, "normalize": "none", "with_metadata": True}
    by_arguments = list(reader.as_numpy(raw_path, batch_size=2, **options, **image))
    by_configs = list(
        reader.as_numpy(raw_path, batch_size=2, read_config=reader.ReadConfig(**options), decode_config=reader.DecodeConfig(**image))
    )
    assert len(by_arguments) == len(by_configs) == 2
    for a, b in zip(by_arguments, by_configs, strict=True):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert list(a[2]["filename"]) == list(b[2]["filename"])


def test_config_object_and_its_argument_together_is_an_error(raw_path: str) -> None:
    with pytest.raises(ValueError, match="pass read_config or the arguments it groups.*seed"):
        reader.load(raw_path, seed=1, read_config=reader.ReadConfig(seed=2))
    with pytest.raises(ValueError, match="pass decode_config or the arguments it groups.*flip"):
        reader.load(raw_path, flip=True, decode_config=reader.DecodeConfig())
    # An argument equal to its default is still the caller's choice, which the object would override.
    with pytest.raises(ValueError, match=r"pass read_config or the arguments it groups.*\(also given: shuffle\)"):
        reader.load(raw_path, shuffle=True, read_config=reader.ReadConfig(shuffle=False))
    with pytest.raises(ValueError, match=r"pass decode_config or the arguments it groups.*\(also given: flip, normalize\)"):
        reader.as_numpy(raw_path, normalize="unit", flip=False, decode_config=reader.DecodeConfig(flip=True)).__next__()
    with pytest.raises(ValueError, match="batch_size"):
        reader.load(raw_path, batch_size=0)


# ---- worker sharding, markers, route choice ---------------------------------------------------


def test_assign_files_whole_files_when_enough_else_by_record() -> None:
    assert records.assign_files(5, 1, 0) == records.FileAssignment((0, 1, 2, 3, 4), by_record=False)
    assert records.assign_files(5, 2, 0).files == (0, 2, 4) and records.assign_files(5, 2, 1).files == (1, 3)
    shares = [records.assign_files(6, 3, i).files for i in range(3)]
    assert sorted(sum(shares, ())) == list(range(6))
    assert records.assign_files(2, 3, 2) == records.FileAssignment((0, 1), by_record=True)


def test_marker_is_not_an_example_and_names_the_shard() -> None:
    marker = corruption.marker(12, "gs://b/train-00012-of-00020.tfrecord")
    assert marker == b"\x00cropshard-unreadable-record:00000012:gs://b/train-00012-of-00020.tfrecord"
    with pytest.raises(Exception):  # noqa: B017 - any parse failure: a marker must never decode as data
        schema.decode_example(marker)


def test_choose_route() -> None:
    raw, jpeg, png = schema.FORMAT_RAW, schema.FORMAT_JPEG, schema.FORMAT_PNG
    assert decode.choose_route(32, (raw,), (24, 20, 3)) == decode.ROUTE_FIXED_RAW
    assert decode.choose_route(32, (jpeg,), (24, 20, 3)) == decode.ROUTE_FIXED_SIZE
    assert decode.choose_route(32, (raw, png), (24, 20, 3)) == decode.ROUTE_FIXED_SIZE
    assert decode.choose_route(None, (raw,), (24, 20, 3)) == decode.ROUTE_FULL_IMAGE
    assert decode.choose_route(32, (jpeg, png), None) == decode.ROUTE_FULL_IMAGE
    # Full images batched to a window: decoded in the batch's call, whatever the format.
    assert decode.choose_route(32, (jpeg, png), None, (16, 16)) == decode.ROUTE_FIXED_SIZE
    assert decode.choose_route(32, (raw,), None, (16, 16)) == decode.ROUTE_FIXED_SIZE
    assert decode.choose_route(None, (jpeg,), None, (16, 16)) == decode.ROUTE_FULL_IMAGE
    # ... and per image once records are large on average; fixed-shape raw and unbatched reading stay.
    large = decode.PER_IMAGE_RECORD_BYTES
    assert decode.choose_route(32, (jpeg,), None, (16, 16), large - 1) == decode.ROUTE_FIXED_SIZE
    assert decode.choose_route(32, (jpeg,), None, (16, 16), large) == decode.ROUTE_PER_IMAGE
    assert decode.choose_route(32, (jpeg,), (24, 20, 3), None, large) == decode.ROUTE_PER_IMAGE
    assert decode.choose_route(32, (raw,), (24, 20, 3), None, large) == decode.ROUTE_FIXED_RAW
    assert decode.choose_route(None, (jpeg,), None, (16, 16), large) == decode.ROUTE_FULL_IMAGE


def test_fixed_raw_needs_a_second_pass_only_when_asked() -> None:
    facts = {"fixed_shape": (24, 20, 3), "channels": 3, "formats": (schema.FORMAT_RAW,)}

    def route(**kwargs: object) -> decode.FixedRawRoute:
        return decode.FixedRawRoute(reader.DecodeConfig(**kwargs), **facts)  # type: ignore[arg-type]

    assert not route(normalize="none").needs_finishing
    assert not route(normalize="none", crop="center", crop_size=(24, 20)).needs_finishing  # the stored size
    assert route(normalize="none", crop="center", crop_size=(10, 20)).needs_finishing
    assert route().needs_finishing  # 'unit' normalisation
    assert route(normalize="none", flip=True).needs_finishing
    assert route(normalize="none", with_metadata=True).needs_finishing


# ---- crop window math ---------------------------------------------------------------------------


def windows(heights: list[int], widths: list[int], window: tuple[int, int] | None, crop: str | None, flip: bool, seed: int = 0):
    h = tf.constant(heights, tf.int32)
    w = tf.constant(widths, tf.int32)
    out = decode.crop_windows(h, w, tf.constant([seed, 1], tf.int64), window, crop, flip)
    return [np.asarray(v) for v in out]


def test_center_windows_are_clamped_and_centered() -> None:
    y, x, h, w, flipped = windows([40, 20, 33], [56, 26, 80], (32, 32), "center", False)
    assert h.tolist() == [32, 20, 32] and w.tolist() == [32, 26, 32]
    assert y.tolist() == [4, 0, 0] and x.tolist() == [12, 0, 24]
    assert not flipped.any()


def test_random_windows_fit_cover_every_offset_and_repeat_with_the_seed() -> None:
    heights, widths = [12] * 400, [9] * 400
    y, x, h, w, flipped = windows(heights, widths, (10, 4), "random", True, seed=3)
    assert (h == 10).all() and (w == 4).all()
    assert set(y.tolist()) == {0, 1, 2} and set(x.tolist()) == set(range(6))  # every position that fits
    assert 100 < flipped.sum() < 300
    again = windows(heights, widths, (10, 4), "random", True, seed=3)
    other = windows(heights, widths, (10, 4), "random", True, seed=4)
    assert np.array_equal(y, again[0]) and np.array_equal(x, again[1]) and np.array_equal(flipped, again[4])
    assert not np.array_equal(y, other[0])


def test_no_window_means_the_whole_image() -> None:
    y, x, h, w, _ = windows([5, 7], [6, 8], None, None, False)
    assert y.tolist() == x.tolist() == [0, 0] and h.tolist() == [5, 7] and w.tolist() == [6, 8]


def test_normalize_images() -> None:
    pixels = tf.constant([[[[0, 51, 255]]]], tf.uint8)
    assert decode.normalize_images(pixels, config.Normalization("none")) is pixels
    np.testing.assert_allclose(decode.normalize_images(pixels, config.Normalization("unit")).numpy(), [[[[0, 0.2, 1]]]])
    standard = decode.normalize_images(pixels, config.Normalization("meanstd", (0.0, 0.2, 0.5), (1.0, 0.5, 0.25)))
    np.testing.assert_allclose(standard.numpy(), [[[[0, 0, 2]]]], atol=1e-6)


def test_load_refuses_a_fractional_batch_and_a_file_for_the_dataset(raw_path: str) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int or None, got 2.5"):
        reader.load(raw_path, batch_size=2.5)
    with pytest.raises(ValueError, match="drop_remainder must be True or False"):
        reader.load(raw_path, drop_remainder="True")
    shard = next(name for name in os.listdir(raw_path) if name.endswith(".tfrecord"))
    with pytest.raises(reader.DatasetError, match="cannot be listed as a directory .*pass the dataset directory"):
        reader.load(os.path.join(raw_path, shard))
