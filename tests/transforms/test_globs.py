"""Labels, keys and folder splits from a path below its pattern's root (pure; no listing)."""

from __future__ import annotations

import json

import pytest
from cropshard.transforms.globs import LABELS_FOLDER, LABELS_NONE, source_from_path
from cropshard.transforms.rejects import Rejected, Rejection
from cropshard.transforms.types import ImageSource


def test_label_is_the_parent_folder_and_key_the_path_below_the_root():
    source = source_from_path("/data/img/cat/a.jpg", "/data/img/", LABELS_FOLDER, None)
    assert source == ImageSource(path="/data/img/cat/a.jpg", key="cat/a.jpg", label="cat", split=None, box=None)
    deep = source_from_path("gs://b/img/animals/cat/a.jpg", "gs://b/img/", LABELS_FOLDER, None)
    assert (deep.key, deep.label) == ("animals/cat/a.jpg", "cat")
    assert source_from_path("/data/img/a.jpg", "/data/img/", LABELS_FOLDER, None).label == ""  # no folder: unlabeled
    assert source_from_path("/data/img/cat/a.jpg", "/data/img/", LABELS_NONE, None).label == ""


def test_paths_outside_the_root_and_windows_separators():
    assert source_from_path("/other/cat/a.jpg", "/data/img/", LABELS_FOLDER, None).key == "other/cat/a.jpg"
    assert source_from_path("C:\\img\\cat\\a.jpg", "C:\\img\\", LABELS_FOLDER, None).key == "cat/a.jpg"
    assert source_from_path("C:\\img\\cat\\a.jpg", "C:\\img\\", LABELS_FOLDER, None).label == "cat"


def test_split_folders_come_first():
    source = source_from_path("/d/train/cat/a.jpg", "/d/", LABELS_FOLDER, ("train", "test"))
    assert (source.split, source.label, source.key) == ("train", "cat", "train/cat/a.jpg")
    assert source_from_path("/d/test/a.jpg", "/d/", LABELS_FOLDER, ("train", "test")).label == ""
    with pytest.raises(Rejected) as err:
        source_from_path("/d/extra/cat/a.jpg", "/d/", LABELS_FOLDER, ("train", "test"))
    assert err.value.reason == "unknown_split" and "'extra'" in err.value.message
    with pytest.raises(Rejected, match="no folder"):
        source_from_path("/d/a.jpg", "/d/", LABELS_FOLDER, ("train",))


def test_a_backslash_in_a_posix_or_bucket_name_is_part_of_the_name():
    # `cats/tabby\2024.jpg` was labelled "tabby" (a new class) with the key cats/tabby/2024.jpg.
    for root in ("/data/img/", "gs://b/img/"):
        source = source_from_path(f"{root}cats/tabby\\2024.jpg", root, LABELS_FOLDER, None)
        assert (source.label, source.key) == ("cats", "cats/tabby\\2024.jpg")
    assert source_from_path("/data/img/back\\slash/a.jpg", "/data/img/", LABELS_FOLDER, None).label == "back\\slash"


def test_a_path_that_is_not_utf8_is_rejected_and_its_rejection_line_is_utf8():
    # One Latin-1 file or folder name failed the whole build (UnicodeEncodeError in the label map or the key's hash).
    for name in ("/data/img/cats/caf\udce9.jpg", "/data/img/caf\udce9/a.jpg"):
        with pytest.raises(Rejected) as err:
            source_from_path(name, "/data/img/", LABELS_FOLDER, None)
        assert err.value.reason == "bad_file_name"
        line = Rejection(name, "match", err.value.reason, err.value.message).to_json()
        assert json.loads(line.encode("utf-8"))["path"] == name.replace("\udce9", "\\xe9")


@pytest.mark.parametrize("folder", ["bee\nwasp", "bee\r", "bee\u2028wasp"])
def test_a_label_folder_whose_name_breaks_lines_is_rejected(folder: str):
    # labels.txt (one name per line) held 'bee' and 'wasp' for one class: every later id named the wrong class.
    with pytest.raises(Rejected) as err:
        source_from_path(f"/data/img/{folder}/a.jpg", "/data/img/", LABELS_FOLDER, None)
    assert err.value.reason == "bad_file_name" and "line break" in err.value.message
    assert source_from_path(f"/data/img/{folder}/a.jpg", "/data/img/", LABELS_NONE, None).label == ""  # no label taken: no problem
