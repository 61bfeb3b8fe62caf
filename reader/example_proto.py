"""tf.train.Example's message classes built from its schema with protobuf alone, without TensorFlow.

`from tensorflow.core.example import example_pb2` imports all of TensorFlow: about 6 CPU-seconds
in every writer worker process, which only serializes examples (and more than the whole raster
chipping of a 10000x10000 image). These classes are declared field for field as TensorFlow's
`tensorflow/core/example/{example,feature}.proto` (proto3, the same names, numbers and packed
repeated scalars), in a private descriptor pool so that they never clash with TensorFlow's own
when both are loaded; their serialized bytes are the same (tests/reader/test_example_proto.py).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, label: int = _F.LABEL_OPTIONAL, type_name: str = "", oneof: int | None = None) -> _F:
    field = _F(name=name, number=number, type=kind, label=label, json_name=name)
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    if label == _F.LABEL_REPEATED and kind in (_F.TYPE_FLOAT, _F.TYPE_INT64):
        field.options.packed = True
    return field


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="cropshard/reader/tf_example.proto", package="tensorflow", syntax="proto3")
    for name, kind in (("BytesList", _F.TYPE_BYTES), ("FloatList", _F.TYPE_FLOAT), ("Int64List", _F.TYPE_INT64)):
        proto.message_type.add(name=name, field=[_field("value", 1, kind, _F.LABEL_REPEATED)])
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name, kind in ((1, "bytes_list", "BytesList"), (2, "float_list", "FloatList"), (3, "int64_list", "Int64List")):
        feature.field.append(_field(name, number, _F.TYPE_MESSAGE, type_name=f".tensorflow.{kind}", oneof=0))
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.extend([_field("key", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_MESSAGE, type_name=".tensorflow.Feature")])
    features.field.append(_field("feature", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".tensorflow.Features.FeatureEntry"))
    proto.message_type.add(name="Example", field=[_field("features", 1, _F.TYPE_MESSAGE, type_name=".tensorflow.Features")])
    return proto


@functools.cache
def example_pb2() -> SimpleNamespace:
    """A stand-in for TensorFlow's `example_pb2` module: `.Example`, `.Features`, `.Feature`,
    `.BytesList`, `.FloatList`, `.Int64List`."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    names = ("Example", "Features", "Feature", "BytesList", "FloatList", "Int64List")
    return SimpleNamespace(**{name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}")) for name in names})
