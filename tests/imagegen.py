"""Test inputs made by code: photo-like images, EXIF orientations and deliberately broken files,
plus the independent Pillow reference the writer's pixels are checked against."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients, a luminance texture and sensor-like noise: compresses like a
    photo (chroma smooth, detail in luminance) while every pixel position differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28)
    colour = np.stack([40 + 160 * xx / max(width - 1, 1), 40 + 160 * yy / max(height - 1, 1), 120 + 60 * np.sin(xx / 40 + phase)], axis=-1)
    texture = 25 * np.sin(xx / 5.0 + phase) * np.cos(yy / 7.0) + rng.normal(0, 3, (height, width))
    return np.clip(colour + texture[..., None], 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, fmt: str | None = None, orientation: int = 1, **kwargs) -> Path:
    """Save `pixels` as displayed; with an EXIF orientation the stored pixels are transformed so
    that a viewer applying the tag shows `pixels`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower())
    if orientation != 1:
        # exif_transpose applies the inverse of these to display; store the inverse of display.
        inverse = {
            2: [Image.Transpose.FLIP_LEFT_RIGHT],
            3: [Image.Transpose.ROTATE_180],
            4: [Image.Transpose.FLIP_TOP_BOTTOM],
            5: [Image.Transpose.TRANSPOSE],
            6: [Image.Transpose.ROTATE_90],
            7: [Image.Transpose.TRANSVERSE],
            8: [Image.Transpose.ROTATE_270],
        }[orientation]
        for op in inverse:
            img = img.transpose(op)
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    img.save(path, format=fmt, **kwargs)
    return path


def reference_pixels(path: str | Path, channels: int = 3) -> np.ndarray:
    """Pillow decode with EXIF orientation, as HWC uint8 (alpha composited on black)."""
    img = ImageOps.exif_transpose(Image.open(path))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    img = img.convert("RGB" if channels == 3 else "L")
    arr = np.asarray(img)
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    y, x = (pixels.shape[0] - height) // 2, (pixels.shape[1] - width) // 2
    return pixels[y : y + height, x : x + width]


def truncated_jpeg(path: Path, seed: int = 0) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(photo(300, 400, seed)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupt_png_pixels(png: bytes) -> bytes:
    """`png` with 16 bytes of its first IDAT's compressed data zeroed halfway in, and that chunk's
    CRC made right again: only the zlib stream is broken (Pillow: "broken data stream")."""
    start = png.index(b"IDAT") + 4
    length = int.from_bytes(png[start - 8 : start - 4], "big")
    body = bytearray(png[start : start + length])
    body[length // 2 : length // 2 + 16] = bytes(16)
    crc = zlib.crc32(b"IDAT" + bytes(body)).to_bytes(4, "big")
    return png[:start] + bytes(body) + crc + png[start + length + 4 :]


def broken_files(folder: Path) -> dict[str, str]:
    """The three classic broken inputs -> the rejection reason each must get."""
    folder.mkdir(parents=True, exist_ok=True)
    truncated_jpeg(folder / "truncated.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    return {
        str(folder / "truncated.jpg"): "truncated",
        str(folder / "empty.jpg"): "empty_file",
        str(folder / "notes.jpg"): "not_an_image",
    }


def class_tree(root: Path, per_class: int = 4, size: tuple[int, int] = (180, 240), classes=("cat", "dog")) -> list[Path]:
    """root/<class>/<n>.{jpg,png} with distinct photo-like content."""
    paths = []
    for c, label in enumerate(classes):
        for i in range(per_class):
            suffix = ".png" if i % 3 == 2 else ".jpg"
            paths.append(save(root / label / f"{label}_{i}{suffix}", photo(*size, seed=100 * c + i), quality=92))
    return paths


def file_bytes(path: str | os.PathLike) -> bytes:
    return Path(path).read_bytes()


def scan_starts(data: bytes) -> list[int]:
    """Offsets of a Pillow JPEG's scan headers (no thumbnail, so every 0xFF 0xDA is one)."""
    starts, at = [], data.find(b"\xff\xda")
    while at >= 0:
        starts.append(at)
        at = data.find(b"\xff\xda", at + 2)
    return starts


def ended_after(data: bytes, scans: int) -> bytes:
    """`data` ending (EOI) after its first `scans` scans: a legal progressive JPEG that never
    brings its coefficients to full precision."""
    return data[: scan_starts(data)[scans]] + b"\xff\xd9"
