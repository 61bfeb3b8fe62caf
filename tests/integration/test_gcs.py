"""gs:// input and output through Beam's GCS filesystem, against a local GCS API emulator
(gcp-storage-emulator on a free loopback port; see tests/gcs_emulator.py for how Beam is pointed
at it). Nothing here talks to Google.

The emulator is only reachable through clients that honour STORAGE_EMULATOR_HOST: Beam's GCS
filesystem (google-cloud-storage) does; TensorFlow's own gs:// filesystem does not (its endpoint
is fixed). So the writer is tested end to end on gs://, and the reader is given the gs:// dataset
the writer produced with TensorFlow's file access replaced at the reader's storage seam
(reader.fileio), see test_reader_loads_the_gs_dataset.
"""

from __future__ import annotations

import collections
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from cropshard.pipeline.build import run
from cropshard.pipeline.options import normalize_input
from cropshard.reader import fileio, metadata, schema
from cropshard.transforms.listing import count_inputs, glob_root, iter_matches
from cropshard.transforms.rejects import Rejection
from cropshard.transforms.write import STARTED_FILENAME, prepare_output, written_files

from tests import imagegen
from tests.gcs_emulator import GcsEmulator, emulator_environment, split_url

pytestmark = pytest.mark.gcs

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
BUILD_FLAGS = ["--crop=center", "--size=64x64", "--encoding=raw", "--split=train=0.7,test=0.3", "--num_shards=2"]


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """The emulator, with this process's environment (and so every worker subprocess's) pointed at it."""
    with GcsEmulator.running(buckets=("bucket",)) as emulator, pytest.MonkeyPatch.context() as monkeypatch:
        emulator_environment(monkeypatch, emulator, tmp_path_factory.mktemp("gcs-env"))
        yield emulator


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("images")
    imagegen.class_tree(root, per_class=4, size=(96, 128))
    broken = imagegen.broken_files(root / "dog")
    return root, broken


@pytest.fixture(scope="module")
def uploaded(gcs: GcsEmulator, images: tuple[Path, dict[str, str]]) -> dict[str, str]:
    """The image tree in gs://bucket/images/ : {local path: gs:// url}."""
    return gcs.upload_tree(images[0], "gs://bucket/images")


@pytest.fixture(scope="module")
def local_build(images: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, metadata.DatasetInfo]:
    """The reference: the same images built from the local disk."""
    out = str(tmp_path_factory.mktemp("local") / "ds")
    result = run([f"--input={images[0]}/**", f"--output={out}", *BUILD_FLAGS, *IN_PROCESS], command_line=["test"])
    return out, result.info


@pytest.fixture(scope="module")
def gs_build(gcs: GcsEmulator, uploaded: dict[str, str]) -> tuple[str, metadata.DatasetInfo]:
    """gs:// in, gs:// out, in-process DirectRunner."""
    out = "gs://bucket/out"
    result = run(
        ["--input=gs://bucket/images/**", f"--output={out}", "--temp_location=gs://bucket/tmp", *BUILD_FLAGS, *IN_PROCESS],
        command_line=["test"],
    )
    assert result.output == out
    return out, result.info


# ---- helpers ---------------------------------------------------------------------------------


def read_records(path: str) -> list[bytes]:
    """Every record of one TFRecord file, read through Beam's FileSystems (CRCs checked)."""
    records = []
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while (record := _TFRecordUtil.read_record(handle)) is not None:
            records.append(record)
    return records


def read_text(path: str) -> str:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read().decode("utf-8")


def normalized_records(output: str, info: metadata.DatasetInfo, root: str) -> dict[str, list[tuple]]:
    """split -> sorted decoded records, image/filename made relative to the input root (it holds
    the source path, which is the only thing a gs:// and a local build may differ in)."""
    by_split = {}
    for name, split in info.splits.items():
        rows = []
        for shard in split.shards:
            records = read_records(FileSystems.join(output, shard.file))
            assert len(records) == shard.num_records, shard.file
            for serialized in records:
                record = schema.decode_example(serialized)
                assert record.filename.startswith(root), record.filename
                rows.append((record.filename[len(root) :], record.label, record.label_text, record.crop_box, record.sha256,
                             record.format, record.height, record.width, record.channels, record.encoded))
        by_split[name] = sorted(rows)
    return by_split


