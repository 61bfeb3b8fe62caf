"""`cropshard compare --train` where the answer is known: generated labelled images whose class is a coloured square.

(a) The square lies near the border, never inside the centre crop: a centre pre-crop holds nothing of
    the class, so the model trained on it must score near chance, and the one trained on random crops
    of the full images clearly above it.
(b) The square lies at the centre: every variant holds it, so the variants must agree within the seed
    spread.

Both run the whole command as a user would (builds, reader runs, the training child), with fixed seeds
and a fixed number of steps (the time budget is set far above what the steps take, so it never decides).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cropshard.pipeline.cli import main as cli_main  # noqa: E402
from cropshard.tools.compare.measure import VariantRow  # noqa: E402
from cropshard.tools.compare.recommend import within_spread  # noqa: E402

# Eight classes: a model that never saw the squares maps their colours to classes arbitrarily, and with
# eight of them an arbitrary mapping is rarely far above chance (with four, half right is common).
COLOURS = {"black": (10, 10, 10), "blue": (50, 70, 230), "cyan": (40, 220, 230), "green": (40, 200, 60),
           "magenta": (220, 50, 220), "red": (220, 40, 40), "white": (250, 250, 250), "yellow": (230, 210, 40)}  # label order
SIZE, CROP, MARKER = 64, 32, 12
PER_CLASS = 24
BEAM = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off", "--split=train=0.75,validation=0.25"]
FAST_READER = ["--batches=2", "--warmup=1", "--batch-size=4", "--min-seconds=0", "--repeats=1"]
TRAIN = ["--train", "--seeds=0,1", "--train-steps=200", "--train-budget=7200", "--train-batch-size=32"]


def marker_image(where: str, colour: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Grey noise with one MARKER-sized square of `colour`: inside the centre CROP window ('centre'), or
    anywhere wholly outside it ('border')."""
    pixels = rng.integers(60, 180, size=(SIZE, SIZE, 3)).astype(np.uint8)
    low, high = (SIZE - CROP) // 2, (SIZE + CROP) // 2
    if where == "centre":
        y, x = rng.integers(low + 1, high - MARKER, size=2)
    else:
        while True:
            y, x = rng.integers(0, SIZE - MARKER + 1, size=2)
            if y + MARKER <= low or y >= high or x + MARKER <= low or x >= high:
                break
    pixels[y : y + MARKER, x : x + MARKER] = colour
    return pixels


def compare_with_training(root: Path, where: str) -> tuple[dict, str]:
    rng = np.random.default_rng(17)
    for name, colour in COLOURS.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(marker_image(where, colour, rng)).save(root / "images" / name / f"{name}_{i:02d}.png")
    argv = ["compare", f"--input={root}/images/**", f"--size={CROP}x{CROP}", "--encodings=raw", "--full-encodings=png",
            "--layouts=precrop,full", f"--workdir={root}/work", *FAST_READER, *TRAIN, *BEAM]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(argv) == 0
    return json.loads((root / "work" / "compare.json").read_text()), printed.getvalue()


def rows_of(doc: dict) -> dict[str, VariantRow]:
    return {row["name"]: VariantRow.from_json(row) for row in doc["variants"]}


pytestmark = pytest.mark.slow  # builds, then trains a model per variant and seed in child processes


@pytest.fixture(scope="module")
def border(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    return compare_with_training(tmp_path_factory.mktemp("border"), "border")


def test_class_at_the_border_centre_precrop_is_near_chance_full_images_clearly_above(border: tuple[dict, str]) -> None:
    doc, printed = border
    rows = rows_of(doc)
    pre, full = rows["precrop-raw"], rows["full-png"]
    chance = 1 / len(COLOURS)
    assert pre.train_accuracy is not None and full.train_accuracy is not None
    assert pre.train_accuracy <= chance + 0.2, pre.train_accuracies
    assert full.train_accuracy >= 0.8, full.train_accuracies
    assert not within_spread(full, pre)
    verdict = f"Precrop-raw scores {100 * (full.train_accuracy - pre.train_accuracy):.0f} points below full-png, beyond the seed spread"
    assert any(sentence.startswith(verdict) for sentence in doc["recommendation"])
    # The coverage explains it: one window of the 33x33 positions, a quarter of the area.
    assert (pre.windows_per_image, pre.window_share, pre.context_kept, pre.resolution) == (1, 1 / 33**2, 0.25, 1.0)
    assert (full.windows_per_image, full.window_share, full.context_kept, full.resolution) == (33**2, 1.0, 1.0, 1.0)
    assert pre.coverage_crop == "plain read" and full.coverage_crop == f"random crop {CROP}x{CROP}"
    trained_on = json.loads(Path(full.path, "cropshard.json").read_text())["splits"]["train"]["num_examples"]
    assert pre.coverage_images == full.coverage_images == trained_on  # the same split of the same images


def test_training_is_recorded_run_by_run(border: tuple[dict, str]) -> None:
    doc, printed = border
    rows = rows_of(doc)
    train = doc["train"]
    assert train["seeds"] == [0, 1] and train["max_steps"] == 200 and train["seconds_per_run"] == 3600
    assert train["eval_path"] == rows["full-png"].path and train["eval_split"] == "validation"
    assert "proxy model" in train["limits"] and "from scratch" in train["model"]
    assert [(run["variant"], run["seed"]) for run in train["runs"]] == [
        ("precrop-raw", 0), ("full-png", 0), ("precrop-raw", 1), ("full-png", 1)]
    validation = json.loads(Path(rows["full-png"].path, "cropshard.json").read_text())["splits"]["validation"]["num_examples"]
    for name, row in rows.items():
        runs = [run for run in train["runs"] if run["variant"] == name]
        assert row.train_seeds == (0, 1) and row.train_steps == (200, 200)
        assert row.train_accuracies == tuple(run["accuracy"] for run in runs)
        assert row.train_accuracy == pytest.approx(sum(row.train_accuracies) / 2)
        assert row.train_accuracy_sd == pytest.approx(abs(row.train_accuracies[0] - row.train_accuracies[1]) / 2**0.5)
        assert row.eval_images == validation > 0
        assert all(run["images"] == 199 * 32 for run in runs)  # every step after the untimed first one
        assert row.train_images_per_second == pytest.approx(sum(run["images"] for run in runs) / sum(run["seconds"] for run in runs))
        assert row.accuracy_per_minute == pytest.approx(row.train_accuracy / (row.train_seconds / 60))
    costs = printed.strip().split("\n\n")[1].splitlines()
    assert costs[0].split()[:3] == ["variant", "training", "crop"] and "accuracy" in costs[0]
    assert costs[2].split()[:4] == ["precrop-raw", "plain", "read", "1"]
    assert any(sentence.startswith("Limits: a small proxy model trained from scratch") for sentence in doc["recommendation"])


def test_class_at_the_centre_every_variant_agrees_within_the_spread(tmp_path: Path) -> None:
    doc, _ = compare_with_training(tmp_path, "centre")
    rows = rows_of(doc)
    pre, full = rows["precrop-raw"], rows["full-png"]
    assert within_spread(pre, full), (pre.train_accuracies, full.train_accuracies)
    best, other = (pre, full) if (pre.train_accuracy or 0) >= (full.train_accuracy or 0) else (full, pre)
    assert any(sentence.startswith(f"{other.name[0].upper()}{other.name[1:]} and {best.name} agree within the seed spread")
               for sentence in doc["recommendation"])
