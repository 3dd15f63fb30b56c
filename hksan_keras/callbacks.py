"""Keras callbacks for long runs: per-epoch metrics files, summaries, best
student, and a guard that stops a diverging run with the reason."""

import json
import math
import os
import time

import keras
import numpy as np


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


class DivergenceError(RuntimeError):
    """Training stopped because a loss became NaN or infinite."""


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, saying which and why.

    After every batch it reads the reported loss terms; at the first NaN or
    infinity it raises `DivergenceError` naming the first non-finite term
    (an infinite one before a NaN, then in the order of the distiller's
    `LOSS_TERMS`), the step and epoch, the term that ran away first (the
    first whose weighted value on one batch exceeded the whole objective of
    the epoch's first batch), and the likely causes it can
    measure: the teacher's largest logit on a training batch and the
    current learning rate. Raising (rather than
    setting `stop_training`) ends `fit` before the epoch's end, so a
    `BackupAndRestore` placed after this callback never saves the broken
    weights: its last checkpoint is the last good one. `Distiller.fit` puts
    one in front of the callbacks by itself.

    Args:
        sample_images: A batch of training images on which to measure the
            teacher's logits when a run diverges (optional).

    Example:

    >>> distiller.fit(train, epochs=10, callbacks=[DivergenceGuard(), backup])
    """

    def __init__(self, sample_images=None):
        super().__init__()
        self.sample_images = sample_images
        self._epoch = 0
        self._history = []

    def on_train_begin(self, logs=None):
        # Read once: on JAX every read of `self.model` writes the whole
        # training state back to the variables.
        self._terms = tuple(getattr(self.model, "LOSS_TERMS", ()))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._means = None  # running means after the previous batch
        self._batches = []  # each finite batch's own values, this epoch

    def _weights(self):
        """Each term's current weight in the student's objective (floats)."""
        weights = {}
        term_weights = getattr(self.model, "term_weights", None)
        for term, weight in (term_weights() if term_weights else {}).items():
            try:
                weights[term] = float(np.asarray(weight))
            except (TypeError, ValueError):
                continue
        return weights

    def _lead(self):
        """The first term whose weighted value alone outgrew the start.

        A run that blows up ends with every term non-finite; the term that
        ran away first is the first whose weighted value, on one batch,
        exceeded the whole objective of the epoch's first batch (the term
        that overflowed may only have followed it). Returns
        `(term, batch, weight, value, first objective)` or None.
        """
        if len(self._batches) < 2:
            return None
        weights = self._weights()
        first_objective = sum(
            abs(weights.get(t, 0.0) * v) for t, v in self._batches[0][1].items()
        )
        for batch, values in self._batches[1:]:
            runaway = {
                t: abs(weights[t] * v)
                for t, v in values.items()
                if weights.get(t) and abs(weights[t] * v) > first_objective
            }
            if runaway:
                term = max(runaway, key=runaway.get)
                return term, batch, weights[term], values[term], first_objective
        return None

    def on_train_batch_end(self, batch, logs=None):
        values = _plain(logs)
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if not bad:
            # The logs hold running means over the epoch: a batch's own
            # value is recovered from two consecutive means.
            own = values if self._means is None else {
                name: (batch + 1) * value - batch * self._means.get(name, value)
                for name, value in values.items()
            }
            self._means = values
            self._batches.append((batch, {t: v for t, v in own.items() if t in self._terms}))
            return
        # An infinite term is the cause and a NaN its consequence when they
        # show in the same step; otherwise the method's own order.
        order = list(self._terms) + ["loss"]
        bad.sort(key=lambda name: (
            not math.isinf(values[name]),
            order.index(name) if name in order else len(order),
        ))
        step = int(self.model.optimizer.iterations.numpy())
        lead = self._lead()
        led = ""
        if lead is not None:
            term, lead_batch, weight, value, first = lead
            led = (
                f" Before that, '{term}' ran away first: on batch {lead_batch + 1} "
                f"its weighted value ({weight:g} x {value:.3g} = {weight * value:.3g}) "
                f"alone exceeded the whole objective of the epoch's first batch "
                f"({first:.3g})."
            )
        raise DivergenceError(
            f"Training diverged at step {step} (epoch {self._epoch + 1}, batch "
            f"{batch + 1}): '{bad[0]}' became {values[bad[0]]} first"
            + (f" (also non-finite: {', '.join(bad[1:])})" if len(bad) > 1 else "")
            + "." + led + " " + " ".join(self._causes())
            + " Training was stopped before this epoch's end: the last checkpoint "
            "written (BackupAndRestore, at the previous save) holds the last good weights."
        )

    def _causes(self):
        causes = []
        teacher = getattr(self.model, "teacher", None)
        if teacher is not None and self.sample_images is not None:
            logits = np.asarray(teacher(self.sample_images, training=False))
            largest = float(np.max(np.abs(logits)))
            causes.append(
                f"The teacher's logits reach |{largest:.1f}| on a training batch"
                + (
                    " (large: an untrained teacher, or raw distances such as "
                    "logit_distance='squared' that grow with its scale; the "
                    "defaults, logit_distance='relative' and normalize_features=True, "
                    "do not)."
                    if largest > 50
                    else "."
                )
            )
        optimizer = self.model.optimizer
        learning_rate = optimizer.learning_rate
        if callable(learning_rate):
            learning_rate = learning_rate(optimizer.iterations)
        clipnorm = getattr(self.model, "global_clipnorm", None)
        clipping = (
            f"a smaller global_clipnorm (now {clipnorm:g})" if clipnorm
            else "global_clipnorm=5 (the distiller's argument)"
        )
        causes.append(
            f"The student's learning rate is {float(np.asarray(learning_rate)):g}; "
            f"a smaller one, {clipping}, or smaller loss weights may keep it finite."
        )
        return causes


def read_metrics(path):
    """The records of a `MetricsLogger` file, or [] when it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_backup_epoch(backup_dir, with_batch=False):
    """The number of finished epochs in a `BackupAndRestore` directory, or 0.

    Args:
        backup_dir: The callback's directory.
        with_batch: Also return the batch index of a mid-epoch backup (0 for
            a backup at an epoch's end).

    Returns:
        The epoch count, or `(epochs, batch)` with `with_batch`.
    """
    path = os.path.join(backup_dir, "training_metadata.json")
    epoch, batch = 0, 0
    if os.path.exists(path):
        with open(path) as f:
            metadata = json.load(f)
        epoch, batch = int(metadata["epoch"]), int(metadata.get("batch") or 0)
    return (epoch, batch) if with_batch else epoch
