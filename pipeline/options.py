"""cropshard's own pipeline options, a PipelineOptions subclass so `--help`, every runner and
Dataflow templates see them next to Beam's options; and their validation into a `BuildConfig`."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.transforms.crop import SMALL_POLICIES, STRATEGIES, CropSpec, parse_box, parse_size, parse_split_spec
from cropshard.transforms.decode import DEFAULT_MAX_PIXELS
from cropshard.transforms.encode import ENCODINGS
from cropshard.transforms.examples import IMAGES_WRITTEN, ExampleSpec
from cropshard.transforms.globs import LABELS_FOLDER, LABELS_NONE
from cropshard.transforms.listing import glob_root
from cropshard.transforms.manifest import ManifestColumns, manifest_columns
from cropshard.transforms.raster import convert as raster_convert
from cropshard.transforms.raster import labels as raster_labels
from cropshard.transforms.raster.records import RasterSpec, parse_bands, parse_split_by, parse_split_crs
from cropshard.transforms.raster.tasks import RASTER_FACTS, RASTER_STATS, RASTER_TASKS, SOURCES_WRITTEN, TASK_OUTCOMES
from cropshard.transforms.rejects import REJECTED

RESERVED_SPLIT_NAMES = (REJECTED, IMAGES_WRITTEN, RASTER_FACTS, RASTER_STATS, RASTER_TASKS, SOURCES_WRITTEN, TASK_OUTCOMES)


# The titles of the option groups of `cropshard build --help`, in the order it shows them.
INPUTS, CROP, ENCODING, OUTPUT, RUNNER, RASTERS = "inputs", "crop", "encoding", "output", "runner", "rasters (GeoTIFF/COG and JPEG 2000, read with rasterio)"


def _adder(parser, title: str):  # noqa: ANN001, ANN202 - Beam passes its own parser type
    """add(flag, help, shown_default=None, **argparse kwargs) into the group `title` of `parser`; the
    help ends with the default (`shown_default` where the stored default would mislead, e.g. 0 = auto)."""
    group = parser.add_argument_group(title)

    def add(flag: str, help: str, shown_default: str | None = None, **kwargs) -> None:  # noqa: A002, ANN003
        default = kwargs.get("default")
        if shown_default is None:
            shown_default = "off" if kwargs.get("action") == "store_true" else ("none" if default is None else str(default))
        group.add_argument(flag, help=f"{help} (default: {shown_default})", **kwargs)

    return add


class CropshardOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # noqa: ANN001 - Beam passes its own parser type
        add = _adder(parser, INPUTS)
        add("--input", "Image files to read: a glob (local or gs://; '**' crosses folders) or a directory. Repeatable, or comma-separated.",
            action="append", default=None, metavar="GLOB")
        add("--manifest", "CSV/TSV (header: path,label[,split][,box][,label_raster]) or JSONL manifest instead of --input. Relative paths resolve against the manifest's folder.",
            default=None, metavar="FILE")
        add("--label_from", "folder: label = the image's parent folder name; none: unlabeled (-1). Manifests use their label column.",
            default=LABELS_FOLDER, choices=(LABELS_FOLDER, LABELS_NONE))
        add("--dedup", "Keep one of byte-identical inputs; the others are rejected as duplicate.", action="store_true", default=False)
        add("--max_pixels", "Reject images with more pixels (decompression-bomb guard).", type=int, default=DEFAULT_MAX_PIXELS, metavar="N")
        add = _adder(parser, CROP)
        add("--crop", "center: one centred crop; box: fixed --box; random: --crops_per_image seeded crops; grid: tiles every --stride; manifest: per-row box; none: whole image.",
            default="center", choices=STRATEGIES)
        add("--size", "Crop size, e.g. 128x128 (or 128). With box/manifest: resize every crop to it.", default=None, metavar="HxW")
        add("--box", "The window for --crop box, in the EXIF-oriented image.", default=None, metavar="Y,X,H,W")
        add("--crops_per_image", "Crops per image for --crop random.", type=int, default=1, metavar="N")
        add("--stride", "Tile step for --crop grid.", shown_default="the crop size, no overlap", default=None, metavar="HxW")
        add("--small", "Images smaller than the crop: reject (reason too_small), pad (zeros), or upscale to cover the crop.",
            default="reject", choices=SMALL_POLICIES)
        add("--resize", "Resize the shorter side to S before cropping (JPEG: DCT-domain downscale first).", type=int, default=None, metavar="S")
        add("--seed", "Mixed into random crop positions (positions are also keyed by image).", type=int, default=0, metavar="N")
        add = _adder(parser, ENCODING)
        add("--encoding", "raw: uint8 HWC bytes; jpeg; png; original: source JPEG/PNG bytes verbatim where possible (with --crop none).",
            default="raw", choices=ENCODINGS)
        add("--jpeg_quality", "Quality for --encoding jpeg (and re-encoded originals).", type=int, default=90, metavar="Q")
        add("--channels", "3 = RGB, 1 = greyscale.", type=int, default=3, choices=(1, 3))
        add = _adder(parser, OUTPUT)
        add("--output", "Dataset directory (local or gs://).", default=None, metavar="DIR")
        add("--overwrite", "Replace the dataset in a non-empty --output.", action="store_true", default=False)
        add("--split", "train=0.8,validation=0.1,test=0.1 assigns images by a hash of their key; plain names (train,validation,test) take the split from the first folder below the input root, or the manifest's split column.",
            default="train=1.0", metavar="SPEC")
        add("--num_shards", "Shards per split. auto: shards of at most --target_shard_mb. N: exactly N shards per split with equal "
            "record counts.", shown_default="auto", type=int, default=0, metavar="N")
        add("--shard_contents", "stable: records sorted by their CRC32C and length and cut into ranges, so identical builds give "
            "identical shard files on every runner (costs one more local copy of every record, except raster chips with shards by "
            "size: each raster task's chips are shards of their own, written once; local or mounted --output only). "
            "runner-chosen: the runner's bundles decide (the local DirectRunner writes one shard per worker and split). "
            "auto: stable on local and mounted outputs, runner-chosen on gs://.",
            default="auto", choices=("auto", "stable", "runner-chosen"))
        add("--target_shard_mb", "Target shard size when --num_shards is auto.", type=float, default=128.0, metavar="MB")
        add("--compression", "Shard compression.", default="none", choices=("none", "gzip"))
        add("--max_rejected_fraction", "Fail the build (nothing published) when more than this share of the inputs is rejected, e.g. 0.05; "
            "rejected.jsonl is still written. A build that writes no example always fails.", type=float, default=None, metavar="F",
            shown_default="off")
        add = _adder(parser, RUNNER)
        add("--progress", "Live progress for local runs: bar on a terminal, log lines otherwise.", default="auto", choices=("auto", "bar", "log", "off"))
        add("--verbose", "Show library warnings and Beam's own log on the terminal instead of only in the build's log file.",
            action="store_true", default=False)
        add_raster_arguments(_adder(parser, RASTERS))  # last: the photo groups' order stays as it was


def add_raster_arguments(add) -> None:  # noqa: ANN001 - the group's add(flag, help, ...) from _adder
    add("--bands", "1-based band numbers to store, in order (e.g. 4,3,2 or 1,2,3,4,5,6,7,8); sets the channel count.",
        shown_default="every band, which must number --channels", default=None, metavar="B,B,...")
    add("--dtype", "Stored sample type: uint8 converts by --to_uint8; keep stores the rasters' own type (that of the first raster input) losslessly; or name it.",
        default="uint8", choices=raster_convert.DTYPE_CHOICES)
    add("--to_uint8", "How --dtype uint8 converts wider samples: bits (top 8 of the bits the file declares), bits:N (N significant bits, e.g. bits:11),"
        " minmax or percentile:LO,HI (a per-band stretch by the dataset's range, from a first pass over every raster's preview).",
        default="bits", metavar="RULE")
    add("--max_nodata", "Skip raster chips whose nodata/masked share exceeds F (0..1); counted in the metadata.", type=float, default=None, metavar="F",
        shown_default="off")
    add("--split_by", "Assign raster chips to the --split fractions by a hash of the N x N block they fall in (map units with a CRS, else pixels).",
        default=None, metavar="block:N", shown_default="off")
    add("--split_crs", "With --split_by: cut every block in this CRS's map units (e.g. EPSG:32632, or a WKT), each chip's footprint reprojected there;"
        " needed when the rasters are in more than one CRS (neighbouring UTM zones), whose blocks would not line up.",
        default=None, metavar="CRS", shown_default="each raster's own CRS, which must be one for all")
    add("--label_raster", "Each raster's class map (a GeoTIFF or JPEG 2000), from the image path: {dir} {stem} {name} {ext}, e.g. '{dir}/../labels/{stem}.tif'."
        " Aligned onto the image's grid (nearest).", default=None, metavar="PATTERN", shown_default="off")
    add("--label_mode", "majority: each chip's label is its majority class; mask: store the chip's class-id mask (image/segmentation/encoded).",
        default="majority", choices=raster_labels.LABEL_MODES)
    add("--min_label_fraction", "--label_mode majority: skip chips whose majority class covers less than F of the chip.", type=float, default=0.0, metavar="F")
    add("--label_names", "value,name per class of the class maps (ids follow the values' order).",
        default=None, metavar="CSV", shown_default="with --label_raster, the class maps' own category tables (GDAL .aux.xml), which must agree")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Validated options: everything the pipeline assembly needs."""

    inputs: tuple[str, ...]
    manifest: str | None
    output: str
    example: ExampleSpec
    labels: str
    num_shards: int
    target_shard_mb: float
    compression: str
    dedup: bool
    overwrite: bool
    progress: str
    max_rejected_fraction: float | None = None
    verbose: bool = False
    shard_contents: str = "auto"  # auto | stable | runner-chosen (pipeline/shards.py)

    @property
    def split_names(self) -> tuple[str, ...]:
        return self.example.split_names

    @property
    def splits_from_input(self) -> bool:
        return self.example.split_fractions is None