def check_gs_dataset(gcs: GcsEmulator, output: str, info: metadata.DatasetInfo, uploaded: dict[str, str],
                     broken: dict[str, str], local: tuple[str, metadata.DatasetInfo], local_root: Path) -> None:
    """A gs:// dataset is complete, reconciles, and holds exactly the local build's records."""
    objects = gcs.list(output + "/")
    expected_files = {f"{output}/{name}" for name in written_files(info)}
    assert set(objects) == expected_files, "no beam-temp-* leftovers, nothing missing"
    assert metadata.DatasetInfo.from_json(read_text(f"{output}/{metadata.INFO_FILENAME}")) == info

    assert info.num_inputs == len(uploaded)
    assert info.num_rejected == len(broken)
    assert info.num_images_written == len(uploaded) - len(broken) == info.num_inputs - info.num_rejected
    assert info.rejected == dict(collections.Counter(broken.values()))
    assert info.labels == ("cat", "dog")
    assert read_text(f"{output}/{metadata.LABELS_FILENAME}") == "cat\ndog\n"
    # On gs:// the runner's bundles choose the shard contents (stable shards would read by offset).
    assert info.shard_contents == metadata.SHARD_CONTENTS_RUNNER_CHOSEN
    for split in info.splits.values():
        assert len(split.shards) == 2
        for shard in split.shards:
            assert FileSystems.match([f"{output}/{shard.file}"])[0].metadata_list[0].size_in_bytes == shard.num_bytes

    rejected = [Rejection.from_json(line) for line in read_text(f"{output}/{metadata.REJECTED_FILENAME}").splitlines()]
    assert {r.path: r.reason for r in rejected} == {uploaded[path]: reason for path, reason in broken.items()}

    local_out, local_info = local
    assert info.splits.keys() == local_info.splits.keys()
    assert {n: s.num_examples for n, s in info.splits.items()} == {n: s.num_examples for n, s in local_info.splits.items()}
    assert info.rejected == local_info.rejected and info.num_inputs == local_info.num_inputs
    gs_records = normalized_records(output, info, "gs://bucket/images/")
    local_records = normalized_records(local_out, local_info, f"{local_root}/")
    assert sum(len(rows) for rows in gs_records.values()) == info.num_images_written
    assert gs_records == local_records


# ---- launcher-side listing and output checks (no pipeline) ------------------------------------


