"""--dedup: byte-identical inputs become one example source; the others are rejected as `duplicate`.

The survivor of a group is the source with the smallest key, so the choice (and therefore the
split, which hashes the key) is the same on every run and runner. Manifest rows of the
surviving file with other boxes are kept (see `keep_first`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from cropshard.transforms.examples import read_bytes
from cropshard.transforms.rejects import REJECTED, Rejected, Rejection
from cropshard.transforms.types import ImageSource

UNREAD = "unread"  # sources that could not be hashed go on to be rejected by the main stage


class _HashSource(beam.DoFn):
    def process(self, source: ImageSource) -> Iterator:
        try:
            digest = hashlib.sha256(read_bytes(source.path)).hexdigest()
        except Rejected:
            yield beam.pvalue.TaggedOutput(UNREAD, source)
            return
        yield digest, source


def _order(source: ImageSource) -> tuple:
    # Total order over every field: which row survives must not depend on GroupByKey's order.
    return (source.key, source.path, source.box or (), source.split or "", source.label)


def keep_first(group: tuple[str, Iterable[ImageSource]]) -> Iterator:
    """One group of identical files -> the kept sources, then a rejection per other one.

    The file with the smallest key survives. Its manifest rows with other boxes survive too
    (several objects in one image are several examples, not duplicates), as long as they are in
    the same split as its first row: one content never lands in two splits."""
    _, sources = group
    ordered = sorted(sources, key=_order)
    kept = ordered[0]
    yield kept
    boxes = {kept.box}
    for source in ordered[1:]:
        same_file = (source.key, source.path) == (kept.key, kept.path)
        if same_file and source.split == kept.split and source.box not in boxes:
            boxes.add(source.box)
            yield source
            continue
        if not same_file:
            message = f"same bytes as {kept.path}"
        elif source.split != kept.split:
            message = f"same file as a row kept in split {kept.split!r}; one content goes to one split"
        else:
            message = f"the same file and box as another row of {kept.path}, which was kept"
        if source.label != kept.label:
            message += f" (labelled {kept.label!r} there, {source.label!r} here)"
        yield beam.pvalue.TaggedOutput(REJECTED, Rejection(source.path, "dedup", "duplicate", message).to_json())


class DropDuplicates(beam.PTransform):
    """ImageSource -> unique ImageSource (main) and `rejected` lines for the duplicates.

    Reads every file once more to hash it; only (digest, source) pairs are shuffled."""

    def expand(self, sources: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        hashed = sources | "Hash" >> beam.ParDo(_HashSource()).with_outputs(UNREAD, main="hashed")
        kept = (
            hashed.hashed
            | "GroupByContent" >> beam.GroupByKey()
            | "KeepFirst" >> beam.FlatMap(keep_first).with_outputs(REJECTED, main="kept")
        )
        unique = (kept.kept, hashed[UNREAD]) | "Unique" >> beam.Flatten()
        return {"sources": unique, REJECTED: kept[REJECTED]}
