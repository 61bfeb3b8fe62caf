"""Which variants `cropshard compare` builds or reuses, and the `cropshard build` arguments of each (pure)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

from cropshard.reader.metadata import DatasetInfo

LAYOUTS = ("precrop", "full", "resized")
LAYOUT_TITLES = {"precrop": "pre-cropped", "full": "full images", "resized": "downscaled full images"}

Build = Callable[[list[str]], tuple[DatasetInfo, float]]
Check = Callable[[list[str]], None]  # a build's command line checked, nothing written (ValueError and the like)
"""Runs one build from `cropshard build` arguments; returns the dataset's metadata and the build's wall
seconds. The `cropshard` dispatcher supplies it, so this package never imports the pipeline."""


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    layout: str  # precrop | full | resized
    encoding: str
    path: str
    build_args: tuple[str, ...] | None = None  # None: an existing dataset, reused as is
    resize: int | None = None


def plan_variants(
    workdir: str, size: tuple[int, int], encodings: Sequence[str], full_encodings: Sequence[str], resize: int | None, layouts: Sequence[str]
) -> list[Variant]:
    """The variants to build under `workdir`, one sub-directory each."""
    crop = f"{size[0]}x{size[1]}"
    variants = []
    if "precrop" in layouts:
        for enc in encodings:
            variants.append(Variant(f"precrop-{enc}", "precrop", enc, os.path.join(workdir, f"precrop-{enc}"),
                                    ("--crop=center", f"--size={crop}", f"--encoding={enc}")))
    if "full" in layouts:
        for enc in full_encodings:
            variants.append(Variant(f"full-{enc}", "full", enc, os.path.join(workdir, f"full-{enc}"), ("--crop=none", f"--encoding={enc}")))
    if "resized" in layouts and resize:
        for enc in full_encodings:
            # `original` means "the source bytes", which a downscale cannot keep: store resized images as JPEG.
            stored = "jpeg" if enc == "original" else enc
            name = f"resized{resize}-{stored}"
            if any(v.name == name for v in variants):
                continue
            variants.append(Variant(name, "resized", stored, os.path.join(workdir, name),
                                    ("--crop=none", f"--resize={resize}", f"--encoding={stored}"), resize=resize))
    return variants


def training_crop(info: DatasetInfo, size: tuple[int, int]) -> str | None:
    """The reader's crop for training on a variant, as a user would: random windows of `size` wherever the stored
    images are larger than it (full images, or pre-crops stored larger), else a plain read of the pre-crops."""
    stored = info.image_shape
    if not info.is_precropped or stored is None or stored[0] > size[0] or stored[1] > size[1]:
        return "random"
    return None


def crop_label(crop: str | None, size: tuple[int, int] | None) -> str:
    """'plain read', or e.g. 'random crop 48x48'."""
    return "plain read" if crop is None or size is None else f"{crop} crop {size[0]}x{size[1]}"


def variant_from_dataset(path: str, info: DatasetInfo) -> Variant:
    """An existing dataset as a variant; its kind comes from its own cropshard.json."""
    resize = info.crop.get("resize")
    if info.is_precropped:
        layout, name = "precrop", f"precrop-{info.encoding}"
    elif resize:
        layout, name = "resized", f"resized{resize}-{info.encoding}"
    else:
        layout, name = "full", f"full-{info.encoding}"
    return Variant(name, layout, info.encoding, path, None, resize)


def combine(given: Sequence[Variant], planned: Sequence[Variant]) -> list[Variant]:
    """The given datasets, then the planned builds they do not replace (a given dataset replaces the
    build of the same name); names that still collide get their folder name appended."""
    names = {v.name for v in given}
    variants = [*given, *(v for v in planned if v.name not in names)]
    seen: dict[str, int] = {}
    for v in variants:
        seen[v.name] = seen.get(v.name, 0) + 1
    return [dataclasses.replace(v, name=f"{v.name} ({os.path.basename(os.path.normpath(v.path))})") if seen[v.name] > 1 else v
            for v in variants]


def build_argv(variant: Variant, source: Sequence[str], jpeg_quality: int, passthrough: Sequence[str]) -> list[str]:
    """The `cropshard build` arguments of a variant that compare builds: the inputs, the variant's own
    crop/encoding options (the JPEG quality only where the variant encodes JPEG: build refuses an
    option that has no effect), and every option passed through to all builds."""
    if variant.build_args is None:
        raise ValueError(f"{variant.name} is an existing dataset; it is not built")
    quality = [f"--jpeg_quality={jpeg_quality}"] if variant.encoding in ("jpeg", "original") else []
    if "--crop=none" in variant.build_args:  # whole images are never too small: build refuses --small there
        passthrough = without_option(passthrough, "--small")
    return [*source, f"--output={variant.path}", *variant.build_args, *quality, "--overwrite", *passthrough]


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without `option` (as `--opt=value` or `--opt value`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out
