"""A contact sheet: sample images of one split in a grid with their labels, so a person sees at
a glance whether the crops are where they should be.

Everything shown comes from `reader.load`, so the sheet shows what training sees: the stored
images (decoded by the reader), and for full-image datasets the windows the reader itself
cuts with `crop='center'` and `crop='random'` (its `with_metadata` crop_window), drawn on top.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from typing import Any

import numpy as np
from cropshard import reader
from cropshard.reader.metadata import DatasetError, DatasetInfo

RANDOM_WINDOW_COLOURS = ("#ffd400", "#00e5ff", "#ff3dd1")  # readable on forest, water and grey alike
# Float nodata (NaN, inf): a colour rare in imagery and never made from a grey band, unlike
# black, which the 2% stretch gives to the darkest valid pixels too.
NODATA_COLOUR = (255, 0, 255)


DISPLAY_MAX_SIDE = 1024  # samples are kept at most this large: a sheet cell is ~350 px, photos can be 12 MP


@dataclasses.dataclass(frozen=True)
class Sample:
    index: int  # position in the reader's unshuffled order of the split
    image: np.ndarray  # uint8 HWC as shown (display_pixels), subsampled to at most DISPLAY_MAX_SIDE (bounded memory for big photos)
    height: int  # stored size, before the display subsampling
    width: int
    label: int
    label_text: str
    filename: str
    source_box: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class ContactSheet:
    output: str
    split: str
    samples: int
    labels_shown: dict[str, int]
    windows: tuple[str, ...]

    def summary(self) -> str:
        shown = ", ".join(f"{name} {count}" for name, count in sorted(self.labels_shown.items()))
        drawn = f"; reader windows drawn: {', '.join(self.windows)}" if self.windows else ""
        return f"contact sheet: {self.output} ({self.samples} images of split {self.split!r}: {shown}{drawn})"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pick_split(info: DatasetInfo, split: str | None) -> str:
    if split is not None:
        info.split(split)  # a clear error for a missing split
        return split
    nonempty = [name for name, s in sorted(info.splits.items()) if s.num_examples]
    if not nonempty:
        raise DatasetError("the dataset has no examples to show")
    return "train" if "train" in nonempty else nonempty[0]


def default_crop_size(info: DatasetInfo) -> tuple[int, int] | None:
    """For full images built with --resize S, the crop that resize was sized for (S/2, the 2x rule of thumb)."""
    resize = info.crop.get("resize")
    return (resize // 2, resize // 2) if resize else None


def choose_samples(items: Any, count: int, num_labels: int) -> list[Sample]:
    """Up to `count` samples, balanced over labels as far as the scanned records allow, grouped by label.

    Keeps at most ceil(count / labels) per label while scanning (bounded memory), then deals them
    out round-robin so no label is short just because it came late in the records.
    """
    quota = math.ceil(count / max(num_labels, 1))
    by_label: dict[int, list[Sample]] = {}
    spare: list[Sample] = []
    for sample in items:
        bucket = by_label.setdefault(sample.label, [])
        if len(bucket) < quota:
            bucket.append(sample)
            if num_labels and len(by_label) >= num_labels and all(len(b) >= quota for b in by_label.values()):
                break
        elif len(spare) < count:
            spare.append(sample)
    picked: list[Sample] = []
    queues = [list(bucket) for _, bucket in sorted(by_label.items())]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    picked += spare[: count - len(picked)]
    return sorted(picked, key=lambda s: (s.label, s.index))


def display_pixels(image: np.ndarray, rgb: tuple[int, ...] | None) -> np.ndarray:
    """What the sheet shows: uint8 1- or 3-channel images as stored; with `rgb` (1-based stored
    bands as red, green, blue), or for samples wider than uint8, each shown band stretched from
    the 2nd to the 98th percentile of its finite values onto 0..255 (per image).

    A pixel that is NaN or infinite in any shown band (float nodata) is drawn in NODATA_COLOUR,
    magenta, so nodata stands apart from dark ground; a single-band image with such pixels is
    shown as grey RGB to carry the colour. A chip with no finite value is all magenta.
    """
    if rgb is not None:
        if max(rgb) > image.shape[-1]:
            raise ValueError(f"--rgb {','.join(map(str, rgb))}: the chips have {image.shape[-1]} bands")
        image = image[..., [band - 1 for band in rgb]]
    elif image.shape[-1] not in (1, 3):
        raise ValueError(f"the chips have {image.shape[-1]} bands: choose three to show with --rgb (e.g. --rgb 4,3,2)")
    if rgb is None and image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    # Zeros in place of nodata keep the arithmetic warning-free; those pixels are painted over below.
    values = np.where(finite, values, 0.0)
    low, high = _stretch_limits(values, finite)
    scaled = (values - low) / np.where(high > low, high - low, 1.0)
    shown = (np.clip(scaled, 0.0, 1.0) * 255).round().astype(np.uint8)
    nodata = ~finite.all(axis=-1)
    if not nodata.any():
        return shown
    if shown.shape[-1] == 1:
        shown = np.repeat(shown, 3, axis=-1)
    shown[nodata] = NODATA_COLOUR
    return shown


def _stretch_limits(values: np.ndarray, finite: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band, the 2nd and 98th percentiles of the finite values; (0, 1) for a band with none."""
    bands = values.shape[-1]
    low, high = np.zeros(bands), np.ones(bands)
    for band in range(bands):
        samples = values[..., band][finite[..., band]]
        if samples.size:
            low[band], high[band] = np.percentile(samples, (2, 98))
    return low, high


