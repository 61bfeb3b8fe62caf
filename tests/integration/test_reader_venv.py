"""The reader installs on its own and reads datasets in a venv with only TensorFlow and NumPy.

Slow (a fresh venv and a TensorFlow install, ~1 min with a warm pip cache): `pytest -m slow`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cropshard.reader import schema

from tests import reader_fixtures as fx

REPO = Path(__file__).resolve().parents[2]


def _version(*names: str) -> tuple[str, str]:
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise RuntimeError(f"none of {names} is installed in the test environment")


CHECK_SCRIPT = r"""
import json, os, sys
import numpy as np

for forbidden in ("apache_beam", "PIL", "google_crc32c"):
    try:
        __import__(forbidden)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{forbidden} is importable in the reader-only venv")
import importlib.metadata
dist = importlib.metadata.distribution("cropshard-reader")
assert dist.read_text("top_level.txt").split() == ["cropshard"], dist.read_text("top_level.txt")
tops = sorted({f.parts[0] for f in dist.files if not f.parts[0].endswith(".dist-info")})
assert tops == ["cropshard"], tops
shipped = sorted(f.as_posix() for f in dist.files if f.suffix == ".py")
assert all(p.startswith("cropshard/reader/") for p in shipped) and "cropshard/reader/setup.py" not in shipped, shipped

from cropshard import reader
assert reader.__file__.startswith(sys.prefix), f"reader imported from {reader.__file__}, not the venv"
expected = np.load(sys.argv[3])
raw_path, full_path = sys.argv[1], sys.argv[2]

seen = 0
for images, labels, meta in reader.as_numpy(raw_path, "train", batch_size=4, normalize="none", with_metadata=True):
    for image, label, name in zip(images, labels, meta["filename"]):
        key = name.decode()
        assert np.array_equal(image, expected["raw:" + key]), key
        assert label == expected["label:" + key], key
        seen += 1
assert seen == 10, seen

seen = 0
for images, _, meta in reader.as_numpy(full_path, "train", batch_size=3, crop="random", crop_size=16, seed=1,
                                       normalize="none", with_metadata=True):
    for image, name, (y, x, h, w) in zip(images, meta["filename"], meta["crop_window"]):
        stored = expected["full:" + name.decode()]
        assert (h, w) == (16, 16) and np.array_equal(image, stored[y:y + h, x:x + w]), name
        seen += 1
assert seen == 6, seen

report = reader.verify(raw_path)
assert report.ok and report.crc_implementation == "numpy", report
print(json.dumps({"ok": True, "tensorflow": __import__("tensorflow").__version__}))
"""


@pytest.mark.slow
def test_reader_alone_in_a_fresh_venv(tmp_path: Path) -> None:
    raw_path, full_path = str(tmp_path / "raw"), str(tmp_path / "full")
    raw = fx.precropped_dataset(raw_path, schema.FORMAT_RAW, counts={"train": 10}, shards=2)
    full = fx.full_image_dataset(full_path, (schema.FORMAT_JPEG,), sizes=((30, 40), (50, 24)), counts={"train": 6})
    expected = {f"raw:{s.record.filename}": s.pixels for s in raw["train"]}
    expected |= {f"label:{s.record.filename}": np.array(s.record.label) for s in raw["train"]}
    expected |= {f"full:{s.record.filename}": s.pixels for s in full["train"]}
    np.savez(tmp_path / "expected.npz", **expected)

    # Install from a copy so the build leaves nothing (egg-info, build/) in the working tree.
    source = tmp_path / "reader-src"
    shutil.copytree(REPO / "reader", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    tf_name, tf_version = _version("tensorflow-cpu", "tensorflow")
    _, np_version = _version("numpy")
    extra = "tf-cpu" if tf_name == "tensorflow-cpu" else "tf"
    install = [python, "-m", "pip", "install", "--quiet", f"{source}[{extra}]", f"{tf_name}=={tf_version}", f"numpy=={np_version}"]
    if (REPO / "constraints.txt").exists():
        install += ["-c", str(REPO / "constraints.txt")]  # same dependency versions as the dev venv: pip cache hits
    result = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"pip install failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    # TensorFlow 2.20 pulls Pillow in through tensorboard (its image plugin), not through the
    # reader; remove it so the check below proves the reader needs nothing but TF and NumPy.
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "pillow"], check=True, capture_output=True, timeout=300)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    check = subprocess.run(
        [python, "-c", CHECK_SCRIPT, raw_path, full_path, str(tmp_path / "expected.npz")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(tmp_path),  # not the repository: `reader` must come from the venv
        env=env,
    )
    assert check.returncode == 0, f"{check.stdout[-3000:]}\n{check.stderr[-5000:]}"
    assert json.loads(check.stdout.strip().splitlines()[-1]) == {"ok": True, "tensorflow": tf_version}
