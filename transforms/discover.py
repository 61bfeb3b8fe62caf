"""Find the inputs: globs expanded by Beam's filesystems, or a manifest read by Beam IO.

Both produce `ImageSource` elements (a path plus what is known about it before reading it)
and `Rejection` lines for inputs that are bad before any byte is read. Labels and folder
splits come from the path below the glob's root: `root/<label>/img.jpg`,
`root/<split>/<label>/img.jpg`.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from cropshard.transforms.crop import Box, parse_box
from cropshard.transforms.rejects import Rejected, Rejection

REJECTED = "rejected"
LABELS_FOLDER = "folder"
LABELS_NONE = "none"


class ImageSource(NamedTuple):
    """One input image, before it is read."""

    path: str  # what to open: a local path or a URL such as gs://bucket/a.jpg
    key: str  # stable identity below the input root (or as written in the manifest)
    label: str  # label name, '' when unlabeled
    split: str | None  # split from a folder or manifest column; None -> hashed from the key
    box: Box | None = None  # per-image box from the manifest


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


def source_from_path(path: str, root: str, labels: str, split_names: Sequence[str] | None) -> ImageSource:
    """Label and folder split of `path` below `root`; raises Rejected('unknown_split')."""
    relative = path[len(root) :] if root and path.startswith(root) else path
    relative = relative.replace("\\", "/").lstrip("/")
    parts = relative.split("/")
    split = None
    if split_names is not None:
        if len(parts) < 2 or parts[0] not in split_names:
            found = parts[0] if len(parts) > 1 else "(no folder)"
            raise Rejected("unknown_split", f"split folder {found!r} is not one of --split {list(split_names)}")
        split, parts = parts[0], parts[1:]
    label = parts[-2] if labels == LABELS_FOLDER and len(parts) >= 2 else ""
    return ImageSource(path=path, key=relative, label=label, split=split)


class _SourcesFromMatches(beam.DoFn):
    def __init__(self, labels: str, split_names: Sequence[str] | None) -> None:
        self._labels = labels
        self._split_names = tuple(split_names) if split_names is not None else None
        self._matched = beam.metrics.Metrics.counter("cropshard", "files_matched")

    def process(self, element: tuple[str, FileMetadata | Unlisted]) -> Iterator:
        root, metadata = element
        self._matched.inc()
        if isinstance(metadata, Unlisted):
            yield beam.pvalue.TaggedOutput(REJECTED, Rejection(metadata.path, "match", metadata.reason, metadata.message).to_json())
            return
        try:
            yield source_from_path(metadata.path, root, self._labels, self._split_names)
        except Rejected as err:
            yield beam.pvalue.TaggedOutput(REJECTED, Rejection(metadata.path, "match", err.reason, err.message).to_json())


class MatchImages(beam.PTransform):
    """Glob patterns -> ImageSource (main output) and rejected.jsonl lines (`rejected`).

    Expansion happens inside the pipeline, streamed, so no process holds the file list. A file
    matched by several patterns is listed once, under the first pattern that matches it
    (`PatternOwners`), so overlapping globs need no grouping by path.

    `buckets=N` lists every pattern N times, each listing keeping the files whose path hashes
    to its bucket (`path_bucket`), with a Reshuffle of the N small (pattern, bucket) elements
    before listing. That spreads the work over workers without shuffling the file list itself:
    the local DirectRunner keeps shuffled data in the launcher's memory, so a Reshuffle of 100k
    sources grows it by ~170 MiB, while N re-listings cost N directory walks (hashing happens
    before the per-file stat). Distributed runners shuffle outside memory: leave it None there
    and Reshuffle the sources.
    """

    def __init__(
        self,
        patterns: Sequence[str],
        labels: str = LABELS_FOLDER,
        split_names: Sequence[str] | None = None,
        buckets: int | None = None,
    ) -> None:
        super().__init__()
        self._patterns = list(patterns)
        self._labels = labels
        self._split_names = split_names
        self._buckets = buckets

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        matches = _list_owned(pbegin, self._patterns, self._buckets)
        return matches | "ToSources" >> beam.ParDo(_SourcesFromMatches(self._labels, self._split_names)).with_outputs(
            REJECTED, main="sources"
        )


class ListLabelNames(beam.PTransform):
    """Glob patterns -> the label name of every file they match (one per file), by a listing of
    its own: for the label map when MatchImages lists in buckets (see there)."""

    def __init__(self, patterns: Sequence[str], labels: str = LABELS_FOLDER, split_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self._patterns = list(patterns)
        self._labels = labels
        self._split_names = tuple(split_names) if split_names is not None else None

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[str]:
        matches = _list_owned(pbegin, self._patterns, None)
        return matches | "Labels" >> beam.FlatMap(_label_of, self._labels, self._split_names)


def _list_owned(pbegin: beam.pvalue.PBegin, patterns: Sequence[str], buckets: int | None) -> beam.PCollection:
    """(root, FileMetadata | Unlisted) of every file `patterns` match, each once (see MatchImages)."""
    count = buckets or 1
    listings = [(index, bucket, count) for bucket in range(count) for index in range(len(patterns))]
    work = pbegin | "Listings" >> beam.Create(listings, reshuffle=False)
    if buckets:
        work = work | "SpreadListings" >> beam.Reshuffle()
    return work | "Match" >> beam.ParDo(_MatchOwned(patterns))


def _label_of(match: tuple[str, FileMetadata | Unlisted], labels: str, split_names: Sequence[str] | None) -> Iterator[str]:
    root, metadata = match
    if isinstance(metadata, Unlisted):
        return
    try:
        yield source_from_path(metadata.path, root, labels, split_names).label
    except Rejected:
        return


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


# --- manifests ----------------------------------------------------------------------------

MANIFEST_COLUMNS = ("path", "label", "split", "box")


def manifest_kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    raise ValueError(f"--manifest must be .csv, .tsv or .jsonl, got {path!r}")


def read_manifest_header(path: str) -> list[str]:
    """The CSV header (read once by the launcher: one line, not the file)."""
    with FileSystems.open(path) as handle:
        first = handle.readline().decode("utf-8-sig").rstrip("\r\n")
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    header = [name.strip().lower() for name in next(csv.reader([first], delimiter=delimiter))]
    if "path" not in header:
        raise ValueError(f"manifest {path} needs a header row with a 'path' column; found {header}")
    unknown = [name for name in header if name not in MANIFEST_COLUMNS]
    if unknown:
        raise ValueError(f"manifest {path} has unknown columns {unknown}; known: {list(MANIFEST_COLUMNS)}")
    return header


def parse_manifest_row(
    line: str, kind: str, header: Sequence[str], manifest_dir: str, split_names: Sequence[str] | None, delimiter: str = ","
) -> ImageSource:
    """One manifest line -> ImageSource; Rejected('bad_manifest_row') with the reason otherwise."""
    if kind == "jsonl":
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise Rejected("bad_manifest_row", f"not valid JSON: {err}") from err
        if not isinstance(row, dict):
            raise Rejected("bad_manifest_row", "a JSONL row must be an object")
    else:
        values = next(csv.reader([line], delimiter=delimiter))
        if len(values) != len(header):
            raise Rejected("bad_manifest_row", f"expected {len(header)} columns {list(header)}, got {len(values)}")
        row = dict(zip(header, values, strict=True))
    path = str(row.get("path") or "").strip()
    if not path:
        raise Rejected("bad_manifest_row", "the row has no path")
    box = None
    if row.get("box") not in (None, ""):
        try:
            box = parse_box(row["box"])
        except (ValueError, TypeError) as err:
            raise Rejected("bad_manifest_row", f"malformed box {row['box']!r}: {err}") from err
    split = str(row.get("split") or "").strip() or None
    if split_names is not None:
        if split is None:
            raise Rejected("bad_manifest_row", f"--split {list(split_names)} takes splits from the manifest, but the row has none")
        if split not in split_names:
            raise Rejected("bad_manifest_row", f"unknown split {split!r}; declared splits are {list(split_names)}")
    elif split is not None:
        split = None  # fractions in --split win; the column is ignored (documented)
    label = row.get("label")
    label = "" if label is None else str(label).strip()
    full = path if "://" in path or path.startswith("/") else posixpath.join(manifest_dir, path)
    return ImageSource(path=full, key=path, label=label, split=split, box=box)


class _ParseManifestRows(beam.DoFn):
    def __init__(self, manifest: str, kind: str, header: Sequence[str], split_names: Sequence[str] | None) -> None:
        self._manifest = manifest
        self._kind = kind
        self._header = list(header)
        self._dir = posixpath.dirname(manifest) if "://" in manifest else _local_dirname(manifest)
        self._split_names = tuple(split_names) if split_names is not None else None
        self._delimiter = "\t" if manifest.lower().endswith(".tsv") else ","
        self._rows = beam.metrics.Metrics.counter("cropshard", "manifest_rows")

    def label_of(self, line: str) -> Iterator[str]:
        if line.strip():
            try:
                yield parse_manifest_row(line, self._kind, self._header, self._dir, self._split_names, self._delimiter).label
            except Rejected:
                return

    def process(self, line: str) -> Iterator:
        if not line.strip():
            return  # blank lines are not rows
        self._rows.inc()
        try:
            yield parse_manifest_row(line, self._kind, self._header, self._dir, self._split_names, self._delimiter)
        except Rejected as err:
            where = f"{self._manifest}: {line[:200]}"
            yield beam.pvalue.TaggedOutput(REJECTED, Rejection(where, "manifest", err.reason, err.message).to_json())


def _local_dirname(path: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(path))


class ReadManifest(beam.PTransform):
    """A CSV/TSV (with header) or JSONL manifest, streamed by ReadFromText -> ImageSource + rejected lines.

    `buckets=N`: N readers of the whole file, each keeping the rows whose line number is its
    bucket modulo N (for the local runner, as in MatchImages; `labels_only()` then gives the
    label names by a read of their own)."""

    def __init__(self, manifest: str, split_names: Sequence[str] | None = None, buckets: int | None = None) -> None:
        super().__init__()
        self._manifest = manifest
        self._kind = manifest_kind(manifest)
        self._header = read_manifest_header(manifest) if self._kind == "csv" else list(MANIFEST_COLUMNS)
        self._split_names = split_names
        self._buckets = buckets

    def _lines(self, pbegin: beam.pvalue.PBegin, buckets: int | None) -> beam.PCollection[str]:
        skip = 1 if self._kind == "csv" else 0
        if not buckets:
            return pbegin | "ReadRows" >> beam.io.ReadFromText(self._manifest, skip_header_lines=skip)
        return (
            pbegin
            | "Buckets" >> beam.Create(list(range(buckets)), reshuffle=False)
            | "SpreadBuckets" >> beam.Reshuffle()
            | "ReadRows" >> beam.ParDo(_ManifestLinesInBucket(self._manifest, skip, buckets))
        )

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return self._lines(pbegin, self._buckets) | "ParseRows" >> beam.ParDo(
            _ParseManifestRows(self._manifest, self._kind, self._header, self._split_names)
        ).with_outputs(REJECTED, main="sources")

    def labels_only(self) -> beam.PTransform:
        """The label name of every valid row (for the label map), read apart from the images."""

        @beam.ptransform_fn
        def label_names(pbegin: beam.pvalue.PBegin) -> beam.PCollection[str]:
            parse = _ParseManifestRows(self._manifest, self._kind, self._header, self._split_names)
            return self._lines(pbegin, None) | "Labels" >> beam.FlatMap(parse.label_of)

        return label_names()


class _ManifestLinesInBucket(beam.DoFn):
    """bucket -> the manifest's lines (after the header) whose line number % buckets == bucket."""

    def __init__(self, manifest: str, skip: int, buckets: int) -> None:
        self._manifest = manifest
        self._skip = skip
        self._buckets = buckets

    def process(self, bucket: int) -> Iterator[str]:
        with FileSystems.open(self._manifest) as handle:
            for number, line in enumerate(handle):
                if number >= self._skip and number % self._buckets == bucket:
                    # As ReadFromText yields them: UTF-8, without the line ending.
                    yield line.decode("utf-8").rstrip("\r\n")


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
            yield from FileSystems.match([pattern])[0].metadata_list
        return
    prefix = literal_prefix(pattern)
    if filesystem.has_dirs():
        prefix = filesystem._url_dirname(prefix)
    if local:
        yield from _walk_local(prefix, pattern, keep)
    else:
        for metadata in filesystem.match_files(filesystem._list(prefix), pattern):
            if keep is None or keep(metadata.path):
                yield metadata


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


def count_inputs(patterns: Iterable[str]) -> tuple[int, int]:
    """(inputs, bytes) matched by `patterns`, for shard sizing and the progress total. Unlisted
    entries are inputs too (they become rejections). An explicit local file path (no wildcard)
    that does not exist is a typo, not a rejection: FileNotFoundError before anything runs.
    (A remote one matches nothing; pipeline.build explains an empty match.)"""
    files = total = 0
    patterns = list(patterns)
    owners = PatternOwners(patterns)
    for index, pattern in enumerate(patterns):
        if "://" not in pattern and not has_wildcard(pattern) and not os.path.lexists(pattern):
            raise FileNotFoundError(f"--input {pattern} does not exist")
        for metadata in iter_owned(owners, index):
            files += 1
            total += metadata.size_in_bytes
    return files, total
