"""png_stream against files Pillow writes: the declared image size, a stream that ends early, and
the chunk faults libpng refuses while Pillow reads on."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from cropshard.transforms import png_stream
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.decode import decode_crops
from cropshard.transforms.encode import verbatim_format
from cropshard.transforms.rejects import Rejected
from PIL import Image

from tests import imagegen


def png(mode: str = "RGB", size: tuple[int, int] = (37, 53), interlace: bool = False, **kwargs) -> bytes:
    pixels = imagegen.photo(*size, seed=3)
    img = Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False, **({"interlace": 1} if interlace else {}), **kwargs)
    return buf.getvalue()


def with_height(data: bytes, height: int) -> bytes:
    """`data` whose IHDR declares `height` rows (CRC fixed): a header that promises more than the stream holds."""
    out = bytearray(data)
    out[20:24] = struct.pack(">I", height)
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    return bytes(out)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"])
@pytest.mark.parametrize("interlace", [False, True])
def test_declared_size_equals_what_the_stream_of_a_whole_file_inflates_to(mode: str, interlace: bool) -> None:
    data = png(mode, interlace=interlace)
    expected, inflated = png_stream.image_data_bytes(data)
    assert expected == inflated > 0
    assert png_stream.libpng_reads(data)


def test_a_header_taller_than_the_image_data_is_short_and_pillow_does_not_notice() -> None:
    data = with_height(png(), 60)
    img = Image.open(io.BytesIO(data))
    img.load()  # Pillow: no error, rows 37..59 zero
    assert np.asarray(img)[37:].max() == 0
    expected, inflated = png_stream.image_data_bytes(data)
    assert inflated < expected
    with pytest.raises(Rejected) as err:
        decode_crops(data, CropSpec("none"), key="k")
    assert err.value.reason == "truncated" and "the rest would be black" in err.value.message


def test_chunk_faults_that_libpng_refuses() -> None:
    data = png()
    iend = data.rindex(b"IEND") - 4
    idat = data.index(b"IDAT") - 4
    idat_crc = idat + 8 + struct.unpack(">I", data[idat : idat + 4])[0]
    faults = {
        "no IEND": data[:iend],
        "last byte missing": data[:-1],
        "IDAT CRC wrong": data[:idat_crc] + bytes([data[idat_crc] ^ 0xFF]) + data[idat_crc + 1 :],
        "IEND CRC wrong": data[:-1] + bytes([data[-1] ^ 0xFF]),
        "junk after IEND": data + b"junk",
    }
    for name, bad in faults.items():
        assert not png_stream.libpng_reads(bad), name
    assert not png_stream.libpng_reads(b"GIF89a")


def test_original_encoding_keeps_a_png_only_when_libpng_reads_it() -> None:
    data = png()
    bad_crc = data[:-1] + bytes([data[-1] ^ 0xFF])  # pixels intact: Pillow reads it
    assert verbatim_format(Image.open(io.BytesIO(data)), 1, 3, data) == "png"
    assert verbatim_format(Image.open(io.BytesIO(bad_crc)), 1, 3, bad_crc) is None  # re-encoded instead
