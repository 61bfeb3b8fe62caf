"""Glob inputs: `--input` patterns -> `ImageSource` elements and `rejected` lines.

Labels and folder splits come from the path below the pattern's root (`listing.glob_root`):
`root/<label>/img.jpg`, `root/<split>/<label>/img.jpg`. The files themselves are listed by
`listing` (streamed, each file once, unlistable entries reported as `Unlisted`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from cropshard.transforms.listing import Unlisted, list_owned
from cropshard.transforms.rejects import REJECTED, Rejected, Rejection, is_utf8
from cropshard.transforms.types import ImageSource, breaks_lines

LABELS_FOLDER = "folder"
LABELS_NONE = "none"


_WINDOWS_PATH = re.compile(r"^[A-Za-z]:\\")  # a drive letter: the only paths a backslash separates


def source_from_path(path: str, root: str, labels: str, split_names: Sequence[str] | None) -> ImageSource:
    """Label and folder split of `path` below `root`; raises Rejected('unknown_split', 'bad_file_name')."""
    if not is_utf8(path):  # a name in another encoding: its key, label and metadata could not be written
        raise Rejected("bad_file_name", "the path is not valid UTF-8 (rejected.jsonl shows those bytes as \\xNN): rename it to UTF-8")
    relative = path[len(root) :] if root and path.startswith(root) else path
    # A backslash separates only in Windows paths: it is a legal character of POSIX and object-store
    # names, and `cats/tabby\\2024.jpg` took the label "tabby" from its own file name.
    if _WINDOWS_PATH.match(path):
        relative = relative.replace("\\", "/")
    relative = relative.lstrip("/")
    parts = relative.split("/")
    split = None
    if split_names is not None:
        if len(parts) < 2 or parts[0] not in split_names:
            found = parts[0] if len(parts) > 1 else "(no folder)"
            raise Rejected("unknown_split", f"split folder {found!r} is not one of --split {list(split_names)}")
        split, parts = parts[0], parts[1:]
    label = parts[-2] if labels == LABELS_FOLDER and len(parts) >= 2 else ""
    if breaks_lines(label):
        raise Rejected("bad_file_name", f"its label folder {label!r} holds a line break; labels.txt has one name per line: rename the folder")
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
    (`listing.PatternOwners`), so overlapping globs need no grouping by path.

    `buckets=N` lists every pattern N times, each listing keeping the files whose path hashes
    to its bucket (`listing.path_bucket`), with a Reshuffle of the N small (pattern, bucket) elements
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
        matches = list_owned(pbegin, self._patterns, self._buckets)
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
        matches = list_owned(pbegin, self._patterns, None)
        return matches | "Labels" >> beam.FlatMap(_label_of, self._labels, self._split_names)


def _label_of(match: tuple[str, FileMetadata | Unlisted], labels: str, split_names: Sequence[str] | None) -> Iterator[str]:
    root, metadata = match
    if isinstance(metadata, Unlisted):
        return
    try:
        yield source_from_path(metadata.path, root, labels, split_names).label
    except Rejected:
        return