def refuse_bracketed_names(pattern: str) -> None:
    """ValueError for a local --input naming an existing file or folder whose name holds [ ]: the
    listing reads them as a set of characters, so `--input 'Photos [2024]/**'` built from
    `Photos 2` (one of "2", "0", "4") and called the dataset reconciled."""
    parts = pattern.split("/")
    for end, part in enumerate(parts, start=1):
        if "[" in part and os.path.lexists("/".join(parts[:end])):
            raise ValueError(f"--input {pattern}: {'/'.join(parts[:end])} exists, but [ ] in a pattern match any one character"
                             " they enclose (other folders than this one): rename it without brackets, or list its files in a --manifest")


def normalize_input(pattern: str) -> str:
    """A directory means everything below it."""
    if "://" not in pattern and "[" in pattern:
        refuse_bracketed_names(pattern)
    if re.search(r"[*?\[]", pattern):
        return pattern
    if pattern.endswith("/") or ("://" not in pattern and os.path.isdir(pattern)):
        return pattern.rstrip("/") + "/**"
    return pattern


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def parse_inputs(input_args: Sequence[str] | None) -> tuple[str, ...]:
    """Every --input (repeated or comma-separated), absolute, a directory meaning everything below it.
    A blank --input is a ValueError: `--input "$EXTRA"` with the variable unset built from the
    other inputs alone, a smaller dataset than asked for, without a word."""
    for arg in input_args or []:
        if not arg.strip():
            raise ValueError(f"--input {arg!r} is blank (an unset shell variable?): give a glob, a folder or a file, or drop it")
    return tuple(normalize_input(_absolute(p.strip())) for arg in (input_args or []) for p in arg.split(",") if p.strip())


