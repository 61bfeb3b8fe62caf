"""The per-image functions ImagesToExamples wraps, without Beam: the label map, reading bytes
(with the rejections for what cannot be read) and one image to records."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from cropshard.reader import schema
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.examples import ExampleSpec, check_local_file, image_to_records, label_map, read_bytes
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import ImageSource
from PIL import Image

from tests import imagegen


def test_label_map_sorts_names_and_drops_unlabeled():
    assert label_map(["dog", "cat", "", "dog", "bird"]) == {"bird": 0, "cat": 1, "dog": 2}
    assert label_map([]) == {} and label_map(["", ""]) == {}


def test_label_map_orders_integer_names_numerically():
    assert label_map(["10", "2", "-1", "2"]) == {"-1": 0, "2": 1, "10": 2}
    assert label_map(["10", "2", "x"]) == {"10": 0, "2": 1, "x": 2}  # one non-integer: plain string order


def reason_of(path) -> str:
    with pytest.raises(Rejected) as err:
        read_bytes(str(path))
    return err.value.reason


def test_read_bytes_and_its_rejections(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"abc")
    assert read_bytes(str(tmp_path / "a.jpg")) == b"abc"
    assert reason_of(tmp_path / "gone.jpg") == "not_found"
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(Rejected, match="broken symbolic link"):
        check_local_file(str(tmp_path / "broken.jpg"))
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block forever
    with pytest.raises(Rejected, match=r"not a regular file \(a named pipe \(FIFO\)\)"):
        read_bytes(str(tmp_path / "pipe.jpg"))
    (tmp_path / "album.jpg").mkdir()
    assert reason_of(tmp_path / "album.jpg") == "unreadable"


def test_a_missing_remote_object_is_named_as_a_missing_local_file_is(monkeypatch):
    """The storage client's 404 is an HTTP dump (the endpoint, a URL-encoded name): rejected.jsonl
    of the same build differed between gs:// and local disk."""
    from apache_beam.io.filesystems import FileSystems

    class NotFound(Exception):
        pass

    def missing(path, compression_type=None):
        raise NotFound("404 GET http://127.0.0.1:9023/storage/v1/b/bkt/o/in%2Fcat%2Fgone.jpg?projection=noAcl: unknown error")

    monkeypatch.setattr(FileSystems, "open", missing)
    with pytest.raises(Rejected) as rejected:
        read_bytes("gs://bkt/in/cat/gone.jpg")
    assert (rejected.value.reason, rejected.value.message) == ("not_found", "No such object: 'gs://bkt/in/cat/gone.jpg' (NotFound)")


def test_image_to_records_one_record_per_crop(tmp_path):
    path = imagegen.save(tmp_path / "cat" / "a.png", imagegen.photo(40, 60, 2))
    source = ImageSource(str(path), "cat/a.png", "cat", None)
    spec = ExampleSpec(crop=CropSpec("grid", size=(20, 30)), encoding="raw")
    records, decode_path = image_to_records(path.read_bytes(), source, spec, label_id=4)
    assert decode_path == "pillow" and len(records) == 4
    decoded = [schema.decode_example(record) for record in records]
    assert [r.crop_box for r in decoded] == [(0, 0, 20, 30), (0, 30, 20, 30), (20, 0, 20, 30), (20, 30, 20, 30)]
    assert {(r.label, r.label_text, r.filename, r.format, r.height, r.width) for r in decoded} == {(4, "cat", str(path), "raw", 20, 30)}
    pixels = np.frombuffer(decoded[3].encoded, np.uint8).reshape(20, 30, 3)
    np.testing.assert_array_equal(pixels, imagegen.reference_pixels(path)[20:40, 30:60])


JPEG_FIXTURES = Path(__file__).resolve().parents[1] / "data" / "jpeg"


