"""Types the stages of the data path share: a crop window (`Box`) and an input image (`ImageSource`)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import NamedTuple

# (y, x, height, width): in the EXIF-oriented image unless a function says otherwise.
Box = tuple[int, int, int, int]


class ImageSource(NamedTuple):
    """One input image, before it is read."""

    path: str  # what to open: a local path or a URL such as gs://bucket/a.jpg
    key: str  # stable identity below the input root (or as written in the manifest)
    label: str  # label name, '' when unlabeled
    split: str | None  # split from a folder or manifest column; None -> hashed from the key
    box: Box | None = None  # per-image box from the manifest
    label_raster: str | None = None  # the image's class map, from the manifest's label_raster column


def unicode_twins(labels: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of label names that are one name in two Unicode forms (`café` precomposed and with a
    combining accent, as macOS and Linux tools write folder names): two classes a reader shows
    alike, each holding part of one class's images."""
    seen: dict[str, str] = {}
    twins = []
    for label in labels:
        canonical = unicodedata.normalize("NFC", label)
        if canonical in seen:
            twins.append((seen[canonical], label))
        else:
            seen[canonical] = label
    return twins


def breaks_lines(label: str) -> bool:
    """Whether a label name holds a line break (\\n, \\r or any other `str.splitlines` boundary):
    labels.txt and TFDS's label file hold one name per line, so `bee\\nwasp` became two classes
    there and every later id named the wrong one."""
    return "".join(label.splitlines()) != label
