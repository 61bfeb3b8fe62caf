"""`cropshard compare`: does storing cropped images hurt me? Measured on your own images.

Builds (through `pipeline.build.run`) or reuses these variants of the same input:

    precrop-<enc>       pre-cropped (center crop of --size) for each of --encodings     read plainly
    full-<enc>          whole images (--crop none) for each of --full-encodings         random crops on the fly
    resized<S>-<enc>    whole images downscaled to shorter side S (--resize)             random crops on the fly

and measures for each: bytes on disk (per image and total), build time, reader images/s and
the reader's peak RSS. The reader runs in a fresh subprocess per variant (`python -m
tools.compare --measure-reader ...`) so its peak RSS is that variant's alone and no variant
warms another's caches inside TensorFlow. Results: a table on stdout, compare.json, a PNG
chart, and a recommendation whose every number comes from the measurements.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

from cropshard.reader.metadata import DatasetError, DatasetInfo, load_info
from cropshard.tools import human_bytes

COMPARE_FORMAT_VERSION = 1
LAYOUTS = ("precrop", "full", "resized")
LAYOUT_TITLES = {"precrop": "pre-cropped", "full": "full images", "resized": "downscaled full images"}
# Build options compare sets itself per variant; passing them through would silently change a variant.
OWNED_BUILD_OPTIONS = ("--input", "--manifest", "--output", "--crop", "--size", "--resize", "--encoding", "--jpeg_quality",
                       "--box", "--crops_per_image", "--stride", "--overwrite")
ROW_FIELDS = (
    "name", "layout", "encoding", "path", "reused", "stored_shape", "resize", "num_images", "num_examples",
    "total_bytes", "bytes_per_image", "build_seconds", "reader_split", "reader_crop", "reader_batch_size",
    "reader_batches", "reader_images", "reader_seconds", "reader_images_per_second", "reader_runs_images_per_second", "reader_peak_rss_bytes",
    "reader_baseline_rss_bytes", "other_cpu_share",
)
BUSY_SHARE = 0.2  # other processes using more than this share of all CPUs during a measurement earn a caution


@dataclasses.dataclass
class Variant:
    name: str
    layout: str  # precrop | full | resized
    encoding: str
    path: str
    build_args: list[str] | None = None  # None: an existing dataset, reused as is
    resize: int | None = None


# ---- variants ---------------------------------------------------------------------------------


def plan_variants(
    workdir: str, size: tuple[int, int], encodings: Sequence[str], full_encodings: Sequence[str], resize: int | None, layouts: Sequence[str]
) -> list[Variant]:
    """The variants to build under `workdir`, one sub-directory each."""
    crop = f"{size[0]}x{size[1]}"
    variants = []
    if "precrop" in layouts:
        for enc in encodings:
            variants.append(Variant(f"precrop-{enc}", "precrop", enc, os.path.join(workdir, f"precrop-{enc}"),
                                    ["--crop=center", f"--size={crop}", f"--encoding={enc}"]))
    if "full" in layouts:
        for enc in full_encodings:
            variants.append(Variant(f"full-{enc}", "full", enc, os.path.join(workdir, f"full-{enc}"), ["--crop=none", f"--encoding={enc}"]))
    if "resized" in layouts and resize:
        for enc in full_encodings:
            # `original` means "the source bytes", which a downscale cannot keep: store resized images as JPEG.
            stored = "jpeg" if enc == "original" else enc
            name = f"resized{resize}-{stored}"
            if any(v.name == name for v in variants):
                continue
            variants.append(Variant(name, "resized", stored, os.path.join(workdir, name),
                                    ["--crop=none", f"--resize={resize}", f"--encoding={stored}"], resize=resize))
    return variants


def variant_from_dataset(path: str, info: DatasetInfo) -> Variant:
    """An existing dataset as a variant; its kind comes from its own dataset_info.json."""
    resize = info.crop.get("resize")
    if info.is_precropped:
        layout, name = "precrop", f"precrop-{info.encoding}"
    elif resize:
        layout, name = "resized", f"resized{resize}-{info.encoding}"
    else:
        layout, name = "full", f"full-{info.encoding}"
    return Variant(name, layout, info.encoding, path, None, resize)


def _unique_names(variants: list[Variant]) -> None:
    seen: dict[str, int] = {}
    for v in variants:
        seen[v.name] = seen.get(v.name, 0) + 1
    for v in variants:
        if seen[v.name] > 1:
            v.name = f"{v.name} ({os.path.basename(os.path.normpath(v.path))})"


# ---- reader measurement (child process) ---------------------------------------------------------


def _max_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def measure_reader(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in the child: images/s of reader.load over the timed batches after `spec['warmup']` untimed ones,
    this process's peak RSS, and the share of the CPUs other processes used meanwhile."""
    import tensorflow as tf  # noqa: F401 - imported before the baseline so it counts as baseline
    from cropshard import reader

    baseline = _max_rss_bytes()
    crop = spec.get("crop")
    ds = reader.load(
        spec["path"], spec["split"], batch_size=spec["batch_size"], crop=crop,
        crop_size=spec.get("crop_size") if crop else None, shuffle=True, repeat=True, seed=spec.get("seed"),
    )
    batches = iter(ds)
    for _ in range(spec["warmup"]):
        next(batches)
    # Time at least `batches` batches and at least `min_seconds`: a fast variant finishes 50 batches
    # in a tenth of a second, far too short to measure.
    images = count = 0
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    while count < spec["batches"] or time.perf_counter() - start < spec.get("min_seconds", 0.0):
        images += int(next(batches)[0].shape[0])
        count += 1
    seconds = time.perf_counter() - start
    cpu_after = _cpu_seconds()
    other = None
    if cpu_before and cpu_after and seconds > 0:
        # What the rest of the machine did meanwhile: busy CPU time minus this process's own.
        others = (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1])
        other = round(min(max(others / (seconds * (os.cpu_count() or 1)), 0.0), 1.0), 3)
    return {
        "images": images,
        "batches": count,
        "seconds": seconds,
        "images_per_second": images / seconds if seconds else 0.0,
        "peak_rss_bytes": _max_rss_bytes(),
        "baseline_rss_bytes": baseline,
        "other_cpu_share": other,
    }


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    import resource

    times = psutil.cpu_times()
    # guest time is already counted in user time on Linux; idle and iowait are not work.
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return busy, own.ru_utime + own.ru_stime