@pytest.mark.parametrize(
    "name, stored_format, verbatim",
    [("huffman_grey.jpg", "jpeg", True), ("arithmetic_grey.jpg", "jpeg", False), ("lossless_grey.jpg", "png", False)],
)
def test_original_keeps_only_the_jpegs_every_reader_decodes(name, stored_format, verbatim):
    # TensorFlow's libjpeg-turbo (reader.load, TFDS) has no lossless mode, and Pillow (PyTorch
    # loaders) fails on arithmetic-coded JPEGs over 64 KiB: a lossless JPEG stored verbatim built
    # fine and broke reader.load at its first batch. Those are re-encoded, lossless ones as PNG.
    data = (JPEG_FIXTURES / name).read_bytes()
    spec = ExampleSpec(crop=CropSpec("none"), channels=1, encoding="original")
    (record,), _ = image_to_records(data, ImageSource(name, name, "", None), spec, label_id=-1)
    decoded = schema.decode_example(record)
    assert decoded.format == stored_format and (decoded.encoded == data) == verbatim
    if stored_format == "jpeg":  # what reader.load decodes with
        pixels = tf.io.decode_jpeg(decoded.encoded, channels=1, dct_method="INTEGER_ACCURATE").numpy()
    else:
        pixels = tf.io.decode_png(decoded.encoded, channels=1).numpy()
    reference = np.asarray(Image.open(io.BytesIO(data)))[..., None]
    if stored_format == "png" or verbatim:
        np.testing.assert_array_equal(pixels, reference)
    else:  # the arithmetic JPEG, re-encoded at --jpeg_quality 90
        assert np.abs(pixels.astype(int) - reference).mean() < 2.0


def test_original_stores_a_progressive_jpeg_that_ends_early_as_its_full_decode():
    # The reader crops a stored JPEG by decoding a window, which for a progressive JPEG ending
    # before its last scans differs from the full decode (block smoothing): stored as PNG instead.
    buffer = io.BytesIO()
    Image.fromarray(imagegen.photo(60, 80, 13)).save(buffer, format="JPEG", quality=90, progressive=True)
    data = imagegen.ended_after(buffer.getvalue(), 3)
    spec = ExampleSpec(crop=CropSpec("none"), encoding="original")
    (record,), _ = image_to_records(data, ImageSource("p.jpg", "p.jpg", "", None), spec, label_id=-1)
    decoded = schema.decode_example(record)
    assert decoded.format == "png"
    np.testing.assert_array_equal(tf.io.decode_png(decoded.encoded, channels=3).numpy(), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    (complete,), _ = image_to_records(buffer.getvalue(), ImageSource("q.jpg", "q.jpg", "", None), spec, label_id=-1)
    assert schema.decode_example(complete).encoded == buffer.getvalue()  # a whole progressive JPEG stays verbatim


@pytest.mark.parametrize("encoding", ["raw", "original"])
def test_wide_photos_follow_the_to_uint8_rule_and_keep_converts_none(encoding):
    # --encoding original had decoded with the default rule whatever --to_uint8 said: the
    # 'pass --to_uint8 bits:12' remedy of a 12-bit PNG's range_collapsed did not work there.
    from cropshard.transforms.raster import convert
    from cropshard.transforms.raster.records import RasterSpec

    values = (np.arange(48 * 40).reshape(48, 40) * 2 % 4096).astype(np.uint16)  # 12 bits in a 16-bit PNG
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")
    source = ImageSource("grey12.png", "grey12.png", "", None)
    twelve = ExampleSpec(crop=CropSpec("none"), channels=1, encoding=encoding, raster=RasterSpec(to_uint8=convert.parse_uint8_rule("bits:12")))
    (record,), _ = image_to_records(buffer.getvalue(), source, twelve, label_id=-1)
    stored = schema.decode_example(record)
    pixels = (np.frombuffer(stored.encoded, np.uint8).reshape(stored.height, stored.width) if stored.format == "raw"
              else tf.io.decode_png(stored.encoded, channels=1).numpy()[..., 0])
    np.testing.assert_array_equal(pixels, (values >> 4).astype(np.uint8))
    with pytest.raises(Rejected) as err:  # the default rule (16 bits) would leave 16 levels: refused
        image_to_records(buffer.getvalue(), source, ExampleSpec(crop=CropSpec("none"), channels=1, encoding=encoding), label_id=-1)
    assert err.value.reason == "range_collapsed"
    kept = ExampleSpec(crop=CropSpec("none"), channels=1, encoding=encoding, raster=RasterSpec(kept=True))
    with pytest.raises(Rejected, match="--dtype keep") as err:
        image_to_records(buffer.getvalue(), source, kept, label_id=-1)
    assert err.value.reason == "band_mismatch"
