"""The JPEG fast path must equal the Pillow reference pixel for pixel.

Reference: ImageOps.exif_transpose(Image.open(...)).convert("RGB" | "L").crop(...).
JPEGs are generated here (noise on smooth gradients, so blocks, chroma and orientation
all matter), with every chroma subsampling, baseline and progressive, and a real EXIF
orientation tag written by Pillow.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from cropshard.transforms.jpeg_window import (
    decode_jpeg_window,
    fast_path_applies,
    jpeg_frame,
    jpeg_header,
    window_decodes_exactly,
)
from cropshard.transforms.orientation import exif_orientation, oriented_size
from PIL import Image, ImageOps

from tests.imagegen import ended_after, scan_starts

ORIENTATIONS = range(1, 9)
STORED_H, STORED_W = 257, 381  # not multiples of 8 or 16: partial edge blocks/iMCUs


def _pixels(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour gradients plus noise (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [
            255 * xx / width,
            255 * yy / height,
            127.5 + 127.5 * np.sin(xx / 23.0) * np.cos(yy / 17.0),
        ],
        axis=-1,
    )
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def make_jpeg(
    orientation: int = 1,
    subsampling: int = 2,
    progressive: bool = False,
    mode: str = "RGB",
    size: tuple[int, int] = (STORED_H, STORED_W),
    seed: int = 0,
) -> bytes:
    img = Image.fromarray(_pixels(*size, seed)).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, subsampling=subsampling, progressive=progressive, exif=exif)
    return buf.getvalue()


@cache
def jpeg(orientation: int, subsampling: int, progressive: bool, mode: str = "RGB") -> bytes:
    return make_jpeg(orientation, subsampling, progressive, mode)


def reference(data: bytes, box: tuple[int, int, int, int], channels: int) -> np.ndarray:
    y, x, h, w = box
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    img = img.convert("RGB" if channels == 3 else "L")
    out = np.asarray(img.crop((x, y, x + w, y + h)))
    return out if channels == 3 else out[..., None]


def windows(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(y, x, h, w) windows of an oriented image: odd offsets, block-aligned ones, every edge."""
    return [
        (0, 0, height, width),  # everything
        (0, 0, 1, 1),  # 1-pixel windows in the corners and inside
        (height - 1, width - 1, 1, 1),
        (101, 77, 1, 1),
        (16, 32, 1, 1),  # starts on an iMCU boundary (chroma left/top edge case)
        (3, 5, 37, 61),  # odd offsets and sizes
        (16, 48, 32, 16),  # aligned to 16
        (15, 47, 18, 34),  # one before alignment, ends one after
        (8, 8, 9, 9),  # aligned to 8 only
        (0, 7, 29, width - 7),  # touches top and right
        (height - 13, 0, 13, 27),  # touches bottom and left
        (0, width - 1, height, 1),  # last column
        (height - 1, 0, 1, width),  # last row
        (height // 2 - 33, width // 2 - 1, 66, 3),  # thin column in the middle
    ]


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("subsampling", [0, 1, 2], ids=["444", "422", "420"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_colour_jpeg_matches_pillow(orientation: int, subsampling: int, progressive: bool) -> None:
    data = jpeg(orientation, subsampling, progressive)
    width, height = oriented_size(STORED_W, STORED_H, orientation)
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (width, height)
    for box in windows(height, width):
        for channels in (3, 1):  # channels=1: Pillow's convert("L") on a colour source
            got = decode_jpeg_window(data, box, orientation, channels)
            assert got.dtype == np.uint8 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, reference(data, box, channels), err_msg=f"box={box} channels={channels}")


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_grayscale_jpeg_matches_pillow(orientation: int, progressive: bool) -> None:
    data = jpeg(orientation, 0, progressive, mode="L")
    assert jpeg_header(data)[2] == 1  # really a single-component JPEG
    width, height = oriented_size(STORED_W, STORED_H, orientation)
    for box in windows(height, width):
        for channels in (1, 3):  # channels=3: Pillow's L -> RGB
            np.testing.assert_array_equal(
                decode_jpeg_window(data, box, orientation, channels),
                reference(data, box, channels),
                err_msg=f"box={box}",
            )


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (16, 16), (17, 33), (640, 480)])
def test_other_sizes(size: tuple[int, int]) -> None:
    data = make_jpeg(orientation=6, subsampling=2, size=size, seed=3)
    width, height = oriented_size(size[1], size[0], 6)
    rng = np.random.default_rng(5)
    boxes = [(0, 0, height, width), (height - 1, width - 1, 1, 1)]
    for _ in range(10):
        h, w = int(rng.integers(1, height + 1)), int(rng.integers(1, width + 1))
        boxes.append((int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w))
    for box in boxes:
        np.testing.assert_array_equal(
            decode_jpeg_window(data, box, 6, 3), reference(data, box, 3), err_msg=f"box={box}"
        )