def _read_samples(path: str, split: str, scan: int, seed: int, rgb: tuple[int, ...] | None = None) -> Any:
    ds = reader.load(path, split, batch_size=None, shuffle=False, seed=seed, normalize="none", with_metadata=True)
    for index, (image, label, meta) in enumerate(ds.take(scan).as_numpy_iterator()):
        height, width = image.shape[:2]
        step = max(1, math.ceil(max(height, width) / DISPLAY_MAX_SIDE))
        yield Sample(
            index=index,
            image=np.ascontiguousarray(display_pixels(image[::step, ::step], rgb)),
            height=height,
            width=width,
            label=int(label) if np.ndim(label) == 0 else -1,  # a mask dataset's label is the mask
            label_text=_text(meta["label_text"]),
            filename=_text(meta["filename"]),
            source_box=tuple(int(v) for v in meta["source_crop_box"]),
        )


def reader_windows(path: str, split: str, crop: str, crop_size: tuple[int, int], seed: int, samples: list[Sample]) -> dict[int, tuple[int, ...]]:
    """index -> [y, x, h, w] that `reader.load(crop=crop, crop_size=..., seed=seed)` cuts for each sample."""
    wanted = {s.index: s.filename for s in samples}
    ds = reader.load(path, split, batch_size=None, crop=crop, crop_size=crop_size, shuffle=False, seed=seed, normalize="none", with_metadata=True)
    windows = {}
    for index, (_, _, meta) in enumerate(ds.take(max(wanted) + 1).as_numpy_iterator()):
        if index in wanted:
            if _text(meta["filename"]) != wanted[index]:
                raise RuntimeError("reader order changed between passes; cannot align crop windows")  # unshuffled + seeded: should not happen
            windows[index] = tuple(int(v) for v in meta["crop_window"])
    return windows


def _window_style(number: int) -> dict[str, Any]:
    """Window set 0 is the center crop (white, dashed); the rest are random crops in distinct colours."""
    if number == 0:
        return {"edgecolor": "white", "linestyle": (0, (4, 3)), "linewidth": 2.2}
    return {"edgecolor": RANDOM_WINDOW_COLOURS[(number - 1) % len(RANDOM_WINDOW_COLOURS)], "linestyle": "-", "linewidth": 2.0}


def _halo() -> Any:
    from matplotlib import patheffects

    return patheffects.withStroke(linewidth=3.6, foreground="black")


def _window_sets(path: str, split: str, crop_size: tuple[int, int], seed: int, random_windows: int,
                 chosen: list[Sample]) -> list[tuple[str, dict[int, tuple[int, ...]]]]:
    """(legend text, index -> window) for the center crop, then `random_windows` random crops (seeds seed, seed+1, ...)."""
    window_sets = [("reader crop='center'", reader_windows(path, split, "center", crop_size, seed, chosen))]
    for k in range(random_windows):
        window_sets.append((f"reader crop='random', seed {seed + k}", reader_windows(path, split, "random", crop_size, seed + k, chosen)))
    return window_sets


def _draw_sample(ax: Any, sample: Sample, full: bool, window_sets: list[tuple[str, dict[int, tuple[int, ...]]]]) -> None:
    from matplotlib.patches import Rectangle

    image = sample.image[..., 0] if sample.image.shape[-1] == 1 else sample.image
    # extent keeps axes in stored-pixel coordinates whatever the display subsampling.
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="antialiased",
              extent=(-0.5, sample.width - 0.5, sample.height - 0.5, -0.5))
    name = os.path.basename(sample.filename)
    detail = f"{name}  {sample.height}x{sample.width}"
    if not full:
        y, x = sample.source_box[:2]
        detail = f"{name}  from y={y}, x={x}"
    label = sample.label_text if sample.label >= 0 else "(unlabeled)"
    ax.set_title(label, fontsize=12, fontweight="bold", pad=17)
    ax.text(0.5, 1.015, detail, transform=ax.transAxes, ha="center", va="bottom", fontsize=9, color="#444444")
    for number, (_, windows) in enumerate(window_sets):
        window = windows.get(sample.index)
        if window is None:
            continue
        y, x, h, w = window
        # Pixel edges sit at -0.5 in imshow coordinates; the black halo keeps lines visible on any content.
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, path_effects=[_halo()], **_window_style(number)))


