"""The run directory: one folder per step, and the rules that make steps resumable.

`<run_dir>/<step>/` holds the step's config.json and preprocessing.json,
TensorBoard logs in logs/, BackupAndRestore checkpoints in checkpoints/ (so
rerunning an interrupted step resumes it), metrics.jsonl (one line per
epoch), metrics.json (written at the end: the step is finished), and the
best and last models. A finished step is never overwritten.
"""

import json
import os
import time

import keras

from hksan_keras.callbacks import EpochSummary, MetricsLogger, read_backup_epoch, read_metrics
from hksan_keras.config import save_config
from hksan_keras.data import config_preprocessing
from hksan_keras.distillers import METHODS, Distiller
from hksan_keras.distribute import release_worker_directory, worker_directory
from hksan_keras.export import write_preprocessing


def distill_step_name(method):
    """The run-directory step of a distillation method.

    Args:
        method: A name of `hksan_keras.distillers.METHODS`.

    Returns:
        "distill" for HKSAN, else "distill_<method>", so that one run
        directory holds a comparison.
    """
    return "distill" if method == "hksan" else f"distill_{method}"


def is_finished(config, step):
    """Whether a step of the config's run directory has written its metrics.json.

    Args:
        config: A resolved config.
        step: A step name ("teacher", "student", "distill", ...).

    Returns:
        True when the step finished (and will not run again).
    """
    return os.path.exists(os.path.join(config["run_dir"], step, "metrics.json"))


# One selection rule for every model: the last epoch. (The best epoch is
# chosen on the test set, so it flatters whichever model it is applied to.)
DEFAULT_EVALUATIONS = {
    "teacher": ("teacher", "last.keras"),
    "student": ("student", "last.keras"),
    "distilled_student": ("distill", "last_student.keras"),
}


def last_epoch_models(config):
    """The models of a run that `evaluate` scores by default, by name.

    Args:
        config: A resolved config.

    Returns:
        `{name: path}` of the teacher, the student alone and each method's
        distilled student, as they were at the last epoch, for those the
        run directory holds.
    """
    candidates = dict(DEFAULT_EVALUATIONS)
    for method in METHODS:
        if method != "hksan":
            candidates[f"distilled_student_{method}"] = (
                distill_step_name(method), "last_student.keras"
            )
    return {
        name: os.path.join(config["run_dir"], *parts)
        for name, parts in candidates.items()
        if os.path.exists(os.path.join(config["run_dir"], *parts))
    }


def teacher_path(config):
    """Where the distillation's teacher is: `teacher.path`, else the run's own.

    Args:
        config: A resolved config.

    Returns:
        The path of the trained teacher's `.keras` file.

    Raises:
        FileNotFoundError: No trained teacher there.
    """
    path = config["teacher"]["path"] or os.path.join(config["run_dir"], "teacher", "last.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No trained teacher at {path}. Run `hksan-keras train-teacher` with "
            "the same config and --run_dir first, or set teacher.path."
        )
    return path


def load_student(config, model_path=None):
    """The student to export or report: `model_path`, else the run's distilled one.

    Args:
        config: A resolved config.
        model_path: A classifier or distiller `.keras` file (a distiller
            gives its student); by default the run's distilled student of
            the last epoch.

    Returns:
        `(student, path)`.

    Raises:
        FileNotFoundError: No model there.
    """
    step = distill_step_name(config["distill"]["method"])
    path = model_path or os.path.join(config["run_dir"], step, "last_student.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path}; run distill first, or pass --model.")
    model = keras.saving.load_model(path)
    return (model.student if isinstance(model, Distiller) else model), path