def test_saturated_colours_use_pillow_luma() -> None:
    """Saturated colours are where libjpeg's Y and Pillow's L disagree most."""
    rng = np.random.default_rng(11)
    blocks = rng.choice(np.array([0, 255], np.uint8), size=(12, 16, 3))
    img = Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, subsampling=2)
    data = buf.getvalue()
    for box in [(0, 0, 96, 128), (5, 9, 50, 70)]:
        np.testing.assert_array_equal(decode_jpeg_window(data, box, 1, 1), reference(data, box, 1))


def test_wrong_orientation_is_detected() -> None:
    """Guard against vacuous passes: the test images are asymmetric, so orientation matters."""
    data = jpeg(6, 2, False)
    box = (10, 20, 40, 50)
    right = decode_jpeg_window(data, box, 6, 3)
    for wrong in (5, 7, 8):
        assert not np.array_equal(decode_jpeg_window(data, box, wrong, 3), right)


def _saved(img: Image.Image, fmt: str, **kw: object) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    buf.seek(0)
    return Image.open(buf)  # lazy: header only


def test_fast_path_applies() -> None:
    rgb = Image.fromarray(_pixels(32, 48, 1))
    assert fast_path_applies(_saved(rgb, "JPEG"))
    assert fast_path_applies(_saved(rgb.convert("L"), "JPEG"))
    cmyk = _saved(rgb.convert("CMYK"), "JPEG")
    assert cmyk.format == "JPEG" and cmyk.mode == "CMYK"
    assert not fast_path_applies(cmyk)
    assert not fast_path_applies(_saved(rgb, "PNG"))
    assert not fast_path_applies(_saved(rgb.convert("L"), "PNG"))
    assert not fast_path_applies(rgb)  # in-memory image: no format


def test_cmyk_is_refused() -> None:
    buf = io.BytesIO()
    Image.fromarray(_pixels(32, 48, 1)).convert("CMYK").save(buf, "JPEG")
    assert jpeg_header(buf.getvalue())[2] == 4
    with pytest.raises(ValueError, match="CMYK"):
        decode_jpeg_window(buf.getvalue(), (0, 0, 8, 8), 1, 3)


def test_exif_orientation_and_header() -> None:
    data = jpeg(7, 1, True)
    img = Image.open(io.BytesIO(data))
    assert exif_orientation(img) == 7
    assert jpeg_header(data) == (STORED_W, STORED_H, 3)
    assert exif_orientation(_saved(Image.fromarray(_pixels(8, 8, 0)), "JPEG")) == 1
    with pytest.raises(ValueError):
        jpeg_header(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    "name, marker, arithmetic, scalable",
    [
        ("huffman.jpg", 0xC0, False, True),  # baseline
        ("arithmetic.jpg", 0xC9, True, True),  # jpegtran -arithmetic
        ("arithmetic_progressive.jpg", 0xCA, True, True),
        ("lossless.jpg", 0xC3, False, False),  # no DCT to scale
        ("twelve_bit.jpg", 0xC1, False, True),  # extended sequential, 12-bit samples
    ],
)
def test_jpeg_frame_names_the_coding_process(name: str, marker: int, arithmetic: bool, scalable: bool) -> None:
    data = (Path(__file__).resolve().parents[1] / "data" / "jpeg" / name).read_bytes()
    frame = jpeg_frame(data)
    assert (frame.marker, frame.arithmetic, frame.scalable) == (marker, arithmetic, scalable)
    assert jpeg_header(data) == (frame.width, frame.height, frame.components)
    assert jpeg_frame(jpeg(1, 2, True)).marker == 0xC2  # Pillow's progressive


