"""compare on tiny real builds: own peak RSS per reader child, rejected inputs, --read-split, empty
train split, damaged --dataset, and the one-seed verdict."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cropshard.pipeline.build import run  # noqa: E402
from cropshard.pipeline.cli import main as cli_main  # noqa: E402
from cropshard.tools.compare.recommend import recommend  # noqa: E402

from tests import imagegen  # noqa: E402
from tests.tools.test_compare import BEAM, FAST_READER  # noqa: E402
from tests.tools.test_compare_costs import trained  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fixes")
    imagegen.class_tree(root / "images", per_class=2, size=(48, 64))
    return root


def _build(root: Path, name: str, *options: str) -> Path:
    out = root / name
    if not out.exists():
        run([f"--input={root}/images/**", f"--output={out}", *options, *BEAM], command_line=[])
    return out


def _compare(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    beam = [] if not any(a.startswith("--input") for a in argv) else BEAM  # --dataset alone refuses build options
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["compare", *argv, *FAST_READER, *beam])
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow  # two TensorFlow child processes
def test_reader_peak_rss_is_the_childs_own_not_the_parents(images: Path) -> None:
    """ru_maxrss survives fork+exec: a parent that once held 1.5 GiB made every reader child report >= 1.5 GiB."""
    dataset = _build(images, "precrop-raw", "--crop=center", "--size=32x32")
    probe = (
        "import sys, numpy as np\n"
        "from cropshard.tools.compare.measure import ReaderSpec, run_reader_subprocess\n"
        "ballast = np.ones(1536 * 2**20, dtype=np.uint8); del ballast\n"
        f"spec = ReaderSpec({str(dataset)!r}, 'train', 2, 1, 0, 0.0, None, None, 0)\n"
        "print(run_reader_subprocess(spec).peak_rss_bytes)\n"
    )
    peak = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()[-1])
    assert 0 < peak < 1536 * 2**20


@pytest.mark.slow  # a build and a reader child
def test_rejected_inputs_are_shown_per_variant_and_recorded(images: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for path in sorted((images / "images").rglob("*.*"))[:3]:
        (tmp_path / "in" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "in" / "notes.jpg").write_bytes(b"not an image at all")
    code, out, _ = _compare(f"--input={tmp_path}/in/*", "--size=32x32", "--layouts=precrop", "--encodings=raw",
                            f"--workdir={tmp_path / 'w'}")
    assert code == 0
    assert "precrop-raw: inputs 4 = 3 written + 1 rejected (not_an_image 1)" in out
    row = json.loads((tmp_path / "w" / "compare.json").read_text())["variants"][0]
    assert row["num_inputs"] == 4 and row["rejected"] == {"not_an_image": 1}


def test_an_unknown_read_split_is_a_usage_error(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = _build(images, "precrop-raw", "--crop=center", "--size=32x32")
    code, _, err = _compare(f"--dataset={dataset}", "--size=32x32", "--read-split=valdation")
    assert code == 2
    assert "--read-split 'valdation': in precrop-raw" in err and "does not exist" in err


@pytest.mark.slow  # a reader child
def test_an_empty_train_split_falls_back_to_the_first_non_empty_split(images: Path, tmp_path: Path) -> None:
    dataset = _build(images, "full-empty-train", "--crop=none", "--encoding=jpeg", "--split=train=0,validation=1")
    code, _, err = _compare(f"--dataset={dataset}", "--size=32x32", f"--workdir={tmp_path / 'w'}")
    assert code == 0, err
    row = json.loads((tmp_path / "w" / "compare.json").read_text())["variants"][0]
    assert row["reader_split"] == "validation" and row["coverage_images"] == 4


def test_one_seed_gives_no_within_or_beyond_the_spread_verdict() -> None:
    pre = trained("precrop-png", "precrop", (0.375,), 0.0)
    full = trained("full-png", "full", (1.0,), 0.0)
    text = recommend([pre, full])
    assert not any("seed spread" in s for s in text)
    assert any("scores 62 points below full-png; with one seed no spread was measured" in s for s in text)


@pytest.mark.parametrize("damage", ["flipped byte", "cut short"])
def test_a_damaged_dataset_is_refused_in_one_line_naming_its_shard(images: Path, tmp_path: Path, damage: str) -> None:
    # It was a TensorFlow traceback ("corrupted record at 455976"), exit 1, once the scan reached it.
    dataset = tmp_path / "damaged"
    dataset.mkdir()
    for path in _build(images, "precrop-raw", "--crop=center", "--size=32x32").iterdir():
        (dataset / path.name).write_bytes(path.read_bytes())
    (shard,) = dataset.glob("train-*.tfrecord")
    data = bytearray(shard.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) * 2 // 3 :]
    shard.write_bytes(bytes(data))
    code, out, err = _compare(f"--dataset={dataset}", "--size=32x32", f"--workdir={tmp_path / 'w'}")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--dataset {dataset} is damaged: " in err and shard.name in err and "records readable" in err
    assert f"cropshard inspect {dataset} --verify" in err
    assert not (tmp_path / "w").exists()  # refused before the workdir is made


def test_a_variant_that_cannot_be_built_is_refused_before_the_first_build(tmp_path: Path) -> None:
    """8-band uint16 rasters: the raw variant was built (20 s here) before the JPEG one was refused."""
    from tests import rastergen

    rastergen.write_raster(tmp_path / "in" / "scene.tif", rastergen.multispectral(128, 128, bands=8))
    workdir = tmp_path / "w"
    code, out, err = _compare(f"--input={tmp_path / 'in'}/*.tif", "--size=32x32", f"--workdir={workdir}",
                              "--bands=1,2,3,4,5,6,7,8", "--dtype=keep")
    assert code == 2 and out == "" and "building " not in err
    assert err.strip().splitlines()[-1] == (
        "cropshard compare: error: variant precrop-jpeg cannot be built: --encoding jpeg stores uint8 with 1 or 3 bands; use raw"
        " (or png for 1/3-band uint16) for 8 bands of --dtype keep (compare sets --encoding from its --encodings and --full-encodings)")
    assert not (workdir / "precrop-raw").exists()
