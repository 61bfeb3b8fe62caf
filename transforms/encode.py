"""Pixels -> stored bytes (`raw`, `jpeg`, `png`, or the source bytes for `original`). Pure functions."""

from __future__ import annotations

import io

import numpy as np
from cropshard.reader.schema import FORMAT_JPEG, FORMAT_PNG, FORMAT_RAW
from cropshard.transforms import png_stream
from cropshard.transforms.jpeg_window import jpeg_frame_or_none, window_decodes_exactly
from PIL import Image

ENCODINGS = ("raw", "jpeg", "png", "original")
PNG_COMPRESS_LEVEL = 3  # zlib level: most of level 6's size at a fraction of its time


def encode_pixels(pixels: np.ndarray, encoding: str, jpeg_quality: int = 90) -> tuple[bytes, str]:
    """Encode a uint8 HWC array; returns (bytes, image/format)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 HWC pixels with 1 or 3 channels, got {pixels.dtype} {pixels.shape}")
    if encoding == FORMAT_RAW:
        return np.ascontiguousarray(pixels).tobytes(), FORMAT_RAW
    img = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, "L" if pixels.shape[2] == 1 else "RGB")
    buffer = io.BytesIO()
    if encoding == FORMAT_JPEG:
        img.save(buffer, format="JPEG", quality=jpeg_quality)
        return buffer.getvalue(), FORMAT_JPEG
    if encoding == FORMAT_PNG:
        img.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return buffer.getvalue(), FORMAT_PNG
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")


def raw_mode(img: Image.Image) -> str:
    """The raw mode Pillow decodes a not yet loaded image's samples from ('RGB;16B' for a 16-bit
    RGB PNG that opens as mode RGB); '' when its tile does not say."""
    args = img.tile[0][3] if img.tile else None
    if isinstance(args, tuple) and args:
        args = args[0]
    return args if isinstance(args, str) else ""


def verbatim_format(img: Image.Image, orientation: int, channels: int, data: bytes) -> str | None:
    """For `--encoding original`: the format to store the source bytes `data` as, or None when they
    need re-encoding (orientation to apply, alpha, palette, 16-bit, CMYK, a channel change, or a
    JPEG coding that not every reader decodes)."""
    if orientation != 1 or "transparency" in img.info:
        return None
    wanted_mode = "RGB" if channels == 3 else "L"
    if img.mode != wanted_mode:
        return None
    if img.format == "JPEG":
        # Huffman-coded DCT only: TensorFlow's libjpeg-turbo (reader.load, TFDS) has no lossless
        # mode, and Pillow (PyTorch loaders) fails on arithmetic-coded JPEGs over 64 KiB. And
        # complete scans only: the reader's crops decode a window, which differs from the full
        # decode of a progressive JPEG that ends before its last scans (window_decodes_exactly).
        frame = jpeg_frame_or_none(data)
        return FORMAT_JPEG if frame is not None and frame.huffman_dct and window_decodes_exactly(data) else None
    # A 16-bit PNG opens as mode RGB/L too; its raw mode says how many bits are stored. Pillow
    # reads PNGs with a bad IDAT/IEND CRC or no IEND, which TensorFlow's libpng refuses.
    if img.format == "PNG" and raw_mode(img) in ("RGB", "L") and png_stream.libpng_reads(data):
        return FORMAT_PNG
    return None


def reencode_format(source_format: str, data: bytes) -> str:
    """`original` re-encodes lossy sources (`data`, of Pillow's `source_format`) as JPEG and
    everything else losslessly as PNG: lossless JPEGs, and progressive JPEGs that end before
    their last scans (their pixels are the full decode's, which a JPEG window would not give)."""
    if source_format != "JPEG":
        return FORMAT_PNG
    frame = jpeg_frame_or_none(data)
    return FORMAT_PNG if frame is not None and (frame.lossless or not window_decodes_exactly(data)) else FORMAT_JPEG
