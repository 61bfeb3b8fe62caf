"""`compare --train`: the same small classifier trained from scratch on each variant, scored on the same held-out images.

The parent sends one TrainPlan as JSON to `python -m cropshard.tools.compare --train-plan PLAN`; that
child runs every (seed, variant) pair in turn (seed-major, so a burst of load elsewhere touches one run of several variants rather than
every run of one) and prints the TrainRuns as one JSON line.

Each run reads its variant through `reader.load` as a user would: random crops of the training
window where the stored images are larger than it, random flips, shuffling, all seeded. It trains
for `seconds` of wall clock or `max_steps` steps, whichever ends first. The held-out images are
the evaluation split of one full-image variant, read whole; each model sees them at its own
variant's stored resolution (downscaled like the variant when it was built with --resize) and,
being fully convolutional, classifies the whole image in one pass (global max pooling, so content
anywhere in the image counts, as it would at inference on full photos).

The model is a proxy: four 3x3 convolution layers, about 60 thousand weights; its accuracy shows
the direction and size of what a variant costs on the user's images, not what their real model
will reach.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

MODEL_DESCRIPTION = "a 4-layer CNN (3x3 convolutions 16-32-64-64, global max pooling; about 60k weights), trained from scratch"


@dataclasses.dataclass(frozen=True)
class TrainTarget:
    """One variant as the training child reads it."""

    variant: str
    path: str
    split: str
    crop: str | None  # the reader's crop: None (plain read of pre-crops) or 'random'
    crop_size: tuple[int, int] | None
    eval_resize: int | None  # shorter side the held-out images are scaled to (the variant's --resize), None: as stored


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    targets: tuple[TrainTarget, ...]
    seeds: tuple[int, ...]
    eval_path: str  # the full-image variant whose evaluation split is the held-out set
    eval_split: str
    num_classes: int
    channels: int
    batch_size: int
    seconds: float  # wall-clock budget of one run (one variant, one seed)
    max_steps: int | None
    learning_rate: float = 2e-3

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainPlan:
        fields = json.loads(text)
        targets = tuple(TrainTarget(**{**t, "crop_size": tuple(t["crop_size"]) if t["crop_size"] else None}) for t in fields.pop("targets"))
        return cls(targets=targets, seeds=tuple(fields.pop("seeds")), **fields)


@dataclasses.dataclass(frozen=True)
class TrainRun:
    """One (variant, seed) run."""

    variant: str
    seed: int
    steps: int
    images: int
    seconds: float  # wall clock of the training loop after its first step: reader, forward, backward, update
    # (images: those of the timed steps)
    accuracy: float  # on the held-out images
    eval_images: int


@dataclasses.dataclass(frozen=True)
class TrainingSummary:
    """A variant's runs over the seeds."""

    accuracies: tuple[float, ...]  # one per seed, in seed order
    accuracy: float  # mean
    accuracy_sd: float  # sample standard deviation over the seeds; 0.0 for a single seed
    steps: tuple[int, ...]
    seconds: float  # mean training seconds of one run
    images_per_second: float  # training images per second, all runs together
    accuracy_per_minute: float  # mean accuracy / mean training minutes of one run
    eval_images: int


def summarize_training(runs: Sequence[TrainRun]) -> TrainingSummary:
    """Mean and spread of one variant's runs (pure)."""
    if not runs:
        raise ValueError("no training runs to summarize")
    runs = sorted(runs, key=lambda run: run.seed)
    accuracies = tuple(run.accuracy for run in runs)
    seconds = statistics.fmean(run.seconds for run in runs)
    total_seconds = sum(run.seconds for run in runs)
    mean = statistics.fmean(accuracies)
    return TrainingSummary(
        accuracies=accuracies,
        accuracy=mean,
        accuracy_sd=statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        steps=tuple(run.steps for run in runs),
        seconds=seconds,
        images_per_second=sum(run.images for run in runs) / total_seconds if total_seconds else 0.0,
        accuracy_per_minute=mean / (seconds / 60) if seconds else 0.0,
        eval_images=runs[0].eval_images,
    )


