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