def run_reader_subprocess(spec: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """Measure in a fresh interpreter (see measure_reader); returns its JSON result."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The child must import this checkout's packages however the parent was started.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_repo_root(), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "cropshard.tools.compare", "--measure-reader", json.dumps(spec)],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"reader measurement of {spec['path']} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


# ---- recommendation (pure) ------------------------------------------------------------------


def _ratio(value: float) -> str:
    """About two significant figures, never '0.0': 722.2 -> '722', 17.98 -> '18', 6.12 -> '6.1', 1.814 -> '1.81', 0.012 -> '0.012'."""
    if value >= 9.95:
        return f"{value:.0f}"
    if value >= 1.95:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.95 else f"{value:.2g}"


def _faster(ratio: float) -> str:
    """Speed ratio a/b as words: '1.4x faster', '2.0x slower', 'at the same speed'."""
    if ratio <= 0:
        return "with no measurable throughput"
    if abs(ratio - 1) < 0.05:
        return "at about the same speed"
    return f"{_ratio(ratio)}x faster" if ratio > 1 else f"{_ratio(1 / ratio)}x slower"


def recommend(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences derived only from the measured rows (see ROW_FIELDS)."""
    busy = max((r["other_cpu_share"] for r in rows if r.get("other_cpu_share") is not None), default=0.0)
    rows = [r for r in rows if r.get("reader_images_per_second")]
    if not rows:
        return ["No variant was measured; nothing to recommend."]
    ips = {r["name"]: float(r["reader_images_per_second"]) for r in rows}
    bpi = {r["name"]: float(r["bytes_per_image"]) for r in rows}
    by_layout: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_layout.setdefault(r["layout"], []).append(r)
    out = []

    pre = by_layout.get("precrop", [])
    fastest_pre = max(pre, key=lambda r: ips[r["name"]]) if pre else None
    smallest_pre = min(pre, key=lambda r: bpi[r["name"]]) if pre else None
    if len(pre) >= 2:
        big = max(pre, key=lambda r: bpi[r["name"]])
        small = smallest_pre
        out.append(
            f"{big['encoding']} pre-crops are {_ratio(bpi[big['name']] / bpi[small['name']])}x larger than {small['encoding']}"
            f" pre-crops and read {_faster(ips[big['name']] / ips[small['name']])}"
            f" ({ips[big['name']]:,.0f} vs {ips[small['name']]:,.0f} images/s)."
        )
    for layout in ("full", "resized"):
        group = by_layout.get(layout, [])
        if not group:
            continue
        best = max(group, key=lambda r: ips[r["name"]])
        what = "full images" if layout == "full" else f"images downscaled to shorter side {best.get('resize')}"
        sentence = f"{what.capitalize()} ({best['name']}) keep random-crop augmentation"
        if fastest_pre and smallest_pre:
            sentence += (
                f" but read {_faster(ips[best['name']] / ips[fastest_pre['name']])} than {fastest_pre['name']}"
                f" and take {_ratio(bpi[best['name']] / bpi[smallest_pre['name']])}x the bytes per image of {smallest_pre['name']}."
            )
        else:
            sentence += f" at {ips[best['name']]:,.0f} images/s and {human_bytes(bpi[best['name']])} per image."
        out.append(sentence)
    full, resized = by_layout.get("full", []), by_layout.get("resized", [])
    for small_row in resized:
        same = [r for r in full if r["encoding"] == small_row["encoding"]] or full
        if same:
            ref = max(same, key=lambda r: ips[r["name"]])
            out.append(
                f"Downscaling to shorter side {small_row.get('resize')} ({small_row['name']} vs {ref['name']}) reads"
                f" {_faster(ips[small_row['name']] / ips[ref['name']])} and stores {_ratio(bpi[ref['name']] / bpi[small_row['name']])}x"
                " fewer bytes per image."
            )

    slowest = min(rows, key=lambda r: ips[r["name"]])
    fastest = max(rows, key=lambda r: ips[r["name"]])
    smallest = min(rows, key=lambda r: bpi[r["name"]])
    out.append(
        f"Every variant reads at least {ips[slowest['name']]:,.0f} images/s on this machine ({slowest['name']} is the slowest):"
        f" if training consumes fewer images/s than that, the reader is not the bottleneck and the smallest variant,"
        f" {smallest['name']} ({human_bytes(bpi[smallest['name']])} per image), costs no speed; if it consumes more,"
        f" {fastest['name']} ({ips[fastest['name']]:,.0f} images/s) leaves the most headroom."
    )
    rss = {r["name"]: float(r["reader_peak_rss_bytes"]) for r in rows if r.get("reader_peak_rss_bytes")}
    if len(rss) >= 2:
        low, high = min(rss, key=rss.get), max(rss, key=rss.get)
        if rss[high] / rss[low] >= 1.25:
            out.append(
                f"Reader peak memory ranges from {human_bytes(rss[low])} ({low}) to {human_bytes(rss[high])} ({high}),"
                f" {_ratio(rss[high] / rss[low])}x."
            )
        else:
            out.append(f"Reader peak memory is similar for every variant ({human_bytes(rss[low])} to {human_bytes(rss[high])}).")
    if busy > BUSY_SHARE:
        # Other processes competing for the CPUs slow every variant unevenly: say so rather than hide it.
        out.append(
            f"Caution: other processes used up to {busy:.0%} of the CPUs during the fastest reader runs; speeds are lower"
            " and ratios noisier than on an idle machine. Re-run on an idle machine before deciding on close calls."
        )
    return [sentence[0].upper() + sentence[1:] for sentence in out]


# ---- presentation -------------------------------------------------------------------------


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (f"{'variant':<22}{'stored':>14}{'bytes/image':>13}{'total':>12}{'build':>9}  {'reader':<22}"
              f"{'images/s':>10}{'peak RSS':>12}")
    lines = [header, "-" * len(header)]
    for r in rows:
        build = "reused" if r["build_seconds"] is None else f"{r['build_seconds']:.1f} s"
        rss = human_bytes(r["reader_peak_rss_bytes"]) if r.get("reader_peak_rss_bytes") else "-"
        speed = f"{r['reader_images_per_second']:,.0f}" if r.get("reader_images_per_second") is not None else "-"
        lines.append(
            f"{r['name']:<22}{r['stored_shape']:>14}{human_bytes(r['bytes_per_image']):>13}{human_bytes(r['total_bytes']):>12}"
            f"{build:>9}  {r['reader_crop']:<22}{speed:>10}{rss:>12}"
        )
    return "\n".join(lines)


_LAYOUT_COLOURS = {"precrop": ("#1f5fa8", "#6aa6e0"), "full": ("#c4561b", "#f0a066"), "resized": ("#2a8a3e", "#7fcc8a")}


def _colour(row: dict[str, Any], index_in_layout: int) -> str:
    shades = _LAYOUT_COLOURS.get(row["layout"], ("#666666", "#aaaaaa"))
    return shades[index_in_layout % len(shades)]


def write_chart(result: dict[str, Any], output: str) -> None:
    """Bars per variant for every measured quantity, plus the recommendation, in one PNG."""
    # The object API, not pyplot: no global backend switch or figure registry for library callers.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = result["variants"]
    names = [r["name"] for r in rows]
    seen: dict[str, int] = {}
    colours = []
    for r in rows:
        colours.append(_colour(r, seen.get(r["layout"], 0)))
        seen[r["layout"]] = seen.get(r["layout"], 0) + 1
    mib = 2.0**20

    # Two rows of panels, then the recommendation across the full width (it is the point of the chart).
    fig = Figure(figsize=(19, 14))
    grid = fig.add_gridspec(3, 3, height_ratios=(1, 1, 0.5))
    axes = [[fig.add_subplot(grid[row, col]) for col in range(3)] for row in range(2)]
    axes = {(row, col): axes[row][col] for row in range(2) for col in range(3)}
    panels = [
        (axes[0, 0], "Bytes on disk per image", "KiB per image (log scale)", [r["bytes_per_image"] / 1024 for r in rows], True, "{:,.1f}"),
        (axes[0, 1], "Total bytes on disk", "MiB (log scale)", [r["total_bytes"] / mib for r in rows], True, "{:,.2f}"),
        (axes[0, 2], "Build time", "seconds (wall clock)", [r["build_seconds"] for r in rows], False, "{:,.1f}"),
        (axes[1, 0], "Reader throughput", "images per second (higher is better)", [r["reader_images_per_second"] for r in rows], False, "{:,.0f}"),
    ]
    x = list(range(len(rows)))
    for ax, title, ylabel, values, log, fmt in panels:
        if all(v is None for v in values):
            ax.text(0.5, 0.5, "not measured:\nevery variant was an existing dataset", ha="center", va="center",
                    fontsize=12, color="#555555", transform=ax.transAxes)
            ax.set_yticks([])
            _style_axis(ax, title, ylabel, names)
            continue
        shown = [v if v is not None else 0 for v in values]
        bars = ax.bar(x, shown, color=colours, edgecolor="black", linewidth=0.6)
        if log:
            ax.set_yscale("log")
        for bar, value in zip(bars, values, strict=True):
            text = "reused" if value is None else fmt.format(value)
            y = bar.get_height() if value else (ax.get_ylim()[0] if log else 0)
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=10)
        ax.margins(y=0.18)
        _style_axis(ax, title, ylabel, names)

    ax = axes[1, 1]
    base = [(r.get("reader_baseline_rss_bytes") or 0) / mib for r in rows]
    peak = [(r.get("reader_peak_rss_bytes") or 0) / mib for r in rows]
    ax.bar(x, base, color="#d0d0d0", edgecolor="black", linewidth=0.6)
    ax.bar(x, [p - b for p, b in zip(peak, base, strict=True)], bottom=base, color=colours, edgecolor="black", linewidth=0.6)
    for i, p in enumerate(peak):
        ax.annotate(f"{p:,.0f}", (i, p), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=10)
    ax.margins(y=0.18)
    _style_axis(ax, "Reader peak RSS", "MiB (grey: Python + TensorFlow before reading)", names)

    ax = axes[1, 2]
    speeds = [r["reader_images_per_second"] or 0 for r in rows]
    sizes = [r["bytes_per_image"] / 1024 for r in rows]
    ax.scatter(sizes, speeds, s=140, c=colours, edgecolors="black", linewidths=0.8, zorder=3)
    for name, size_kib, speed in zip(names, sizes, speeds, strict=True):
        ax.annotate(name, (size_kib, speed), xytext=(8, 6), textcoords="offset points", fontsize=10.5)
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)
    ax.set_title("Trade-off: size vs reader speed", fontsize=14, fontweight="bold")
    ax.set_xlabel("KiB per image (log scale; left is smaller)", fontsize=11)
    ax.set_ylabel("images per second (up is faster)", fontsize=11)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    text_ax = fig.add_subplot(grid[2, :])
    text_ax.axis("off")
    text_ax.text(0.0, 1.0, "What the numbers say", fontsize=15, fontweight="bold", va="top", transform=text_ax.transAxes)
    bullets = "\n".join(textwrap.fill(sentence, 165, initial_indent="\u2022 ", subsequent_indent="   ") for sentence in result["recommendation"])
    lines = bullets.count("\n") + 1
    # 12 lines fit the band at 12 pt; shrink (not crop) when more variants make more sentences.
    text_ax.text(0.0, 0.82, bullets, fontsize=12 if lines <= 12 else max(7.0, 12 * 12 / lines), va="top",
                 transform=text_ax.transAxes, linespacing=1.45)

    reader_cfg = result["reader"]
    size = "x".join(map(str, result["size"]))
    fig.suptitle(
        f"cropshard compare: {rows[0]['num_images'] if rows else 0} images, crop {size}; reader: split '{reader_cfg['split']}',"
        f" batch {reader_cfg['batch_size']}, timed >= {reader_cfg['batches']} batches and >= {reader_cfg['min_seconds']:g} s"
        f" after {reader_cfg['warmup']} warm-up, best of {reader_cfg['repeats']}"
        f" ({result['machine']['cpus']} CPUs)",
        fontsize=15, fontweight="bold",
    )
    handles = [Patch(facecolor=_LAYOUT_COLOURS[k][0], edgecolor="black", label=LAYOUT_TITLES[k] + (" (read as is)" if k == "precrop" else " (random crops on the fly)"))
               for k in LAYOUTS if k in seen]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.963), ncol=len(handles), fontsize=12, frameon=False)
    fig.tight_layout(rect=(0.005, 0, 0.995, 0.935), h_pad=2.0, w_pad=2.5)
    fig.savefig(output, dpi=100, facecolor="white")


