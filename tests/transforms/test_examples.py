"""The per-image functions ImagesToExamples wraps, without Beam: the label map, reading bytes
(with the rejections for what cannot be read) and one image to records."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cropshard.reader import schema
from cropshard.transforms.crop import CropSpec
from cropshard.transforms.examples import ExampleSpec, check_local_file, image_to_records, label_map, read_bytes
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import ImageSource

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
