"""The listing machinery: pattern prefixes and roots, which pattern owns a path, hash buckets, and
the streamed local listing that reports what Beam's would drop. No pipeline."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from apache_beam.io.filesystem import FileMetadata
from cropshard.transforms.listing import (
    PatternOwners,
    Unlisted,
    check_explicit_paths,
    count_inputs,
    file_kind,
    glob_root,
    has_wildcard,
    iter_matches,
    iter_owned,
    literal_prefix,
    path_bucket,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for relative in ("train/cat/a.jpg", "train/dog/b.png", "test/dog/c.jpg", "extra/dog/d.jpg"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x" * len(relative))
    return root


def listed(entries) -> list[tuple[str, str]]:
    """(path, 'file' or the Unlisted reason) of every listed entry, sorted."""
    out = []
    for entry in entries:
        if isinstance(entry, Unlisted):
            out.append((entry.path, entry.reason))
        else:
            assert isinstance(entry, FileMetadata)
            out.append((entry.path, "file"))
    return sorted(out)


def test_literal_prefix_wildcards_and_root():
    assert literal_prefix("/data/img/**/*.jpg") == "/data/img/"
    assert literal_prefix("gs://b/x[0-9].png") == "gs://b/x"
    assert literal_prefix("/data/a.jpg") == "/data/a.jpg"
    assert [has_wildcard(p) for p in ("/a/*.jpg", "/a/?.jpg", "/a/[ab].jpg", "/a/b.jpg")] == [True, True, True, False]
    assert glob_root("/data/img/**") == "/data/img/"
    assert glob_root("/data/img/cat*/x.jpg") == "/data/img/"
    assert glob_root("gs://bucket/train/*.jpg") == "gs://bucket/train/"
    assert glob_root("/data/img/a.jpg") == "/data/img/"  # an explicit file: its folder
    assert glob_root("/data/img/") == "/data/img/"
    assert glob_root("a.jpg") == "" and glob_root("*.jpg") == ""


def test_first_matching_pattern_owns_a_path(tree):
    owners = PatternOwners([f"{tree}/train/**/*.jpg", f"{tree}/**", f"{tree}/test/*/c.jpg"])
    cat, dog, c = f"{tree}/train/cat/a.jpg", f"{tree}/train/dog/b.png", f"{tree}/test/dog/c.jpg"
    assert [owners.keeps(i, cat) for i in range(3)] == [True, False, False]
    assert [owners.keeps(i, dog) for i in range(3)] == [True, True, False]  # pattern 0 does not match .png
    assert [owners.keeps(i, c) for i in range(3)] == [True, True, False]
    assert path_bucket(cat, 8) == path_bucket(cat, 8) and {path_bucket(f"x/{i}.jpg", 8) for i in range(200)} == set(range(8))


def test_a_missing_explicit_file_is_listed_by_explicit_patterns_only():
    owners = PatternOwners(["/d/**", "/d/gone.jpg", "/d/gone.jpg"])
    assert owners.matches(0, "/d/gone.jpg") and owners.matches(1, "/d/gone.jpg")
    assert not owners.keeps(1, "/d/gone.jpg")  # it exists: the glob lists it first
    assert owners.keeps(1, "/d/gone.jpg", exists=False)  # it does not: the glob never saw it
    assert not owners.keeps(2, "/d/gone.jpg", exists=False)  # the same explicit path twice: once


def test_path_bucket_is_stable_and_surrogate_safe():
    assert path_bucket("/a/b.jpg", 1) == 0
    assert path_bucket("/a/b.jpg", 7) == path_bucket("/a/b.jpg", 7) == 4  # zlib.crc32, not hash(): same in every process
    assert 0 <= path_bucket("/a/\udcff.jpg", 5) < 5  # undecodable bytes in a file name


def test_iter_matches_lists_files_and_reports_what_cannot_be_inputs(tree):
    (tree / "train" / "broken.jpg").symlink_to(tree / "nowhere.jpg")
    (tree / "linked").symlink_to(tree / "train", target_is_directory=True)
    os.mkfifo(tree / "train" / "pipe.jpg")
    got = listed(iter_matches(f"{tree}/**"))
    assert got == sorted(
        [
            (f"{tree}/train/cat/a.jpg", "file"),
            (f"{tree}/train/dog/b.png", "file"),
            (f"{tree}/test/dog/c.jpg", "file"),
            (f"{tree}/extra/dog/d.jpg", "file"),
            (f"{tree}/train/broken.jpg", "not_found"),
            (f"{tree}/train/pipe.jpg", "unreadable"),
            (f"{tree}/linked", "unreadable"),
        ]
    )
    assert listed(iter_matches(f"{tree}/*/dog/*.jpg")) == [(f"{tree}/extra/dog/d.jpg", "file"), (f"{tree}/test/dog/c.jpg", "file")]
    kept = listed(iter_matches(f"{tree}/**", keep=lambda path: path.endswith(".png")))
    assert kept == [(f"{tree}/train/dog/b.png", "file")]


def test_iter_matches_explicit_paths_and_missing_folders(tree):
    (entry,) = iter_matches(f"{tree}/train/cat/a.jpg")
    assert isinstance(entry, FileMetadata) and entry.size_in_bytes == len("train/cat/a.jpg")
    (gone,) = iter_matches(f"{tree}/train/cat/gone.jpg")
    assert isinstance(gone, Unlisted) and gone.reason == "not_found" and gone.size_in_bytes == 0
    assert list(iter_matches(f"{tree}/no_such_folder/**")) == []
    assert list(iter_matches(f"{tree}/train")) == []  # a folder is never an input


def test_buckets_partition_each_patterns_owned_files(tree):
    patterns = [f"{tree}/train/**", f"{tree}/**"]
    owners = PatternOwners(patterns)
    whole = [listed(iter_owned(owners, index)) for index in range(2)]
    assert [len(w) for w in whole] == [2, 2]  # the second pattern does not repeat train/
    for index in range(2):
        parts = [listed(iter_owned(owners, index, bucket, 3)) for bucket in range(3)]
        assert sorted(sum(parts, [])) == whole[index]


def test_count_inputs(tree):
    assert count_inputs([f"{tree}/**", f"{tree}/train/**"]) == (4, sum(len(p) for p in ("train/cat/a.jpg", "train/dog/b.png", "test/dog/c.jpg", "extra/dog/d.jpg")))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        count_inputs([f"{tree}/typo.jpg"])


def test_check_explicit_paths(tree):
    # The launcher checks these before it touches --output; wildcards and gs:// paths are left to the listing.
    check_explicit_paths([f"{tree}/train/cat/a.jpg", f"{tree}/nothing/*.jpg", "gs://bucket/missing.jpg"])
    with pytest.raises(FileNotFoundError, match=f"^--input {tree}/typo.jpg does not exist$"):
        check_explicit_paths([f"{tree}/**", f"{tree}/typo.jpg"])


def test_file_kind():
    assert file_kind(stat.S_IFIFO) == "a named pipe (FIFO)"
    assert file_kind(stat.S_IFCHR) == "a character device"
    assert file_kind(stat.S_IFBLK) == "a block device"
    assert file_kind(stat.S_IFSOCK) == "a socket"
    assert file_kind(stat.S_IFLNK) == "file type 120000"
