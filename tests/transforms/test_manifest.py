"""Manifest rows -> ImageSource, or the reason a row is rejected (pure; no pipeline)."""

from __future__ import annotations

import json
import os

import pytest
from cropshard.transforms.manifest import (
    MANIFEST_COLUMNS,
    ManifestColumns,
    csv_delimiter,
    manifest_columns,
    manifest_kind,
    parse_manifest_row,
    read_manifest_header,
    resolve_row_path,
)
from cropshard.transforms.rejects import Rejected
from cropshard.transforms.types import ImageSource

HEADER = ["path", "label", "split", "box"]


def csv_row(line: str, split_names=None, header=HEADER, delimiter=","):
    return parse_manifest_row(line, "csv", header, "/m", split_names, delimiter)


def rejection(line: str, kind: str = "csv", split_names=None) -> str:
    with pytest.raises(Rejected) as err:
        parse_manifest_row(line, kind, HEADER, "/m", split_names)
    assert err.value.reason == "bad_manifest_row"
    return err.value.message


def test_csv_row_paths_labels_boxes():
    assert csv_row('img/a.jpg,cat,,"1,2,10,20"') == ImageSource("/m/img/a.jpg", "img/a.jpg", "cat", None, (1, 2, 10, 20))
    assert csv_row("/abs/a.jpg, dog ,,").path == "/abs/a.jpg"
    assert csv_row("gs://b/a.jpg,,,") == ImageSource("gs://b/a.jpg", "gs://b/a.jpg", "", None, None)
    assert csv_row("a.jpg\tcat", header=["path", "label"], delimiter="\t").label == "cat"


def test_dot_segments_resolve_on_gs_as_locally(tmp_path):
    # On gs:// '../' and './' stayed in the object name (`gs://b/man/../x.jpg`): every such row not_found.
    row = parse_manifest_row("../a/./one.jpg,cat", "csv", ["path", "label"], "gs://b/rec/man", None)
    assert row == ImageSource("gs://b/rec/a/one.jpg", "../a/./one.jpg", "cat", None, None)  # the key as written: split hashes, crop seeds
    assert parse_manifest_row("../a/./one.jpg,cat", "csv", ["path", "label"], "/data/man", None).path == "/data/a/one.jpg"
    assert resolve_row_path("gs://b/x/../y.jpg", "gs://b/man") == "gs://b/y.jpg"  # absolute rows too
    assert resolve_row_path("../../../y.jpg", "gs://b/man") == "gs://b/y.jpg"  # never above the bucket
    assert resolve_row_path("a//b.jpg", "gs://b/man") == "gs://b/man/a//b.jpg"  # an object name's '//' kept
    row = parse_manifest_row(json.dumps({"path": "a.tif", "label_raster": "../lc/./a.tif"}), "jsonl", HEADER, "gs://b/man", None)
    assert row.label_raster == "gs://b/lc/a.tif"
    # Locally the OS resolves '..' after a symbolic link: the path stays as written where normpath would name another file.
    (tmp_path / "real" / "man").mkdir(parents=True)
    (tmp_path / "real" / "img.jpg").write_bytes(b"")
    os.symlink(tmp_path / "real" / "man", tmp_path / "man")
    assert resolve_row_path("../img.jpg", str(tmp_path / "man")) == f"{tmp_path}/man/../img.jpg"
    assert resolve_row_path("./../img.jpg", str(tmp_path / "real" / "man")) == f"{tmp_path}/real/img.jpg"


def test_split_column_rules():
    assert csv_row("a.jpg,cat,train,", split_names=("train", "test")).split == "train"
    assert csv_row("a.jpg,cat,train,").split is None  # fractions in --split win over the column
    assert "has none" in rejection("a.jpg,cat,,", split_names=("train",))
    assert "unknown split 'holdout'" in rejection("a.jpg,cat,holdout,", split_names=("train",))


def test_malformed_rows():
    assert "expected 4 columns" in rejection("a.jpg,cat")
    assert "no path" in rejection(",cat,,")
    assert "malformed box" in rejection('a.jpg,cat,,"1,2,x,4"')
    assert "not valid JSON" in rejection("{not json", "jsonl")
    assert "must be an object" in rejection("[1, 2]", "jsonl")