def _kind_text(info: DatasetInfo, full: bool, crop_size: tuple[int, int] | None) -> str:
    if full and crop_size:
        return f"full images ({info.encoding}), reader crop {crop_size[0]}x{crop_size[1]}"
    if full:
        return "full images (pass --crop-size to draw the reader's crop windows)"
    shape = "x".join(map(str, info.image_shape[:2])) if info.image_shape else ""
    return f"pre-cropped {info.crop.get('strategy')} {shape} ({info.encoding})"


def _add_legend(fig: Any, window_sets: list[tuple[str, dict[int, tuple[int, ...]]]]) -> None:
    from matplotlib.lines import Line2D

    handles = []
    for number, (kind, _) in enumerate(window_sets):
        style = _window_style(number)
        handles.append(
            Line2D([0], [0], color=style["edgecolor"], linestyle=style["linestyle"], linewidth=style["linewidth"],
                   path_effects=[_halo()], label=kind)
        )
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=10, frameon=False, handlelength=3.5)


# The PNG text chunk that marks a sheet inspect wrote: only such a file is replaced by the next one.
SHEET_SOFTWARE = "cropshard inspect --contact-sheet"


def is_contact_sheet(path: str) -> bool:
    """Whether `path` is a PNG that inspect wrote (its Software text chunk says so)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == SHEET_SOFTWARE
    except (OSError, UnidentifiedImageError):
        return False


def write_contact_sheet(
    path: str,
    output: str,
    split: str | None = None,
    samples: int = 16,
    crop_size: tuple[int, int] | None = None,
    seed: int = 0,
    random_windows: int = 3,
    rgb: tuple[int, ...] | None = None,
) -> ContactSheet:
    """Render `samples` images of `split` to the PNG `output`; full-image datasets get the reader's
    center window (dashed) and `random_windows` random windows (seeds seed, seed+1, ...) drawn on top."""
    # The object API, not pyplot: no global backend switch or figure registry for library callers.
    from matplotlib.figure import Figure

    if samples < 1:
        raise ValueError("--samples must be at least 1")
    info = reader.info(path)
    split = pick_split(info, split)
    full = not info.is_precropped
    crop_size = crop_size or (default_crop_size(info) if full else None)
    # Balance over the first few records only: enough to find every label without decoding the split.
    scan = min(info.split(split).num_examples, max(8 * samples, 64))
    chosen = choose_samples(_read_samples(path, split, scan, seed, rgb), samples, len(info.labels))
    if not chosen:
        raise DatasetError(f"split {split!r} has no readable examples")
    window_sets = _window_sets(path, split, crop_size, seed, random_windows, chosen) if full and crop_size else []

    cols = min(len(chosen), max(1, math.ceil(math.sqrt(len(chosen)))))
    rows = math.ceil(len(chosen) / cols)
    cell = 3.2  # inches; at 110 dpi a 4x4 sheet is ~1400 px wide, labels stay legible
    top_in, bottom_in = 0.4, (0.45 if window_sets else 0.1)  # inches kept for the title and the legend
    # Rows as tall as the typical image (plus its two title lines), so landscape photos leave no bands.
    aspect = float(np.median([s.height / s.width for s in chosen]))
    fig_height = rows * (cell * min(aspect, 1.5) + 0.55) + top_in + bottom_in
    fig = Figure(figsize=(cols * cell, fig_height))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, chosen, strict=False):
        _draw_sample(ax, sample, full, window_sets)

    name = os.path.basename(os.path.normpath(path)) or path
    fig.suptitle(f"{name}: split '{split}', {len(chosen)} of {info.split(split).num_examples} images - {_kind_text(info, full, crop_size)}",
                 fontsize=14, y=1 - 0.12 / fig_height, va="top")
    if window_sets:
        _add_legend(fig, window_sets)
    fig.tight_layout(rect=(0, bottom_in / fig_height, 1, 1 - top_in / fig_height), h_pad=0.6)
    fig.savefig(output, dpi=110, facecolor="white", metadata={"Software": SHEET_SOFTWARE})
    return ContactSheet(
        output=output,
        split=split,
        samples=len(chosen),
        labels_shown=dict(Counter(s.label_text if s.label >= 0 else "(unlabeled)" for s in chosen)),
        windows=tuple(kind for kind, _ in window_sets),
    )