class Step:
    """The directory of one step of a run, its resume state and its callbacks.

    Creating it refuses a finished step, reports a resumed one, drops the
    metrics lines of epochs that will be trained again, and writes the
    step's config.json and preprocessing.json.

    Args:
        config: A resolved config.
        step: The step's name, its folder in `config["run_dir"]`.

    Raises:
        FileExistsError: The step finished earlier in this run directory.

    Example:

    >>> step = Step(config, "teacher")
    >>> model.fit(train, epochs=epochs, callbacks=step.callbacks(epochs))
    >>> step.finish({"model": "resnet56"})
    """

    def __init__(self, config, step):
        self.step = step
        self.chief_directory = os.path.join(config["run_dir"], step)
        # Only the chief writes the run directory; other workers of a
        # multi-worker run write to a temporary one, removed at the end.
        self.directory = worker_directory(self.chief_directory)
        self.metrics_json = os.path.join(self.directory, "metrics.json")
        self.metrics_jsonl = os.path.join(self.directory, "metrics.jsonl")
        self.backup_dir = os.path.join(self.directory, "checkpoints")
        if os.path.exists(self.metrics_json):
            raise FileExistsError(
                f"{self.directory} holds a finished {step} run; choose another "
                "--run_dir (or remove that directory) to run it again."
            )
        os.makedirs(self.directory, exist_ok=True)
        self.backup_every_steps = config["backup_every_steps"]
        self.resumed_epochs, resumed_batch = read_backup_epoch(self.backup_dir, with_batch=True)
        if self.resumed_epochs or resumed_batch:
            within = (
                f", with the weights of step {resumed_batch + 1} of epoch "
                f"{self.resumed_epochs + 1}, which restarts from its first batch"
                if resumed_batch
                else ""
            )
            print(
                f"{step}: resuming from epoch {self.resumed_epochs}{within} "
                f"(checkpoint in {self.backup_dir})",
                flush=True,
            )
        # Epochs logged after the last checkpoint will be trained again.
        kept = [r for r in read_metrics(self.metrics_jsonl) if r["epoch"] <= self.resumed_epochs]
        with open(self.metrics_jsonl, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        save_config(config, os.path.join(self.directory, "config.json"))
        # What a served model must do to raw images, beside the models.
        write_preprocessing(config_preprocessing(config),
                            os.path.join(self.directory, "preprocessing.json"))
        self.start = time.time()

    def best_so_far(self):
        """The best test accuracy of the epochs logged so far (None: none yet).

        A resumed step's best-model checkpoints start from it, so that a
        resumed run does not overwrite a better model with a worse one.
        """
        accuracies = [r["val_accuracy"] for r in read_metrics(self.metrics_jsonl) if "val_accuracy" in r]
        return max(accuracies) if accuracies else None

    def callbacks(self, epochs, extra=()):
        """The step's callbacks: TensorBoard, metrics line, summary, `extra`, backup.

        Args:
            epochs: The step's number of epochs (for the summary line).
            extra: Callbacks that write a record at each epoch's end.

        Returns:
            A list of callbacks for `fit`.
        """
        # The backup comes last: at an epoch's end every other callback has
        # written its record (metrics line, best model) before the checkpoint
        # says the epoch is done, so a run killed in between loses nothing.
        return [
            keras.callbacks.TensorBoard(os.path.join(self.directory, "logs")),
            MetricsLogger(self.metrics_jsonl),
            EpochSummary(epochs, self.step),
            *extra,
            keras.callbacks.BackupAndRestore(
                self.backup_dir, save_freq=self.backup_every_steps or "epoch"
            ),
        ]

    def finish(self, results):
        """Writes metrics.json, which marks the step finished.

        Args:
            results: The step's own facts (model, method, ...), added to the
                epochs and the best and last test accuracies.

        Returns:
            The dict written.
        """
        records = read_metrics(self.metrics_jsonl)
        accuracies = [r["val_accuracy"] for r in records if "val_accuracy" in r]
        results = {
            "step": self.step,
            "epochs": len(records),
            "best_epoch_test_accuracy": max(accuracies) if accuracies else None,
            "last_epoch_test_accuracy": accuracies[-1] if accuracies else None,
            "seconds_this_invocation": time.time() - self.start,
            **results,
        }
        with open(self.metrics_json, "w") as f:
            json.dump(results, f, indent=2)
        release_worker_directory(self.directory, self.chief_directory)
        return results