def test_jsonl_rows():
    line = json.dumps({"path": "x/c.jpg", "label": 3, "box": [0, 0, 5, 5]})
    assert parse_manifest_row(line, "jsonl", list(MANIFEST_COLUMNS), "/m", None) == ImageSource("/m/x/c.jpg", "x/c.jpg", "3", None, (0, 0, 5, 5))
    assert parse_manifest_row(json.dumps({"path": "a.jpg", "label": None}), "jsonl", HEADER, "/m", None).label == ""


def test_jsonl_rows_with_unknown_keys_or_labels_that_are_not_text_are_rejected():
    """A misspelt key ("lable", "Split") was ignored: the row lost its label or split without a
    word, where a CSV header with it is refused. 3 and 3.0 were two classes, a list its repr."""
    assert "unknown keys ['lable']" in rejection(json.dumps({"path": "a.jpg", "lable": "cat"}), "jsonl")
    assert "unknown keys ['Split']" in rejection(json.dumps({"path": "a.jpg", "label": "cat", "Split": "test"}), "jsonl")
    for label in (3.0, [1], {"a": 1}, True):
        assert "a label is text" in rejection(json.dumps({"path": "a.jpg", "label": label}), "jsonl")
    # labels.txt holds one name per line: "bee\nwasp" read back as two classes, shifting every later id.
    assert "holds a line break" in rejection(json.dumps({"path": "a.jpg", "label": "bee\nwasp"}), "jsonl")


def test_manifest_kind_and_delimiter():
    assert [manifest_kind(p) for p in ("m.csv", "M.TSV", "m.jsonl", "m.ndjson", "m.json")] == ["csv", "csv", "jsonl", "jsonl", "jsonl"]
    with pytest.raises(ValueError, match="--manifest must be"):
        manifest_kind("m.txt")
    assert (csv_delimiter("m.tsv"), csv_delimiter("m.csv")) == ("\t", ",")


def test_read_manifest_header(tmp_path):
    good = tmp_path / "m.tsv"
    good.write_text("\ufeffPath\t Label \nimg.jpg\tcat\n", encoding="utf-8")
    assert read_manifest_header(str(good)) == ["path", "label"]
    no_path = tmp_path / "n.csv"
    no_path.write_text("file,label\n")
    with pytest.raises(ValueError, match="'path' column"):
        read_manifest_header(str(no_path))
    unknown = tmp_path / "u.csv"
    unknown.write_text("path,weight\n")
    with pytest.raises(ValueError, match=r"unknown columns \['weight'\]"):
        read_manifest_header(str(unknown))
    twice = tmp_path / "t.csv"  # the second path won in every row: images under another file's label
    twice.write_text("path,label,path\na.jpg,cat,b.jpg\n")
    with pytest.raises(ValueError, match=r"names the column\(s\) \['path'\] more than once"):
        read_manifest_header(str(twice))
    utf16 = tmp_path / "w.csv"  # a spreadsheet's "Unicode text" export
    utf16.write_text("path,label\nimg.jpg,cat\n", encoding="utf-16")
    with pytest.raises(ValueError, match=rf"manifest {utf16} is not UTF-8 text: byte 0xff at offset 0 \(a UTF-16 byte-order mark\)"):
        read_manifest_header(str(utf16))
    jsonl = tmp_path / "w.jsonl"
    jsonl.write_text('{"path": "img.jpg"}\n', encoding="utf-16")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        manifest_columns(str(jsonl))