def crop_spec(opts: CropshardOptions) -> CropSpec:
    """The crop options as a CropSpec, checked against --manifest and --size."""
    crop = CropSpec(
        strategy=opts.crop,
        size=option_size("--size", opts.size),
        box=parse_box(opts.box) if opts.box else None,
        crops_per_image=opts.crops_per_image,
        stride=option_size("--stride", opts.stride),
        small=opts.small,
        resize=opts.resize,
        seed=opts.seed,
    )
    if opts.crop == "manifest" and not opts.manifest:
        raise ValueError("--crop manifest needs --manifest with a box column")
    if opts.crop == "none" and opts.size:
        raise ValueError("--crop none keeps whole images; drop --size (use --resize to downscale)")
    if opts.crop in ("box", "manifest") and opts.resize:
        # The boxes are cut from the working image, so a resize would move and scale them.
        raise ValueError(f"--resize cannot be combined with --crop {opts.crop}: the boxes are in source pixels (the EXIF-oriented"
                         " image), and --size resizes each crop; drop --resize")
    return crop


def option_size(flag: str, text: str | None) -> tuple[int, int] | None:
    """parse_size of an HxW option's value, its errors naming the option (`--stride 0`, `--size ''`)."""
    if text is None:
        return None
    if not text.strip():
        raise ValueError(f"{flag} {text!r} is blank (an unset shell variable?): give HxW or N")
    try:
        return parse_size(text)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from err


