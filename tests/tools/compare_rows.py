"""A VariantRow for tests of the pure compare functions: every field set, the ones under test given."""

from __future__ import annotations

from typing import Any

from cropshard.tools.compare.measure import VariantRow


def measured_row(**fields: Any) -> VariantRow:
    """A built, measured pre-crop row (10 images, one 1,000 images/s run); `fields` override any field."""
    row: dict[str, Any] = {
        "name": "precrop-raw", "layout": "precrop", "encoding": "raw", "path": "/data/precrop-raw", "reused": False,
        "stored_shape": "48x48x3", "resize": None, "num_images": 10, "num_examples": 10, "total_bytes": 70_000,
        "bytes_per_image": 7_000.0, "build_seconds": 2.5, "reader_split": "train", "reader_crop": "plain read",
        "reader_batch_size": 4, "reader_batches": 2, "reader_images": 8, "reader_seconds": 0.008,
        "reader_images_per_second": 1000.0, "reader_runs_images_per_second": (1000.0,), "reader_peak_rss_bytes": 600_000_000,
        "reader_baseline_rss_bytes": 500_000_000, "other_cpu_share": None,
    }
    row.update(fields)
    return VariantRow(**row)
