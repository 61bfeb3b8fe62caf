"""Rejections: why an input did not become examples. Every input is written or rejected.

A `Rejected` exception carries a reason code; the DoFns turn it into one line of
rejected.jsonl and a Beam counter `rejected_<reason>`, never into a silent drop.
"""

from __future__ import annotations

import json
from typing import NamedTuple

# Reason codes, each documented in the README. Keep this the single list.
REASONS = {
    "not_found": "the file does not exist (manifest row or a file removed after matching)",
    "unreadable": "the file exists but cannot be read (permissions, a directory, I/O error)",
    "empty_file": "the file has zero bytes",
    "not_an_image": "no image format recognises the bytes (e.g. a text file named .jpg)",
    "truncated": "the image data ends early",
    "decode_error": "the image is corrupt or uses a feature the decoder does not support",
    "too_many_pixels": "width x height exceeds --max_pixels (decompression-bomb guard)",
    "too_small": "the image is smaller than the crop and --small is reject",
    "box_outside_image": "the fixed or manifest box does not fit inside the image",
    "missing_box": "--crop manifest but the manifest row has no box",
    "bad_manifest_row": "a manifest row is malformed (missing path, bad box, unknown split, bad JSON)",
    "unknown_split": "the split folder is not one of the declared --split names",
    "duplicate": "--dedup: byte-identical to another input, which was kept",
    "band_mismatch": "a raster's band count or sample type cannot match the dataset's (--bands, --channels, --dtype), or a float image's values do not fit uint8; never padded or clipped",
    "range_collapsed": "--dtype uint8: the --to_uint8 rule would map the raster's varying values to (nearly) one grey level",
    "gdal_sidecar": "a GDAL sidecar beside its raster (x.tif.ovr overviews, x.tif.msk mask, x.tif.aux.xml): part of that raster, not an image",
    "raster_reference": "a GDAL VRT/XML file (whatever its name): it would read other files or URLs",
    "label_raster_missing": "--label_raster: the image's class map does not exist or cannot be read",
    "label_raster_mismatch": "--label_raster: the class map does not overlap the image, cannot be aligned to it (no CRS), is cut short, or is neither a GeoTIFF nor a JPEG 2000",
    "label_names_mismatch": "--label_raster without --label_names: the class map's own category table (.aux.xml) is missing, unusable, or names other classes than the dataset's",
    "not_rectified": "a raster georeferenced by ground control points that no affine transform fits within a pixel (an unrectified scene)",
    "outside_split_crs": "--split_crs: PROJ cannot place the raster's area in that CRS (it lies outside the projection's domain)",
    "no_valid_chips": "a raster with every chip skipped (nodata above --max_nodata, a majority class under --min_label_fraction, or --split_by block boundaries)",
    "label_not_listed": "the file's label folder was not there when the label map was listed (inputs changed during the build)",
    "no_label": "the image sits in an --input folder itself, above the class folders the other inputs take their labels from",
    "bad_file_name": "the file's path is not valid UTF-8 (a name written in another encoding), or its label folder's name holds a line break",
}

# What to change when a reason dominates a build (named when a build fails on its rejections).
REMEDIES = {
    "not_found": "check the paths (manifest paths resolve against the manifest's folder)",
    "no_label": "move such files into a class folder, narrow --input to the class folders, or --label_from none",
    "bad_file_name": "rename the files and folders (to UTF-8: convmv -f latin1 -t utf-8 -r --notest DIR; no line breaks in folder names)",
    "unreadable": "check the files' permissions",
    "not_an_image": "narrow --input to image files, e.g. '**/*.jpg'",
    "too_many_pixels": "raise --max_pixels if the images are trusted",
    "too_small": "--small pad|upscale, or a smaller --size",
    "box_outside_image": "boxes are y,x,h,w in the image as displayed (after EXIF orientation); check them or use --small",
    "missing_box": "give every manifest row a box, or another --crop",
    "bad_manifest_row": "see rejected.jsonl for the malformed rows",
    "unknown_split": "--split names must match the split folders (or the manifest's split column)",
    "duplicate": "drop --dedup to keep byte-identical copies",
    "label_names_mismatch": "name the classes with --label_names classes.csv (it wins over the class maps' own tables)",
    "band_mismatch": "--bands B,B,... (1-based) to choose as many bands as --channels, or --dtype (or --to_uint8 for signed samples) for the sample type; rejected.jsonl has each file's bands, type and remedy",
    "range_collapsed": "--to_uint8 bits:N with the sources' real bit depth (rejected.jsonl names it), or --dtype keep for rasters",
    "gdal_sidecar": "narrow --input to the rasters, e.g. '**/*.tif' (cropshard reads each raster from its own bytes)",
    "not_rectified": "warp the scenes onto a map grid first (gdalwarp), then build from the warped files",
    "outside_split_crs": "a --split_crs whose area covers every raster (a UTM zone for one region, an equal-area CRS such as EPSG:6933 worldwide)",
    "no_valid_chips": "a higher --max_nodata, a lower --min_label_fraction, or a --split_by block larger than the chips (measured in --split_crs units when given; rejected.jsonl says which skipped them)",
}


def rejection_summary(rejected: dict[str, int], top: int = 3) -> str:
    """'too_small 70, not_an_image 2 (try: --small pad|upscale, or a smaller --size)': the most
    frequent reasons, and the remedy for the most frequent one that has a remedy."""
    ranked = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{reason} {count}" for reason, count in ranked[:top])
    remedy = next((REMEDIES[reason] for reason, _ in ranked if reason in REMEDIES), None)
    return f"{text} (try: {remedy})" if remedy else text


# The output tag of every DoFn and PTransform that rejects inputs: one rejected.jsonl line per element.
REJECTED = "rejected"


class Rejected(Exception):
    """Raised by the pure image functions; caught by the DoFn and written to rejected.jsonl."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def text_of_path(path: str) -> str:
    """`path` as UTF-8-safe text: bytes that are not UTF-8 (surrogate-escaped by Python) as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Rejection(NamedTuple):
    """One line of rejected.jsonl."""

    path: str
    stage: str
    reason: str
    message: str

    def to_json(self) -> str:
        # A path that is not UTF-8 (Python keeps its bytes as lone surrogates) is written with those
        # bytes as \\xNN escapes: rejected.jsonl is UTF-8, and the raw surrogates failed the job there.
        fields = {name: text_of_path(value) for name, value in self._asdict().items()}
        return json.dumps(fields, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Rejection:
        body = json.loads(line)
        return cls(body["path"], body["stage"], body["reason"], body["message"])


CROP_REASONS = ("too_small", "box_outside_image", "missing_box")  # raised while planning the crop windows


def rejection_stage(reason: str) -> str:
    """The rejected.jsonl stage of a reason raised while decoding and cropping one image."""
    return "crop" if reason in CROP_REASONS else "decode"


class RejectionCounters:
    """Beam counters `cropshard/rejected_<reason>` for a DoFn, each created on first use."""

    def __init__(self) -> None:
        self._counters: dict[str, object] = {}

    def inc(self, reason: str) -> None:
        if reason not in self._counters:
            from apache_beam.metrics import Metrics  # here: importing this module needs no Beam (tools use REASONS)

            self._counters[reason] = Metrics.counter("cropshard", f"rejected_{reason}")
        self._counters[reason].inc()