def _style_axis(ax: Any, title: str, ylabel: str, names: Sequence[str]) -> None:
    ax.set_title(title, fontsize=14, fontweight="bold")
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=11)
    ax.tick_params(axis="y", labelsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# ---- orchestration --------------------------------------------------------------------------


def reader_spec(variant: Variant, info: DatasetInfo, args: argparse.Namespace) -> dict[str, Any]:
    """What the child measures: a plain read of pre-crops, random crops of --size from full images."""
    split = args.read_split if args.read_split in info.splits else next(
        (name for name, s in sorted(info.splits.items()) if s.num_examples), None)
    if split is None:
        raise DatasetError(f"{variant.path} has no examples to read")
    crop = None if info.is_precropped else "random"
    return {
        "path": variant.path, "split": split, "batch_size": args.batch_size, "batches": args.batches, "warmup": args.warmup,
        "min_seconds": args.min_seconds, "crop": crop, "crop_size": list(args.size) if crop else None, "seed": args.seed,
    }


def summarize(variant: Variant, info: DatasetInfo, build_seconds: float | None, spec: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row: sizes from the metadata, reader numbers from the fastest run (other load only ever slows
    a run down, so the best of several is the least disturbed), peak RSS the largest of any run."""
    best = max(runs, key=lambda run: run["images_per_second"])
    total = sum(s.num_bytes for s in info.splits.values())
    crop_size = spec["crop_size"]
    return {
        "name": variant.name,
        "layout": variant.layout,
        "encoding": info.encoding,
        "path": variant.path,
        "reused": build_seconds is None,
        "stored_shape": "x".join(map(str, info.image_shape)) if info.image_shape else "varies",
        "resize": info.crop.get("resize"),
        "num_images": info.num_images_written,
        "num_examples": info.num_examples,
        "total_bytes": total,
        "bytes_per_image": total / info.num_examples if info.num_examples else 0.0,
        "build_seconds": build_seconds,
        "reader_split": spec["split"],
        "reader_crop": "plain read" if spec["crop"] is None else f"random crop {crop_size[0]}x{crop_size[1]}",
        "reader_batch_size": spec["batch_size"],
        "reader_batches": best["batches"],
        "reader_images": best["images"],
        "reader_seconds": best["seconds"],
        "reader_images_per_second": best["images_per_second"],
        "reader_runs_images_per_second": [run["images_per_second"] for run in runs],
        "reader_peak_rss_bytes": max(run["peak_rss_bytes"] for run in runs),
        "reader_baseline_rss_bytes": best["baseline_rss_bytes"],
        "other_cpu_share": best["other_cpu_share"],
    }


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    from cropshard.transforms.crop import parse_size
    from cropshard.transforms.encode import ENCODINGS

    parser = argparse.ArgumentParser(
        prog="cropshard compare",
        allow_abbrev=False,
        description="Build (or reuse) pre-cropped and full-image variants of the same input and measure size, build time, "
        "reader throughput and reader memory. Unrecognised --options (Beam's --runner, --direct_num_workers, Dataflow "
        "options, and build options such as --split, --num_shards, --compression) are passed to every build.",
    )
    parser.add_argument("--input", action="append", default=[], metavar="GLOB", help="images to build from (as for cropshard build; repeatable)")
    parser.add_argument("--manifest", default=None, help="build from a manifest instead of --input")
    parser.add_argument("--dataset", action="append", default=[], metavar="PATH",
                        help="an existing dataset to measure as is (repeatable); its kind comes from its dataset_info.json")
    parser.add_argument("--size", type=parse_size, required=True, metavar="HxW", help="the training crop, e.g. 128x128")
    parser.add_argument("--encodings", type=_csv, default=["raw", "jpeg"], help="encodings for the pre-cropped variants (default raw,jpeg)")
    parser.add_argument("--full-encodings", type=_csv, default=["jpeg"], help="encodings for the full-image variants (default jpeg)")
    parser.add_argument("--resize", type=int, default=None, metavar="S",
                        help="shorter side of the downscaled full-image variant (default: 2x the longer crop side; 0 skips it)")
    parser.add_argument("--layouts", type=_csv, default=list(LAYOUTS), help=f"which kinds of variant to build (default {','.join(LAYOUTS)})")
    parser.add_argument("--jpeg_quality", type=int, default=90, help="JPEG quality for every JPEG variant (default 90)")
    parser.add_argument("--workdir", default="cropshard-compare", help="where the variants are built, one folder each (default ./cropshard-compare)")
    parser.add_argument("--json", default=None, help="results file (default WORKDIR/compare.json)")
    parser.add_argument("--chart", default=None, help="chart PNG (default WORKDIR/compare.png)")
    parser.add_argument("--read-split", default="train", help="split the reader reads (default train, else the first non-empty split)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=50, help="timed batches per variant, at least")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="keep timing batches for at least this long (default 3)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (tracing, file opening, shuffle buffer, autotuning)")
    parser.add_argument("--repeats", type=int, default=3, help="reader runs per variant, round-robin; the fastest counts (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="reader seed (default: unseeded, the fast non-deterministic order)")
    args, passthrough = parser.parse_known_args(list(argv))
    for option in passthrough:
        flag = option.split("=", 1)[0]
        if flag in OWNED_BUILD_OPTIONS:
            parser.error(f"{flag} is set by compare for each variant; use compare's own options (--size, --encodings, --resize, ...)")
        if flag.startswith("-") and not flag.startswith("--"):
            parser.error(f"unknown option {option}")
    for enc in args.encodings + args.full_encodings:
        if enc not in ENCODINGS:
            parser.error(f"unknown encoding {enc!r}; choose from {', '.join(ENCODINGS)}")
    if "original" in args.encodings:
        parser.error("'original' keeps whole source files; it cannot be a pre-cropped encoding (use it in --full-encodings)")
    unknown = set(args.layouts) - set(LAYOUTS)
    if unknown:
        parser.error(f"unknown layouts {sorted(unknown)}; choose from {', '.join(LAYOUTS)}")
    if args.batch_size < 1 or args.batches < 1 or args.repeats < 1 or args.warmup < 0 or args.min_seconds < 0:
        parser.error("--batch-size, --batches and --repeats must be positive, --warmup and --min-seconds >= 0")
    if args.resize is None:
        args.resize = 2 * max(args.size)
    building = bool(args.input or args.manifest)
    if args.input and args.manifest:
        parser.error("give --input or --manifest, not both")
    if not building and not args.dataset:
        parser.error("give --input/--manifest to build variants, or --dataset PATH for existing ones")
    return args, passthrough


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Build/reuse, measure, and write JSON + chart; returns the JSON document."""
    from cropshard.pipeline.build import run as build_run

    args, passthrough = parse_args(argv)
    variants: list[Variant] = []
    for path in args.dataset:
        variants.append(variant_from_dataset(path, load_info(path)))
    if args.input or args.manifest:
        planned = plan_variants(args.workdir, args.size, args.encodings, args.full_encodings, args.resize or None, args.layouts)
        given = {v.name for v in variants}
        variants += [v for v in planned if v.name not in given]  # an explicitly given dataset replaces that build
    _unique_names(variants)
    source = [f"--input={pattern}" for pattern in args.input] + ([f"--manifest={args.manifest}"] if args.manifest else [])

    built: list[tuple[Variant, DatasetInfo, float | None, dict[str, Any]]] = []
    for variant in variants:
        build_seconds = None
        if variant.build_args is not None:
            print(f"building {variant.name} -> {variant.path}", file=sys.stderr, flush=True)
            build_argv = [*source, f"--output={variant.path}", *variant.build_args, f"--jpeg_quality={args.jpeg_quality}",
                          "--overwrite", *passthrough]
            result = build_run(build_argv, command_line=["cropshard", "build", *build_argv])
            info, build_seconds = result.info, result.wall_seconds
        else:
            info = load_info(variant.path)
        built.append((variant, info, build_seconds, reader_spec(variant, info, args)))

    # Round-robin over the variants, so a burst of load elsewhere hits one run of several variants
    # rather than every run of one.
    runs: list[list[dict[str, Any]]] = [[] for _ in built]
    for round_number in range(args.repeats):
        for index, (variant, _, _, spec) in enumerate(built):
            print(f"  reader run {round_number + 1}/{args.repeats} of {variant.name} ({spec['crop'] or 'plain'} read,"
                  f" batch {args.batch_size})", file=sys.stderr, flush=True)
            runs[index].append(run_reader_subprocess(spec))
    rows = [summarize(variant, info, seconds, spec, measured) for (variant, info, seconds, spec), measured in zip(built, runs, strict=True)]

    document = {
        "format_version": COMPARE_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command_line": ["cropshard", "compare", *argv],
        "input": list(args.input) or ([args.manifest] if args.manifest else []),
        "size": list(args.size),
        "resize": args.resize or None,
        "encodings": list(args.encodings),
        "full_encodings": list(args.full_encodings),
        "jpeg_quality": args.jpeg_quality,
        "build_options": passthrough,
        "reader": {"split": args.read_split, "batch_size": args.batch_size, "batches": args.batches, "min_seconds": args.min_seconds,
                   "warmup": args.warmup, "repeats": args.repeats, "seed": args.seed},
        "machine": _machine(),
        "variants": rows,
        "recommendation": recommend(rows),
    }
    json_path = args.json or os.path.join(args.workdir, "compare.json")
    chart_path = args.chart or os.path.join(args.workdir, "compare.png")
    for path in (json_path, chart_path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    write_chart(document, chart_path)
    document["_files"] = {"json": json_path, "chart": chart_path}
    return document


def _machine() -> dict[str, Any]:
    import tensorflow as tf

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "tensorflow": tf.__version__}


def main(argv: Sequence[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(argv)
    if argv[:1] == ["--measure-reader"]:
        print(json.dumps(measure_reader(json.loads(argv[1]))))
        return 0
    try:
        document = run(argv)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
        print(f"cropshard compare: error: {err}", file=sys.stderr)
        return 2
    print()
    print(format_table(document["variants"]))
    print()
    for sentence in document["recommendation"]:
        print(textwrap.fill(sentence, 110, subsequent_indent="  "))
    files = document["_files"]
    print(f"\nwrote {files['json']} and {files['chart']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

