"""decode_crops for every crop strategy against an independent Pillow reference, EXIF orientations included."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cropshard.transforms.crop import CropSpec, grid_boxes, random_boxes
from cropshard.transforms.decode import PATH_DRAFT, PATH_PILLOW, PATH_WINDOW, decode_crops
from cropshard.transforms.jpeg_scan_end import last_pixel_is_mid_grey
from cropshard.transforms.rejects import Rejected
from PIL import Image

from tests import imagegen

H, W = 150, 210  # as displayed


def encoded(tmp_path, orientation=1, fmt="jpg", seed=0) -> tuple[bytes, np.ndarray]:
    path = imagegen.save(tmp_path / f"img_{orientation}.{fmt}", imagegen.photo(H, W, seed), orientation=orientation, quality=93)
    return path.read_bytes(), imagegen.reference_pixels(path)


def window(ref: np.ndarray, box) -> np.ndarray:
    y, x, h, w = box
    return ref[y : y + h, x : x + w]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_center_crop_every_orientation_window_path_equals_reference(tmp_path, orientation):
    data, ref = encoded(tmp_path, orientation)
    decoded = decode_crops(data, CropSpec("center", size=(64, 80)), key="k")
    assert decoded.path == PATH_WINDOW and decoded.orientation == orientation
    assert decoded.source_shape == (H, W)
    (crop,) = decoded.crops
    box = ((H - 64) // 2, (W - 80) // 2, 64, 80)
    assert crop.source_box == box
    np.testing.assert_array_equal(crop.pixels, window(ref, box))


@pytest.mark.parametrize("orientation", [1, 6, 7])
def test_box_random_and_manifest_crops(tmp_path, orientation):
    data, ref = encoded(tmp_path, orientation)
    box = (13, 27, 41, 55)  # odd offsets: not on 8x8 block boundaries
    (crop,) = decode_crops(data, CropSpec("box", box=box), key="k").crops
    np.testing.assert_array_equal(crop.pixels, window(ref, box))
    (crop,) = decode_crops(data, CropSpec("manifest"), key="k", manifest_box=box).crops
    np.testing.assert_array_equal(crop.pixels, window(ref, box))
    decoded = decode_crops(data, CropSpec("random", size=(33, 17), crops_per_image=4, seed=3), key="some/key.jpg")
    expected_boxes = random_boxes(H, W, (33, 17), 4, "some/key.jpg", 3)
    assert [c.source_box for c in decoded.crops] == expected_boxes
    for c in decoded.crops:
        np.testing.assert_array_equal(c.pixels, window(ref, c.source_box))


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_grid_and_none(tmp_path, fmt):
    data, ref = encoded(tmp_path, 8, fmt)
    decoded = decode_crops(data, CropSpec("grid", size=(50, 50), stride=(40, 60)), key="k")
    assert decoded.path == PATH_PILLOW
    assert [c.source_box for c in decoded.crops] == grid_boxes(H, W, (50, 50), (40, 60))
    for c in decoded.crops:
        np.testing.assert_array_equal(c.pixels, window(ref, c.source_box))
    (whole,) = decode_crops(data, CropSpec("none"), key="k").crops
    np.testing.assert_array_equal(whole.pixels, ref)
    assert whole.source_box == (0, 0, H, W)


def test_resize_then_center_uses_draft_and_stays_close_to_full_resolution(tmp_path):
    big = imagegen.save(tmp_path / "big.jpg", imagegen.photo(1200, 1600, 9), quality=92)
    spec = CropSpec("center", size=(96, 96), resize=128)
    decoded = decode_crops(big.read_bytes(), spec, key="k")
    assert decoded.path == PATH_DRAFT
    (crop,) = decoded.crops
    full = Image.fromarray(imagegen.reference_pixels(big)).resize((171, 128), Image.Resampling.BILINEAR)
    reference = imagegen.center_crop(np.asarray(full), 96, 96)
    diff = np.abs(crop.pixels.astype(int) - reference.astype(int))
    # DCT-domain downscale then resize differs from a full-resolution resize by a few levels.
    assert diff.mean() < 3 and crop.pixels.shape == (96, 96, 3)
    # the 96x96 window at (16, 37) of the 128x171 resize, mapped back to the 1200x1600 source
    assert crop.source_box == (150, 346, 900, 898)


def test_small_images_reject_pad_upscale(tmp_path):
    data, ref = encoded(tmp_path)
    with pytest.raises(Rejected) as err:
        decode_crops(data, CropSpec("center", size=(200, 100)), key="k")
    assert err.value.reason == "too_small"
    (padded,) = decode_crops(data, CropSpec("center", size=(200, 100), small="pad"), key="k").crops
    assert padded.pixels.shape == (200, 100, 3)
    top = (200 - H) // 2
    np.testing.assert_array_equal(padded.pixels[top : top + H], window(ref, (0, (W - 100) // 2, H, 100)))
    assert not padded.pixels[:top].any() and not padded.pixels[top + H :].any()
    (up,) = decode_crops(data, CropSpec("center", size=(200, 100), small="upscale"), key="k").crops
    assert up.pixels.shape == (200, 100, 3) and up.pixels.std() > 10


def test_greyscale_output_and_box_resized_to_size(tmp_path):
    path = imagegen.save(tmp_path / "g.jpg", imagegen.photo(H, W, 4), orientation=3, quality=95)
    ref = imagegen.reference_pixels(path, channels=1)
    (crop,) = decode_crops(path.read_bytes(), CropSpec("center", size=(40, 40)), key="k", channels=1).crops
    np.testing.assert_array_equal(crop.pixels, imagegen.center_crop(ref, 40, 40))
    (resized,) = decode_crops(path.read_bytes(), CropSpec("box", box=(0, 0, 100, 100), size=(32, 32)), key="k", channels=1).crops
    assert resized.pixels.shape == (32, 32, 1)


def test_window_path_matches_pillow_path_on_a_progressive_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(imagegen.photo(H, W, 11)).save(buffer, format="JPEG", quality=90, progressive=True)
    spec = CropSpec("random", size=(21, 37), crops_per_image=3)
    fast = decode_crops(buffer.getvalue(), spec, key="p")
    slow = decode_crops(buffer.getvalue(), spec, key="p", allow_window=False)
    assert fast.path == PATH_WINDOW and slow.path == PATH_PILLOW
    for a, b in zip(fast.crops, slow.crops, strict=True):
        assert a.source_box == b.source_box
        np.testing.assert_array_equal(a.pixels, b.pixels)


@pytest.mark.parametrize("subsampling", [0, 2], ids=["444", "420"])
@pytest.mark.parametrize("scans", [1, 4, 9])
def test_a_progressive_jpeg_that_ends_before_its_last_scans_is_decoded_whole(subsampling, scans):
    # A legal file (EOI after `scans` of its 10 scans): libjpeg estimates the coefficients it lacks
    # from neighbouring blocks, which a window decode does not have at its edges (up to 30 levels off).
    buffer = io.BytesIO()
    Image.fromarray(imagegen.photo(H, W, 12)).save(buffer, format="JPEG", quality=90, progressive=True, subsampling=subsampling)
    data = imagegen.ended_after(buffer.getvalue(), scans)
    spec = CropSpec("random", size=(21, 37), crops_per_image=4)
    got = decode_crops(data, spec, key="p")
    assert got.path == PATH_PILLOW
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for crop in got.crops:
        np.testing.assert_array_equal(crop.pixels, window(reference, crop.source_box))


# --- JPEG coding processes beyond baseline and progressive Huffman (tests/data/jpeg/README.md) ---

JPEG_FIXTURES = Path(__file__).resolve().parents[1] / "data" / "jpeg"
CODEC_SPECS = {
    "center": CropSpec("center", size=(64, 64)),
    "random": CropSpec("random", size=(50, 70), crops_per_image=3),
    "grid": CropSpec("grid", size=(48, 48)),
    "none": CropSpec("none"),
    "resize": CropSpec("center", size=(64, 64), resize=100),  # JPEG: draft() scales the DCT first
}


def fixture(name: str) -> bytes:
    return (JPEG_FIXTURES / name).read_bytes()


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("strategy", sorted(CODEC_SPECS))
@pytest.mark.parametrize(
    "arithmetic, huffman",
    [("arithmetic.jpg", "huffman.jpg"), ("arithmetic_progressive.jpg", "huffman.jpg"), ("arithmetic_grey.jpg", "huffman_grey.jpg")],
)
def test_arithmetic_coded_jpegs_give_their_huffman_twins_pixels(arithmetic, huffman, strategy, channels):
    # Pillow feeds libjpeg 64 KiB at a time, which libjpeg's arithmetic decoder cannot take: the
    # colour files (over 64 KiB) were written by window crops (TensorFlow decodes them) and
    # rejected, "broken data stream", by every other strategy. The twins hold the same DCT
    # coefficients (jpegtran -arithmetic), so every pixel must be the same, --resize's draft too.
    ours = decode_crops(fixture(arithmetic), CODEC_SPECS[strategy], key="k", channels=channels)
    reference = decode_crops(fixture(huffman), CODEC_SPECS[strategy], key="k", channels=channels)
    assert ours.source_format == "JPEG" and ours.orientation == reference.orientation
    ours_crops, reference_crops = list(ours.crops), list(reference.crops)
    assert len(ours_crops) == len(reference_crops) > 0
    for a, b in zip(ours_crops, reference_crops, strict=True):
        assert a.source_box == b.source_box
        np.testing.assert_array_equal(a.pixels, b.pixels)


def test_a_truncated_arithmetic_jpeg_is_rejected_as_truncated():
    data = fixture("arithmetic.jpg")
    for spec in (CODEC_SPECS["center"], CODEC_SPECS["grid"]):
        with pytest.raises(Rejected) as err:
            decode_crops(data[: len(data) // 2], spec, key="k")
        assert err.value.reason == "truncated" and "cut short" in err.value.message


@pytest.mark.parametrize("name", ["lossless.jpg", "lossless_grey.jpg"])
def test_lossless_jpegs_decode_whole_when_resized(name):
    # --resize used Pillow's draft() on every JPEG; asked to scale a lossless (SOF3) JPEG, which
    # has no DCT, libjpeg-turbo 3 aborted the worker ("double free or corruption") or failed
    # with "broken data stream". 120x160 -> 60x80 is half: draft would have scaled.
    code = (
        "from cropshard.transforms.crop import CropSpec; from cropshard.transforms.decode import decode_crops;"
        f" decode_crops(open({str(JPEG_FIXTURES / name)!r}, 'rb').read(), CropSpec('center', size=(48, 48), resize=60), key='k')"
    )
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, f"the decode ended its process with {alone.returncode}: {alone.stderr[-800:]}"
    decoded = decode_crops(fixture(name), CropSpec("center", size=(48, 48), resize=60), key="k")
    assert decoded.path == PATH_PILLOW
    full = Image.open(io.BytesIO(fixture(name))).convert("RGB").resize((80, 60), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(decoded.crops[0].pixels, np.asarray(full)[6:54, 16:64])


def test_lossless_jpeg_holds_the_pixels_it_was_made_from():
    # The window path's TensorFlow decoder has no lossless support: the Pillow path decodes it.
    decoded = decode_crops(fixture("lossless.jpg"), CODEC_SPECS["center"], key="k")
    stored = np.asarray(Image.open(io.BytesIO(fixture("huffman.jpg"))).convert("RGB"))[:120, :160]  # as made (README)
    np.testing.assert_array_equal(decoded.crops[0].pixels, imagegen.center_crop(stored, 64, 64))


def test_a_twelve_bit_jpeg_is_rejected_with_the_reason():
    with pytest.raises(Rejected) as err:
        decode_crops(fixture("twelve_bit.jpg"), CODEC_SPECS["center"], key="k")
    assert err.value.reason == "decode_error" and "12-bit" in err.value.message


def test_a_transparency_key_on_one_bit_and_sixteen_bit_grey_pngs_is_composited_on_black():
    # Both kept their transparent pixels' value (white, say) where every other kind of alpha is
    # composited on black: PngSuite's tbwn0g16 and Pillow's 1_trns.png came out white.
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, (24, 24)).astype(bool)
    one_bit = io.BytesIO()
    Image.fromarray(bits).convert("1").save(one_bit, "PNG", transparency=1)  # white is transparent
    got = decode_crops(one_bit.getvalue(), CropSpec("none"), key="k").crops[0].pixels
    np.testing.assert_array_equal(got, np.zeros((24, 24, 3), np.uint8))
    values = rng.integers(0, 65536, (24, 24)).astype(np.uint16)
    values[::3, ::5] = 40000
    grey16 = io.BytesIO()
    Image.fromarray(values).save(grey16, "PNG", transparency=40000)
    assert Image.open(io.BytesIO(grey16.getvalue())).mode == "I;16"
    got = decode_crops(grey16.getvalue(), CropSpec("none"), key="k", channels=1).crops[0].pixels[..., 0]
    np.testing.assert_array_equal(got, np.where(values == 40000, 0, values >> 8).astype(np.uint8))


def test_a_sixteen_bit_rgb_png_is_converted_by_the_to_uint8_rule_and_range_checked():
    """Pillow opens a 16-bit RGB PNG as its top bytes: --to_uint8 bits:12 was ignored and a
    12-bit photo written near-black (0..15) without a word. Now as 16-bit greyscale is: the rule
    applies, a collapsed range is range_collapsed, a saturating rule band_mismatch."""
    from cropshard.transforms.raster import convert
    from cropshard.transforms.raster.records import png16

    twelve = np.random.default_rng(6).integers(0, 4096, (20, 30, 3)).astype(np.uint16)
    data = png16(twelve)
    assert Image.open(io.BytesIO(data)).mode == "RGB"
    got = decode_crops(data, CropSpec("none"), key="k", wide_rule=convert.parse_uint8_rule("bits:12")).crops[0].pixels
    np.testing.assert_array_equal(got, (twelve >> 4).astype(np.uint8))
    grey = decode_crops(data, CropSpec("center", size=(10, 10)), key="k", channels=1, wide_rule=convert.parse_uint8_rule("bits:12"))
    expected = np.asarray(Image.fromarray((twelve >> 4).astype(np.uint8)).convert("L"))[5:15, 10:20]
    np.testing.assert_array_equal(grey.crops[0].pixels[..., 0], expected)
    with pytest.raises(Rejected, match=r"near-black image.*fit in 12 bits") as collapsed:
        decode_crops(data, CropSpec("none"), key="k")  # the default rule: the top byte of 16 bits
    assert collapsed.value.reason == "range_collapsed"
    # --dtype keep never stores a photo's samples (a photo-only build refuses it): not offered.
    assert collapsed.value.message.endswith("pass --to_uint8 bits:12") and "--dtype keep" not in collapsed.value.message
    full = np.random.default_rng(7).integers(0, 65536, (20, 30, 3)).astype(np.uint16)
    np.testing.assert_array_equal(decode_crops(png16(full), CropSpec("none"), key="k").crops[0].pixels, (full >> 8).astype(np.uint8))
    with pytest.raises(Rejected, match="saturates") as saturated:
        decode_crops(png16(full), CropSpec("none"), key="k", wide_rule=convert.parse_uint8_rule("bits:12"))
    assert saturated.value.reason == "band_mismatch"


def test_a_lab_tiff_becomes_greyscale_through_rgb():
    """Pillow converts LAB to RGB, not to L: --channels 1 rejected what --channels 3 wrote."""
    lab = Image.new("LAB", (12, 10), (60, 140, 110))
    buffer = io.BytesIO()
    lab.save(buffer, "TIFF")
    got = decode_crops(buffer.getvalue(), CropSpec("none"), key="k", channels=1).crops[0].pixels[..., 0]
    np.testing.assert_array_equal(got, np.asarray(lab.convert("RGB").convert("L")))


HEIC_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00\x00\x00\x08mdat"  # an iPhone photo's first boxes


@pytest.mark.parametrize(
    "data, named",
    [
        (HEIC_HEAD, "HEIF/HEIC image"),
        (HEIC_HEAD.replace(b"ftypheic", b"ftypmif1"), "HEIF/HEIC image"),  # HEIF's container brand; AVIF's plugin passes it on
        (b"\xff\x0a\xfa\x7f\x01\x90" + bytes(40), "JPEG XL image"),  # a bare codestream
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(40), "JPEG XL image"),  # the container
    ],
)
def test_photo_formats_without_a_decoder_are_named_not_called_non_images(data, named):
    with pytest.raises(Rejected) as err:
        decode_crops(data, CropSpec("center", size=(8, 8)), key="k")
    assert err.value.reason == "decode_error" and err.value.message.startswith(named), err.value.message


def test_avif_is_decoded(tmp_path):
    pixels = imagegen.photo(40, 48, 3)
    path = tmp_path / "a.avif"
    Image.fromarray(pixels).save(path, quality=100)
    got = decode_crops(path.read_bytes(), CropSpec("center", size=(16, 16)), key="k")
    np.testing.assert_array_equal(got.crops[0].pixels, window(np.asarray(Image.open(path).convert("RGB")), (12, 16, 16, 16)))


def test_eps_is_never_handed_to_ghostscript(monkeypatch):
    # Pillow renders EPS by running Ghostscript on the file; a hostile .eps named .jpg must not get there.
    from PIL import EpsImagePlugin

    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was run on an input")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    buffer = io.BytesIO()
    Image.fromarray(imagegen.photo(H, W, 3)).save(buffer, format="EPS")
    with pytest.raises(Rejected) as err:
        decode_crops(buffer.getvalue(), CropSpec("center", size=(64, 64)), key="k")
    assert err.value.reason == "decode_error" and "does not run it" in err.value.message


def test_a_png_with_corrupt_pixel_data_is_rejected_not_half_written():
    # Pillow's getexif() decodes a PNG to look for EXIF after its pixels; the orientation lookup
    # swallowed the decode error, and the next load() gave the rows decoded so far: written as data.
    buffer = io.BytesIO()
    Image.fromarray(imagegen.photo(H, W, 5)).save(buffer, format="PNG")
    data = imagegen.corrupt_png_pixels(buffer.getvalue())
    with pytest.raises(OSError):
        Image.open(io.BytesIO(data)).load()  # really corrupt
    for spec in (CropSpec("center", size=(64, 64)), CropSpec("none"), CropSpec("center", size=(64, 64), resize=100)):
        with pytest.raises(Rejected) as err:
            list(decode_crops(data, spec, key="k").crops)
        assert err.value.reason == "decode_error", err.value


def _pfm(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.float32), "F").save(buffer, format="PPM")  # mode F saves as PFM
    return buffer.getvalue()


FLOATS = np.random.default_rng(4).random((48, 40))


@pytest.mark.parametrize("values, expected", [
    (FLOATS, np.rint(FLOATS.astype(np.float32) * 255.0)),  # [0, 1]: scaled by 255
    (FLOATS * 200.0, np.rint((FLOATS * 200.0).astype(np.float32))),  # [0, 255]: rounded
])
def test_float_images_within_a_uint8_range_convert_exactly(values, expected):
    (crop,) = decode_crops(_pfm(values), CropSpec("none"), key="k", channels=1).crops
    np.testing.assert_array_equal(crop.pixels[..., 0], expected.astype(np.uint8))


@pytest.mark.parametrize("values, reason, message", [
    (FLOATS * 1000.0, "band_mismatch", "fit neither"),  # was clipped: mostly 255
    (FLOATS - 0.5, "band_mismatch", "fit neither"),  # was clipped: the negative half 0
    (np.where(FLOATS > 0.99, np.nan, FLOATS), "band_mismatch", "NaN or infinite"),  # NaN was 0
    (FLOATS * 0.02, "range_collapsed", "one grey level"),  # 0..5 of 0..255
])
def test_float_images_uint8_cannot_hold_are_rejected(values, reason, message):
    for spec in (CropSpec("none"), CropSpec("center", size=(32, 32)), CropSpec("center", size=(16, 16), resize=24)):
        with pytest.raises(Rejected, match=message) as err:
            list(decode_crops(_pfm(values), spec, key="k").crops)
        assert err.value.reason == reason


def test_a_jpeg_with_a_marker_inside_its_scan_data_is_rejected_as_the_full_decode_is_not_written_grey() -> None:
    # One byte of scan data turned 0xFF (+ a marker code): libjpeg warns and fills the rest of the
    # image grey; a window above the damage would not notice. Pillow's full decode raises.
    buf = io.BytesIO()
    Image.fromarray(imagegen.photo(240, 320, seed=4)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    at = len(data) // 2
    damaged = data[:at] + b"\xff\xc4" + data[at + 2 :]
    with pytest.raises(OSError):
        Image.open(io.BytesIO(damaged)).load()  # the reference refuses it
    with pytest.raises(Rejected) as err:
        decode_crops(damaged, CropSpec("center", size=(64, 64)), key="k")
    assert err.value.reason == "decode_error"


def test_a_webp_cut_short_is_named_truncated() -> None:
    buf = io.BytesIO()
    Image.fromarray(imagegen.photo(120, 160, seed=6)).save(buf, "WEBP", quality=80)
    data = buf.getvalue()
    for cut in (len(data) // 2, len(data) - 1):
        with pytest.raises(Rejected) as err:
            decode_crops(data[:cut], CropSpec("center", size=(32, 32)), key="k")
        assert (err.value.reason, err.value.message) == ("truncated", f"WebP file of {cut} bytes whose RIFF header declares {len(data)}: the file is cut short")
    assert decode_crops(data, CropSpec("center", size=(32, 32)), key="k").crops


def _icns_holding(png: bytes) -> bytes:
    """An ICNS icon whose 128x128 slot ('ic07') holds `png`, whatever its real size."""
    element = b"ic07" + (8 + len(png)).to_bytes(4, "big") + png
    return b"icns" + (8 + len(element)).to_bytes(4, "big") + element


def _black_png(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    rows = zlib.compress(b"".join(b"\x00" + bytes(3 * width) for _ in range(height)), 9)
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.slow  # a fresh interpreter: Pillow's global limit as a worker sets it
def test_an_image_nested_past_max_pixels_is_rejected_before_it_is_decoded(tmp_path):
    """An ICNS whose header says 128x128 holding a 12000x12000 PNG: --max_pixels saw the header
    only and the worker decoded the 144-megapixel image (Pillow's own check was lifted; a fuzz
    file of Pillow's suite got a worker OOM-killed at 15 GB). Pillow's check now runs at the
    build's --max_pixels; a raised --max_pixels raises it too."""
    (tmp_path / "bomb.icns").write_bytes(_icns_holding(_black_png(12000, 12000)))
    script = f"""
import resource
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.decode import decode_crops
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.worker import setup_worker
data = open({str(tmp_path / "bomb.icns")!r}, "rb").read()
for limit in (89_478_485, 150_000_000):
    setup_worker(limit)
    try:
        decode_crops(data, CropSpec("none"), "k", max_pixels=limit)
        print(limit, "decoded")
    except Rejected as err:
        print(limit, err.reason, err.message)
print("peak MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "89478485 too_many_pixels an image in this file (the file or one nested in it) has 144000000 pixels, over --max_pixels 89478485"
    assert not lines[1].startswith("150000000 too_many_pixels")  # within a raised limit Pillow's check lets it through


def test_resize_or_upscale_past_max_pixels_is_rejected_before_the_working_image_exists():
    """A 375-byte 100000x1 PNG under --resize 64 (or --small upscale) became a 64 x 6.4 million
    working image (1.8 GB; a 1,000,000x1 one would need 12 GB): --max_pixels checked the source only."""
    buffer = io.BytesIO()
    Image.new("RGB", (100000, 1), (9, 9, 9)).save(buffer, "PNG")
    for spec in (CropSpec("center", size=(32, 32), resize=64), CropSpec("center", size=(64, 64), small="upscale"), CropSpec("none", resize=64)):
        with pytest.raises(Rejected, match=r"100000x1 image scaled by --resize or --small upscale would be 6400000x64 = 409600000 pixels") as err:
            decode_crops(buffer.getvalue(), spec, key="k")
        assert err.value.reason == "too_many_pixels"
    # Within --max_pixels the scaled image is made as before.
    (crop,) = decode_crops(buffer.getvalue(), CropSpec("center", size=(1, 4), resize=1), key="k").crops
    assert crop.pixels.shape == (1, 4, 3)


def test_a_file_cut_inside_its_header_is_truncated_not_a_decode_error():
    """Cut inside the header (an interrupted download), a JPEG or PNG was decode_error with
    Pillow's parser message ('index out of range', 'unpack_from requires a buffer'), and a bare
    JPEG start marker not_an_image. A corrupt header is still decode_error."""
    jpeg, png = io.BytesIO(), io.BytesIO()
    image = Image.fromarray(imagegen.photo(40, 50))
    image.save(jpeg, "JPEG", quality=90)
    image.save(png, "PNG")
    jpeg, png = jpeg.getvalue(), png.getvalue()
    sos = jpeg.index(b"\xff\xda")
    for cut in (jpeg[:sos], jpeg[:sos + 5], jpeg[: jpeg.index(b"\xff\xc0") + 6], jpeg[:2], png[:8], png[:33], png[:20]):
        with pytest.raises(Rejected) as err:
            decode_crops(cut, CropSpec("none"), key="k")
        assert err.value.reason == "truncated", (len(cut), err.value.message)
    for corrupt in (jpeg.replace(b"\xff\xc0", b"\xff\x00", 1), png[:25] + b"\x07" + png[26:]):  # no SOF; colour type 7
        with pytest.raises(Rejected) as err:
            decode_crops(corrupt, CropSpec("none"), key="k")
        assert err.value.reason == "decode_error", err.value.message


# --- JPEGs whose scan data stops early (transforms/jpeg_scan_end.py) ---


def _cut_inside_scan(data: bytes, scan: int, fraction: float) -> bytes:
    """`data` cut `fraction` of the way into scan `scan`'s entropy-coded data, then closed with an
    end marker: libjpeg warns "premature end of data segment" and decodes the rest as grey."""
    starts = imagegen.scan_starts(data) + [len(data) - 2]
    begin = starts[scan] + 2 + int.from_bytes(data[starts[scan] + 2 : starts[scan] + 4], "big")
    return data[: begin + int((starts[scan + 1] - begin) * fraction)] + b"\xff\xd9"


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


BIG = (240, 320)
SCAN_CUT_SPECS = {
    "window": CropSpec("center", size=(200, 200)),
    "none": CropSpec("none"),
    "resize": CropSpec("center", size=(64, 64), resize=120),  # draft() decode
    "grid": CropSpec("grid", size=(48, 48)),
}


@pytest.mark.parametrize("strategy", sorted(SCAN_CUT_SPECS))
@pytest.mark.parametrize(
    "options", [{}, {"subsampling": 0}, {"restart_marker_rows": 1}, {"progressive": True}], ids=["420", "444", "restarts", "progressive"]
)
def test_a_jpeg_whose_scan_data_stops_early_is_truncated_not_written_grey(strategy, options):
    data = _jpeg(imagegen.photo(*BIG, seed=21), **options)
    cut = _cut_inside_scan(data, 0, 0.4)  # the first scan: grey from about 40% of the rows down
    grey = np.asarray(Image.open(io.BytesIO(cut)).convert("RGB"))
    assert (grey[-8:] == 128).all()  # what Pillow (and TensorFlow) decode without a word
    with pytest.raises(Rejected) as err:
        decode_crops(cut, SCAN_CUT_SPECS[strategy], key="k")
    assert err.value.reason == "truncated"
    assert "premature end of data segment" in str(err.value)


def test_a_greyscale_jpeg_whose_scan_data_stops_early_is_truncated():
    cut = _cut_inside_scan(_jpeg(imagegen.photo(*BIG, seed=22)[..., 0]), 0, 0.5)
    for channels in (1, 3):
        with pytest.raises(Rejected, match="premature end") as err:
            decode_crops(cut, CropSpec("center", size=(200, 200)), key="k", channels=channels)
        assert err.value.reason == "truncated"


@pytest.mark.parametrize("scan", [3, 6, 8])
def test_a_progressive_jpeg_cut_inside_a_later_scan_is_truncated(scan):
    # Only the coefficients of the scans after the cut are missing, so nothing is grey: the scans'
    # headers tell that some coefficients never reach full precision, libjpeg's warning that the
    # data stopped early.
    data = _jpeg(imagegen.photo(*BIG, seed=23), progressive=True)
    cut = _cut_inside_scan(data, scan, 0.5)
    for spec in (CropSpec("center", size=(200, 200)), CropSpec("none")):
        with pytest.raises(Rejected, match="premature end") as err:
            decode_crops(cut, spec, key="k")
        assert err.value.reason == "truncated"


def test_a_window_above_where_the_scan_data_stops_is_written_exactly():
    # The data stops about 90% down: a window in the top rows never reaches it, and its pixels are
    # the undamaged file's.
    data = _jpeg(imagegen.photo(*BIG, seed=24))
    cut = _cut_inside_scan(data, 0, 0.9)
    whole = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    box = (0, 40, 64, 96)
    decoded = decode_crops(cut, CropSpec("box", box=box), key="k")
    assert decoded.path == PATH_WINDOW
    np.testing.assert_array_equal(decoded.crops[0].pixels, window(whole, box))
    with pytest.raises(Rejected, match="premature end"):
        decode_crops(cut, CropSpec("box", box=box), key="k", allow_window=False)  # the full decode reaches it


@pytest.mark.parametrize("strategy", sorted(SCAN_CUT_SPECS))
def test_whole_jpegs_that_end_mid_grey_are_written(strategy):
    # The sign (a mid-grey last pixel, scans short of full precision) only sends a file to the
    # strict check; whole files pass it, a benign libjpeg warning (bytes before EOI) included.
    flat = np.full((*BIG, 3), 128, np.uint8)
    photo = imagegen.photo(*BIG, seed=25)
    photo[-32:, -32:] = 128
    extraneous = _jpeg(photo)[:-2] + b"\x00\x00\xff\xd9"
    legal_progressive = imagegen.ended_after(_jpeg(imagegen.photo(*BIG, seed=26), progressive=True), 4)
    for data in (_jpeg(flat), _jpeg(photo), extraneous, legal_progressive):
        reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        decoded = decode_crops(data, SCAN_CUT_SPECS[strategy], key="k")
        if strategy in ("window", "none", "grid"):
            for crop in decoded.crops:
                np.testing.assert_array_equal(crop.pixels, window(reference, crop.source_box))
        assert decoded.crops


@pytest.mark.parametrize(
    ("pixel", "mode", "sign"),
    [((128, 128, 128), "RGB", True), ((170, 110, 120), "RGB", True), ((128, 128, 90), "RGB", False), (128, "L", True), (131, "L", False),
     ((127, 127, 127, 128), "CMYK", True), ((127, 127, 127, 20), "CMYK", False), (np.array([129, 127, 128], np.uint8), "RGB", True)],
)
def test_the_sign_of_a_zero_block_is_its_luma_not_its_colour(pixel, mode, sign):
    # (170, 110, 120): luma 128 with chroma blended in from a neighbouring block by upsampling.
    assert last_pixel_is_mid_grey(pixel, mode) is sign


def test_grid_and_random_crops_are_the_literal_expected_boxes(tmp_path):
    # test_grid_and_none and test_box_random_and_manifest_crops take their expected boxes from
    # grid_boxes / random_boxes, so a bug there (stride axes swapped, a wrong offset range or
    # seed) moved both sides alike. Grid: rows 0, 40, 80 (H=150) x columns 0, 60, 120 (W=210).
    data, ref = encoded(tmp_path, 8)
    decoded = decode_crops(data, CropSpec("grid", size=(50, 50), stride=(40, 60)), key="k")
    assert [c.source_box for c in decoded.crops] == [(y, x, 50, 50) for y in (0, 40, 80) for x in (0, 60, 120)]
    for c in decoded.crops:
        np.testing.assert_array_equal(c.pixels, window(ref, c.source_box))
    # Random: numpy's default_rng seeded with the first 8 bytes (big-endian) of
    # sha256("random_crop\0" "3\0" "some/key.jpg"), 4 y offsets in 0..117 then 4 x offsets in
    # 0..193, computed once outside cropshard.
    decoded = decode_crops(data, CropSpec("random", size=(33, 17), crops_per_image=4, seed=3), key="some/key.jpg")
    assert [c.source_box for c in decoded.crops] == [(59, 38, 33, 17), (20, 21, 33, 17), (90, 46, 33, 17), (2, 14, 33, 17)]
    for c in decoded.crops:
        np.testing.assert_array_equal(c.pixels, window(ref, c.source_box))
