"""--dedup: byte-identical inputs become one example source; the others are rejected as `duplicate`.

The survivor of a group is the source with the smallest key, so the choice (and therefore the
split, which hashes the key) is the same on every run and runner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import apache_beam as beam

from transforms.discover import REJECTED, ImageSource
from transforms.examples import read_bytes
from transforms.rejects import Rejected, Rejection

UNREAD = "unread"  # sources that could not be hashed go on to be rejected by the main stage


class _HashSource(beam.DoFn):
    def process(self, source: ImageSource) -> Iterator:
        try:
            digest = hashlib.sha256(read_bytes(source.path)).hexdigest()
        except Rejected:
            yield beam.pvalue.TaggedOutput(UNREAD, source)
            return
        yield digest, source


def keep_first(group: tuple[str, Iterable[ImageSource]]) -> Iterator:
    """One group of identical files -> the kept source, then a rejection per other copy."""
    _, sources = group
    ordered = sorted(sources, key=lambda s: (s.key, s.path))
    kept = ordered[0]
    yield kept
    for copy in ordered[1:]:
        message = f"same bytes as {kept.path}"
        yield beam.pvalue.TaggedOutput(REJECTED, Rejection(copy.path, "dedup", "duplicate", message).to_json())


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
