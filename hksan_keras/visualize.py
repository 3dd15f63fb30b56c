"""Pictures of what the attention looks at, and learning curves of a run.

`attention_grid` draws, for each image, the image and then, per stage, the
teacher's and the student's attention maps laid over it. The
`AttentionImages` callback writes that grid to TensorBoard every N epochs;
`hksan-keras visualize` writes it as a PNG, with the run's learning curves.
"""

import json
import os

import keras
import numpy as np

from hksan_keras.callbacks import read_metrics
from hksan_keras.config import ConfigError
from hksan_keras.data import config_preprocessing, load_data
from hksan_keras.distillers import HKSANDistiller
from hksan_keras.checks import require


def _heat(values):
    """A black-red-yellow-white colour map of values in [0, 1], shape (..., 3)."""
    red = np.clip(3 * values, 0, 1)
    green = np.clip(3 * values - 1, 0, 1)
    blue = np.clip(3 * values - 2, 0, 1)
    return np.stack([red, green, blue], axis=-1)


def displayable(images, preprocessing=None):
    """Model-input images back to uint8 pictures (undoing the normalisation)."""
    images = np.asarray(images, dtype="float32")
    if preprocessing is not None:
        images = images * np.asarray(preprocessing["std"]) + np.asarray(preprocessing["mean"])
    else:  # unknown statistics: stretch each image to [0, 255]
        low = images.min(axis=(1, 2, 3), keepdims=True)
        high = images.max(axis=(1, 2, 3), keepdims=True)
        images = 255 * (images - low) / np.maximum(high - low, 1e-6)
    return np.clip(images, 0, 255).astype("uint8")


def attention_grid(distiller, images, preprocessing=None, scale=2):
    """The attention maps of teacher and student over images, as one picture.

    Row r is image r: the image, then for each stage (shallow to deep) the
    teacher's map over it and the student's map over it. Each map is
    upsampled to the image size and stretched to its own [min, max].

    Args:
        distiller: An `HKSANDistiller`.
        images: A batch of model-input images (preprocessed, as the models
            take them).
        preprocessing: The pipeline's preprocessing spec, to show the images
            in their own colours.
        scale: Each image is drawn `scale` times larger.

    Returns:
        A uint8 array (rows * H * scale, (1 + 2 * stages) * W * scale, 3).

    Example:

    >>> grid = attention_grid(distiller, test_images[:8], test_ds.preprocessing)
    """
    tf = require("tensorflow", "hksan_keras.visualize")

    squeezed = distiller.squeeze(images)
    pictures = displayable(images, preprocessing).astype("float32") / 255.0
    height, width = pictures.shape[1:3]
    columns = [pictures]
    for teacher_map, student_map in zip(squeezed["teacher"]["attention"],
                                        squeezed["student"]["attention"]):
        for attention in (teacher_map, student_map):
            maps = tf.image.resize(np.asarray(attention, "float32")[..., None], (height, width),
                                   method="bilinear").numpy()[..., 0]
            low = maps.min(axis=(1, 2), keepdims=True)
            high = maps.max(axis=(1, 2), keepdims=True)
            maps = (maps - low) / np.maximum(high - low, 1e-12)
            columns.append(0.4 * pictures + 0.6 * _heat(maps))
    rows = np.concatenate(columns, axis=2)  # (N, H, W * columns, 3)
    grid = np.concatenate(list(rows), axis=0)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return (255 * np.clip(grid, 0, 1)).astype("uint8")


def write_png(picture, path):
    """Writes a uint8 (H, W, 3) array as a PNG file."""
    tf = require("tensorflow", "hksan_keras.visualize")

    tf.io.write_file(path, tf.io.encode_png(picture))
    return path