def test_listing_counting_and_prepare_output_on_gs(gcs: GcsEmulator, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for name in ("a/x.jpg", "a/z.png", "a/b/y.jpg", "ab/w.jpg"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(b"x" * 10)
    gcs.upload_tree(tree, "gs://bucket/listing")

    def matched(pattern: str) -> list[str]:
        return sorted(m.path for m in iter_matches(pattern))

    base = "gs://bucket/listing"
    # `**` crosses "folders"; the prefix "a/" must not pick up the sibling "ab/".
    assert matched(f"{base}/a/**") == [f"{base}/a/b/y.jpg", f"{base}/a/x.jpg", f"{base}/a/z.png"]
    assert matched(f"{base}/a/*") == [f"{base}/a/x.jpg", f"{base}/a/z.png"]
    assert matched(f"{base}/a*/*.jpg") == [f"{base}/a/x.jpg", f"{base}/ab/w.jpg"]
    assert matched(f"{base}/a/x.jpg") == [f"{base}/a/x.jpg"]
    assert matched(f"{base}/nothing/**") == [] and matched(f"{base}/a") == []  # a bare prefix is not an object
    assert count_inputs([f"{base}/a/**", f"{base}/ab/*"]) == (4, 40)
    assert normalize_input(f"{base}/a/") == f"{base}/a/**"
    assert glob_root(f"{base}/a/**") == f"{base}/a/"

    # prepare_output: GCS has no directories, so emptiness comes from listing below the prefix.
    prepare_output(f"{base}/fresh", overwrite=False)  # nothing there: fine, and only the build's first file is made
    assert gcs.list(f"{base}/fresh") == [f"{base}/fresh/{STARTED_FILENAME}"]
    prepare_output(f"{base}/a/b/y", overwrite=False)  # "y" is a prefix of the object "y.jpg", not a folder of it
    assert gcs.list(f"{base}/a/b/y/") == [f"{base}/a/b/y/{STARTED_FILENAME}"]
    gcs.client().bucket("bucket").blob(f"listing/a/b/y/{STARTED_FILENAME}").delete()
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_output(f"{base}/a", overwrite=False)
    with pytest.raises(FileExistsError, match="not empty"):
        run([f"--input={base}/ab/*", f"--output={base}/a", *BUILD_FLAGS, *IN_PROCESS])  # refused before running
    with pytest.raises(ValueError, match=f"--output {base}/a is inside --input {base}/a/\\*\\*"):
        run([f"--input={base}/a/**", f"--output={base}/a", *BUILD_FLAGS, *IN_PROCESS])

    old = tmp_path / "old"
    for name in ("cropshard.json", "dataset_info.json", "features.json", "croissant.json", "labels.txt", "rejected.jsonl",
                 "train-00000-of-00002.tfrecord", "train-00000-of-00002.tfrecord.idx", "beam-temp-train-1234/part-0", "notes.txt"):
        (old / name).parent.mkdir(parents=True, exist_ok=True)
        (old / name).write_text("old")
    gcs.upload_tree(old, f"{base}/old")
    prepare_output(f"{base}/old", overwrite=True)
    assert gcs.list(f"{base}/old") == [f"{base}/old/{STARTED_FILENAME}", f"{base}/old/notes.txt"], \
        "--overwrite removes the dataset and temp files, nothing else"


def test_gs_folder_without_slash_gets_a_hint(gcs: GcsEmulator, uploaded: dict[str, str]) -> None:
    with pytest.raises(FileNotFoundError, match=r"needs a trailing / or /\*\*"):
        run(["--input=gs://bucket/images", "--output=gs://bucket/never", *BUILD_FLAGS, *IN_PROCESS])


def put(gcs: GcsEmulator, url: str, data: bytes = b"") -> None:
    bucket, name = split_url(url)
    gcs.client().bucket(bucket).blob(name).upload_from_string(data)


def test_a_missing_bucket_is_a_usage_error_naming_it(gcs: GcsEmulator, uploaded: dict[str, str]) -> None:
    # Was a Beam traceback (BeamIOError ... NotFound) and exit 1, from prepare_output and the input check.
    with pytest.raises(FileNotFoundError, match=r"^--output gs://nosuchbucket/ds: bucket gs://nosuchbucket does not exist$"):
        run(["--input=gs://bucket/images/**", "--output=gs://nosuchbucket/ds", *BUILD_FLAGS, *IN_PROCESS])
    with pytest.raises(FileNotFoundError, match=r"^--input gs://nosuchbucket/x/\*\*: bucket gs://nosuchbucket does not exist$"):
        run(["--input=gs://nosuchbucket/x/**", "--output=gs://bucket/never", *BUILD_FLAGS, *IN_PROCESS])
    assert gcs.list("gs://bucket/never") == []


def test_an_output_that_is_an_object_is_refused_like_a_local_file(gcs: GcsEmulator) -> None:
    # Was accepted: the dataset went below the user's object, as `file.bin/cropshard.json`.
    put(gcs, "gs://bucket/objects/file.bin", b"my data")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="^--output gs://bucket/objects/file.bin is a file, not a folder"):
            prepare_output("gs://bucket/objects/file.bin", overwrite=overwrite)
    prepare_output("gs://bucket/objects/file", overwrite=False)  # a prefix of the object's name is not the object
    assert gcs.list("gs://bucket/objects/") == ["gs://bucket/objects/file.bin", f"gs://bucket/objects/file/{STARTED_FILENAME}"]


def test_an_output_folder_made_in_the_console_is_an_empty_folder(gcs: GcsEmulator) -> None:
    # Its placeholder object `newds/` was "a file that is not a cropshard dataset (e.g. )", even with --overwrite.
    put(gcs, "gs://bucket/newds/")
    put(gcs, "gs://bucket/newds/sub/")  # an empty subfolder, as a local empty directory is
    for overwrite in (False, True):
        prepare_output("gs://bucket/newds", overwrite=overwrite)
    assert gcs.list("gs://bucket/newds/") == ["gs://bucket/newds/", f"gs://bucket/newds/{STARTED_FILENAME}", "gs://bucket/newds/sub/"], \
        "the placeholders stay"
    gcs.client().bucket("bucket").blob(f"newds/{STARTED_FILENAME}").delete()  # as the console left it: no build ever started
    put(gcs, "gs://bucket/newds/notes.txt", b"mine")
    with pytest.raises(FileExistsError, match=r"\(1 files\).*\(e\.g\. notes\.txt\)"):
        prepare_output("gs://bucket/newds", overwrite=True)


def test_folder_placeholders_are_folders_not_inputs_nor_classes(gcs: GcsEmulator, tmp_path: Path) -> None:
    # Each placeholder was an input (rejected) and its folder a class with no image, shifting the
    # label ids; a pattern matching only a placeholder ran the job instead of "matched nothing".
    tree = tmp_path / "ph"
    for index, name in enumerate(["cat/1.jpg", "cat/2.jpg", "zebra/3.jpg", "zebra/4.jpg"]):
        imagegen.save(tree / name, imagegen.photo(96, 128, seed=index), quality=90)
    (tree / "aardvark").mkdir()  # the local equivalent of the placeholder `ph/aardvark/`
    gcs.upload_tree(tree, "gs://bucket/ph")
    for folder in ("ph/", "ph/cat/", "ph/zebra/", "ph/aardvark/"):  # what the console's "Create folder" leaves
        put(gcs, f"gs://bucket/{folder}")
    assert count_inputs(["gs://bucket/ph/**"]) == count_inputs([f"{tree}/**"])
    assert [m.path for m in iter_matches("gs://bucket/ph/*")] == []
    flags = ["--crop=center", "--size=64x64", "--encoding=raw", *IN_PROCESS]
    local = run([f"--input={tree}/**", f"--output={tmp_path / 'local'}", *flags], command_line=["test"]).info
    info = run(["--input=gs://bucket/ph/**", "--output=gs://bucket/out-ph", *flags], command_line=["test"]).info
    assert info.labels == local.labels == ("cat", "zebra")
    assert (info.num_inputs, info.num_rejected, info.rejected) == (local.num_inputs, local.num_rejected, local.rejected) == (4, 0, {})
    with pytest.raises(FileNotFoundError, match=r"no input files: \['gs://bucket/ph/aardvark/\*\*'\] matched nothing"):
        run(["--input=gs://bucket/ph/aardvark/**", "--output=gs://bucket/out-ph-empty", *flags])
    with pytest.raises(FileNotFoundError, match=r"no input files: .* matched nothing"):
        run([f"--input={tree}/aardvark/**", f"--output={tmp_path / 'local-empty'}", *flags])


def test_gs_manifest_rows_with_dot_segments(gcs: GcsEmulator, tmp_path: Path) -> None:
    # `../` and `./` stayed in the object name on gs:// (every such row not_found); local builds them.
    tree = tmp_path / "rec"
    for index, name in enumerate(["other/three.jpg", "a/one.jpg"]):
        imagegen.save(tree / name, imagegen.photo(96, 128, seed=index), quality=90)
    (tree / "man").mkdir()
    (tree / "man" / "m.csv").write_text("path,label\n../other/three.jpg,x\n../a/./one.jpg,y\n")
    gcs.upload_tree(tree, "gs://bucket/rec")
    flags = ["--crop=center", "--size=64x64", "--encoding=raw", *IN_PROCESS]
    for manifest, output, root in ((f"{tree}/man/m.csv", str(tmp_path / "local"), str(tree)),
                                   ("gs://bucket/rec/man/m.csv", "gs://bucket/out-dots", "gs://bucket/rec")):
        info = run([f"--manifest={manifest}", f"--output={output}", *flags], command_line=["test"]).info
        assert (info.num_images_written, info.num_rejected) == (2, 0), manifest
        filenames = sorted(schema.decode_example(record).filename for split in info.splits.values() for shard in split.shards
                           for record in read_records(FileSystems.join(output, shard.file)))
        assert filenames == [f"{root}/a/one.jpg", f"{root}/other/three.jpg"], "one name per file, however it is reached"


# ---- builds -----------------------------------------------------------------------------------


def test_gs_build_matches_local_build(gcs: GcsEmulator, gs_build: tuple[str, metadata.DatasetInfo], uploaded: dict[str, str],
                                      images: tuple[Path, dict[str, str]], local_build: tuple[str, metadata.DatasetInfo]) -> None:
    output, info = gs_build
    check_gs_dataset(gcs, output, info, uploaded, images[1], local_build, images[0])


def test_gs_build_multi_processing_overwrite(gcs: GcsEmulator, uploaded: dict[str, str], images: tuple[Path, dict[str, str]],
                                            local_build: tuple[str, metadata.DatasetInfo], tmp_path: Path) -> None:
    """The launcher's default runner: DirectRunner multi_processing, whose workers are
    subprocesses; they reach the emulator only through the inherited environment. Written over a
    stale dataset with --overwrite."""
    output = "gs://bucket/mp"
    stale = tmp_path / "stale"
    for name in ("cropshard.json", "train-00000-of-00005.tfrecord", "beam-temp-train-0000/part"):
        (stale / name).parent.mkdir(parents=True, exist_ok=True)
        (stale / name).write_text("stale")
    gcs.upload_tree(stale, output)
    result = run(["--input=gs://bucket/images/**", f"--output={output}", "--overwrite", "--direct_num_workers=2",
                  *BUILD_FLAGS], command_line=["test"])
    check_gs_dataset(gcs, output, result.info, uploaded, images[1], local_build, images[0])


def test_gs_manifest_build(gcs: GcsEmulator, uploaded: dict[str, str], images: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """A JSONL manifest on gs://: absolute gs:// rows, a row relative to the manifest's "folder",
    a missing object (must be `not_found`, which on GCS is recognised from the client's error) and
    a malformed row."""
    readable = sorted(url for path, url in uploaded.items() if path not in images[1])
    good = [readable[0], readable[-1], readable[-2]]  # cat and dog
    extra = tmp_path / "manifest-tree"
    imagegen.save(extra / "extra" / "bird.jpg", imagegen.photo(96, 128, seed=7), quality=90)
    gcs.upload_tree(extra, "gs://bucket/manifest")
    rows = [{"path": url, "label": url.split("/")[-2]} for url in good]
    rows += [{"path": "extra/bird.jpg", "label": "bird"}, {"path": "gs://bucket/manifest/missing.jpg", "label": "cat"}, {"label": "cat"}]
    (extra / "m.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    gcs.upload_tree(extra, "gs://bucket/manifest")  # uploads m.jsonl (and bird.jpg again)

    output = "gs://bucket/from-manifest"
    info = run(["--manifest=gs://bucket/manifest/m.jsonl", f"--output={output}", *BUILD_FLAGS, *IN_PROCESS], command_line=["test"]).info
    assert info.num_inputs == len(rows)
    assert info.rejected == {"not_found": 1, "bad_manifest_row": 1}
    assert info.num_images_written == 4 and info.labels == ("bird", "cat", "dog")
    rejected = {r.reason: r for r in map(Rejection.from_json, read_text(f"{output}/{metadata.REJECTED_FILENAME}").splitlines())}
    assert rejected["not_found"].path == "gs://bucket/manifest/missing.jpg"
    filenames = sorted(schema.decode_example(record).filename for split in info.splits.values() for shard in split.shards
                       for record in read_records(f"{output}/{shard.file}"))
    assert filenames == sorted([*good, "gs://bucket/manifest/extra/bird.jpg"])


# ---- reader ------------------------------------------------------------------------------------


class BeamBackedGcs(fileio.FileSystem):
    """The reader's storage seam served from the emulator.

    TensorFlow's gs:// filesystem cannot be pointed at an emulator (fixed endpoint), so this
    replaces TF's file access at the boundary the reader exposes for it: Python-side calls
    (exists/listdir/open/size) go to the emulator through Beam's GCS filesystem, and the names
    handed to TFRecordDataset are local copies downloaded from the emulator. Everything else in
    the reader runs unchanged on the gs:// paths. Records which gs:// paths the reader asked for.
    """

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.touched: list[str] = []

    def _seen(self, path: str) -> str:
        assert path.startswith("gs://bucket/"), f"reader bypassed the gs:// path: {path}"
        self.touched.append(path)
        return path

    def exists(self, path: str) -> bool:
        # Like TF's gs:// filesystem: an object, or a prefix with objects below it.
        path = self._seen(path)
        return FileSystems.exists(path) or bool(FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list)

    def listdir(self, path: str) -> list[str]:
        prefix = self._seen(path).rstrip("/") + "/"
        names = {m.path[len(prefix) :].split("/")[0] for m in FileSystems.match([prefix + "**"])[0].metadata_list}
        return sorted(names)

    def open(self, path: str, mode: str = "rb") -> IO[Any]:
        handle = FileSystems.open(self._seen(path), compression_type=CompressionTypes.UNCOMPRESSED)
        return handle if "b" in mode else io.TextIOWrapper(handle, encoding="utf-8")

    def size(self, path: str) -> int:
        return FileSystems.match([self._seen(path)])[0].metadata_list[0].size_in_bytes

    def tf_path(self, path: str) -> str:
        local = self.cache / self._seen(path)[len("gs://") :]
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.open(path) as source:
            local.write_bytes(source.read())
        return str(local)


def test_reader_loads_the_gs_dataset(gcs: GcsEmulator, gs_build: tuple[str, metadata.DatasetInfo],
                                     local_build: tuple[str, metadata.DatasetInfo], images: tuple[Path, dict[str, str]],
                                     tmp_path: Path) -> None:
    from cropshard import reader

    output, info = gs_build
    storage = BeamBackedGcs(tmp_path / "tf-cache")

    def collect(path: str, root: str) -> dict[str, list[tuple]]:
        by_split = {}
        for split in info.splits:
            rows = []
            for image, label, meta in reader.as_numpy(path, split, batch_size=None, shuffle=False, normalize="none", with_metadata=True):
                filename = meta["filename"].decode()
                assert filename.startswith(root), filename
                rows.append((filename[len(root) :], int(label), image.shape, image.tobytes()))
            by_split[split] = sorted(rows)
        return by_split

    with fileio.use(storage):
        assert reader.info(output) == info
        from_gs = collect(output, "gs://bucket/images/")
    assert fileio.get().__class__ is fileio.FileSystem  # restored
    assert f"{output}/{metadata.INFO_FILENAME}" in storage.touched
    assert {f"{output}/{s.file}" for split in info.splits.values() for s in split.shards} <= set(storage.touched)

    from_local = collect(local_build[0], f"{images[0]}/")
    assert from_gs == from_local
    assert sum(len(rows) for rows in from_gs.values()) == info.num_images_written
    assert all(shape == (64, 64, 3) for rows in from_gs.values() for _, _, shape, _ in rows)
