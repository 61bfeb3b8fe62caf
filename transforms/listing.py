"""Listing the files glob patterns match: streamed, each file once, with what cannot be listed reported.

Pattern rules are Beam's (`*` within a folder, `**` across folders). A file that several patterns
match belongs to the first of them (`PatternOwners`); a pattern's listing can be split into hash
buckets of paths (`path_bucket`) so that several workers share it. `count_inputs` runs the same
listing in the launcher, for shard sizing and the progress total.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem


def literal_prefix(pattern: str) -> str:
    """`pattern` up to its first wildcard (all of it when it has none)."""
    return re.match(r"^[^[*?]*", pattern).group(0)


def has_wildcard(pattern: str) -> bool:
    return re.search(r"[*?\[]", pattern) is not None


def glob_root(pattern: str) -> str:
    """The directory part of `pattern` before its first wildcard, with a trailing slash."""
    prefix = literal_prefix(pattern)
    if prefix == pattern and not pattern.endswith("/"):
        return posixpath.dirname(pattern) + "/" if "/" in pattern else ""
    return prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""


def path_bucket(path: str, buckets: int) -> int:
    """Which of `buckets` listings keeps `path` (stable across processes, unlike hash())."""
    return zlib.crc32(path.encode("utf-8", "surrogateescape")) % buckets


class PatternOwners:
    """Decides which of several patterns lists a path: the first (in --input order) that matches it."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = list(patterns)
        # (literal prefix, full matcher): the prefix test rules out most patterns cheaply.
        self._matchers = [
            (literal_prefix(p), re.compile(FileSystem.translate_pattern(p)).fullmatch) for p in self.patterns
        ]
        # A path two patterns both match starts with both literal prefixes, so one prefix extends
        # the other: only those earlier patterns can take a path from pattern i.
        prefixes = [prefix for prefix, _ in self._matchers]
        self._rivals = [
            [j for j in range(i) if prefixes[j].startswith(prefixes[i]) or prefixes[i].startswith(prefixes[j])]
            for i in range(len(prefixes))
        ]
        self._explicit = [not has_wildcard(p) for p in self.patterns]

    def matches(self, index: int, path: str) -> bool:
        prefix, fullmatch = self._matchers[index]
        return path.startswith(prefix) and fullmatch(path) is not None

    def keeps(self, index: int, path: str, exists: bool = True) -> bool:
        """Whether the listing of pattern `index` reports `path`: no earlier pattern lists it. A
        path that does not exist (an explicit file that is gone) is listed only by explicit patterns."""
        return not any(
            self.matches(earlier, path) for earlier in self._rivals[index] if exists or self._explicit[earlier]
        )


class Unlisted(NamedTuple):
    """A matched directory entry that cannot become an ImageSource: rejected at stage `match`.

    Beam's local listing silently drops what it cannot stat (a broken symlink) and skips folders
    it cannot list; cropshard reports them instead, so nothing matched disappears."""

    path: str
    reason: str  # a transforms.rejects reason code
    message: str

    @property
    def size_in_bytes(self) -> int:
        return 0


def iter_matches(pattern: str, keep: Callable[[str], bool] | None = None) -> Iterator[FileMetadata | Unlisted]:
    """FileMetadata of every file matching `pattern` (and an `Unlisted` for every matching entry
    that cannot be an input), streamed rather than listed; with `keep`, only the paths it accepts
    (tested before a local file is stat'ed).

    Same listing and pattern rules as FileSystems.match (`*` within a folder, `**` across
    folders), but through a listing generator, the only streaming entry point: 500k files never
    sit in one list, in the launcher or a worker. Local folders are walked here rather than by
    Beam's `LocalFileSystem._list`, which drops entries it cannot stat without a trace."""
    filesystem = FileSystems.get_filesystem(pattern)
    local = isinstance(filesystem, LocalFileSystem)
    if not has_wildcard(pattern):
        if keep is not None and not keep(pattern):
            return
        if local:  # an explicit file: if it is gone, that is a rejection, not an empty match
            yield from _local_entries(os.path.dirname(pattern) or ".", [os.path.basename(pattern)], lambda _: True)
        elif FileSystems.exists(pattern):
            yield from (m for m in FileSystems.match([pattern])[0].metadata_list if not is_folder_placeholder(m))
        return
    prefix = literal_prefix(pattern)
    if filesystem.has_dirs():
        prefix = filesystem._url_dirname(prefix)
    if local:
        yield from _walk_local(prefix, pattern, keep)
    else:
        for metadata in filesystem.match_files(filesystem._list(prefix), pattern):
            if not is_folder_placeholder(metadata) and (keep is None or keep(metadata.path)):
                yield metadata