def parse_splits(text: str) -> tuple[tuple[tuple[str, float], ...] | None, tuple[str, ...]]:
    """--split -> (fractions, names); fractions None when the splits come from the input."""
    split = parse_split_spec(text)
    if isinstance(split[0], tuple):
        fractions, names = split, tuple(name for name, _ in split)
    else:
        fractions, names = None, split
    clash = set(names) & set(RESERVED_SPLIT_NAMES)
    if clash:
        raise ValueError(f"split names {sorted(clash)} are reserved")
    return fractions, names


def refuse_pattern_characters(flag: str, path: str) -> None:
    """ValueError for a path holding * ? [ ]: Beam's file operations (match, delete, ReadFromText)
    read it as a glob, so `--output 'out [v2]'` deleted files of a dataset in `out 2` (the class
    [v2] matches "2"), and `--manifest 'm[1].csv'` took its label names from `m1.csv`."""
    found = sorted(set(path) & set("*?[]"))
    if found:
        raise ValueError(f"{flag} {path!r} holds {' '.join(found)}, which Beam's file operations read as a pattern"
                         " (matching other names than this one): choose a path without * ? [ ]")


# Text options whose blank value (`--bands "$BANDS"` with the variable unset) read as not given:
# the build then ran on the default (every band, no --split_by) without a word. What to give instead.
_BLANK_REFUSED = {
    "output": "the dataset's directory", "box": "Y,X,H,W", "split": "a --split such as train=0.8,test=0.2",
    "bands": "band numbers such as 4,3,2", "split_by": "block:N", "split_crs": "a CRS such as EPSG:32632",
    "label_raster": "a class-map pattern such as '{dir}/../labels/{stem}.tif'", "label_names": "the value,name CSV's path",
}


def refuse_blank_values(opts: CropshardOptions) -> None:
    """ValueError for a text option given as blank."""
    for name, wanted in _BLANK_REFUSED.items():
        value = getattr(opts, name)
        if value is not None and not value.strip():
            drop = "" if name == "output" else ", or drop it"  # --output is required
            raise ValueError(f"--{name} {value!r} is blank (an unset shell variable?): give {wanted}{drop}")


