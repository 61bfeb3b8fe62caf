"""Global state is set by setup_worker() (from the DoFns' setup()), never by importing a module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Prints the process-wide settings cropshard cares about after each step, as JSON lines.
SCRIPT = """
import gc, importlib, json, pkgutil
import google_crc32c
from PIL import Image, ImageFile
from apache_beam.io import tfrecordio

def state():
    fn = tfrecordio._default_crc32c_fn.fn
    return {
        "max_image_pixels": Image.MAX_IMAGE_PIXELS,
        "load_truncated_images": ImageFile.LOAD_TRUNCATED_IMAGES,
        "crc32c_fn": "google_crc32c.value" if fn is google_crc32c.value else repr(fn),
        "objects_frozen": gc.get_freeze_count() > 0,
    }

print(json.dumps(state()))
import cropshard.transforms
names = sorted(m.name for m in pkgutil.iter_modules(cropshard.transforms.__path__, "cropshard.transforms."))
for name in names:
    importlib.import_module(name)
print(json.dumps(names))
print(json.dumps(state()))
STEP
print(json.dumps(state()))
"""


def run_steps(step: str) -> list:
    proc = subprocess.run([sys.executable, "-c", SCRIPT.replace("STEP", step)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.slow  # a fresh interpreter
def test_importing_changes_nothing_and_setup_worker_sets_it_idempotently():
    before, names, imported, set_up = run_steps(
        "from cropshard.transforms.worker import setup_worker\nsetup_worker(1000)\nfirst, frozen = state(), gc.get_freeze_count()\n"
        "setup_worker(1000)\nassert state() == first and gc.get_freeze_count() == frozen  # frozen once per process\n"
        "setup_worker()\nassert state() == first  # no limit given (the shard writer's setup): Pillow's is left as it is"
    )
    assert {"cropshard.transforms.decode", "cropshard.transforms.examples", "cropshard.transforms.worker"} <= set(names)
    assert before == {"max_image_pixels": 89_478_485, "load_truncated_images": False, "crc32c_fn": "None", "objects_frozen": False}
    assert imported == before
    # Pillow's bomb check raises past twice its limit: at the build's --max_pixels.
    assert set_up == {"max_image_pixels": 500, "load_truncated_images": False, "crc32c_fn": "google_crc32c.value", "objects_frozen": True}


@pytest.mark.slow  # a fresh interpreter
def test_the_image_dofn_sets_up_the_worker():
    *_, imported, set_up = run_steps(
        "from cropshard.transforms.crop import CropSpec\n"
        "from cropshard.transforms.examples import ExampleSpec, ImagesToExamples\n"
        "ImagesToExamples(ExampleSpec(crop=CropSpec('center', size=(8, 8)))).setup()"
    )
    assert imported["max_image_pixels"] == 89_478_485 and imported["crc32c_fn"] == "None"
    assert set_up["max_image_pixels"] == 89_478_485 / 2 and set_up["crc32c_fn"] == "google_crc32c.value" and set_up["objects_frozen"]
