"""The reader's only door to storage: every listing, stat and open goes through `FileSystem`.

Why one small class: the reader must work unchanged on local paths and on `gs://` (and any
other filesystem TensorFlow knows). Everything Python-side goes through `tf.io.gfile`, and the
shard files are opened by TensorFlow's C++ `TFRecordDataset`, which only sees the names it is
given. Keeping both behind this seam means a test can swap in a filesystem that serves a
`gs://` path from a local directory (TF's own GCS client cannot reach a local emulator) and
exercise the real code paths, and that nothing in the reader calls `open()`/`os.*` directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, Any


class FileSystem:
    """Default filesystem: `tf.io.gfile` for Python-side access, names passed to TF ops unchanged."""

    def exists(self, path: str) -> bool:
        return bool(_gfile().exists(path))

    def listdir(self, path: str) -> list[str]:
        return [name.rstrip("/") for name in _gfile().listdir(path)]

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        return _gfile().GFile(path, mode)

    def size(self, path: str) -> int:
        return int(_gfile().stat(path).length)

    def tf_path(self, path: str) -> str:
        """The name TensorFlow's C++ file ops (TFRecordDataset) should open for `path`."""
        return path


def _gfile() -> Any:
    # Imported lazily so `import reader` and metadata-only tools do not pay for TensorFlow.
    import tensorflow as tf

    return tf.io.gfile


_current: FileSystem = FileSystem()


def get() -> FileSystem:
    """The filesystem the reader uses right now."""
    return _current


def set_filesystem(fs: FileSystem) -> FileSystem:
    """Replace the reader's filesystem (for tests and custom storage); returns the previous one."""
    global _current
    previous, _current = _current, fs
    return previous


@contextlib.contextmanager
def use(fs: FileSystem) -> Iterator[FileSystem]:
    """Use `fs` inside the `with` block, restoring the previous filesystem afterwards."""
    previous = set_filesystem(fs)
    try:
        yield fs
    finally:
        set_filesystem(previous)
