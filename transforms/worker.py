"""The process-wide settings a worker needs, set in one place: `setup_worker()`.

Beam calls it from the `setup()` of the DoFns that decode images (once per DoFn instance, in
every worker process, the launcher's included when it runs bundles in process); code that runs
the per-image functions outside Beam (benchmarks, subprocess tests) calls it first. Importing a
cropshard module changes no global state.
"""

from __future__ import annotations

import functools
import gc
import warnings

from PIL import Image, ImageFile


def setup_worker(max_pixels: int | None = None) -> None:
    """Set Pillow's global limits and Beam's TFRecord CRC32C function for this process, and take
    what is alive after start-up out of the garbage collector's scans. `max_pixels`: the build's
    --max_pixels, from the DoFns that decode images (None leaves Pillow's pixel limit as it is).
    Idempotent: every call with the same arguments sets the same values."""
    if max_pixels is not None:
        # Pillow's bomb check raises past twice its limit, before decoding: at the build's own
        # --max_pixels then, which decode.open_image enforces on the header too. Pillow's check
        # also covers what open_image cannot see: an image nested in another (an ICNS icon's
        # slot holding a 144-megapixel PNG), which was decoded in full.
        Image.MAX_IMAGE_PIXELS = max_pixels / 2
        _ignore_bomb_warnings()
    # A truncated file is rejected, never decoded half grey (Pillow's default, stated here so that
    # no other library in the process can have changed it).
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # WriteToTFRecord's writer runs fused in the decoding workers: give it the fast CRC32C.
    _use_fast_crc32c()
    freeze_start_up_objects()


@functools.cache  # once per process: a second identical filter would replace the first
def _ignore_bomb_warnings() -> None:
    """Pillow warns past its limit, half the build's --max_pixels here: nothing to warn about."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@functools.cache  # once per process
def freeze_start_up_objects() -> None:
    """Move every object alive now (Beam's, rasterio's and NumPy's modules, classes and functions:
    about a million) to the collector's permanent generation, once per process. They live until
    the process ends, yet each full collection scanned them all, and so did the final one at exit:
    about 0.4 s for every process that imported Beam, worker processes included (stopped one
    after another by the local runner). Objects made later are collected as before."""
    gc.collect()  # frozen garbage would never be freed: free it first
    gc.freeze()


def _use_fast_crc32c() -> None:
    """Give Beam's TFRecord code google-crc32c (about 20x faster than the crcmod fallback that
    Beam 2.62 uses without python-snappy: 6 vs 120 us per 50 KB record here). `fn` is the
    performance hook tfrecordio's `_default_crc32c_fn` consults; set once per worker."""
    import google_crc32c
    from apache_beam.io import tfrecordio

    tfrecordio._default_crc32c_fn.fn = google_crc32c.value
