"""cropshard's own pipeline options, a PipelineOptions subclass so `--help`, every runner and
Dataflow templates see them next to Beam's options; and their validation into a `BuildConfig`."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions
from cropshard.transforms.crop import SMALL_POLICIES, STRATEGIES, CropSpec, parse_box, parse_size, parse_split_spec
from cropshard.transforms.decode import DEFAULT_MAX_PIXELS
from cropshard.transforms.encode import ENCODINGS
from cropshard.transforms.examples import IMAGES_WRITTEN, RASTER_FACTS, RASTER_STATS, ExampleSpec
from cropshard.transforms.globs import LABELS_FOLDER, LABELS_NONE
from cropshard.transforms.raster import convert as raster_convert
from cropshard.transforms.raster import labels as raster_labels
from cropshard.transforms.raster.records import RasterSpec, parse_bands, parse_split_by
from cropshard.transforms.rejects import REJECTED

RESERVED_SPLIT_NAMES = (REJECTED, IMAGES_WRITTEN, RASTER_FACTS, RASTER_STATS)


class CropshardOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:  # noqa: ANN001 - Beam passes its own parser type
        add = parser.add_argument
        add("--input", action="append", default=None, metavar="GLOB",
            help="Image files to read: a glob (local or gs://; '**' crosses folders) or a directory. Repeatable, or comma-separated.")
        add("--manifest", default=None, metavar="FILE",
            help="CSV/TSV (header: path,label[,split][,box]) or JSONL manifest instead of --input. Relative paths resolve against the manifest's folder.")
        add("--output", default=None, metavar="DIR", help="Dataset directory (local or gs://).")
        add("--crop", default="center", choices=STRATEGIES,
            help="center: one centred crop; box: fixed --box; random: --crops_per_image seeded crops; grid: tiles every --stride; manifest: per-row box; none: whole image.")
        add("--size", default=None, metavar="HxW", help="Crop size, e.g. 128x128 (or 128). With box/manifest: resize every crop to it.")
        add("--box", default=None, metavar="Y,X,H,W", help="The window for --crop box, in the EXIF-oriented image.")
        add("--crops_per_image", type=int, default=1, help="Crops per image for --crop random.")
        add("--stride", default=None, metavar="HxW", help="Tile step for --crop grid (default: the crop size, no overlap).")
        add("--small", default="reject", choices=SMALL_POLICIES,
            help="Images smaller than the crop: reject (reason too_small), pad (zeros), or upscale to cover the crop.")
        add("--resize", type=int, default=None, metavar="S", help="Resize the shorter side to S before cropping (JPEG: DCT-domain downscale first).")
        add("--channels", type=int, default=3, choices=(1, 3), help="3 = RGB, 1 = greyscale.")
        add("--encoding", default="raw", choices=ENCODINGS,
            help="raw: uint8 HWC bytes; jpeg; png; original: source JPEG/PNG bytes verbatim where possible (with --crop none).")
        add("--jpeg_quality", type=int, default=90, help="Quality for --encoding jpeg (and re-encoded originals).")
        add("--split", default="train=1.0", metavar="SPEC",
            help="train=0.8,validation=0.1,test=0.1 assigns images by a hash of their key; plain names (train,validation,test) take the split from the first folder below the input root, or the manifest's split column.")
        add("--label_from", default=LABELS_FOLDER, choices=(LABELS_FOLDER, LABELS_NONE),
            help="folder: label = the image's parent folder name; none: unlabeled (-1). Manifests use their label column.")
        add("--num_shards", type=int, default=0, help="Shards per split (default: chosen so shards are near --target_shard_mb).")
        add("--target_shard_mb", type=float, default=128.0, help="Target shard size when --num_shards is not given.")
        add("--compression", default="none", choices=("none", "gzip"), help="Shard compression.")
        add("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS, help="Reject images with more pixels (decompression-bomb guard).")
        add("--seed", type=int, default=0, help="Mixed into random crop positions (positions are also keyed by image).")
        add("--dedup", action="store_true", default=False, help="Keep one of byte-identical inputs; the others are rejected as duplicate.")
        add("--overwrite", action="store_true", default=False, help="Replace the dataset in a non-empty --output.")
        add("--progress", default="auto", choices=("auto", "bar", "log", "off"),
            help="Live progress for local runs: bar on a terminal, log lines otherwise.")
        add_raster_arguments(parser.add_argument_group("rasters (GeoTIFF / COG inputs, read with rasterio)"))


def add_raster_arguments(group) -> None:  # noqa: ANN001 - an argparse argument group
    add = group.add_argument
    add("--bands", default=None, metavar="B,B,...",
        help="1-based band numbers to store, in order (e.g. 4,3,2 or 1,2,3,4,5,6,7,8); sets the channel count. Default: every band, which must number --channels.")
    add("--dtype", default="uint8", choices=raster_convert.DTYPE_CHOICES,
        help="Stored sample type: uint8 converts by --to_uint8; keep stores the rasters' own type (that of the first raster input) losslessly; or name it.")
    add("--to_uint8", default="bits", metavar="RULE",
        help="How --dtype uint8 converts wider samples: bits (top 8 of the bits the file declares) or bits:N (N significant bits, e.g. bits:11).")
    add("--max_nodata", type=float, default=None, metavar="F",
        help="Skip raster chips whose nodata/masked share exceeds F (0..1); counted in the metadata.")
    add("--split_by", default=None, metavar="block:N",
        help="Assign raster chips to the --split fractions by a hash of the N x N block they fall in (map units with a CRS, else pixels).")
    add("--label_raster", default=None, metavar="PATTERN",
        help="Each raster's class map (a GeoTIFF), from the image path: {dir} {stem} {name} {ext}, e.g. '{dir}/../labels/{stem}.tif'. Aligned onto the image's grid (nearest).")
    add("--label_mode", default="majority", choices=raster_labels.LABEL_MODES,
        help="majority: each chip's label is its majority class; mask: store the chip's class-id mask (image/segmentation/encoded).")
    add("--min_label_fraction", type=float, default=0.0, metavar="F",
        help="--label_mode majority: skip chips whose majority class covers less than F of the chip.")
    add("--label_names", default=None, metavar="CSV",
        help="value,name per class of the class maps (ids follow the values' order); required with --label_raster or a manifest label_raster column.")


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

    @property
    def split_names(self) -> tuple[str, ...]:
        return self.example.split_names

    @property
    def splits_from_input(self) -> bool:
        return self.example.split_fractions is None


def normalize_input(pattern: str) -> str:
    """A directory means everything below it."""
    if re.search(r"[*?\[]", pattern):
        return pattern
    if pattern.endswith("/") or ("://" not in pattern and os.path.isdir(pattern)):
        return pattern.rstrip("/") + "/**"
    return pattern


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def parse_inputs(input_args: Sequence[str] | None) -> tuple[str, ...]:
    """Every --input (repeated or comma-separated), absolute, a directory meaning everything below it."""
    return tuple(normalize_input(_absolute(p.strip())) for arg in (input_args or []) for p in arg.split(",") if p.strip())


def crop_spec(opts: CropshardOptions) -> CropSpec:
    """The crop options as a CropSpec, checked against --manifest and --size."""
    crop = CropSpec(
        strategy=opts.crop,
        size=parse_size(opts.size) if opts.size else None,
        box=parse_box(opts.box) if opts.box else None,
        crops_per_image=opts.crops_per_image,
        stride=parse_size(opts.stride) if opts.stride else None,
        small=opts.small,
        resize=opts.resize,
        seed=opts.seed,
    )
    if opts.crop == "manifest" and not opts.manifest:
        raise ValueError("--crop manifest needs --manifest with a box column")
    if opts.crop == "none" and opts.size:
        raise ValueError("--crop none keeps whole images; drop --size (use --resize to downscale)")
    return crop


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


def build_config(options: PipelineOptions) -> BuildConfig:
    """Validate the cropshard options; ValueError with a specific message on bad combinations."""
    opts = options.view_as(CropshardOptions)
    if not opts.output:
        raise ValueError("--output is required")
    inputs = parse_inputs(opts.input)
    if bool(inputs) == bool(opts.manifest):
        raise ValueError("give exactly one of --input or --manifest")
    crop = crop_spec(opts)
    if not 1 <= opts.jpeg_quality <= 100:
        raise ValueError(f"--jpeg_quality must be 1..100, got {opts.jpeg_quality}")
    fractions, names = parse_splits(opts.split)
    raster = raster_spec(opts, fractions)
    channels = len(raster.bands) if raster.bands else opts.channels
    check_raster_encoding(opts.encoding, raster.dtype, channels)
    if opts.num_shards < 0 or opts.target_shard_mb <= 0 or opts.max_pixels < 1:
        raise ValueError("--num_shards must be >= 0, --target_shard_mb and --max_pixels positive")
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
        output=_absolute(opts.output).rstrip("/"),
        example=example,
        labels=LABELS_NONE if raster.labels else opts.label_from,  # class maps label the chips
        num_shards=opts.num_shards,
        target_shard_mb=opts.target_shard_mb,
        compression=opts.compression,
        dedup=opts.dedup,
        overwrite=opts.overwrite,
        progress=opts.progress,
    )


def raster_spec(opts: CropshardOptions, fractions: tuple | None) -> RasterSpec:
    """The raster options, validated."""
    bands = parse_bands(opts.bands) if opts.bands else None
    if bands and opts.channels != 3 and opts.channels != len(bands):
        raise ValueError(f"--channels {opts.channels} contradicts --bands {opts.bands}; --bands alone sets the channel count")
    if opts.max_nodata is not None and not 0 <= opts.max_nodata <= 1:
        raise ValueError(f"--max_nodata is a share of the chip, 0..1; got {opts.max_nodata}")
    split_block = parse_split_by(opts.split_by) if opts.split_by else None
    if split_block and fractions is None:
        raise ValueError("--split_by assigns chips to --split fractions (e.g. train=0.8,test=0.2), not to folder or manifest splits")
    return RasterSpec(bands, opts.dtype, raster_convert.parse_uint8_rule(opts.to_uint8), opts.max_nodata, split_block, label_raster_spec(opts))


def label_raster_spec(opts: CropshardOptions) -> raster_labels.LabelRasterSpec | None:
    """--label_raster (or a manifest's label_raster column) and its options; reads the
    --label_names file (one small CSV)."""
    if not opts.label_raster and not (opts.label_names and opts.manifest):
        if opts.label_names:
            raise ValueError("--label_names names the classes of class maps: give --label_raster, or a --manifest with a label_raster column")
        return None
    if not opts.label_names:
        raise ValueError("--label_raster needs --label_names (a CSV of value,name per class)")
    if not 0 <= opts.min_label_fraction <= 1:
        raise ValueError(f"--min_label_fraction is a share of the chip, 0..1; got {opts.min_label_fraction}")
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(opts.label_names) as handle:
        classes = raster_labels.parse_label_names(handle.read().decode("utf-8-sig"), opts.label_names)
    return raster_labels.LabelRasterSpec(opts.label_raster, opts.label_mode, opts.min_label_fraction, classes)


def check_raster_encoding(encoding: str, dtype: str, channels: int) -> None:
    if encoding == "jpeg" and (dtype != "uint8" or channels not in (1, 3)):
        raise ValueError(f"--encoding jpeg stores uint8 with 1 or 3 bands; use raw (or png for 1/3-band uint16) for {channels} bands of --dtype {dtype}")
    if encoding == "png" and (dtype not in ("uint8", "uint16", "keep") or channels not in (1, 3)):
        raise ValueError(f"--encoding png stores 1 or 3 bands of uint8/uint16; use raw for {channels} bands of --dtype {dtype}")
