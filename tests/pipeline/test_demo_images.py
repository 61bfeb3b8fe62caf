"""`cropshard demo-images`: usage errors exit 2 with a message, and a folder holding anything but a
previous demo set is never written into (a previous set is replaced by exactly the new one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cropshard.pipeline.cli import main


def demo_images(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["demo-images", *argv])
    captured = capsys.readouterr()
    return code, captured.err or captured.out


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_file_as_the_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile.txt").write_text("x")  # was a FileExistsError traceback, exit 1
    assert demo_images(capsys, str(tmp_path / "afile.txt"), "--per_class", "1") == (
        2, f"cropshard demo-images: error: {tmp_path / 'afile.txt'} is a file: give a folder for the demo images (created if missing)\n")


@pytest.mark.parametrize("count", ["0", "-2"])
def test_per_class_below_one_is_refused(count: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It printed "wrote 0 demo images" and left three empty class folders.
    assert demo_images(capsys, str(tmp_path / "out"), "--per_class", count) == (
        2, f"cropshard demo-images: error: --per_class must be at least 1, got {count}\n")
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_other_files_is_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out" / "forest").mkdir(parents=True)
    (tmp_path / "out" / "forest" / "forest_000.jpg").write_text("mine")  # was overwritten without a word
    code, err = demo_images(capsys, str(tmp_path / "out"), "--per_class", "1")
    assert code == 2 and "holds files demo-images did not write (e.g. forest/forest_000.jpg)" in err
    assert files(tmp_path / "out") == ["forest/forest_000.jpg"] and (tmp_path / "out" / "forest" / "forest_000.jpg").read_text() == "mine"


def test_a_previous_demo_set_is_replaced_by_exactly_the_new_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `make demo` twice, or the README walk-through's 8 per class after `make demo`'s 24.
    out = tmp_path / "out"
    assert demo_images(capsys, str(out), "--per_class", "2") == (0, f"wrote 6 demo images under {out}\n")
    first = {name: (out / name).read_bytes() for name in files(out)}
    assert demo_images(capsys, str(out), "--per_class", "2")[0] == 0
    assert {name: (out / name).read_bytes() for name in files(out)} == first  # same seed: the same set
    assert demo_images(capsys, str(out), "--per_class", "1", "--seed", "3")[0] == 0
    assert files(out) == ["forest/forest_000.jpg", "urban/urban_000.jpg", "water/water_000.jpg"]
    (out / "urban" / "notes.txt").write_text("mine")
    assert demo_images(capsys, str(out), "--per_class", "1")[0] == 2
    assert (out / "urban" / "notes.txt").read_text() == "mine"


def test_an_empty_folder_name_or_a_negative_seed_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo-images ''` wrote three class folders into the current folder, whatever it held;
    `--seed -1` gave NumPy's 'expected non-negative integer', naming no option."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert demo_images(capsys, "", "--per_class", "1") == (2, "cropshard demo-images: error: give a folder for the demo images (created if missing)\n")
    assert files(tmp_path) == ["notes.txt"]
    assert demo_images(capsys, "out", "--seed", "-1") == (2, "cropshard demo-images: error: --seed must be 0 or more, got -1\n")
    assert not (tmp_path / "out").exists()


def test_an_option_repeated_with_another_value_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `--per_class 2 --per_class 3` wrote 9 images (the last value) without a word, as argparse does.
    with pytest.raises(SystemExit) as exited:
        main(["demo-images", str(tmp_path / "out"), "--per_class", "2", "--per_class", "3"])
    assert exited.value.code == 2
    assert "--per_class is given more than once with different values; give it once" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert demo_images(capsys, str(tmp_path / "out"), "--per_class", "1", "--per_class", "1")[0] == 0  # the same value twice is one value
