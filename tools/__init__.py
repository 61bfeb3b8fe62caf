"""cropshard's user-facing tools: `cropshard inspect` (describe, verify, contact sheet) and
`cropshard compare` (pre-cropped vs full-image datasets, measured on the user's own data).

They sit on top of the reader (`reader.load`, its metadata, schema and integrity checks) and never
import the pipeline, so they load no Beam: `compare` is handed its builds by the `cropshard`
dispatcher (see compare/__init__.py). Nothing here defines dataset format, only how it is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from cropshard.reader import fileio

# Exit status of `cropshard inspect` and `compare` when storage could not be read or written (no
# network, credentials or permission): distinct from 1 (inspect: damage found) and 2 (usage, not a
# dataset), because a script must not read "could not reach the bucket" as "the dataset is damaged".
EXIT_STORAGE = 3


def refuse_options_without(parser: argparse.ArgumentParser, args: argparse.Namespace, dests: Sequence[str], owner: str, remedy: str) -> None:
    """Exit 2 (parser.error) for the first of `dests` set to other than its default while `owner`
    is off: an option nothing reads is refused, never ignored."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    for dest in dests:
        if getattr(args, dest) != parser.get_default(dest):
            parser.error(f"{flags[dest]} is an option of {owner}: add {remedy}, or drop it")


class _StoreOnce(argparse._StoreAction):
    """argparse's `store` that refuses a second, different value for the same option."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        given = namespace.__dict__.setdefault("_given_once", {})
        if self.dest in given and given[self.dest] != values:
            parser.error(f"{option_string} is given more than once with different values; give it once")
        given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


def refuse_repeated_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make every single-value option added to `parser` after this call refuse a repeat with a
    different value (exit 2), as `cropshard build` does: argparse keeps the last without a word
    (`--samples 4 --samples 2` showed 2). Build's own check (pipeline/arguments.py) cannot be
    imported here: tools never load the pipeline or Beam. Values are compared parsed, so
    `--size 64 --size 64x64` is one value."""
    parser.register("action", None, _StoreOnce)
    parser.register("action", "store", _StoreOnce)
    return parser


def human_bytes(num: float) -> str:
    """1536 -> '1.50 KiB' (binary units, as the build summary uses)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num) < 1024 or unit == "GiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.2f} {unit}"
        num /= 1024
    raise AssertionError("unreachable")


# TensorFlow errors that are findings about the data, not storage failing: bytes that were read and
# are wrong (damage), or a file that is not there (a shard missing from the dataset).
_DATA_ERRORS = ("DataLossError", "InvalidArgumentError", "OutOfRangeError", "NotFoundError")


def storage_failure(err: BaseException) -> bool:
    """Whether `err` is storage failing (OSError, or a tf.errors.OpError such as Unavailable,
    PermissionDenied, FailedPrecondition for an unresolvable host) rather than damaged or missing data."""
    if isinstance(err, OSError):
        return not isinstance(err, FileNotFoundError)
    tf = sys.modules.get("tensorflow")  # an OpError exists only once TensorFlow is loaded
    return tf is not None and isinstance(err, tf.errors.OpError) and type(err).__name__ not in _DATA_ERRORS


def storage_error_line(tool: str, err: BaseException, fallback: str | None = None) -> str:
    """The one line a storage failure shows: what could not be read or written, and the cause."""
    action, path = getattr(err, "cropshard_path", ("read", getattr(err, "filename", None) or fallback))
    cause = " ".join(str(getattr(err, "message", err)).split())[:400]  # TF's messages span lines; the path is on the last
    target = f" {path}" if path else " storage"
    return (f"cropshard {tool}: error: could not {action}{target}: {type(err).__name__}: {cause}"
            " (a storage error, not a finding about the data: check the network, credentials and permissions)")


class _NamingFileSystem(fileio.FileSystem):
    """The reader's filesystem, unchanged, except that an error it raises carries the path and what
    was being done (`err.cropshard_path`), so storage_error_line names the object even when the
    cause does not (a custom filesystem's error, an OSError without a filename). The error's type
    is kept: the reader and the tools decide by type what an error means."""

    def __init__(self, inner: fileio.FileSystem) -> None:
        self._inner = inner

    @staticmethod
    def _call(action: str, path: str, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(path, *args)
        except Exception as err:
            if not hasattr(err, "cropshard_path"):
                err.cropshard_path = (action, path)  # type: ignore[attr-defined]
            raise

    def exists(self, path: str) -> bool:
        return bool(self._call("read", path, self._inner.exists))

    def listdir(self, path: str) -> list[str]:
        return list(self._call("list", path, self._inner.listdir))

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        return self._call("write" if set(mode) & set("wax+") else "read", path, self._inner.open, mode)

    def size(self, path: str) -> int:
        return int(self._call("read", path, self._inner.size))

    def tf_path(self, path: str) -> str:
        return self._inner.tf_path(path)


@contextlib.contextmanager
def storage_paths_named() -> Iterator[None]:
    """Inside the block, errors from the reader's filesystem name the path they were raised for."""
    with fileio.use(_NamingFileSystem(fileio.get())):
        yield


def exit_status_guarding_storage(tool: str, run: Callable[[], int], path: str | None = None) -> int:
    """`run()`'s exit status, or EXIT_STORAGE after one line on stderr when storage failed under it
    (`path`: what to name when the error does not say)."""
    try:
        with storage_paths_named():
            return run()
    except Exception as err:
        if not storage_failure(err):
            raise
        print(storage_error_line(tool, err, path), file=sys.stderr)
        return EXIT_STORAGE