def normalized_url(url: str) -> str:
    """`scheme://bucket/a/../b` -> `scheme://bucket/b`: object stores resolve no '.' or '..'
    (`gs://b/man/../x.jpg` names no object), so they are resolved here, within the bucket as a
    file system does below its root. Not posixpath.normpath(url): it makes 'gs://' 'gs:/'."""
    scheme, _, rest = url.partition("://")
    bucket, _, name = rest.partition("/")
    return f"{scheme}://{bucket}{posixpath.normpath('/' + name)}"


def is_folder_placeholder(metadata: FileMetadata) -> bool:
    """A zero-byte object named like a folder (`gs://b/photos/cat/`), as the Cloud console's "Create
    folder", gcsfuse and Hadoop's connector leave on object stores to show a folder. It is a folder,
    as on a local disk: never an input (nor a label), and no file of an --output."""
    return metadata.path.endswith("/") and metadata.size_in_bytes == 0


def _walk_local(top: str, pattern: str, keep: Callable[[str], bool] | None = None) -> Iterator[FileMetadata | Unlisted]:
    """Beam's local listing (os.walk below `top`, paths filtered by the pattern), reporting what it hides."""
    if not os.path.exists(top):
        return
    pattern_matches = re.compile(FileSystem.translate_pattern(pattern)).match
    matches = pattern_matches if keep is None else (lambda path: pattern_matches(path) and keep(path))
    recursive = "**" in pattern
    folder_pattern = re.compile(FileSystem.translate_pattern(os.path.dirname(pattern))).fullmatch
    errors: list[OSError] = []
    for folder, subfolders, files in os.walk(top, onerror=errors.append):
        yield from _unlistable(errors, recursive, folder_pattern, keep)
        for name in subfolders:
            path = os.path.join(folder, name)
            if (keep is None or keep(path)) and os.path.islink(path) and (recursive or folder_pattern(path)):
                # os.walk (like Beam, and to avoid cycles) does not follow it: say so.
                yield Unlisted(path, "unreadable", f"symbolic link to a folder ({os.readlink(path)!r}) is not followed; give its target as an --input")
        yield from _local_entries(folder, files, matches)
    yield from _unlistable(errors, recursive, folder_pattern, keep)


def _unlistable(
    errors: list[OSError], recursive: bool, folder_pattern: Callable[[str], object], keep: Callable[[str], bool] | None
) -> Iterator[Unlisted]:
    # A folder that cannot be listed hides an unknown number of files: one rejection stands for
    # them, if the pattern could match anything inside it.
    while errors:
        err = errors.pop(0)
        path = err.filename or ""
        if (recursive or folder_pattern(path)) and (keep is None or keep(path)):
            yield Unlisted(path, "unreadable", f"folder cannot be listed, its files are not counted: {type(err).__name__}: {err.strerror}")


def _local_entries(folder: str, names: Iterable[str], matches: Callable[[str], object]) -> Iterator[FileMetadata | Unlisted]:
    for name in names:
        path = os.path.join(folder, name)
        if not matches(path):
            continue
        try:
            info = os.stat(path)
        except FileNotFoundError as err:
            if os.path.islink(path):
                yield Unlisted(path, "not_found", f"broken symbolic link to {os.readlink(path)!r}")
            else:
                yield Unlisted(path, "not_found", f"{err.strerror} (removed after it was listed, or never there)")
            continue
        except OSError as err:  # ELOOP (symlink loop), EACCES, EIO
            yield Unlisted(path, "unreadable", f"{type(err).__name__}: {err.strerror}")
            continue
        if stat.S_ISDIR(info.st_mode):
            continue  # only reached for an explicit folder path; folders are never inputs
        if not stat.S_ISREG(info.st_mode):
            yield Unlisted(path, "unreadable", f"not a regular file ({file_kind(info.st_mode)})")
            continue
        yield FileMetadata(path, info.st_size, info.st_mtime)


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return f"file type {stat.S_IFMT(mode):o}"


