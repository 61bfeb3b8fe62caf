"""The compare chart: a bar panel per measured quantity, size against speed, and the recommendation, in one PNG."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from cropshard.tools.compare.measure import ReaderSettings, VariantRow
from cropshard.tools.compare.plan import LAYOUT_TITLES, LAYOUTS
from cropshard.tools.compare.recommend import ratio_text, share_text

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
    ax.set_title(title, fontsize=13, fontweight="bold")
    ax.set_ylabel(ylabel, fontsize=10)
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
    _style_axis(ax, "Reader peak RSS", "MiB (grey: before reading)", names)


def _tradeoff_panel(ax: Any, rows: Sequence[VariantRow], names: Sequence[str], colours: Sequence[str]) -> None:
    speeds = [r.reader_images_per_second or 0 for r in rows]
    sizes = [r.bytes_per_image / 1024 for r in rows]
    ax.scatter(sizes, speeds, s=140, c=colours, edgecolors="black", linewidths=0.8, zorder=3)
    for name, size_kib, speed in zip(names, sizes, speeds, strict=True):
        ax.annotate(name, (size_kib, speed), xytext=(8, 6), textcoords="offset points", fontsize=10.5)
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)
    ax.set_title("Trade-off: size vs reader speed", fontsize=13, fontweight="bold")
    ax.set_xlabel("KiB per image (log scale; left is smaller)", fontsize=10)
    ax.set_ylabel("images per second (up is faster)", fontsize=10)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _annotated_bars(ax: Any, values: Sequence[float | None], labels: Sequence[str], log: bool, colours: Sequence[str]) -> None:
    """Bars with a text label each; an unknown value (None) is an empty bar labelled '?'."""
    shown = [v if v is not None else 0 for v in values]
    bars = ax.bar(range(len(values)), shown, color=colours, edgecolor="black", linewidth=0.6)
    if log:
        ax.set_yscale("log")
    for bar, value, label in zip(bars, values, labels, strict=True):
        y = bar.get_height() if value else (ax.get_ylim()[0] if log else 0)
        ax.annotate(label if value is not None else "?", (bar.get_x() + bar.get_width() / 2, y), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9.5)
    ax.margins(y=0.22)


def _coverage_panels(windows_ax: Any, context_ax: Any, rows: Sequence[VariantRow], names: Sequence[str], colours: Sequence[str]) -> None:
    """Training windows per source image (log; labelled with their share of the full images' windows), and context kept."""
    crops = sorted({r.coverage_crop for r in rows if r.coverage_crop})
    _annotated_bars(windows_ax, [r.windows_per_image for r in rows],
                    [f"{r.windows_per_image or 0:,.0f} ({share_text(r.window_share) if r.window_share is not None else '?'}; "
                     f"RRC {share_text(r.rrc_window_share) if r.rrc_window_share is not None else '?'})" for r in rows],
                    True, colours)
    _style_axis(windows_ax, "Training windows per source image", "distinct windows (log scale)", names)
    windows_ax.set_xlabel(f"in brackets: share of the windows on the full images, and of their random-resized windows (RRC); crop: {', '.join(crops)}", fontsize=9.5)
    _annotated_bars(context_ax, [None if r.context_kept is None else 100 * r.context_kept for r in rows],
                    [f"{share_text(r.context_kept or 0)} at {ratio_text(r.resolution or 0)}x res." for r in rows], False, colours)
    _style_axis(context_ax, "Context kept", "% of each source image's area", names)


def _accuracy_panel(ax: Any, rows: Sequence[VariantRow], names: Sequence[str], colours: Sequence[str]) -> None:
    """--train: mean held-out accuracy with the seed standard deviation, and each seed's run as a dot."""
    if all(r.train_accuracy is None for r in rows):
        ax.text(0.5, 0.5, "not measured:\nrun compare with --train", ha="center", va="center", fontsize=12, color="#555555",
                transform=ax.transAxes)
        ax.set_yticks([])
        _style_axis(ax, "Proxy model accuracy (--train)", "held-out accuracy, %", names)
        return
    means = [100 * (r.train_accuracy or 0) for r in rows]
    ax.bar(range(len(rows)), means, yerr=[100 * (r.train_accuracy_sd or 0) for r in rows], capsize=5, color=colours,
           edgecolor="black", linewidth=0.6)
    for i, r in enumerate(rows):
        ax.scatter([i] * len(r.train_accuracies), [100 * a for a in r.train_accuracies], s=14, color="black", zorder=3)
        ax.annotate(f"{means[i]:.0f}%", (i, means[i]), xytext=(8, 3), textcoords="offset points", fontsize=10)
    ax.set_ylim(0, 112)  # room for the labels of 100% bars
    seeds = max(len(r.train_seeds) for r in rows)
    _style_axis(ax, "Proxy model accuracy (--train)", "held-out accuracy, %", names)
    ax.set_xlabel(f"bar: mean; line: ± standard deviation; dots: the {seeds} seeds", fontsize=9.5)


def _bullets(recommendation: Sequence[str], width: int) -> str:
    return "\n".join(textwrap.fill(sentence, width, initial_indent="\u2022 ", subsequent_indent="   ", break_on_hyphens=False) for sentence in recommendation)


def _recommendation_band(ax: Any, recommendation: Sequence[str]) -> Any:
    """The recommendation as bullets at 11 pt, 180 characters a line; returns the text (see _fit_band)."""
    ax.axis("off")
    ax.text(0.0, 1.0, "What the numbers say", fontsize=14, fontweight="bold", va="top", transform=ax.transAxes)
    return ax.text(0.0, 0.86, _bullets(recommendation, 180), fontsize=11, va="top", transform=ax.transAxes, linespacing=1.45)


def _fit_band(fig: Any, text: Any, recommendation: Sequence[str]) -> None:
    """Shrink the recommendation (never crop it) until it ends inside the figure, wrapping it wider as it shrinks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    size = 11.0
    while size > 5.5 and text.get_window_extent(renderer).y0 < 4:  # display pixels above the bottom edge
        size *= 0.94
        text.set_fontsize(size)
        text.set_text(_bullets(recommendation, int(180 * 11 / size)))


def write_chart(rows: Sequence[VariantRow], recommendation: Sequence[str], title: str, output: str) -> None:
    """Bars per variant for every measured quantity, plus the recommendation, in one PNG."""
    # The object API, not pyplot: no global backend switch or figure registry for library callers.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [r.name for r in rows]
    colours = bar_colours(rows)
    # Two rows of panels, then the recommendation across the full width (it is the point of the chart).
    fig = Figure(figsize=(19, 14))
    grid = fig.add_gridspec(4, 3, height_ratios=(1, 1, 1, 1.05))
    axes = {(row, col): fig.add_subplot(grid[row, col]) for row in range(3) for col in range(3)}
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
    _coverage_panels(axes[2, 0], axes[2, 1], rows, names, colours)
    _accuracy_panel(axes[2, 2], rows, names, colours)
    band = _recommendation_band(fig.add_subplot(grid[3, :]), recommendation)

    fig.suptitle(title, fontsize=15, fontweight="bold")
    layouts = {r.layout for r in rows}
    handles = [Patch(facecolor=LAYOUT_COLOURS[k][0], edgecolor="black",
                     label=LAYOUT_TITLES[k] + (" (read as is)" if k == "precrop" else " (random crops on the fly)"))
               for k in LAYOUTS if k in layouts]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.963), ncol=len(handles), fontsize=12, frameon=False)
    fig.tight_layout(rect=(0.005, 0, 0.995, 0.935), h_pad=2.0, w_pad=2.5)
    _fit_band(fig, band, recommendation)
    fig.savefig(output, dpi=100, facecolor="white")