def build_config(options: PipelineOptions) -> BuildConfig:
    """Validate the cropshard options; ValueError with a specific message on bad combinations."""
    opts = options.view_as(CropshardOptions)
    refuse_blank_values(opts)
    if not opts.output:
        raise ValueError("--output is required")
    inputs = parse_inputs(opts.input)
    if opts.manifest is not None and not opts.manifest.strip():
        raise ValueError(f"--manifest {opts.manifest!r} is blank (an unset shell variable?): give the manifest's path")
    if bool(inputs) == bool(opts.manifest):
        raise ValueError("give exactly one of --input or --manifest")
    refuse_pattern_characters("--output", opts.output)
    if opts.manifest:
        refuse_pattern_characters("--manifest", opts.manifest)
    output = _absolute(opts.output).rstrip("/")
    check_output_outside_inputs(output, inputs)
    crop = crop_spec(opts)
    if not 1 <= opts.jpeg_quality <= 100:
        raise ValueError(f"--jpeg_quality must be 1..100, got {opts.jpeg_quality}")
    fractions, names = parse_splits(opts.split)
    columns = manifest_columns_of(opts.manifest)
    check_manifest_columns(opts, fractions, columns)
    raster = raster_spec(opts, fractions, columns)
    check_options_take_effect(opts, class_maps=raster.labels is not None)
    channels = len(raster.bands) if raster.bands else opts.channels
    check_raster_encoding(opts.encoding, raster.dtype, channels)
    if opts.num_shards < 0 or not opts.target_shard_mb > 0 or opts.max_pixels < 1:  # `not >` refuses NaN too
        raise ValueError("--num_shards must be >= 0, --target_shard_mb and --max_pixels positive")
    check_sizes_fit_max_pixels(crop, opts.max_pixels)
    if opts.num_shards > MAX_SHARDS:  # Beam writes every shard, empty ones too: 10^8 of them ran for hours
        raise ValueError(f"--num_shards {opts.num_shards} is over {MAX_SHARDS} shards per split; use fewer, or --num_shards 0 for shards by size")
    if not MIN_SHARD_MB <= opts.target_shard_mb <= MAX_SHARD_MB:
        raise ValueError(f"--target_shard_mb {opts.target_shard_mb:g} is outside {MIN_SHARD_MB:g}..{MAX_SHARD_MB} (MiB per shard)")
    if opts.max_rejected_fraction is not None and not 0 <= opts.max_rejected_fraction <= 1:
        raise ValueError(f"--max_rejected_fraction must be 0..1, got {opts.max_rejected_fraction}")
    example = ExampleSpec(
        crop=crop,
        channels=channels,
        encoding=opts.encoding,
        jpeg_quality=opts.jpeg_quality,
        split_fractions=fractions,
        split_names=names,
        max_pixels=opts.max_pixels,
        raster=raster,
    )
    return BuildConfig(
        inputs=inputs,
        manifest=_absolute(opts.manifest) if opts.manifest else None,
        output=output,
        example=example,
        labels=LABELS_NONE if raster.labels else opts.label_from,  # class maps label the chips
        num_shards=opts.num_shards,
        target_shard_mb=opts.target_shard_mb,
        compression=opts.compression,
        shard_contents=opts.shard_contents,
        dedup=opts.dedup,
        overwrite=opts.overwrite,
        progress=opts.progress,
        max_rejected_fraction=opts.max_rejected_fraction,
        verbose=opts.verbose,
    )


# Paths of the kinds a build writes below --output while its inputs are being listed.
OUTPUT_PROBES = ("part", "beam-temp-train-0/part-0", "train-00000-of-00001.tfrecord", "train.tfrecord.idx", "cropshard.json",
                 "rejected.jsonl", "labels.txt")


def check_sizes_fit_max_pixels(crop: CropSpec, max_pixels: int) -> None:
    """ValueError for a --size no crop can take under --max_pixels: every crop (a raster chip
    too) would be too_many_pixels, after --overwrite had removed the old dataset. (A --resize
    past it is not refused: rasters are read a chip at a time, so the limit is a chip's.)"""
    if crop.size and crop.size[0] * crop.size[1] > max_pixels:
        height, width = crop.size
        raise ValueError(f"--size {height}x{width} is {height * width} pixels, over --max_pixels {max_pixels}: every crop would be"
                         " rejected too_many_pixels; a smaller --size, or a higher --max_pixels for trusted images")


