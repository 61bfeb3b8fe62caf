"""The recommendation: sentences whose every number comes from the measured rows (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from cropshard.tools import human_bytes
from cropshard.tools.compare.measure import VariantRow

BUSY_SHARE = 0.2  # other processes using more than this share of all CPUs during a measurement earn a caution
SIMILAR_MEMORY = 1.25  # peak RSS within this factor across variants counts as "similar"


def ratio_text(value: float) -> str:
    """About two significant figures, never '0.0': 722.2 -> '722', 17.98 -> '18', 6.12 -> '6.1', 1.814 -> '1.81', 0.012 -> '0.012'."""
    if value >= 9.95:
        return f"{value:.0f}"
    if value >= 1.95:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.95 else f"{value:.2g}"


def speed_text(ratio: float) -> str:
    """Speed ratio a/b as words: '1.4x faster', '2.0x slower', 'at about the same speed'."""
    if ratio <= 0:
        return "with no measurable throughput"
    if abs(ratio - 1) < 0.05:
        return "at about the same speed"
    return f"{ratio_text(ratio)}x faster" if ratio > 1 else f"{ratio_text(1 / ratio)}x slower"


def share_text(value: float) -> str:
    """A share as a percentage to two significant figures, or as '1 in N' below 0.01%:
    1.0 -> '100%', 0.25 -> '25%', 0.000918 -> '0.092%', 1.9e-06 -> '1 in 526,316'."""
    percent = 100 * value
    if percent >= 9.95 or percent == 0:
        return f"{percent:.0f}%"
    return f"{percent:.2g}%" if percent >= 0.00995 else f"1 in {1 / value:,.0f}"


def _fastest(rows: Sequence[VariantRow]) -> VariantRow:
    return max(rows, key=lambda r: r.reader_images_per_second)


def _smallest(rows: Sequence[VariantRow]) -> VariantRow:
    return min(rows, key=lambda r: r.bytes_per_image)


def _precrop_encodings(pre: Sequence[VariantRow]) -> list[str]:
    """The largest pre-crop encoding against the smallest."""
    if len(pre) < 2:
        return []
    big, small = max(pre, key=lambda r: r.bytes_per_image), _smallest(pre)
    return [
        f"{big.encoding} pre-crops are {ratio_text(big.bytes_per_image / small.bytes_per_image)}x larger than {small.encoding}"
        f" pre-crops and read {speed_text(big.reader_images_per_second / small.reader_images_per_second)}"
        f" ({big.reader_images_per_second:,.0f} vs {small.reader_images_per_second:,.0f} images/s)."
    ]


def _full_images(group: Sequence[VariantRow], layout: str, pre: Sequence[VariantRow]) -> str:
    """The fastest full-image variant of one layout, against the pre-crops when there are any."""
    best = _fastest(group)
    what = "full images" if layout == "full" else f"images downscaled to shorter side {best.resize}"
    sentence = f"{what.capitalize()} ({best.name}) keep random-crop augmentation"
    if not pre:
        return sentence + f" at {best.reader_images_per_second:,.0f} images/s and {human_bytes(best.bytes_per_image)} per image."
    fastest_pre, smallest_pre = _fastest(pre), _smallest(pre)
    return sentence + (
        f" but read {speed_text(best.reader_images_per_second / fastest_pre.reader_images_per_second)} than {fastest_pre.name}"
        f" and take {ratio_text(best.bytes_per_image / smallest_pre.bytes_per_image)}x the bytes per image of {smallest_pre.name}."
    )


def _downscaling(resized: Sequence[VariantRow], full: Sequence[VariantRow]) -> list[str]:
    """Each downscaled variant against the fastest full one of the same encoding (else of any)."""
    out = []
    for small in resized:
        same = [r for r in full if r.encoding == small.encoding] or full
        if same:
            ref = _fastest(same)
            out.append(
                f"Downscaling to shorter side {small.resize} ({small.name} vs {ref.name}) reads"
                f" {speed_text(small.reader_images_per_second / ref.reader_images_per_second)} and stores"
                f" {ratio_text(ref.bytes_per_image / small.bytes_per_image)}x fewer bytes per image."
            )
    return out


def _headroom(rows: Sequence[VariantRow]) -> str:
    slowest, fastest, smallest = min(rows, key=lambda r: r.reader_images_per_second), _fastest(rows), _smallest(rows)
    return (
        f"Every variant reads at least {slowest.reader_images_per_second:,.0f} images/s on this machine ({slowest.name} is the slowest):"
        f" if training consumes fewer images/s than that, the reader is not the bottleneck and the smallest variant,"
        f" {smallest.name} ({human_bytes(smallest.bytes_per_image)} per image), costs no speed; if it consumes more,"
        f" {fastest.name} ({fastest.reader_images_per_second:,.0f} images/s) leaves the most headroom."
    )


def _memory(rows: Sequence[VariantRow]) -> list[str]:
    measured = [r for r in rows if r.reader_peak_rss_bytes]
    if len(measured) < 2:
        return []
    low = min(measured, key=lambda r: r.reader_peak_rss_bytes)
    high = max(measured, key=lambda r: r.reader_peak_rss_bytes)
    low_rss, high_rss = float(low.reader_peak_rss_bytes), float(high.reader_peak_rss_bytes)
    if high_rss / low_rss >= SIMILAR_MEMORY:
        return [f"Reader peak memory ranges from {human_bytes(low_rss)} ({low.name}) to {human_bytes(high_rss)} ({high.name}),"
                f" {ratio_text(high_rss / low_rss)}x."]
    return [f"Reader peak memory is similar for every variant ({human_bytes(low_rss)} to {human_bytes(high_rss)})."]


TRAIN_LIMITS = ("a small proxy model trained from scratch on a short budget: its accuracies show the direction and size of what"
                " each variant costs on these images, not the accuracy a real model will reach")


def _window_words(row: VariantRow) -> str:
    if row.window_share is not None and row.window_share >= 1.0:
        return f"every position of the {row.coverage_crop}" if row.coverage_crop != "plain read" else "every window"
    count = row.windows_per_image
    windows = "?" if count is None else f"{count:,.0f}" if count >= 100 or count == int(count) else f"{count:.3g}"
    share = "" if row.window_share is None else f", {share_text(row.window_share)} of those the full images allow"
    rrc = "" if row.rrc_window_share is None else f" and {share_text(row.rrc_window_share)} of their random-resized crops"
    return f"{windows} training window{'' if row.windows_per_image == 1 else 's'} per source image{share}{rrc}"


def _coverage(rows: Sequence[VariantRow]) -> list[str]:
    """Per variant: the windows it leaves for augmentation, the context and resolution it keeps."""
    described = [r for r in rows if r.windows_per_image is not None]
    if not described:
        return []
    parts = []
    for r in described:
        context = "an unknown share" if r.context_kept is None else share_text(r.context_kept)
        parts.append(f"{r.name} keeps {_window_words(r)}, {context} of each source image's area at {ratio_text(r.resolution or 0)}x resolution")
    return ["For training (windows counted in each variant's own records): " + "; ".join(parts) + "."]


def within_spread(a: VariantRow, b: VariantRow) -> bool:
    """Whether two variants' mean accuracies differ by no more than their seed spreads together (the sum of the two
    standard deviations), or by at most one held-out image: differences that small are not told apart."""
    if a.train_accuracy is None or b.train_accuracy is None:
        raise ValueError("both variants need --train results")
    one_image = 1 / max(a.eval_images or 1, 1)
    return abs(a.train_accuracy - b.train_accuracy) <= max((a.train_accuracy_sd or 0.0) + (b.train_accuracy_sd or 0.0), one_image) + 1e-12


def _accuracy(r: VariantRow) -> str:
    return f"{r.name} {r.train_accuracy:.0%} ± {r.train_accuracy_sd:.0%}"


def _verdict(best: VariantRow, r: VariantRow, seeds: int) -> str:
    """`r` against the best variant. One seed has no spread (sd 0), so any gap would read as beyond it."""
    gap = (best.train_accuracy or 0.0) - (r.train_accuracy or 0.0)
    if seeds < 2:
        return (f"{r.name} scores {100 * gap:.0f} points below {best.name}; with one seed no spread was measured,"
                " so this is no verdict on whether it costs accuracy.")
    if within_spread(best, r):
        return (f"{r.name} and {best.name} agree within the seed spread ({100 * gap:.0f} points apart): on these images and this budget"
                f" the proxy model shows no measurable cost of {r.name}.")
    return f"{r.name} scores {100 * gap:.0f} points below {best.name}, beyond the seed spread: on these images it costs accuracy."


def _training(rows: Sequence[VariantRow]) -> list[str]:
    """The accuracy verdicts: the best variant against each other one, within or beyond the seed spread."""
    trained = [r for r in rows if r.train_accuracy is not None]
    if not trained:
        return []
    best = max(trained, key=lambda r: r.train_accuracy or 0.0)
    seeds = len(best.train_seeds)
    out = [f"Trained the same proxy model on every variant ({seeds} seed{'s' if seeds > 1 else ''},"
           f" {best.train_seconds or 0:.0f} s of training per run) and scored each on the same {best.eval_images} held-out images:"
           f" {', '.join(_accuracy(r) for r in trained)} (mean ± standard deviation over the seeds)."]
    for r in trained:
        if r is best:
            continue
        out.append(_verdict(best, r, seeds))
    fastest = max(trained, key=lambda r: r.train_images_per_second or 0.0)
    per_minute = max(trained, key=lambda r: r.accuracy_per_minute or 0.0)
    out.append(f"Per wall-clock minute of training, {per_minute.name} reaches the most accuracy ({per_minute.accuracy_per_minute or 0:.0%}"
               f" per minute); {fastest.name} trains fastest ({fastest.train_images_per_second or 0:,.0f} images/s with the proxy model).")
    if seeds < 2:
        out.append("One seed only: no spread was measured, so small differences may be noise (use --seeds 0,1,2).")
    out.append(f"Limits: {TRAIN_LIMITS}.")
    return out


def recommend(rows: Sequence[VariantRow]) -> list[str]:
    """Sentences derived only from the measured rows."""
    busy = max((r.other_cpu_share for r in rows if r.other_cpu_share is not None), default=0.0)
    rows = [r for r in rows if r.reader_images_per_second]
    if not rows:
        return ["No variant was measured; nothing to recommend."]
    by_layout: dict[str, list[VariantRow]] = {}
    for r in rows:
        by_layout.setdefault(r.layout, []).append(r)
    pre = by_layout.get("precrop", [])
    out = _precrop_encodings(pre)
    out += [_full_images(by_layout[layout], layout, pre) for layout in ("full", "resized") if by_layout.get(layout)]
    out += _downscaling(by_layout.get("resized", []), by_layout.get("full", []))
    out.append(_headroom(rows))
    out += _memory(rows)
    out += _coverage(rows)
    out += _training(rows)
    if busy > BUSY_SHARE:
        # Other processes competing for the CPUs slow every variant unevenly: say so rather than hide it.
        out.append(
            f"Caution: other processes used up to {busy:.0%} of the CPUs during the fastest reader runs; speeds are lower"
            " and ratios noisier than on an idle machine. Re-run on an idle machine before deciding on close calls."
        )
    return [sentence[0].upper() + sentence[1:] for sentence in out]