@pytest.mark.parametrize("mode, subsampling", [("RGB", 0), ("RGB", 1), ("RGB", 2), ("L", 2)])
def test_window_decodes_exactly_tells_a_progressive_jpeg_that_ends_early(mode: str, subsampling: int) -> None:
    full, baseline = make_jpeg(subsampling=subsampling, progressive=True, mode=mode), make_jpeg(subsampling=subsampling, mode=mode)
    assert window_decodes_exactly(full) and window_decodes_exactly(baseline)
    assert len(scan_starts(full)) > 2
    for scans in range(1, len(scan_starts(full))):
        assert not window_decodes_exactly(ended_after(full, scans)), scans
    # An EXIF thumbnail (a complete baseline JPEG inside APP1, before the frame) is not a scan.
    thumbnail = make_jpeg(size=(16, 16))
    app1 = b"\xff\xe1" + (2 + 6 + len(thumbnail)).to_bytes(2, "big") + b"Exif\x00\x00" + thumbnail
    early = ended_after(full, 1)
    assert not window_decodes_exactly(early[:2] + app1 + early[2:])
    arithmetic = (Path(__file__).resolve().parents[1] / "data" / "jpeg" / "arithmetic_progressive.jpg").read_bytes()
    assert window_decodes_exactly(arithmetic) and not window_decodes_exactly(ended_after(arithmetic, 2))
    assert not window_decodes_exactly(b"not a jpeg") and not window_decodes_exactly(full[: scan_starts(full)[1] + 5])


def test_bad_arguments() -> None:
    data = jpeg(6, 2, False)  # oriented: 257 wide, 381 high
    decode_jpeg_window(data, (381 - 2, 257 - 2, 2, 2), 6, 3)  # fits
    for box in [(380, 0, 2, 1), (0, 256, 1, 2), (-1, 0, 1, 1), (0, 0, 0, 1), (0, 0, 382, 1)]:
        with pytest.raises(ValueError, match="outside"):
            decode_jpeg_window(data, box, 6, 3)
    with pytest.raises(ValueError, match="channels"):
        decode_jpeg_window(data, (0, 0, 1, 1), 6, 4)


def test_import_does_not_load_tensorflow() -> None:
    code = "import sys, cropshard.transforms.jpeg_window; sys.exit('tensorflow' in sys.modules)"
    repo = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=repo, check=False).returncode == 0


def test_decode_takes_tensorflows_fast_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The op's Python fallback (taken for non-tensor inputs or an int where a float attr is
    expected) costs ~65 us a call: the window decode must never reach it."""
    from tensorflow.python.ops import gen_image_ops

    def fallback(*args: object, **kwargs: object) -> None:
        raise AssertionError("decode_and_crop_jpeg went through its eager fallback")

    monkeypatch.setattr(gen_image_ops, "decode_and_crop_jpeg_eager_fallback", fallback)
    data = jpeg(1, 2, False)
    np.testing.assert_array_equal(decode_jpeg_window(data, (5, 7, 40, 50), 1, 3), reference(data, (5, 7, 40, 50), 3))


def _entropy_damaged(data: bytes, share: float, marker: bytes) -> bytes:
    """`data` with two bytes at `share` of its first scan's entropy-coded data turned into `marker`."""
    sos = scan_starts(data)[0]
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, start).start()
    at = start + int(share * (end - start - 2))
    return data[:at] + marker + data[at + len(marker) :]


