"""Manifest inputs: a CSV/TSV (with a header row) or JSONL file -> `ImageSource` elements and `rejected` lines.

Columns: `path` (required; relative paths are below the manifest's folder), `label`, `split`,
`box` (y,x,height,width for `--crop manifest`). Rows are streamed by Beam's text IO; a bad row is
a `bad_manifest_row` rejection, never a failed build.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from cropshard.transforms.crop import parse_box
from cropshard.transforms.listing import normalized_url
from cropshard.transforms.rejects import REJECTED, Rejected, Rejection
from cropshard.transforms.types import ImageSource, breaks_lines

MANIFEST_COLUMNS = ("path", "label", "split", "box", "label_raster")


def manifest_kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    raise ValueError(f"--manifest must be .csv, .tsv or .jsonl, got {path!r}")


def csv_delimiter(path: str) -> str:
    return "\t" if path.lower().endswith(".tsv") else ","


def check_utf8(path: str, head: int = 1 << 16) -> None:
    """ValueError naming the manifest when its first `head` bytes are not UTF-8 (a UTF-16 export
    of a spreadsheet): its rows would fail to decode one by one, or as a build failure."""
    with FileSystems.open(path) as handle:
        start = handle.read(head)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(start, final=False)  # a character cut at `head` is fine
    except UnicodeDecodeError as err:
        bom = " (a UTF-16 byte-order mark)" if start[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(f"manifest {path} is not UTF-8 text: byte {start[err.start]:#04x} at offset {err.start}{bom}; save it as UTF-8") from err


def read_manifest_header(path: str) -> list[str]:
    """The CSV header (read once by the launcher: one line, not the file)."""
    check_utf8(path)
    with FileSystems.open(path) as handle:
        first = handle.readline().decode("utf-8-sig").rstrip("\r\n")
    header = [name.strip().lower() for name in next(csv.reader([first], delimiter=csv_delimiter(path)))]
    if "path" not in header:
        raise ValueError(f"manifest {path} needs a header row with a 'path' column; found {header}")
    unknown = [name for name in header if name not in MANIFEST_COLUMNS]
    if unknown:
        raise ValueError(f"manifest {path} has unknown columns {unknown}; known: {list(MANIFEST_COLUMNS)}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:  # the last one would win in every row, silently
        raise ValueError(f"manifest {path} names the column(s) {repeated} more than once in its header {header}")
    return header


# The columns whose values the launcher looks at before the job (options.check_manifest_columns).
CHECKED_COLUMNS = ("split", "box", "label_raster")


@dataclasses.dataclass(frozen=True)
class ManifestColumns:
    """What the launcher's one pass over a manifest found: `declared`, the CSV header's columns
    or the keys a JSONL row gives a value; `filled`, those of CHECKED_COLUMNS some row gives a
    value; `splits`, the split column's distinct values in order of first appearance."""

    declared: frozenset[str]
    filled: frozenset[str]
    splits: tuple[str, ...]
    labelled: int = 0  # rows with a label, and without one (the first such row's path)
    unlabelled: int = 0
    first_unlabelled: str | None = None
    repeated: str | None = None  # rows naming one image twice (RepeatedRows), refused without --dedup


def _filled(value: object) -> bool:
    return value is not None and str(value).strip() not in ("", "[]")


def csv_values(line: str, delimiter: str) -> list[str]:
    """One CSV manifest line's fields; Rejected('bad_manifest_row') for a quote the line does not close."""
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True), [])
    except csv.Error as err:
        raise Rejected("bad_manifest_row", f"malformed CSV ({err})") from err


def _csv_rows(path: str, header: Sequence[str]) -> Iterator[dict[str, str]]:
    """Every row of a CSV manifest with as many fields as its header (the job rejects the others).
    ValueError for a quoted field that runs onto the next line: the job reads a manifest one line per
    row, so `"two\\nlines.jpg",b` was two inputs, rejected as fragments, one a file never listed."""
    delimiter = csv_delimiter(path)
    with FileSystems.open(path) as handle:
        next(handle, None)  # the header
        for number, raw in enumerate(handle, start=2):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                values = csv_values(line, delimiter)
            except Rejected as err:
                if "unexpected end of data" in err.message:
                    raise ValueError(f"the manifest {path} line {number} opens a quoted field that it does not close (a line break"
                                     " inside quotes?): cropshard reads one row per line; write such paths in a JSONL manifest") from None
                continue
            if len(values) == len(header):
                yield dict(zip(header, values, strict=True))