def check_output_outside_inputs(output: str, inputs: Sequence[str]) -> None:
    """ValueError when an --input pattern matches files the build writes: listing runs while the
    workers write parts below --output, so the build would read its own files (`--input photos
    --output photos/ds` listed its temporary parts as images)."""
    from apache_beam.io.filesystem import FileSystem

    real_output = real_path(output)
    for pattern in inputs:
        # Given and real paths both: `--input link/** --output photos/ds` with link -> photos.
        for out, pat in ((output, pattern), (real_output, real_pattern(pattern))):
            matches = re.compile(FileSystem.translate_pattern(pat)).fullmatch
            if any(matches(f"{out}/{probe}") for probe in OUTPUT_PROBES):
                via = "" if (out, pat) == (output, pattern) else f" (through symbolic links: {out} is below {glob_root(pat)})"
                raise ValueError(f"--output {output} is inside --input {pattern}{via}: the build would list the files it writes as inputs; "
                                 "write the dataset outside the input folders")


def real_path(path: str) -> str:
    """os.path.realpath of a local path (symbolic links resolved); a gs:// path as it is."""
    return path if "://" in path else os.path.realpath(path)


def real_pattern(pattern: str) -> str:
    """`pattern` with its fixed folder part (listing.glob_root) resolved by real_path."""
    root = glob_root(pattern)
    if "://" in pattern or not root:
        return pattern
    return real_path(root).rstrip("/") + "/" + pattern[len(root):]


@functools.cache
def cropshard_options_parser() -> argparse.ArgumentParser:
    """cropshard's own options alone (no Beam's), for what they declare: defaults, kinds."""
    parser = argparse.ArgumentParser(add_help=False)
    CropshardOptions._add_argparse_args(parser)
    return parser


def option_defaults() -> dict[str, object]:
    return {action.dest: action.default for action in cropshard_options_parser()._actions}


def check_options_take_effect(opts: CropshardOptions, class_maps: bool) -> None:
    """ValueError for an option set to other than its default where nothing in this build reads
    it: `--jpeg_quality 50` of a raw dataset, `--stride` of a centre crop, `--label_mode mask`
    without class maps would each build a dataset other than the one asked for, silently."""
    takes_effect = {  # option -> (whether this build reads it, what it needs)
        "stride": (opts.crop == "grid", "--crop grid"),
        "crops_per_image": (opts.crop == "random", "--crop random"),
        "seed": (opts.crop == "random", "--crop random (it seeds the crop positions)"),
        "box": (opts.crop == "box", "--crop box"),
        # crop.plan_boxes / working_shape: sized crops take every policy; boxes only pad (a box
        # that starts inside the image); whole images none.
        "small": (opts.crop in ("center", "random", "grid") or (opts.crop in ("box", "manifest") and opts.small == "pad"),
                  "--crop center, random or grid (with --crop box or manifest only pad applies, to boxes past the image's edge)"),
        "jpeg_quality": (opts.encoding in ("jpeg", "original"), "--encoding jpeg (or original, for the images it re-encodes)"),
        "target_shard_mb": (opts.num_shards == 0, "shards by size (--num_shards N gives exactly N per split)"),
        "to_uint8": (opts.dtype == "uint8", "--dtype uint8 (it says how wider samples become 8-bit)"),
        "label_mode": (class_maps, "class maps (--label_raster, or a manifest with a label_raster column)"),
        "min_label_fraction": (class_maps and opts.label_mode == "majority", "class maps with --label_mode majority"),
        "label_from": (not opts.manifest, "--input (a manifest's label column labels its rows)"),
    }
    defaults = option_defaults()
    for dest, (applies, needs) in takes_effect.items():
        value = getattr(opts, dest)
        if not applies and value != defaults[dest]:
            raise ValueError(f"--{dest} {value} has no effect without {needs}: drop it, or add what it needs")


MAX_SHARDS = 100_000  # per split, for --num_shards N
MIN_SHARD_MB, MAX_SHARD_MB = 0.001, 1 << 20  # --target_shard_mb: a kilobyte to a terabyte


