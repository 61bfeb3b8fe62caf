"""CRC-32C (Castagnoli) and TFRecord's masked variant, without requiring any native package.

Why it exists: `reader.verify` checks TFRecord framing in Python so it can name the shard and
byte offset of the first bad record (TensorFlow's own error names neither). The reader's
environment is only TensorFlow + NumPy, so `google-crc32c` may be absent. When it is present
its C implementation is used; otherwise a NumPy implementation computes the CRC of many
chunks side by side (one vectorised table lookup per byte position) and then combines the
chunk CRCs with a precomputed "advance by L zero bytes" operator. That runs at tens of MB/s
instead of the ~1 MB/s of a byte-at-a-time Python loop, and gives bit-identical results.
"""

from __future__ import annotations

import functools

import numpy as np

POLY = 0x82F63B78  # reflected Castagnoli polynomial
MASK_DELTA = 0xA282EAD8
_CHUNK = 1024  # bytes per lane in the vectorised path


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ POLY if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]


def _update_py(crc: int, data: bytes) -> int:
    """Advance the raw (not pre/post-inverted) CRC register over `data`, one byte at a time."""
    table = _TABLE_LIST
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _advance_lanes(registers: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Advance one raw CRC register per row of `block` (shape [lanes, length]) over that row."""
    crc = registers.astype(np.uint32, copy=True)
    for column in range(block.shape[1]):
        crc = _TABLE[(crc ^ block[:, column]) & 0xFF] ^ (crc >> np.uint32(8))
    return crc


@functools.lru_cache(maxsize=8)
def _shift_tables(length: int) -> tuple[np.ndarray, ...]:
    """Tables T0..T3 with shift(r) = T0[r&255] ^ T1[r>>8&255] ^ T2[..] ^ T3[r>>24].

    shift(r) is the raw register after feeding `length` zero bytes starting from r; it is linear
    over GF(2), so it splits into one 256-entry table per register byte.
    """
    values = np.arange(256, dtype=np.uint32)
    starts = np.concatenate([values << np.uint32(8 * i) for i in range(4)])
    shifted = _advance_lanes(starts, np.zeros((starts.size, length), dtype=np.uint8))
    return tuple(shifted[256 * i : 256 * (i + 1)] for i in range(4))


def _crc_numpy(data: bytes) -> int:
    n = len(data)
    lanes = n // _CHUNK
    head = n - lanes * _CHUNK
    crc = _update_py(0xFFFFFFFF, data[:head])
    if lanes:
        block = np.frombuffer(data, dtype=np.uint8, offset=head).reshape(lanes, _CHUNK)
        # By linearity: register(after chunk k) = shift(register before) ^ raw_crc(chunk k from 0).
        raw = _advance_lanes(np.zeros(lanes, dtype=np.uint32), block)
        t0, t1, t2, t3 = (table.tolist() for table in _shift_tables(_CHUNK))
        for value in raw.tolist():
            crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24] ^ value
    return crc ^ 0xFFFFFFFF


def _native() -> object | None:
    try:
        import google_crc32c  # type: ignore[import-not-found]
    except ImportError:
        return None
    return google_crc32c if getattr(google_crc32c, "implementation", "") == "c" else None


_NATIVE = _native()


def crc32c(data: bytes, *, force_python: bool = False) -> int:
    """Standard CRC-32C of `data` (crc32c(b"123456789") == 0xE3069283)."""
    if _NATIVE is not None and not force_python:
        return int(_NATIVE.value(bytes(data)))  # type: ignore[attr-defined]
    if len(data) < 2 * _CHUNK:
        return _update_py(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    return _crc_numpy(bytes(data))


def masked_crc32c(data: bytes, *, force_python: bool = False) -> int:
    """The masked CRC TFRecord stores: rotate right by 15 bits, add a constant (mod 2**32)."""
    return mask(crc32c(data, force_python=force_python))


def mask(crc: int) -> int:
    """TFRecord's mask of a CRC: rotate right by 15 bits, add a constant (mod 2**32)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def implementation() -> str:
    """Which CRC implementation `crc32c` uses here: 'google-crc32c' or 'numpy'."""
    return "google-crc32c" if _NATIVE is not None else "numpy"
