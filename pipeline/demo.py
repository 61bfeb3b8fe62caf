"""The built-in demo image set: a class-folder tree of aerial-looking images made by code.

Three land-cover classes (forest, water, urban) at realistic photo sizes, as baseline and
progressive JPEGs (some with an EXIF orientation) and PNGs, so `make demo` exercises the
same paths as real photos without shipping any.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

CLASSES = ("forest", "urban", "water")
SIZES = ((480, 640), (600, 800), (768, 1024), (900, 1200), (1200, 1600))  # (height, width)
_STORED_SIZES = {*SIZES, *((w, h) for h, w in SIZES)}  # EXIF-rotated images are stored sideways
_DEMO_NAME = re.compile(r"(?P<label>[a-z]+)_\d{3,}\.(?P<ext>jpg|png)")
_FORMATS = {"jpg": "JPEG", "png": "PNG"}


def _smooth_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 5) -> np.ndarray:
    """Fractal value noise in [0, 1]: coarse random grids upsampled and summed."""
    total = np.zeros((height, width), np.float32)
    weight = 0.0
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        img = Image.fromarray((grid * 255).astype(np.uint8), "L").resize((width, height), Image.Resampling.BICUBIC)
        amplitude = 0.55**octave
        total += amplitude * np.asarray(img, np.float32) / 255
        weight += amplitude
    return total / weight


def render(label: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB image of the given land-cover class."""
    noise = _smooth_noise(rng, height, width)
    if label == "forest":
        base = np.stack([40 + 60 * noise, 90 + 110 * noise, 30 + 40 * noise], axis=-1)
        base += rng.normal(0, 12, (height, width, 1))  # canopy texture
    elif label == "water":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        ripples = 0.5 + 0.5 * np.sin(xx / 9.0 + 6 * noise) * np.cos(yy / 13.0)
        base = np.stack([20 + 30 * ripples, 60 + 50 * noise, 120 + 90 * ripples], axis=-1)
    else:
        base = np.repeat((110 + 60 * noise)[..., None], 3, axis=-1)
        for _ in range(int(height * width / 6000)):  # rooftops
            y, x = int(rng.integers(0, height - 8)), int(rng.integers(0, width - 8))
            h, w = int(rng.integers(6, 40)), int(rng.integers(6, 40))
            base[y : y + h, x : x + w] = rng.integers(60, 230, 3)
        step = int(rng.integers(80, 160))
        base[::step, :, :] = 60  # roads
        base[:, ::step, :] = 60
    return np.clip(base, 0, 255).astype(np.uint8)


def _is_demo_image(path: str, label: str, name: str) -> bool:
    """Named, encoded and sized as write_demo_images writes the images of class `label`."""
    match = _DEMO_NAME.fullmatch(name)
    if not match or match["label"] != label:
        return False
    try:
        with Image.open(path) as img:
            return img.format == _FORMATS[match["ext"]] and (img.height, img.width) in _STORED_SIZES
    except OSError:  # not an image (PIL's UnidentifiedImageError is an OSError), or a folder
        return False


def previous_demo_files(output: str) -> list[str]:
    """The files of a previous demo set in `output`, which a new set replaces. ValueError when
    `output` is a file, or holds anything else: the user's files were overwritten without a word."""
    if os.path.isfile(output):
        raise ValueError(f"{output} is a file: give a folder for the demo images (created if missing)")
    found = []
    for root, dirs, files in os.walk(output):
        label = os.path.relpath(root, output)
        linked = [name for name in dirs if os.path.islink(os.path.join(root, name))]  # not walked: their files unseen
        for name in sorted(files + linked):
            path = os.path.join(root, name)
            if label not in CLASSES or not _is_demo_image(path, label, name):
                raise ValueError(f"{output} is not empty and holds files demo-images did not write (e.g. {os.path.relpath(path, output)}):"
                                 " give an empty or new folder (one holding only a previous demo set gets the new set instead)")
            found.append(path)
    return found


def write_demo_images(output: str, per_class: int = 24, seed: int = 0) -> list[str]:
    """Write `per_class` images for each class under `output/<class>/`; returns the paths. A folder
    holding a previous demo set (another --per_class or --seed, say) ends up holding exactly the new
    one; a folder holding anything else is refused (ValueError), as is `per_class` < 1."""
    if per_class < 1:
        raise ValueError(f"--per_class must be at least 1, got {per_class}")
    if seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {seed}")
    if not output.strip():  # '' walked nothing and wrote into the current folder, whatever it held
        raise ValueError("give a folder for the demo images (created if missing)")
    for path in previous_demo_files(output):
        os.remove(path)
    rng = np.random.default_rng(seed)
    paths = []
    for label in CLASSES:
        folder = os.path.join(output, label)
        os.makedirs(folder, exist_ok=True)
        for index in range(per_class):
            height, width = SIZES[int(rng.integers(0, len(SIZES)))]
            img = Image.fromarray(render(label, height, width, rng), "RGB")
            kind = index % 6
            if kind == 5:
                path = os.path.join(folder, f"{label}_{index:03d}.png")
                img.save(path, format="PNG", compress_level=1)
            else:
                path = os.path.join(folder, f"{label}_{index:03d}.jpg")
                exif = Image.Exif()
                if kind == 4:  # a camera held sideways: stored rotated, EXIF says how to show it
                    exif[0x0112] = 6
                    img = img.transpose(Image.Transpose.ROTATE_90)
                img.save(path, format="JPEG", quality=int(rng.integers(85, 96)), progressive=kind == 3, exif=exif)
            paths.append(path)
    return paths
