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
    if busy > BUSY_SHARE:
        # Other processes competing for the CPUs slow every variant unevenly: say so rather than hide it.
        out.append(
            f"Caution: other processes used up to {busy:.0%} of the CPUs during the fastest reader runs; speeds are lower"
            " and ratios noisier than on an idle machine. Re-run on an idle machine before deciding on close calls."
        )
    return [sentence[0].upper() + sentence[1:] for sentence in out]