def _jsonl_rows(path: str) -> Iterator[dict]:
    with FileSystems.open(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the row is rejected with its reason when the job reads it
            if isinstance(row, dict):
                yield row


class RepeatedRows:
    """Manifest rows naming one image (its path resolved) twice: with one box (or none) each is
    written once per row, the same example twice; in two splits, one image is in both (train and
    test). Rows of one image with other boxes in one split are crops of several objects: kept."""

    def __init__(self, manifest: str) -> None:
        self._dir = posixpath.dirname(manifest) if "://" in manifest else _local_dirname(manifest)
        self._seen: dict[str, tuple[int, str, str]] = {}  # resolved path -> (row, split, box) of its first row
        self._rows = 0
        self.first: tuple[str, int, int, str] | None = None  # (path, first row, repeating row, why)
        self.count = 0

    def add(self, row: Mapping) -> None:
        self._rows += 1
        path = str(row.get("path") or "").strip()
        if not path:
            return
        split, box = str(row.get("split") or "").strip(), str(row.get("box") or "").strip()
        key = resolve_row_path(path, self._dir)
        seen = self._seen.setdefault(key, (self._rows, split, box))
        if seen[0] == self._rows:
            return
        why = None
        if split != seen[1]:
            why = f"splits {seen[1]!r} and {split!r}"
        elif box == seen[2]:
            why = "the same box" if box else "no box"
        if why is not None:
            self.count += 1
            self.first = self.first or (path, seen[0], self._rows, why)

    def problem(self) -> str | None:
        """What is wrong, for a usage error (a build without --dedup), or None."""
        if self.first is None:
            return None
        path, first, again, why = self.first
        return (f"the manifest lists {self.count} image{'s' if self.count > 1 else ''} again, e.g. {path!r} in data rows {first}"
                f" and {again} ({why}): each row is an example, so that image would be written twice"
                f"{', in both splits' if why.startswith('splits') else ''}; list each image once (one row per box for several crops),"
                " or --dedup to keep its first row")


def manifest_columns(path: str) -> ManifestColumns:
    """The launcher's look at a manifest: a CSV's header and every row, or every JSONL row (rows may
    differ, and a key no option turned on must not be ignored; nor a row without the label the
    others have, nor a CSV field quoted across lines)."""
    if manifest_kind(path) == "csv":
        header = read_manifest_header(path)
        rows: Iterable[Mapping] = _csv_rows(path, header)
    else:
        check_utf8(path)
        header, rows = [], _jsonl_rows(path)
    filled: set[str] = set()
    splits: dict[str, None] = {}
    labelled, unlabelled, first_unlabelled = 0, 0, None
    repeats = RepeatedRows(path)
    for row in rows:
        repeats.add(row)
        filled.update(key for key in CHECKED_COLUMNS if _filled(row.get(key)))
        if _filled(row.get("split")):
            splits.setdefault(str(row["split"]).strip())
        if _filled(row.get("label")):
            labelled += 1
        else:
            unlabelled += 1
            first_unlabelled = first_unlabelled or str(row.get("path"))
    declared = frozenset(header) if header else frozenset(filled)
    return ManifestColumns(declared, frozenset(filled), tuple(splits), labelled, unlabelled, first_unlabelled, repeats.problem())


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
        unknown = sorted(set(row) - set(MANIFEST_COLUMNS))
        if unknown:  # a misspelt "lable" or "Split" would be ignored: the row would lose its label or split
            raise Rejected("bad_manifest_row", f"unknown keys {unknown}; known: {list(MANIFEST_COLUMNS)}")
    else:
        values = csv_values(line, delimiter)
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
        split = None  # fractions in --split win (the launcher refuses a split column they would ignore)
    label = row.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
        # 3 and 3.0 would be two classes, a list its repr
        raise Rejected("bad_manifest_row", f"label {label!r} is a {type(label).__name__}; a label is text (or a whole number)")
    label = "" if label is None else str(label).strip()
    if breaks_lines(label):
        raise Rejected("bad_manifest_row", f"label {label!r} holds a line break; labels.txt has one name per line")
    class_map = str(row.get("label_raster") or "").strip() or None
    if class_map is not None:
        class_map = resolve_row_path(class_map, manifest_dir)
    # The key stays as written: split hashes and crop positions are functions of it.
    return ImageSource(path=resolve_row_path(path, manifest_dir), key=path, label=label, split=split, box=box, label_raster=class_map)


def resolve_row_path(path: str, manifest_dir: str) -> str:
    """A manifest row's path: a relative one below the manifest's folder, and its '.' and '..'
    segments resolved, on gs:// as locally (an object store resolves none: `gs://b/man/../x.jpg`
    names no object), so a file has one image/filename however it is reached."""
    full = path if "://" in path or path.startswith("/") else posixpath.join(manifest_dir, path)
    if not any(part in (".", "..") for part in full.split("/")):
        return full  # as written: normpath would also merge the '//' an object name may hold
    if "://" not in full:
        normal = posixpath.normpath(full)
        # The OS resolves '..' after following a symbolic link, normpath before it: where they
        # differ, the path as written names the file the OS reads.
        return normal if os.path.realpath(normal) == os.path.realpath(full) else full
    return normalized_url(full)


class _ParseManifestRows(beam.DoFn):
    def __init__(self, manifest: str, kind: str, header: Sequence[str], split_names: Sequence[str] | None) -> None:
        self._manifest = manifest
        self._kind = kind
        self._header = list(header)
        self._dir = posixpath.dirname(manifest) if "://" in manifest else _local_dirname(manifest)
        self._split_names = tuple(split_names) if split_names is not None else None
        self._delimiter = csv_delimiter(manifest)
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