def iter_owned(owners: PatternOwners, index: int, bucket: int = 0, buckets: int = 1) -> Iterator[FileMetadata | Unlisted]:
    """`iter_matches` of pattern `index`, keeping what it owns (PatternOwners) in hash bucket `bucket`."""
    pattern = owners.patterns[index]

    def in_bucket(path: str) -> bool:
        return buckets == 1 or path_bucket(path, buckets) == bucket

    if has_wildcard(pattern):  # ownership decided before the per-file stat
        yield from iter_matches(pattern, lambda path: in_bucket(path) and owners.keeps(index, path))
        return
    for entry in iter_matches(pattern, in_bucket):
        missing = isinstance(entry, Unlisted) and entry.reason == "not_found"
        if owners.keeps(index, entry.path, exists=not missing):
            yield entry


def _not_found(err: BaseException) -> bool:
    # Beam wraps the storage client's error once per layer (match, then list), keyed by path.
    if isinstance(err, BeamIOError):
        return any(_not_found(cause) for cause in (err.exception_details or {}).values())
    return getattr(err, "code", None) == 404  # google.api_core's NotFound


@contextlib.contextmanager
def bucket_must_exist(option: str, path: str) -> Iterator[None]:
    """Turns the listing error of a `path` in a bucket that does not exist into one
    FileNotFoundError naming the bucket (a usage error: exit 2). Listing a prefix of a bucket
    that exists never fails with 'not found' (it finds nothing), so a 404 means the bucket."""
    try:
        yield
    except BeamIOError as err:
        if "://" not in path or not _not_found(err):
            raise
        scheme, _, rest = path.partition("://")
        raise FileNotFoundError(f"{option} {path}: bucket {scheme}://{rest.split('/', 1)[0]} does not exist") from err


def check_explicit_paths(patterns: Iterable[str]) -> None:
    """FileNotFoundError for an explicit local file path (no wildcard) that does not exist: a
    typo, not a rejection. (A remote one matches nothing; pipeline.build explains an empty match.)"""
    for pattern in patterns:
        if "://" not in pattern and not has_wildcard(pattern) and not os.path.lexists(pattern):
            raise FileNotFoundError(f"--input {pattern} does not exist")


def count_inputs(patterns: Iterable[str]) -> tuple[int, int]:
    """(inputs, bytes) matched by `patterns`, for shard sizing and the progress total. Unlisted
    entries are inputs too (they become rejections); check_explicit_paths first."""
    files = total = 0
    patterns = list(patterns)
    check_explicit_paths(patterns)
    owners = PatternOwners(patterns)
    for index in range(len(patterns)):
        for metadata in iter_owned(owners, index):
            files += 1
            total += metadata.size_in_bytes
    return files, total


# --- in the pipeline ----------------------------------------------------------------------


class _MatchOwned(beam.DoFn):
    """(pattern index, bucket, buckets) -> (root, FileMetadata | Unlisted) for the files that
    pattern owns in that bucket, keeping the root of the pattern (labels and keys are relative to it)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = list(patterns)

    def setup(self) -> None:
        self._owners = PatternOwners(self._patterns)

    def process(self, element: tuple[int, int, int]) -> Iterator[tuple[str, FileMetadata | Unlisted]]:
        index, bucket, buckets = element
        root = glob_root(self._patterns[index])
        for metadata in iter_owned(self._owners, index, bucket, buckets):
            yield root, metadata


def list_owned(pbegin: beam.pvalue.PBegin, patterns: Sequence[str], buckets: int | None) -> beam.PCollection:
    """(root, FileMetadata | Unlisted) of every file `patterns` match, each once (see globs.MatchImages)."""
    count = buckets or 1
    listings = [(index, bucket, count) for bucket in range(count) for index in range(len(patterns))]
    work = pbegin | "Listings" >> beam.Create(listings, reshuffle=False)
    if buckets:
        work = work | "SpreadListings" >> beam.Reshuffle()
    return work | "Match" >> beam.ParDo(_MatchOwned(patterns))
