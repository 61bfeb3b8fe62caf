"""reader/example_proto.py: tf.train.Example's classes without TensorFlow serialize to the same
bytes as TensorFlow's, parse TensorFlow's bytes, and load without importing TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cropshard.reader import schema
from cropshard.reader.example_proto import example_pb2


def fill(example) -> None:
    feature = example.features.feature
    feature["image/encoded"].bytes_list.value.append(b"\x00\xffpixels")
    feature["image/height"].int64_list.value.extend([7, -1, 2**40])
    feature["image/geo/transform"].float_list.value.extend([0.5, -2.25, 1e30])
    feature["a"].bytes_list.value.extend([b"", "ü".encode()])
    feature["empty"].int64_list.SetInParent()


def test_same_bytes_as_tensorflows_example_both_ways() -> None:
    from tensorflow.core.example import example_pb2 as tf_pb2

    ours, theirs = example_pb2().Example(), tf_pb2.Example()
    fill(ours)
    fill(theirs)
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    parsed = example_pb2().Example.FromString(theirs.SerializeToString(deterministic=True))
    assert parsed == ours and tf_pb2.Example.FromString(ours.SerializeToString()) == theirs
    assert example_pb2().Example.DESCRIPTOR.full_name == "tensorflow.Example"


def test_records_parse_with_tf_io_parse_example() -> None:
    import tensorflow as tf

    record = schema.ImageRecord(b"\x01\x02\x03\x04", "raw", 2, 2, 1, 5, "five", "/in/a.tif", (0, 0, 2, 2), "ab" * 32,
                                "uint8", "EPSG:32613", (1.0, 0.5, 0.0, 2.0, 0.0, -0.5))
    serialized = schema.encode_example(record)
    parsed = tf.io.parse_single_example(serialized, {"image/class/label": tf.io.FixedLenFeature([], tf.int64),
                                                    "image/encoded": tf.io.FixedLenFeature([], tf.string)})
    assert int(parsed["image/class/label"]) == 5 and parsed["image/encoded"].numpy() == b"\x01\x02\x03\x04"
    assert schema.decode_example(serialized) == record


@pytest.mark.slow  # a child process
def test_encoding_an_example_imports_no_tensorflow() -> None:
    code = (
        "import sys\nfrom cropshard.reader import schema\n"
        "schema.encode_example(schema.ImageRecord(b'\\0', 'raw', 1, 1, 1, -1, '', '', (0, 0, 1, 1), ''))\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_raster_records_samples_and_transform_are_little_endian_on_the_wire() -> None:
    # decode_example(encode_example(r)) == r cannot see a byte order flipped on both sides; the
    # tf.data reader (tf.io.decode_raw) and tools/leakage read the transform as little-endian, so
    # a big-endian writer gave every chip a garbage transform. Parsed here without cropshard.
    import numpy as np
    import tensorflow as tf

    pixels = np.array([[1, 258], [4095, 65535]], dtype="<u2")
    transform = (500000.0, 10.0, 0.0, 4400000.0, 0.0, -10.0)
    record = schema.ImageRecord(pixels.tobytes(), "raw", 2, 2, 1, 0, "a", "/in/a.tif", (0, 0, 2, 2), "ab" * 32,
                                "uint16", "EPSG:32613", transform)
    parsed = tf.io.parse_single_example(
        schema.encode_example(record),
        {key: tf.io.FixedLenFeature([], tf.string) for key in ("image/encoded", "image/dtype", "image/geo/transform")},
    )
    assert parsed["image/dtype"].numpy() == b"uint16"
    assert np.frombuffer(parsed["image/encoded"].numpy(), "<u2").tolist() == [1, 258, 4095, 65535]
    assert np.frombuffer(parsed["image/geo/transform"].numpy(), "<f8").tolist() == list(transform)
    assert tf.io.decode_raw(parsed["image/geo/transform"], tf.float64).numpy().tolist() == list(transform)


def _record(**changes):
    fields = dict(encoded=b"\x01\x02\x03\x04", format="raw", height=2, width=2, channels=1, label=0, label_text="a",
                  filename="/in/a.png", crop_box=(0, 0, 2, 2), sha256="ab" * 32)
    return schema.ImageRecord(**{**fields, **changes})


def test_malformed_records_are_refused_when_built() -> None:
    # No test handed ImageRecord a malformed record: a 3-number crop box, a CRS without its
    # transform, or float32 bytes counted at the wrong width were written as they came.
    assert _record(encoded=b"\0" * 8, height=2, width=1, dtype="float32").dtype == "float32"  # 2 samples x 4 bytes
    for changes in (
        {"encoded": b"\0" * 4, "height": 2, "width": 1, "dtype": "float32"},  # 2 float32 need 8 bytes
        {"encoded": b"\0" * 3},
        {"crop_box": (0, 0, 2)},
        {"geo_crs": "EPSG:32613"},
        {"geo_transform": (1.0, 0.5, 0.0, 2.0, 0.0, -0.5)},
        {"geo_crs": "EPSG:32613", "geo_transform": (1.0, 0.5, 0.0, 2.0, 0.0)},
    ):
        with pytest.raises(ValueError):
            _record(**changes)


def test_an_example_without_cropshards_features_is_refused() -> None:
    # Without the check a foreign Example (no image/class/label) raised IndexError deep inside, or
    # decoded with made-up values.
    example = example_pb2().Example.FromString(schema.encode_example(_record()))
    del example.features.feature["image/class/label"]
    with pytest.raises(ValueError, match=r"missing features \['image/class/label'\]"):
        schema.decode_example(example.SerializeToString())


def test_a_plain_tf_parse_of_a_photo_record_gives_dtype_uint8() -> None:
    # The optional image/dtype is written only when it is not uint8, so feature_spec()'s default
    # is what a plain tf.io.parse_example user gets for every photo record.
    import tensorflow as tf

    parsed = tf.io.parse_single_example(schema.encode_example(_record()), schema.feature_spec())
    assert parsed["image/dtype"].numpy() == b"uint8"
    assert parsed["image/crop/box"].numpy().tolist() == [0, 0, 2, 2]
