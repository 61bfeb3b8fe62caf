"""The text `cropshard build` prints when it ends."""

from __future__ import annotations

from cropshard.reader import metadata
from cropshard.transforms.write import join

MIB = 2**20


def dry_run_summary(output: str, job_name: str) -> str:
    return f"cropshard build -> {output}\n  dry run: built job {job_name!r}, not submitted"


def submitted_summary(output: str, job_id: str) -> str:
    """For a job the launcher did not wait for (--no_wait_until_finish)."""
    return f"cropshard build -> {output}\n  submitted job {job_id}, not waiting; {metadata.INFO_FILENAME} appears there when it succeeds"


def split_line(name: str, split: metadata.SplitInfo) -> str:
    return f"  split {name:<12} {split.num_examples:>9} examples  {len(split.shards):>4} shards  {split.num_bytes / MIB:10.2f} MiB"


def rejected_lines(rejected: dict[str, int]) -> list[str]:
    """One line per rejection reason, the most frequent first (ties by name)."""
    return [f"  rejected {reason:<18} {count:>7}" for reason, count in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))]


def built_summary(output: str, info: metadata.DatasetInfo, wall_seconds: float) -> str:
    """Inputs reconciled against written and rejected, each split, each rejection reason, totals."""
    lines = [
        f"cropshard build -> {output}",
        f"  inputs {info.num_inputs} = {info.num_images_written} images written + {info.num_rejected} rejected  (reconciled)",
    ]
    lines.extend(split_line(name, split) for name, split in sorted(info.splits.items()))
    lines.extend(rejected_lines(info.rejected))
    if info.num_rejected:
        lines.append(f"  (details: {join(output, metadata.REJECTED_FILENAME)})")
    if info.chips_skipped:  # by design (--max_nodata, --split_by, --min_label_fraction), so not rejections: still said
        lines.append("  raster chips skipped: " + ", ".join(f"{reason} {count}" for reason, count in info.chips_skipped.items()))
    total_bytes = sum(split.num_bytes for split in info.splits.values())
    # Inputs and examples per second differ for multi-crop and raster builds (one raster: thousands of chips).
    inputs_per_second = info.num_inputs / wall_seconds if wall_seconds else 0.0
    examples_per_second = info.num_examples / wall_seconds if wall_seconds else 0.0
    lines.append(
        f"  bytes written {total_bytes / MIB:.2f} MiB   wall {wall_seconds:.1f} s   {inputs_per_second:.1f} inputs/s"
        f"   {examples_per_second:.1f} examples/s"
    )
    return "\n".join(lines)
