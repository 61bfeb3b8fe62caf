"""`cropshard compare --workdir`: compare replaces only the variant folders it built itself.

The builder is a stand-in that records its arguments and stops the run (no Beam, no reader runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cropshard.reader.metadata import DatasetInfo
from cropshard.tools.compare import cli
from cropshard.tools.compare.workdir import LEDGER


class Stop(RuntimeError):
    """Raised by the stand-in builder: compare reports it (exit 2) and measures nothing."""


class Builder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[DatasetInfo, float]:
        self.calls.append(argv)
        output = Path(next(a for a in argv if a.startswith("--output=")).split("=", 1)[1])
        output.mkdir(parents=True, exist_ok=True)
        (output / "cropshard.json").write_text("{}")  # what a build leaves there
        raise Stop("stopped after the build")


def compare(work: Path, *extra: str) -> tuple[int, Builder]:
    builder = Builder()
    argv = ["--input=x/**", "--size=8", "--layouts=precrop", "--encodings=raw", f"--workdir={work}", *extra]
    return cli.main(argv, build=builder), builder


def users_dataset(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    files = {"cropshard.json": b'{"mine": 1}', "train-00000-of-00001.tfrecord": b"my records", "labels.txt": b"cat\ndog\n"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_a_variant_folder_compare_did_not_write_is_refused_before_any_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It passed --overwrite to the build on its own, which replaced the user's dataset there.
    files = users_dataset(tmp_path / "work" / "precrop-raw")
    code, builder = compare(tmp_path / "work")
    assert code == 2 and builder.calls == []
    err = capsys.readouterr().err
    assert f"variant folder {tmp_path / 'work' / 'precrop-raw'} was not written by compare (it holds cropshard.json, labels.txt" in err
    assert "pass --overwrite to replace it" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "work" / "precrop-raw").iterdir()} == files
    assert not (tmp_path / "work" / LEDGER).exists()


def test_overwrite_lets_compare_build_into_it(tmp_path: Path) -> None:
    users_dataset(tmp_path / "work" / "precrop-raw")
    code, builder = compare(tmp_path / "work", "--overwrite")
    assert code == 2 and len(builder.calls) == 1 and "--overwrite" in builder.calls[0]


def test_compare_rebuilds_its_own_folders_on_a_rerun(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for _ in range(2):  # the second run finds the folder the first one built (and stopped in)
        code, builder = compare(work)
        assert code == 2 and len(builder.calls) == 1 and "--overwrite" in builder.calls[0]
    assert json.loads((work / LEDGER).read_text())["folders"] == ["precrop-raw"]
    assert sorted(p.name for p in (work / "precrop-raw").iterdir()) == ["cropshard.json"]  # nothing of compare's in it


def test_a_workdir_from_before_the_ledger_is_recognised_by_its_compare_json(tmp_path: Path) -> None:
    work = tmp_path / "old"
    users_dataset(work / "precrop-raw")
    (work / "compare.json").write_text(json.dumps({"variants": [{"name": "precrop-raw", "path": "elsewhere/old/precrop-raw", "reused": False}]}))
    assert len(compare(work)[1].calls) == 1
    (work / LEDGER).unlink()
    (work / "compare.json").write_text(json.dumps({"variants": [{"name": "precrop-raw", "path": str(work / "precrop-raw"), "reused": True}]}))
    assert compare(work)[1].calls == []  # a dataset compare only measured (--dataset) is still the user's


def test_an_empty_or_missing_variant_folder_is_compare_s_to_build(tmp_path: Path) -> None:
    (tmp_path / "work" / "precrop-raw").mkdir(parents=True)
    assert len(compare(tmp_path / "work")[1].calls) == 1
    assert len(compare(tmp_path / "new")[1].calls) == 1