def test_manifest_columns_say_what_the_rows_fill(tmp_path):
    # The launcher's one pass: which checked columns some row fills, and the split names found.
    csv_path = tmp_path / "m.csv"
    csv_path.write_text('path,label,split,box\na.jpg,cat,train,\nb.jpg,dog,test,\nc.jpg,dog,train,\n"d,x.jpg",dog\n')
    assert manifest_columns(str(csv_path)) == ManifestColumns(frozenset(HEADER), frozenset({"split"}), ("train", "test"), 3, 0, None)
    header_only = tmp_path / "h.tsv"
    header_only.write_text("path\tlabel_raster\na.tif\t\n")  # rows are read without a checked column too (quotes across lines)
    assert manifest_columns(str(header_only)) == ManifestColumns(frozenset({"path", "label_raster"}), frozenset(), (), 0, 1, "a.tif")
    mixed = tmp_path / "mixed.csv"  # the rows without a label were written -1 beside the labelled ones
    mixed.write_text("path,label\na.jpg,cat\nb.jpg,\nc.jpg,dog\n")
    assert manifest_columns(str(mixed)) == ManifestColumns(frozenset({"path", "label"}), frozenset(), (), 2, 1, "b.jpg")
    jsonl_path = tmp_path / "m.jsonl"
    rows = [{"path": "a.jpg", "split": "val"}, {"path": "b.jpg", "box": [0, 0, 4, 4]}, {"path": "c.jpg", "box": [], "label_raster": ""}]
    jsonl_path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"split": broken\n')
    assert manifest_columns(str(jsonl_path)) == ManifestColumns(frozenset({"split", "box"}), frozenset({"split", "box"}), ("val",), 0, 3, "a.jpg")


def test_a_csv_field_quoted_across_lines_is_refused_by_the_launcher(tmp_path):
    # Valid RFC 4180, but the job reads one row per line: 2 rows became 3 inputs, rejected as
    # fragments, one of them `not_found` for a file the manifest never listed.
    manifest = tmp_path / "m.csv"
    manifest.write_text('path\na.jpg\n"imgs/two\nlines.jpg"\n')
    with pytest.raises(ValueError, match=r"line 3 opens a quoted field that it does not close .* JSONL manifest"):
        manifest_columns(str(manifest))
    assert "malformed CSV" in rejection('"imgs/two', "csv")  # the job's own parse of such a line


def test_a_csv_row_with_an_extra_column_is_rejected_not_a_crash():
    # Only rows with too few columns were refused; an extra column reached zip(strict=True) and
    # raised ValueError in the DoFn, failing the whole build instead of rejecting one row.
    with pytest.raises(Rejected) as err:
        parse_manifest_row("a.jpg,cat,extra", "csv", ["path", "label"], "/m", None)
    assert err.value.reason == "bad_manifest_row"


def test_csv_labels_are_stripped():
    # Without the strip "a.jpg, cat" gave the label " cat": a second class next to "cat".
    assert parse_manifest_row("a.jpg, cat", "csv", ["path", "label"], "/m", None).label == "cat"
    assert parse_manifest_row("a.jpg,cat  ", "csv", ["path", "label"], "/m", None).label == "cat"


def test_rows_naming_one_image_twice_are_found(tmp_path):
    """A copy-paste slip: the same path on two rows was written twice, into train and test with a
    split column; rows of one image with other boxes in one split are crops of several objects."""
    def repeated(*rows: str) -> str | None:
        path = tmp_path / "m.csv"
        path.write_text("path,label,split,box\n" + "".join(f"{row}\n" for row in rows))
        return manifest_columns(str(path)).repeated

    assert repeated('a.jpg,cat,train,"0,0,8,8"', 'a.jpg,dog,train,"8,8,8,8"', "b.jpg,cat,test,") is None
    found = repeated("a.jpg,cat,train,", "b.jpg,cat,test,", "./a.jpg,cat,test,")  # one file however the path is spelt
    assert found.startswith("the manifest lists 1 image again, e.g. './a.jpg' in data rows 1 and 3 (splits 'train' and 'test')")
    assert "in both splits" in found and "--dedup" in found
    assert "(the same box)" in repeated('a.jpg,cat,train,"0,0,8,8"', 'a.jpg,dog,train,"0,0,8,8"')
    assert "(no box)" in repeated("a.jpg,cat,train,", f"{tmp_path}/a.jpg,dog,train,")
    assert "2 images again" in repeated("a.jpg,cat,train,", "a.jpg,cat,train,", "b.jpg,cat,test,", "b.jpg,cat,train,")
