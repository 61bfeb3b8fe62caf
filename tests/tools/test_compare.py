"""`cropshard compare` on a small generated image set: every JSON field, a real chart, a computed recommendation."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cropshard.pipeline.build import run  # noqa: E402
from cropshard.pipeline.cli import main as cli_main  # noqa: E402
from cropshard.tools.compare import chart, cli  # noqa: E402
from cropshard.tools.compare.measure import ROW_FIELDS, VariantRow  # noqa: E402
from cropshard.tools.compare.recommend import ratio_text, recommend  # noqa: E402

from tests import imagegen  # noqa: E402
from tests.tools.compare_rows import measured_row  # noqa: E402

BEAM = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--progress=off"]
FAST_READER = ["--batches=2", "--warmup=1", "--batch-size=4", "--min-seconds=0", "--repeats=1"]
NUM_IMAGES = 10


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str, Path]:
    """One compare run (each reader measurement is a fresh TensorFlow process, so runs are costly):
    precrop-raw is an existing dataset to reuse, the other three variants are built."""
    root = tmp_path_factory.mktemp("photos")
    imagegen.class_tree(root / "images", per_class=NUM_IMAGES // 2, size=(120, 160))
    existing = root / "existing-raw"
    run([f"--input={root}/images/**", f"--output={existing}", "--crop=center", "--size=48x48", *BEAM], command_line=[])
    work = root / "work"
    argv = ["compare", f"--input={root}/images/**", f"--dataset={existing}", "--size=48x48", "--resize=96", f"--workdir={work}",
            *FAST_READER, *BEAM]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(argv) == 0
    return work, json.loads((work / "compare.json").read_text()), printed.getvalue(), existing


@pytest.mark.slow  # six builds and reader child processes
def test_builds_every_variant_and_measures_every_field(compared: tuple[Path, dict, str, Path]) -> None:
    work, doc, _, existing = compared
    assert [row["name"] for row in doc["variants"]] == ["precrop-raw", "precrop-jpeg", "full-jpeg", "resized96-jpeg"]
    for key in ("format_version", "created", "command_line", "input", "size", "resize", "encodings", "full_encodings",
                "jpeg_quality", "build_options", "reader", "machine", "variants", "recommendation"):
        assert key in doc, key
    assert doc["size"] == [48, 48] and doc["resize"] == 96 and doc["jpeg_quality"] == 90
    assert doc["build_options"] == BEAM
    for row in doc["variants"]:
        assert set(row) == set(ROW_FIELDS), row["name"]
        assert Path(row["path"], "cropshard.json").exists()
        if row["name"] == "precrop-raw":  # given with --dataset: measured as is, never rebuilt
            assert row["path"] == str(existing) and row["reused"] is True and row["build_seconds"] is None
            assert not (work / "precrop-raw").exists()
        else:
            assert row["path"] == str(work / row["name"]) and row["reused"] is False and row["build_seconds"] > 0
        assert row["num_images"] == row["num_examples"] == NUM_IMAGES
        on_disk = sum(p.stat().st_size for p in Path(row["path"]).glob("*.tfrecord"))
        assert row["total_bytes"] == on_disk and row["bytes_per_image"] == pytest.approx(on_disk / NUM_IMAGES)
        assert row["reader_batches"] == 2 and row["reader_images"] == 2 * 4 and row["reader_seconds"] > 0
        assert row["reader_images_per_second"] == pytest.approx(row["reader_images"] / row["reader_seconds"])
        assert row["reader_runs_images_per_second"] == [row["reader_images_per_second"]]
        assert row["reader_peak_rss_bytes"] >= row["reader_baseline_rss_bytes"] > 50 * 2**20
        assert 0 <= row["other_cpu_share"] <= 1
    rows = {row["name"]: row for row in doc["variants"]}
    assert rows["precrop-raw"]["stored_shape"] == "48x48x3" and rows["precrop-raw"]["reader_crop"] == "plain read"
    assert rows["full-jpeg"]["stored_shape"] == "varies" and rows["full-jpeg"]["reader_crop"] == "random crop 48x48"
    assert rows["resized96-jpeg"]["resize"] == 96
    # raw 48x48x3 pixels plus framing and features; JPEG far smaller; full images larger than crops.
    assert 48 * 48 * 3 < rows["precrop-raw"]["bytes_per_image"] < 48 * 48 * 3 + 1024
    assert rows["precrop-jpeg"]["bytes_per_image"] < rows["precrop-raw"]["bytes_per_image"] / 2
    assert rows["full-jpeg"]["bytes_per_image"] > rows["resized96-jpeg"]["bytes_per_image"] > rows["precrop-jpeg"]["bytes_per_image"]


def test_table_and_recommendation_are_printed(compared: tuple[Path, dict, str, Path]) -> None:
    work, doc, printed, _ = compared
    table = printed.strip().split("\n\n")[0].splitlines()
    assert table[0].split() == ["variant", "stored", "bytes/image", "total", "build", "reader", "images/s", "peak", "RSS"]
    assert [line.split()[0] for line in table[2:]] == [row["name"] for row in doc["variants"]]
    assert " reused " in table[2] and "plain read" in table[2] and "random crop 48x48" in table[4]
    flat = " ".join(printed.split())
    assert all(" ".join(sentence.split()) in flat for sentence in doc["recommendation"])
    assert f"wrote {work / 'compare.json'} and {work / 'compare.png'}" in printed


def test_recommendation_quotes_the_measured_ratios(compared: tuple[Path, dict, str, Path]) -> None:
    _, doc, _, _ = compared
    rows = {row["name"]: row for row in doc["variants"]}
    assert doc["recommendation"] == recommend([VariantRow.from_json(row) for row in doc["variants"]])
    size_ratio = rows["precrop-raw"]["bytes_per_image"] / rows["precrop-jpeg"]["bytes_per_image"]
    assert doc["recommendation"][0].startswith(f"Raw pre-crops are {ratio_text(size_ratio)}x larger than jpeg pre-crops")


def test_chart_is_a_real_non_blank_png(compared: tuple[Path, dict, str, Path]) -> None:
    work, _, _, _ = compared
    with Image.open(work / "compare.png") as img:
        assert img.format == "PNG" and img.size == (1900, 1400)
        pixels = np.asarray(img.convert("RGB"))
    colours = {tuple(c) for c in pixels[::7, ::7].reshape(-1, 3)}
    assert len(colours) > 50  # bars, text, grid: not a blank canvas
    assert (pixels < 128).mean() > 0.01  # dark text and bars cover part of it
    for layout, (shade, _) in chart.LAYOUT_COLOURS.items():  # every layout's bars are drawn
        rgb = tuple(int(shade[i : i + 2], 16) for i in (1, 3, 5))
        assert (np.abs(pixels.astype(int) - rgb).sum(axis=-1) < 6).sum() > 500, layout


def test_recommendation_follows_the_numbers() -> None:
    def row(name: str, layout: str, enc: str, bpi: float, ips: float, rss: float, resize: int | None = None) -> VariantRow:
        return measured_row(name=name, layout=layout, encoding=enc, bytes_per_image=bpi, reader_images_per_second=ips,
                            reader_peak_rss_bytes=rss, resize=resize)

    rows = [
        row("precrop-raw", "precrop", "raw", 49152, 1400, 600e6),
        row("precrop-jpeg", "precrop", "jpeg", 8192, 1000, 600e6),
        row("full-jpeg", "full", "jpeg", 300_000, 300, 900e6),
        row("resized256-jpeg", "resized", "jpeg", 30_000, 700, 700e6, 256),
    ]
    text = recommend(rows)
    assert text[0] == "Raw pre-crops are 6.0x larger than jpeg pre-crops and read 1.40x faster (1,400 vs 1,000 images/s)."
    assert text[1].startswith("Full images (full-jpeg) keep random-crop augmentation but read 4.7x slower than precrop-raw")
    assert "37x the bytes per image of precrop-jpeg" in text[1]
    assert "reads 2.3x faster and stores 10x fewer bytes" in text[3]
    assert "at least 300 images/s" in text[4] and "smallest variant, precrop-jpeg (8.00 KiB per image)" in text[4]
    assert "precrop-raw (1,400 images/s) leaves the most headroom" in text[4]
    assert not any("busy" in sentence for sentence in text)
    # Different numbers, different words: JPEG pre-crops that read faster than raw ones; a busy machine.
    rows[1] = dataclasses.replace(rows[1], reader_images_per_second=2800)
    rows[2] = dataclasses.replace(rows[2], other_cpu_share=0.45)
    text = recommend(rows)
    assert text[0].endswith("read 2.0x slower (1,400 vs 2,800 images/s).")
    assert text[-1].startswith("Caution: other processes used up to 45% of the CPUs during the fastest reader runs")


def test_options_compare_sets_itself_cannot_be_passed_through() -> None:
    with pytest.raises(SystemExit):
        cli.parse_args(["--input=x/**", "--size=64", "--encoding=jpeg"])
    args, passthrough = cli.parse_args(["--input=x/**", "--size=64", "--runner=DirectRunner", "--num_shards=3"])
    assert passthrough == ["--runner=DirectRunner", "--num_shards=3"] and args.resize == 128 and args.size == (64, 64)
