"""cropshard reader: feed cropshard TFRecord datasets to training with tf.data.

Needs only TensorFlow and NumPy (no Beam, no Pillow), so a training image can
`pip install cropshard-reader[tf]` (or `[tf-cpu]`, or neither if it ships its own TF build).

    from cropshard import reader
    ds = reader.load("gs://bucket/flowers", split="train", batch_size=64, crop="random", crop_size=224, flip=True)
    model.fit(ds, epochs=10)

Names are resolved lazily so that importing the package (and tools that only read cropshard.json
through `cropshard.reader.metadata`) does not import TensorFlow.
"""

from __future__ import annotations

from typing import Any

from cropshard.reader.version import __version__  # noqa: F401 - the package version, re-exported

_EXPORTS = {
    "load": "dataset",
    "info": "dataset",
    "as_numpy": "dataset",
    "ReadConfig": "config",
    "DecodeConfig": "config",
    "CorruptionReport": "corruption",
    "verify": "integrity",
    "VerifyReport": "integrity",
    "ShardReport": "integrity",
    "DatasetInfo": "metadata",
    "DatasetError": "metadata",
    "IncompleteDatasetError": "metadata",
    "FileSystem": "fileio",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'cropshard.reader' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