@pytest.mark.parametrize("progressive", [False, True])
def test_a_marker_inside_the_entropy_coded_data_is_not_windowed(progressive: bool) -> None:
    # libjpeg only warns on such a marker and fills the rest of the image grey; the full decode
    # (Pillow) raises "broken data stream". So the window path must not take these files.
    data = make_jpeg(progressive=progressive, size=(192, 256))
    assert window_decodes_exactly(data)
    damaged = {
        "fake DHT": _entropy_damaged(data, 0.5, b"\xff\xc4"),
        "fake SOI": _entropy_damaged(data, 0.3, b"\xff\xd8"),
        "reserved marker": _entropy_damaged(data, 0.7, b"\xff\x55"),
        "TEM": _entropy_damaged(data, 0.4, b"\xff\x01"),
        "a cut JPEG, then another": data[: len(data) // 2] + make_jpeg(size=(64, 64), seed=5),
        "no EOI": data[:-2],
    }
    for name, bad in damaged.items():
        assert not window_decodes_exactly(bad), name
    assert window_decodes_exactly(data + b"trailing junk after EOI")


def test_scan_headers_must_name_frame_components_and_a_valid_spectral_range() -> None:
    data = make_jpeg(size=(64, 64))
    sos = scan_starts(data)[0]  # offset of the first SOS marker
    count = data[sos + 4]
    spectral = sos + 5 + 2 * count
    assert window_decodes_exactly(data) and data[spectral : spectral + 3] == b"\x00\x3f\x00"
    assert not window_decodes_exactly(data[:sos + 5] + b"\x09" + data[sos + 6 :])  # component 9 is not in the frame
    assert not window_decodes_exactly(data[:spectral] + b"\x00\x20\x00" + data[spectral + 3 :])  # a sequential scan of 0..32 only


@pytest.mark.parametrize("subsampling", [1, 2], ids=["422", "420"])
def test_a_narrow_window_at_the_right_edge_matches_pillow(subsampling: int) -> None:
    # A 1-2 px window in the last, narrow iMCU column: without shifting the decoded region left to
    # keep it 16 px wide, libjpeg switched to box upsampling and the pixels were off by ~7 levels.
    for width in range(97, 114):
        data = make_jpeg(subsampling=subsampling, size=(48, width), seed=width)
        for w in (1, 2, 3):
            box = (10, width - w, 20, w)
            np.testing.assert_array_equal(
                decode_jpeg_window(data, box, 1, 3), reference(data, box, 3), err_msg=f"width={width} box={box}"
            )


def _restart_jpeg(progressive: bool = False, **options: object) -> bytes:
    out = io.BytesIO()
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(out, "JPEG", quality=90, progressive=progressive, **options)
    return out.getvalue()


def _with_interval(data: bytes, interval: int) -> bytes:
    at = data.index(b"\xff\xdd")
    return data[: at + 4] + interval.to_bytes(2, "big") + data[at + 6 :]


@pytest.mark.parametrize("progressive", [False, True])
def test_restart_markers_that_break_the_interval_are_found_and_rejected(progressive: bool) -> None:
    """A JPEG whose restart interval (DRI) was changed, or one of whose RST markers was lost, was
    written scrambled: libjpeg only warns, Pillow and TensorFlow keep the warning to themselves."""
    from cropshard.transforms.crop import CropSpec
    from cropshard.transforms.decode import decode_crops
    from cropshard.transforms.jpeg_window import restart_mismatch
    from cropshard.transforms.rejects import Rejected

    for options in ({"restart_marker_rows": 1}, {"restart_marker_blocks": 3}, {"restart_marker_rows": 2, "subsampling": 0}):
        assert restart_mismatch(_restart_jpeg(progressive, **options)) is None  # what Pillow's libjpeg writes keeps its interval
    data = _restart_jpeg(progressive, restart_marker_blocks=3)
    first_rst = re.search(rb"\xff\xd0", data[data.index(b"\xff\xda") :]).start() + data.index(b"\xff\xda")
    broken = {
        "interval doubled": _with_interval(data, 6),
        "interval zero": _with_interval(data, 0),
        "a marker lost": data[:first_rst] + data[first_rst + 2 :],
    }
    for name, damaged in broken.items():
        assert restart_mismatch(damaged) is not None, name
        with pytest.raises(Rejected) as err:
            decode_crops(damaged, CropSpec("center", size=(32, 32)), "k")
        assert err.value.reason == "decode_error" and "restart markers do not fit its restart interval" in err.value.message, name
    decode_crops(data, CropSpec("center", size=(32, 32)), "k")  # the intact file decodes
    # A file cut inside a scan has fewer markers, in turn: that is a cut file (jpeg_scan_end), not this.
    cut = data[: first_rst + 40] + b"\xff\xd9"
    assert restart_mismatch(cut) is None
