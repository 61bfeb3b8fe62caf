"""The compare chart: a bar panel per measured quantity, size against speed, and the recommendation, in one PNG."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from cropshard.tools.compare.measure import ReaderSettings, VariantRow
from cropshard.tools.compare.plan import LAYOUT_TITLES, LAYOUTS

LAYOUT_COLOURS = {"precrop": ("#1f5fa8", "#6aa6e0"), "full": ("#c4561b", "#f0a066"), "resized": ("#2a8a3e", "#7fcc8a")}
_MIB = 2.0**20


def bar_colours(rows: Sequence[VariantRow]) -> list[str]:
    """A colour per row: its layout's colour, alternating shades within one layout."""
    seen: dict[str, int] = {}
    colours = []
    for r in rows:
        shades = LAYOUT_COLOURS.get(r.layout, ("#666666", "#aaaaaa"))
        colours.append(shades[seen.get(r.layout, 0) % len(shades)])
        seen[r.layout] = seen.get(r.layout, 0) + 1
    return colours


def chart_title(rows: Sequence[VariantRow], settings: ReaderSettings, size: Sequence[int], cpus: int | None) -> str:
    return (
        f"cropshard compare: {rows[0].num_images if rows else 0} images, crop {'x'.join(map(str, size))}; reader: split '{settings.split}',"
        f" batch {settings.batch_size}, timed >= {settings.batches} batches and >= {settings.min_seconds:g} s"
        f" after {settings.warmup} warm-up, best of {settings.repeats}"
        f" ({cpus} CPUs)"
    )


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


def _bar_panel(ax: Any, title: str, ylabel: str, values: Sequence[float | None], log: bool, fmt: str,
               names: Sequence[str], colours: Sequence[str]) -> None:
    """One bar per variant; None (a reused dataset's build time) is an empty bar labelled 'reused'."""
    if all(v is None for v in values):
        ax.text(0.5, 0.5, "not measured:\nevery variant was an existing dataset", ha="center", va="center",
                fontsize=12, color="#555555", transform=ax.transAxes)
        ax.set_yticks([])
        _style_axis(ax, title, ylabel, names)
        return
    shown = [v if v is not None else 0 for v in values]
    bars = ax.bar(range(len(values)), shown, color=colours, edgecolor="black", linewidth=0.6)
    if log:
        ax.set_yscale("log")
    for bar, value in zip(bars, values, strict=True):
        text = "reused" if value is None else fmt.format(value)
        y = bar.get_height() if value else (ax.get_ylim()[0] if log else 0)
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=10)
    ax.margins(y=0.18)
    _style_axis(ax, title, ylabel, names)


def _rss_panel(ax: Any, rows: Sequence[VariantRow], names: Sequence[str], colours: Sequence[str]) -> None:
    """Peak RSS stacked on the interpreter's baseline (grey)."""
    x = list(range(len(rows)))
    base = [(r.reader_baseline_rss_bytes or 0) / _MIB for r in rows]
    peak = [(r.reader_peak_rss_bytes or 0) / _MIB for r in rows]
    ax.bar(x, base, color="#d0d0d0", edgecolor="black", linewidth=0.6)
    ax.bar(x, [p - b for p, b in zip(peak, base, strict=True)], bottom=base, color=colours, edgecolor="black", linewidth=0.6)
    for i, p in enumerate(peak):
        ax.annotate(f"{p:,.0f}", (i, p), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=10)
    ax.margins(y=0.18)
    _style_axis(ax, "Reader peak RSS", "MiB (grey: Python + TensorFlow before reading)", names)


def _tradeoff_panel(ax: Any, rows: Sequence[VariantRow], names: Sequence[str], colours: Sequence[str]) -> None:
    speeds = [r.reader_images_per_second or 0 for r in rows]
    sizes = [r.bytes_per_image / 1024 for r in rows]
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


def _recommendation_band(ax: Any, recommendation: Sequence[str]) -> None:
    ax.axis("off")
    ax.text(0.0, 1.0, "What the numbers say", fontsize=15, fontweight="bold", va="top", transform=ax.transAxes)
    bullets = "\n".join(textwrap.fill(sentence, 165, initial_indent="\u2022 ", subsequent_indent="   ") for sentence in recommendation)
    lines = bullets.count("\n") + 1
    # 12 lines fit the band at 12 pt; shrink (not crop) when more variants make more sentences.
    ax.text(0.0, 0.82, bullets, fontsize=12 if lines <= 12 else max(7.0, 12 * 12 / lines), va="top",
            transform=ax.transAxes, linespacing=1.45)


def write_chart(rows: Sequence[VariantRow], recommendation: Sequence[str], title: str, output: str) -> None:
    """Bars per variant for every measured quantity, plus the recommendation, in one PNG."""
    # The object API, not pyplot: no global backend switch or figure registry for library callers.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [r.name for r in rows]
    colours = bar_colours(rows)
    # Two rows of panels, then the recommendation across the full width (it is the point of the chart).
    fig = Figure(figsize=(19, 14))
    grid = fig.add_gridspec(3, 3, height_ratios=(1, 1, 0.5))
    axes = {(row, col): fig.add_subplot(grid[row, col]) for row in range(2) for col in range(3)}
    panels = [
        (axes[0, 0], "Bytes on disk per image", "KiB per image (log scale)", [r.bytes_per_image / 1024 for r in rows], True, "{:,.1f}"),
        (axes[0, 1], "Total bytes on disk", "MiB (log scale)", [r.total_bytes / _MIB for r in rows], True, "{:,.2f}"),
        (axes[0, 2], "Build time", "seconds (wall clock)", [r.build_seconds for r in rows], False, "{:,.1f}"),
        (axes[1, 0], "Reader throughput", "images per second (higher is better)", [r.reader_images_per_second for r in rows], False, "{:,.0f}"),
    ]
    for ax, panel_title, ylabel, values, log, fmt in panels:
        _bar_panel(ax, panel_title, ylabel, values, log, fmt, names, colours)
    _rss_panel(axes[1, 1], rows, names, colours)
    _tradeoff_panel(axes[1, 2], rows, names, colours)
    _recommendation_band(fig.add_subplot(grid[2, :]), recommendation)

    fig.suptitle(title, fontsize=15, fontweight="bold")
    layouts = {r.layout for r in rows}
    handles = [Patch(facecolor=LAYOUT_COLOURS[k][0], edgecolor="black",
                     label=LAYOUT_TITLES[k] + (" (read as is)" if k == "precrop" else " (random crops on the fly)"))
               for k in LAYOUTS if k in layouts]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.963), ncol=len(handles), fontsize=12, frameon=False)
    fig.tight_layout(rect=(0.005, 0, 0.995, 0.935), h_pad=2.0, w_pad=2.5)
    fig.savefig(output, dpi=100, facecolor="white")
