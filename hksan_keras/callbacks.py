"""Keras callbacks for long runs: per-epoch metrics files, summaries, best student."""

import json
import math
import os
import time

import keras


def _plain(logs):
    return {k: float(v) for k, v in (logs or {}).items()}


class MetricsLogger(keras.callbacks.Callback):
    """Appends one JSON line of metrics per epoch to a file.

    Args:
        path: The `.jsonl` file; appended to, so a resumed run continues it.

    Example:

    >>> model.fit(..., callbacks=[MetricsLogger("run/metrics.jsonl")])
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "seconds": time.time() - self._start, **_plain(logs)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class EpochSummary(keras.callbacks.Callback):
    """Prints one line per epoch: the epoch, time, and every metric.

    Args:
        total_epochs: Epochs of the run, for "epoch 3/10".
        prefix: Text at the start of each line (e.g. "distill").

    Example:

    >>> model.fit(..., callbacks=[EpochSummary(10, "teacher")])
    """

    def __init__(self, total_epochs, prefix=""):
        super().__init__()
        self.total_epochs = total_epochs
        self.prefix = prefix
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        metrics = " ".join(f"{k}={v:.4f}" for k, v in sorted(_plain(logs).items()))
        print(
            f"{self.prefix} epoch {epoch + 1}/{self.total_epochs} "
            f"({time.time() - self._start:.1f}s): {metrics}",
            flush=True,
        )


class BestStudentCheckpoint(keras.callbacks.Callback):
    """Saves the distiller's student whenever a monitored metric improves.

    Unlike `keras.callbacks.ModelCheckpoint`, which saves the whole model
    (teacher and discriminator included), this saves `model.student` alone,
    as a plain `.keras` file.

    Args:
        path: The `.keras` file to write.
        monitor: Metric to watch (default "val_accuracy", higher is better).
        initial_best: Best value so far (when a run resumes).

    Example:

    >>> distiller.fit(..., callbacks=[BestStudentCheckpoint("best_student.keras")])
    """

    def __init__(self, path, monitor="val_accuracy", initial_best=None):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = -math.inf if initial_best is None else initial_best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            self.model.student.save(self.path)


def read_metrics(path):
    """The records of a `MetricsLogger` file, or [] when it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_backup_epoch(backup_dir):
    """The number of finished epochs in a `BackupAndRestore` directory, or 0."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])