class AttentionImages(keras.callbacks.Callback):
    """Writes the attention grid of fixed images to TensorBoard every N epochs.

    The image summary is tagged "attention" (one image: rows are the
    images; columns the image, then per stage the teacher's and the
    student's maps), in `log_dir/attention`.

    Args:
        images: A fixed batch of model-input images (e.g. 8 validation
            images, preprocessed as the models take them).
        log_dir: The TensorBoard log directory of the run.
        every_n_epochs: How often to write.
        preprocessing: The pipeline's preprocessing spec (for true colours).

    Example:

    >>> images = next(iter(test_ds))[0][:8]
    >>> distiller.fit(train_ds, epochs=10, callbacks=[
    ...     AttentionImages(images, "runs/x/logs", every_n_epochs=2)])
    """

    def __init__(self, images, log_dir, every_n_epochs=1, preprocessing=None):
        super().__init__()
        self.images = np.asarray(images)
        self.log_dir = log_dir
        self.every_n_epochs = int(every_n_epochs)
        self.preprocessing = preprocessing
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        tf = require("tensorflow", "hksan_keras.visualize")

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "attention"))
        grid = attention_grid(self.model, self.images, self.preprocessing)
        with self._writer.as_default():
            tf.summary.image("attention", grid[None], step=epoch + 1,
                             description="per row: image, then teacher / student map per stage")
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def plot_learning_curves(run_dir, path):
    """Accuracy and every loss term per epoch of each step of a run, as a PNG.

    Args:
        run_dir: A run directory (its steps' `metrics.jsonl` files are read).
        path: The PNG to write.

    Returns:
        `path`, or None when the run has no metrics yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = {}
    for step in sorted(os.listdir(run_dir)):
        records = read_metrics(os.path.join(run_dir, step, "metrics.jsonl"))
        if records:
            steps[step] = records
    if not steps:
        return None
    figure, axes = plt.subplots(2, len(steps), figsize=(5 * len(steps), 8), squeeze=False)
    for column, (step, records) in enumerate(steps.items()):
        epochs = [r["epoch"] for r in records]
        accuracy, losses = axes[0][column], axes[1][column]
        for key in ("accuracy", "val_accuracy"):
            if key in records[0]:
                accuracy.plot(epochs, [100 * r[key] for r in records], label=key)
        accuracy.set_title(step)
        accuracy.set_ylabel("accuracy (%)")
        for key in sorted(records[0]):
            if key.endswith("loss"):
                losses.plot(epochs, [r[key] for r in records], label=key)
        losses.set_yscale("log")
        losses.set_xlabel("epoch")
        losses.set_ylabel("loss term (unweighted)")
        for axis in (accuracy, losses):
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def visualize_run(distiller, images, preprocessing, run_dir, directory):
    """Writes attention.png and curves.png into `directory`.

    Returns:
        `{"attention": path, "curves": path or None}`.
    """
    os.makedirs(directory, exist_ok=True)
    attention = write_png(attention_grid(distiller, images, preprocessing),
                          os.path.join(directory, "attention.png"))
    curves = plot_learning_curves(run_dir, os.path.join(directory, "curves.png"))
    with open(os.path.join(directory, "visualize.json"), "w") as f:
        json.dump({"attention": attention, "curves": curves, "images": int(len(images))}, f)
    return {"attention": attention, "curves": curves}


def visualize_step(config, model_path=None, num_images=8):
    """Attention maps of the run's HKSAN distiller and its learning curves, as PNGs.

    The `hksan-keras visualize` command: writes
    `<run_dir>/visualize/attention.png` (per row: a test image, then per
    stage the teacher's and the student's attention over it) and
    `curves.png` (accuracy and every loss term per epoch of each step).

    Args:
        config: A resolved experiment config (see `hksan_keras.config`).
        model_path: An `HKSANDistiller` `.keras` file; defaults to the run's.
        num_images: How many test images to draw.

    Returns:
        The paths written.

    Raises:
        FileNotFoundError: No distiller at the path.
        FileExistsError: `<run_dir>/visualize` exists already.
        ConfigError: The file holds another distiller than HKSAN.

    Example:

    >>> written = visualize_step(config, num_images=4)
    """
    path = model_path or os.path.join(config["run_dir"], "distill", "distiller.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No HKSAN distiller at {path}; run distill first, or pass --model.")
    directory = os.path.join(config["run_dir"], "visualize")
    if os.path.exists(directory):
        raise FileExistsError(f"{directory} exists; remove it to draw the pictures again.")
    distiller = keras.saving.load_model(path)
    if not isinstance(distiller, HKSANDistiller):
        raise ConfigError(f"{path} holds a {type(distiller).__name__}; attention maps need an HKSANDistiller.")
    _, test, _, _ = load_data(config)
    images = next(iter(test))[0][:num_images]
    written = visualize_run(distiller, images, config_preprocessing(config), config["run_dir"], directory)
    print(f"wrote {written['attention']}" + (f" and {written['curves']}" if written["curves"] else ""),
          flush=True)
    return written