def raster_spec(opts: CropshardOptions, fractions: tuple | None, columns: ManifestColumns | None = None) -> RasterSpec:
    """The raster options, validated."""
    bands = parse_bands(opts.bands) if opts.bands else None
    if bands and opts.channels != 3 and opts.channels != len(bands):
        raise ValueError(f"--channels {opts.channels} contradicts --bands {opts.bands}; --bands alone sets the channel count")
    if opts.max_nodata is not None and not 0 <= opts.max_nodata <= 1:
        raise ValueError(f"--max_nodata is a share of the chip, 0..1; got {opts.max_nodata}")
    split_block = parse_split_by(opts.split_by) if opts.split_by else None
    if split_block and fractions is None:
        raise ValueError("--split_by assigns chips to --split fractions (e.g. train=0.8,test=0.2), not to folder or manifest splits")
    if split_block and sum(1 for _, share in fractions if share > 0) < 2:
        named = ",".join(f"{name}={share:g}" for name, share in fractions)
        raise ValueError(f"--split_by has no effect with one split (--split {named}): give it --split fractions, e.g. train=0.8,test=0.2")
    return RasterSpec(bands, opts.dtype, raster_convert.parse_uint8_rule(opts.to_uint8), opts.max_nodata, split_block,
                      label_raster_spec(opts, columns), split_crs=_split_crs(opts, split_block))



def _split_crs(opts: CropshardOptions, split_block: float | None) -> str | None:
    if opts.split_crs is None:
        return None
    if opts.split_crs.strip() and not split_block:
        raise ValueError("--split_crs has no effect without --split_by block:N (it names the CRS of those blocks): add --split_by or drop it")
    return parse_split_crs(opts.split_crs)


def label_raster_spec(opts: CropshardOptions, columns: ManifestColumns | None = None) -> raster_labels.LabelRasterSpec | None:
    """--label_raster (or a manifest's label_raster column) and its options; reads the
    --label_names file (one small CSV). Without it the names are the class maps' own category
    tables, resolved before the job (transforms/raster/launch.py resolve_label_names)."""
    column = columns is not None and "label_raster" in columns.declared
    if not opts.label_raster and not (opts.manifest and (opts.label_names or column)):
        if opts.label_names:
            raise ValueError("--label_names names the classes of class maps: give --label_raster, or a --manifest with a label_raster column")
        return None
    if opts.label_raster:
        check_label_raster_pattern(opts.label_raster)
    if not 0 <= opts.min_label_fraction <= 1:
        raise ValueError(f"--min_label_fraction is a share of the chip, 0..1; got {opts.min_label_fraction}")
    if not opts.label_names:
        return raster_labels.LabelRasterSpec(opts.label_raster, opts.label_mode, opts.min_label_fraction, names_from_tables=True)
    classes = raster_labels.parse_label_names(read_label_names(opts.label_names), opts.label_names)
    names_from = f"--label_names file {opts.label_names}"
    return raster_labels.LabelRasterSpec(opts.label_raster, opts.label_mode, opts.min_label_fraction, classes, names_from)


LABEL_RASTER_FIELDS = ("dir", "stem", "name", "ext")  # what raster_labels.label_raster_path fills in


def check_label_raster_pattern(pattern: str) -> None:
    """ValueError naming --label_raster for a template label_raster_path cannot fill: an unknown
    placeholder (a KeyError in every worker) or a stray brace."""
    import string

    allowed = " ".join(f"{{{field}}}" for field in LABEL_RASTER_FIELDS)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(pattern) if field is not None]
    except ValueError as err:
        raise ValueError(f"--label_raster {pattern!r}: {err} (placeholders: {allowed}; a literal brace is doubled, {{{{ or }}}})") from err
    unknown = [field for field in fields if field not in LABEL_RASTER_FIELDS]
    if unknown:
        raise ValueError(f"--label_raster {pattern!r}: unknown placeholder {{{unknown[0]}}} (use {allowed})")
    try:
        raster_labels.label_raster_path("/folder/image.tif", pattern)
    except (ValueError, KeyError, IndexError, AttributeError) as err:  # a format spec or conversion it cannot apply
        raise ValueError(f"--label_raster {pattern!r}: {type(err).__name__}: {err} (placeholders: {allowed})") from err


