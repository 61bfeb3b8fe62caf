"""What a PNG file's chunks say about it, without Pillow: whether its compressed image data holds
every row its IHDR declares, and whether libpng (TensorFlow's decode_png) reads it cleanly.

Pure functions, no Beam. Two gaps in Pillow make this necessary:

* Pillow's PNG decoder stops without an error when the zlib stream ends early, and leaves the
  missing rows zero: a PNG whose IHDR declares more rows than its IDAT holds (a header edited,
  a stream cut at a deflate block boundary and closed) loads as an image with a black band.
* Pillow skips the CRCs of IDAT and IEND and does not need an IEND at all; libpng refuses a
  file with either problem ("Invalid PNG data"), so such bytes cannot be kept verbatim for
  tf.data readers (`--encoding original`), though their pixels are intact.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel by IHDR colour type: grey, RGB, palette, grey + alpha, RGBA.
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x0, y0, dx, dy).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP = 1 << 20  # bytes of inflated output held at a time while counting


def filtered_size(width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool) -> int:
    """Bytes of the filtered (pre-deflate) image: every row of every pass plus its filter byte."""
    bits = bit_depth * _SAMPLES.get(colour_type, 1)
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        pass_w, pass_h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_w > 0 and pass_h > 0:
            total += pass_h * (1 + -(-pass_w * bits // 8))
    return total


def _chunk_heads(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, body length) of each chunk whose 8-byte head is in `data`, the last one
    possibly cut short, after the signature, to IEND."""
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        yield kind, at, length
        if kind == b"IEND":
            return
        at += 12 + length


def _chunks(data: bytes) -> Iterator[tuple[bytes, int, int, bool]]:
    """(type, body start, body end, CRC correct) of each whole chunk after the signature, to IEND."""
    for kind, at, length in _chunk_heads(data):
        end = at + 8 + length
        if end + 4 > len(data):
            return
        yield kind, at + 8, end, zlib.crc32(data[at + 4 : end]) == struct.unpack(">I", data[end : end + 4])[0]


def header_cut_short(data: bytes) -> bool:
    """Whether the PNG ends before its first IDAT (inside or after its header chunks: a cut
    download), rather than having a corrupt header: chunk types are letters, and IHDR comes first."""
    for index, (kind, _, _) in enumerate(_chunk_heads(data)):
        if not kind.isalpha() or (index == 0 and kind != b"IHDR"):
            return False
        if kind == b"IDAT":
            return False  # the header is whole; a cut in the pixels is the decoder's to tell
    return True


def libpng_reads(data: bytes) -> bool:
    """Whether every chunk's CRC checks out and IEND ends the file, as libpng requires."""
    if not data.startswith(PNG_SIGNATURE):
        return False
    last = None
    for last in _chunks(data):
        if not last[3]:
            return False
    return last is not None and last[0] == b"IEND" and last[2] + 4 == len(data)


def image_data_bytes(data: bytes) -> tuple[int, int]:
    """(bytes the IHDR declares, bytes the IDAT stream inflates to, counting up to the first);
    (0, 0) for data without an IHDR. Inflates the stream: about the cost of the decode itself."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return 0, 0
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    expected = filtered_size(width, height, bit_depth, colour_type, interlace == 1)
    inflater, inflated = zlib.decompressobj(), 0
    for kind, start, end, _ in _chunks(data):
        if kind == b"IDAT" and inflated < expected:
            inflated += _inflated_size(inflater, data[start:end], expected - inflated)
    return expected, inflated


def _inflated_size(inflater: zlib._Decompress, chunk: bytes, wanted: int) -> int:
    """Bytes `chunk` adds to the inflated stream, at most about `wanted`; 0 past a broken or ended stream."""
    produced = 0
    try:
        while chunk and produced < wanted and not inflater.eof:
            produced += len(inflater.decompress(chunk, _INFLATE_STEP))
            chunk = inflater.unconsumed_tail
    except zlib.error:
        return produced  # Pillow's own decode reports a corrupt stream
    return produced
