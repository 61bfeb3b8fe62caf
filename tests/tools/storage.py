"""Storage that fails, through the reader's filesystem seam (`cropshard.reader.fileio.use`): what
inspect and compare see when gs:// cannot be reached, without a network or TensorFlow's retries."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any

import tensorflow as tf
from cropshard.reader import fileio


def unavailable(path: str) -> Exception:
    return tf.errors.UnavailableError(None, None, "connection refused by the storage service")


class BucketOnDisk(fileio.FileSystem):
    """Serves gs://bucket/... from a local directory; `fails(path)` gives the error a call for
    `path` raises instead (None: the call works); `tf_path` maps a path for TensorFlow's own reads."""

    def __init__(self, root: str, fails: Callable[[str], Exception | None] = lambda path: None,
                 tf_path: Callable[[str], str] | None = None) -> None:
        self.root = root
        self._fails = fails
        self._tf_path = tf_path

    def _local(self, path: str) -> str:
        error = self._fails(path)
        if error is not None:
            raise error
        assert path.startswith("gs://bucket/"), path
        return os.path.join(self.root, path[len("gs://bucket/"):])

    def exists(self, path: str) -> bool:
        return os.path.exists(self._local(path))

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._local(path))

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        return open(self._local(path), mode)  # noqa: SIM115 - the caller closes it

    def size(self, path: str) -> int:
        return os.path.getsize(self._local(path))

    def tf_path(self, path: str) -> str:
        return self._tf_path(path) if self._tf_path else self._local(path)


def unreachable() -> BucketOnDisk:
    """Every call fails, as TF's gs:// filesystem does with no network or credentials."""
    return BucketOnDisk("/nonexistent", fails=unavailable)