def read_label_names(path: str) -> str:
    """The --label_names file's text; ValueError naming the option and the file when it cannot be read as text."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as handle:
            return handle.read().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"--label_names {path}: not a UTF-8 text file (byte {err.object[err.start]:#04x} at offset {err.start});"
                         " give a value,name CSV") from err
    except OSError as err:  # Beam's BeamIOError (a missing file) is an OSError
        raise ValueError(f"--label_names {path} cannot be read: {err}") from err


def manifest_columns_of(manifest: str | None) -> ManifestColumns | None:
    """manifest.manifest_columns of --manifest; None without one, or when it is missing (reported
    where inputs are checked, not here)."""
    from apache_beam.io.filesystems import FileSystems

    if not manifest or not FileSystems.exists(manifest):
        return None
    return manifest_columns(manifest)


def check_manifest_columns(opts: CropshardOptions, fractions: tuple | None, columns: ManifestColumns | None) -> None:
    """ValueError for a manifest column the build would not read: a split column with --split
    fractions (the default included) put held-out rows into train; a box column without --crop
    manifest was cut as centre crops. And for a column the options need that no row fills
    (--split names, --crop manifest): every row would be rejected. And for rows naming one image
    twice without --dedup (transforms/manifest.py RepeatedRows)."""
    if columns is None:
        return
    if columns.repeated and not opts.dedup:
        raise ValueError(columns.repeated)
    if fractions is None and "split" not in columns.filled:
        raise ValueError(f"--split {opts.split} takes each row's split from the manifest, but {opts.manifest} has no split column"
                         " (or none filled): add one, or give fractions, e.g. --split train=0.8,validation=0.2")
    if opts.crop == "manifest" and "box" not in columns.filled:
        raise ValueError(f"--crop manifest cuts each row's box, but the manifest {opts.manifest} has no box column (or none filled):"
                         " add one (y,x,height,width in source pixels), or choose another --crop")
    if "split" in columns.filled and fractions is not None:
        found = ",".join(columns.splits[:20]) + (",..." if len(columns.splits) > 20 else "")
        raise ValueError(f"the manifest {opts.manifest} has a split column ({found}), which --split {opts.split} ignores:"
                         f" pass --split {found} to use it, or drop the column for hash splits")
    if columns.labelled and columns.unlabelled and not opts.label_raster and "label_raster" not in columns.filled:
        raise ValueError(f"{columns.unlabelled} of the {columns.labelled + columns.unlabelled} rows of the manifest {opts.manifest} have no label"
                         f" (the first: {columns.first_unlabelled}), and would be written unlabelled (-1) beside the labelled ones:"
                         " give every row its label, or none for an unlabelled dataset")
    if "box" in columns.filled and opts.crop != "manifest":
        raise ValueError(f"the manifest {opts.manifest} has a box column, which --crop {opts.crop} ignores: --crop manifest uses it"
                         " (or drop the column)")


def check_raster_encoding(encoding: str, dtype: str, channels: int) -> None:
    if encoding == "jpeg" and (dtype != "uint8" or channels not in (1, 3)):
        raise ValueError(f"--encoding jpeg stores uint8 with 1 or 3 bands; use raw (or png for 1/3-band uint16) for {channels} bands of --dtype {dtype}")
    if encoding in ("png", "original") and (dtype not in ("uint8", "uint16", "keep") or channels not in (1, 3)):
        stores = "stores" if encoding == "png" else "stores raster chips as PNG:"
        raise ValueError(f"--encoding {encoding} {stores} 1 or 3 bands of uint8/uint16; use raw for {channels} bands of --dtype {dtype}")
