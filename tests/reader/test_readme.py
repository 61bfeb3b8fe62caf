"""Every python snippet in reader/README.md runs, as written, on a hand-built full-image dataset."""

from __future__ import annotations

import os
import re

import pytest

from tests import reader_fixtures as fx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from cropshard.reader import schema  # noqa: E402

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "reader", "README.md")


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def test_python_blocks_are_found() -> None:
    assert python_blocks("text\n```python\na = 1\n```\n```sh\nls\n```\n```python\nb = 2\n```\n") == ["a = 1\n", "b = 2\n"]


def test_readme_snippets_run(tmp_path: os.PathLike) -> None:
    """The README promises `path` (a `--crop none` dataset) and `model` (Keras, 224x224x3 in)."""
    path = str(tmp_path / "photos")
    fx.full_image_dataset(path, (schema.FORMAT_JPEG, schema.FORMAT_PNG))
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input((224, 224, 3)),
            tf.keras.layers.Conv2D(2, 3, strides=4, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(len(fx.LABELS)),
        ]
    )
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with open(README, encoding="utf-8") as handle:
        blocks = python_blocks(handle.read())
    assert len(blocks) >= 3
    namespace = {"path": path, "model": model}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"reader/README.md python block {number}", "exec"), namespace)  # noqa: S102
        except Exception as err:  # name the block that broke
            pytest.fail(f"reader/README.md python block {number} failed: {err!r}\n{block}")
    assert namespace["report"].ok and namespace["info"].splits["train"].num_examples == 20
    assert namespace["skipped"].skipped_records == 0