def run_training_subprocess(plan: TrainPlan) -> list[TrainRun]:
    """Every run of `plan` in one fresh interpreter; its progress lines go to this process's stderr."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs = len(plan.targets) * len(plan.seeds)
    proc = subprocess.run(
        [sys.executable, "-m", "cropshard.tools.compare", "--train-plan", plan.to_json()],
        stdout=subprocess.PIPE, text=True, env=env, timeout=600 + 3 * runs * plan.seconds, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"compare --train: the training process failed (exit {proc.returncode}; its errors are above)")
    return [TrainRun(**run) for run in json.loads(lines[-1])]


# ---- the child ----------------------------------------------------------------------------------


def build_model(num_classes: int, channels: int, seed: int) -> Any:
    """The proxy classifier, fully convolutional so that it takes whole images of any size."""
    import keras

    # The run's seed for Python, NumPy and TensorFlow: the same initial weights for every variant of one seed.
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, channels))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)  # the reader's [0, 1] to [-1, 1]
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def _train(model: Any, target: TrainTarget, plan: TrainPlan, seed: int) -> tuple[int, int, float]:
    """(steps, images, seconds) of one run's training loop."""
    import keras
    from cropshard import reader

    model.compile(optimizer=keras.optimizers.Adam(plan.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = reader.load(target.path, target.split, batch_size=plan.batch_size, crop=target.crop, crop_size=target.crop_size,
                     flip=True, shuffle=True, repeat=True, seed=seed, drop_remainder=True)
    batches = iter(ds)
    # The first step traces the training function and fills the reader's buffers: a step, but not timed.
    model.train_on_batch(*next(batches))
    steps, images = 1, 0
    start = time.perf_counter()
    while time.perf_counter() - start < plan.seconds and (plan.max_steps is None or steps < plan.max_steps):
        image, label = next(batches)
        model.train_on_batch(image, label)
        steps += 1
        images += int(image.shape[0])
    return steps, images, time.perf_counter() - start


def held_out(plan: TrainPlan, resize: int | None) -> Iterator[tuple[Any, int]]:
    """The held-out images, whole, as one model sees them: scaled to shorter side `resize` like its variant, or as stored."""
    import tensorflow as tf
    from cropshard import reader
    from cropshard.transforms.crop import resized_shape

    for image, label in reader.load(plan.eval_path, plan.eval_split, batch_size=None, shuffle=False):
        if resize:
            height, width = resized_shape(int(image.shape[0]), int(image.shape[1]), resize)
            image = tf.clip_by_value(tf.image.resize(image, (height, width), antialias=True), 0.0, 1.0)
        yield image, int(label)


def evaluate(model: Any, plan: TrainPlan, resize: int | None) -> tuple[float, int]:
    """(accuracy, number of held-out images), one whole image at a time."""
    import tensorflow as tf

    predict = tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1),
                          input_signature=[tf.TensorSpec([1, None, None, plan.channels], tf.float32)])
    correct = total = 0
    for image, label in held_out(plan, resize):
        correct += int(predict(image[None])[0]) == label
        total += 1
    if not total:
        raise ValueError(f"split {plan.eval_split!r} of {plan.eval_path} holds no images to evaluate on")
    return correct / total, total


def train_all(plan: TrainPlan) -> list[TrainRun]:
    """Run in the child: every (seed, variant) pair of the plan."""
    import keras

    runs = []
    for seed in plan.seeds:
        for target in plan.targets:
            print(f"  training on {target.variant}, seed {seed} ({plan.seconds:g} s budget"
                  f"{f', at most {plan.max_steps} steps' if plan.max_steps else ''})", file=sys.stderr, flush=True)
            model = build_model(plan.num_classes, plan.channels, seed)
            steps, images, seconds = _train(model, target, plan, seed)
            accuracy, count = evaluate(model, plan, target.eval_resize)
            runs.append(TrainRun(target.variant, seed, steps, images, seconds, accuracy, count))
            keras.backend.clear_session()
    return runs
