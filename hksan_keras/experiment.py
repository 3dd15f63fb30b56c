"""Experiments from configs: train a classifier, distil, evaluate, export.

Each function takes a resolved config (see `resolve_config`) and writes into
`<run_dir>/<step>/`: the step's config.json, TensorBoard logs in logs/,
BackupAndRestore checkpoints in checkpoints/ (so rerunning an interrupted
step resumes it), metrics.jsonl (one line per epoch), metrics.json (at the
end), and the best and last models. A finished step is never overwritten.
TensorFlow only (tf.data pipelines, SavedModel export).
"""

import json
import math
import os
import time

import keras
import numpy as np

from hksan_keras import data, models
from hksan_keras.checks import check_teacher_is_trained
from hksan_keras.export import write_preprocessing
from hksan_keras.distribute import (
    STRATEGIES,
    make_strategy,
    release_worker_directory,
    worker_directory,
)
from hksan_keras.attention import HIERARCHIES, SQUEEZE_TARGETS
from hksan_keras.losses import LOGIT_DISTANCES
from hksan_keras.callbacks import (
    BestStudentCheckpoint,
    EpochSummary,
    MetricsLogger,
    read_backup_epoch,
    read_metrics,
)
from hksan_keras.config import ConfigError, apply_overrides, load_config, save_config
from hksan_keras.discriminators import LogitDiscriminator
from hksan_keras.distillers import (
    METHODS,
    AdversarialDistiller,
    Distiller,
    HKSANDistiller,
    StageDistiller,
)
from hksan_keras.visualize import AttentionImages


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# Config options that take one of a few names, checked before training.
_CHOICES = {
    "hksan.hierarchy": HIERARCHIES,
    "hksan.squeeze_target": SQUEEZE_TARGETS,
    **{f"{method}.logit_distance": LOGIT_DISTANCES for method in ("anc", "xu", "hksan")},
}


def resolve_config(path, overrides=(), run_dir=None, data_dir=None):
    """Loads, overrides and checks a config before anything is trained.

    Args:
        path: Config file (configs/....json).
        overrides: "key.path=value" strings.
        run_dir: Run directory; defaults to the config's, else runs/<name>.
        data_dir: TFDS data directory; overrides `data.data_dir`.

    Returns:
        The complete config, with `run_dir` filled in.

    Example:

    >>> config = resolve_config("configs/cifar10_resnet56_resnet20_quick.json",
    ...                         ["distill.epochs=1"])
    """
    config = apply_overrides(load_config(path), list(overrides))
    if data_dir:
        config["data"]["data_dir"] = data_dir
    config["run_dir"] = run_dir or config["run_dir"] or os.path.join("runs", config["name"])
    for role in ("teacher", "student"):
        name = config[role]["model"]
        if name not in models.MODELS:
            raise ConfigError(
                f"{role}.model is {name!r}; choose one of {sorted(models.MODELS)}."
            )
    if config["distill"]["method"] not in METHODS:
        raise ConfigError(
            f"distill.method is {config['distill']['method']!r}; choose one of "
            f"{sorted(METHODS)}."
        )
    if config["strategy"] not in STRATEGIES:
        raise ConfigError(
            f"strategy must be one of {STRATEGIES}, got {config['strategy']!r}."
        )
    if config["mixed_precision"] not in PRECISIONS:
        raise ConfigError(
            f"mixed_precision must be one of {PRECISIONS}, got {config['mixed_precision']!r}."
        )
    for key, choices in _CHOICES.items():
        method, option = key.split(".")
        value = config["distill"][method][option]
        if value not in choices:
            raise ConfigError(
                f"distill.{key} must be one of {choices}, got {value!r}."
            )
    for method, options in config["distill"].items():
        if isinstance(options, dict) and "discriminator" in options:
            try:
                LogitDiscriminator.check_settings(**options["discriminator"])
            except (TypeError, ValueError) as error:
                raise ConfigError(f"distill.{method}.discriminator: {error}") from None
    for section in ("teacher", "distill"):
        if config[section]["epochs"] < 1:
            raise ConfigError(f"{section}.epochs must be >= 1.")
    return config


def build_models(config, num_classes):
    """The teacher and student of a config (untrained), from the model zoo.

    Args:
        config: A resolved config.
        num_classes: Number of classes of the dataset.

    Returns:
        `(teacher, student)` functional models.
    """
    shape = _input_shape(config)
    teacher = models.get(
        config["teacher"]["model"], num_classes,
        weight_decay=config["teacher"]["weight_decay"], input_shape=shape,
    )
    student = models.get(
        config["student"]["model"], num_classes,
        weight_decay=config["student"]["weight_decay"], input_shape=shape,
    )
    return teacher, student


def _input_shape(config):
    if config["data"]["dataset"] in data.CIFAR_STATS:
        return (32, 32, 3)
    size = config["data"]["image_size"]
    return (size, size, 3)


def load_data(config, role="student"):
    """The training and test pipelines of a config and the dataset's facts.

    Args:
        config: A resolved config.
        role: "teacher" trains on `teacher.train_split`/`teacher.train_size`
            where the config sets them; anything else on `data`'s.

    Returns:
        `(train, test, num_classes, steps_per_epoch)`.
    """
    import tensorflow_datasets as tfds

    spec = dict(config["data"])
    if role == "teacher":
        for key in ("train_split", "train_size"):
            if config["teacher"][key] is not None:
                spec[key] = config["teacher"][key]
    common = dict(
        data_dir=spec["data_dir"], manual_dir=spec["manual_dir"],
        image_size=spec["image_size"], download=spec["download"],
    )
    train = data.tfds_dataset(
        spec["dataset"], spec["train_split"], spec["batch_size"], training=True,
        take=spec["train_size"], seed=config["seed"], **common,
    )
    test = data.tfds_dataset(
        spec["dataset"], spec["test_split"], max(spec["batch_size"], 256),
        take=spec["test_size"], **common,
    )
    builder = tfds.builder(spec["dataset"], data_dir=data.resolve_data_dir(spec["data_dir"]))
    num_classes = builder.info.features["label"].num_classes
    examples = data.num_examples(
        spec["dataset"], spec["train_split"], spec["data_dir"], spec["train_size"]
    )
    return train, test, num_classes, math.ceil(examples / spec["batch_size"])


def _sgd(section, steps_per_epoch):
    boundaries = [m * steps_per_epoch for m in section["lr_milestones"]]
    values = [section["learning_rate"] * section["lr_decay"] ** i for i in range(len(boundaries) + 1)]
    schedule = (
        keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        if boundaries
        else section["learning_rate"]
    )
    return keras.optimizers.SGD(
        schedule, momentum=section["momentum"], nesterov=section["nesterov"]
    )


class _Step:
    """The directory of one step of a run, its resume state and its callbacks."""

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
        write_preprocessing(preprocessing(config), os.path.join(self.directory, "preprocessing.json"))
        self.start = time.time()

    def best_so_far(self):
        accuracies = [r["val_accuracy"] for r in read_metrics(self.metrics_jsonl) if "val_accuracy" in r]
        return max(accuracies) if accuracies else None

    def callbacks(self, epochs, extra=()):
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


def train_classifier(config, role, verbose=1):
    """Trains the teacher, or the student alone (labels only), from a config.

    The teacher follows `config["teacher"]`'s recipe; the student alone
    follows `config["distill"]`'s, so that it is comparable with the
    distilled student.

    Args:
        config: A resolved config.
        role: "teacher" or "student".
        verbose: Keras verbosity (0 silent, 1 progress bar, 2 a line per epoch).

    Returns:
        The step's final metrics (also in `<run_dir>/<role>/metrics.json`).
    """
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}.")
    # A multi-worker strategy must exist before any other TensorFlow op.
    strategy = make_strategy(config["strategy"])
    step = _Step(config, role)
    train, test, num_classes, steps_per_epoch = load_data(config, role)
    keras.mixed_precision.set_global_policy(config["mixed_precision"])
    recipe = config["teacher"] if role == "teacher" else config["distill"]
    with strategy.scope():
        teacher, student = build_models(config, num_classes)
        model = teacher if role == "teacher" else student
        keras.utils.set_random_seed(config["seed"])
        model.compile(
            _sgd(recipe, steps_per_epoch),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=config["jit_compile"],
        )
    best = os.path.join(step.directory, "best.keras")
    callbacks = step.callbacks(recipe["epochs"], [
        keras.callbacks.ModelCheckpoint(
            best, monitor="val_accuracy", mode="max", save_best_only=True,
            initial_value_threshold=step.best_so_far(),
        )
    ])
    model.fit(train, validation_data=test, epochs=recipe["epochs"],
              callbacks=callbacks, verbose=verbose)
    model.save(os.path.join(step.directory, "last.keras"))
    return step.finish({"model": config[role]["model"]})


def _teacher_path(config):
    path = config["teacher"]["path"] or os.path.join(config["run_dir"], "teacher", "last.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No trained teacher at {path}. Run `hksan-keras train-teacher` with "
            "the same config and --run_dir first, or set teacher.path."
        )
    return path


def distill_step_name(method):
    """The run-directory step of a method: "distill" for HKSAN, else "distill_<method>"."""
    return "distill" if method == "hksan" else f"distill_{method}"


def build_distiller(config, teacher, student, steps_per_epoch):
    """The config's distiller (`distill.method`) around a teacher and a student.

    Args:
        config: A resolved config.
        teacher: The trained teacher.
        student: The untrained student.
        steps_per_epoch: Batches per epoch (DKD's warm-up is set in epochs).

    Returns:
        `(distiller, pretrain_teacher_attention_epochs)`; the second is 0
        except for HKSAN with pretraining.
    """
    method = config["distill"]["method"]
    cls = METHODS[method]
    options = dict(config["distill"][method])
    pretrain_epochs = options.pop("pretrain_teacher_attention_epochs", 0)
    if "warmup_epochs" in options:
        options["warmup_steps"] = round(options.pop("warmup_epochs") * steps_per_epoch)
    if issubclass(cls, StageDistiller):
        for key in ("num_stages", "teacher_stages", "student_stages"):
            options[key] = config["distill"][key]
    if issubclass(cls, AdversarialDistiller):
        options["seed"] = config["seed"]
    return cls(teacher, student, **options), pretrain_epochs


def compile_distiller(distiller, config, steps_per_epoch):
    """Compiles a distiller with the config's optimizers (SGD; Adam for D)."""
    recipe = config["distill"]
    kwargs = {}
    if isinstance(distiller, AdversarialDistiller):
        kwargs["d_optimizer"] = keras.optimizers.Adam(
            recipe["d_learning_rate"], beta_1=recipe["d_beta_1"]
        )
    distiller.compile(
        optimizer=_sgd(recipe, steps_per_epoch), jit_compile=config["jit_compile"], **kwargs
    )


def distill(config, verbose=1):
    """Distils the config's student from its trained teacher with `distill.method`.

    Writes into `<run_dir>/distill/` for HKSAN and `<run_dir>/distill_<method>/`
    for the other methods, so that one run directory holds a comparison.

    Args:
        config: A resolved config.
        verbose: Keras verbosity.

    Returns:
        The step's final metrics (also in `<run_dir>/<step>/metrics.json`).
    """
    # A multi-worker strategy must exist before any other TensorFlow op.
    strategy = make_strategy(config["strategy"])
    teacher_path = _teacher_path(config)
    method = config["distill"]["method"]
    step = _Step(config, distill_step_name(method))
    train, test, num_classes, steps_per_epoch = load_data(config)
    keras.mixed_precision.set_global_policy(config["mixed_precision"])
    with strategy.scope():
        teacher = keras.saving.load_model(teacher_path)
        check_teacher_is_trained(teacher, test, num_classes)
        _, student = build_models(config, num_classes)
        keras.utils.set_random_seed(config["seed"])
        distiller, pretrain_epochs = build_distiller(config, teacher, student, steps_per_epoch)
        if pretrain_epochs and not step.resumed_epochs:
            distiller.pretrain_teacher_attention(train, epochs=pretrain_epochs, verbose=verbose)
        elif pretrain_epochs:
            # The pretrained estimators come back with the checkpoint.
            distiller.train_teacher_attention = False
        compile_distiller(distiller, config, steps_per_epoch)
    epochs = config["distill"]["epochs"]
    extra = [
        BestStudentCheckpoint(
            os.path.join(step.directory, "best_student.keras"),
            initial_best=step.best_so_far(),
        )
    ]
    if isinstance(distiller, HKSANDistiller) and config["attention_images_every_epochs"]:
        extra.append(AttentionImages(
            next(iter(test))[0][:8], os.path.join(step.directory, "logs"),
            config["attention_images_every_epochs"], preprocessing(config)))
    callbacks = step.callbacks(epochs, extra)
    distiller.fit(train, validation_data=test, epochs=epochs,
                  callbacks=callbacks, verbose=verbose)
    distiller.student.save(os.path.join(step.directory, "last_student.keras"))
    distiller.save(os.path.join(step.directory, "distiller.keras"))
    return step.finish({
        "method": method, "teacher": teacher_path, "student": config["student"]["model"],
    })


# One selection rule for every model: the last epoch. (The best epoch is
# chosen on the test set, so it flatters whichever model it is applied to.)
DEFAULT_EVALUATIONS = {
    "teacher": ("teacher", "last.keras"),
    "student": ("student", "last.keras"),
    "distilled_student": ("distill", "last_student.keras"),
}


def check_model_fits(model, config, num_classes, path):
    """Raises a ConfigError when a loaded model cannot take the config's data.

    Args:
        model: A loaded classifier or distiller.
        config: A resolved config.
        num_classes: The dataset's number of classes (None: not checked).
        path: Where the model came from (for the message).
    """
    classifier = model.student if isinstance(model, Distiller) else model
    if not getattr(classifier, "inputs", None):
        return
    expected = _input_shape(config)
    got = tuple(classifier.inputs[0].shape[1:])
    if any(g is not None and g != e for g, e in zip(got, expected)) or len(got) != len(expected):
        raise ConfigError(
            f"{path} holds a model for images of shape {got}, but the config "
            f"'{config['name']}' feeds {expected} ({config['data']['dataset']}). Pass a "
            "model trained for this dataset, or the config it was trained with."
        )
    classes = classifier.outputs[0].shape[-1]
    if num_classes is not None and classes != num_classes:
        raise ConfigError(
            f"{path} holds a model with {classes} classes, but "
            f"{config['data']['dataset']} has {num_classes}. Pass a model trained for "
            "this dataset, or the config it was trained with."
        )


def evaluate(config, model_path=None):
    """Test loss and accuracy of a model, or of every model the run has.

    Args:
        config: A resolved config.
        model_path: A `.keras` classifier or distiller; by default the run's
            teacher, student trained alone and distilled students, each as
            it was at the last epoch (the same rule for all).

    Returns:
        `{name: {"loss": ..., "accuracy": ...}}`, also written to
        `<run_dir>/evaluate.json`.
    """
    if model_path:
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"No model at {model_path}.")
        paths = {os.path.basename(model_path): model_path}
    else:
        candidates = dict(DEFAULT_EVALUATIONS)
        for method in METHODS:
            if method != "hksan":
                candidates[f"distilled_student_{method}"] = (
                    distill_step_name(method), "last_student.keras"
                )
        paths = {
            name: os.path.join(config["run_dir"], *parts)
            for name, parts in candidates.items()
            if os.path.exists(os.path.join(config["run_dir"], *parts))
        }
        if not paths:
            raise FileNotFoundError(
                f"No trained models in {config['run_dir']}; run train-teacher and "
                "distill first, or pass --model."
            )
    _, test, num_classes, _ = load_data(config)
    results = {}
    for name, path in paths.items():
        model = keras.saving.load_model(path)
        check_model_fits(model, config, num_classes, path)
        if not isinstance(model, Distiller):
            model.compile(
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
        scores = model.evaluate(test, verbose=0, return_dict=True)
        results[name] = {"path": path, "loss": float(scores["loss"]), "accuracy": float(scores["accuracy"])}
        print(f"{name}: test accuracy {scores['accuracy']:.4f}, loss {scores['loss']:.4f} ({path})", flush=True)
    os.makedirs(config["run_dir"], exist_ok=True)
    with open(os.path.join(config["run_dir"], "evaluate.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def run_experiment(config, verbose=1):
    """Teacher, student alone, distillation (`distill.method`) and evaluation.

    Steps that finished earlier in the same run directory are reused, and an
    interrupted one resumes.

    Args:
        config: A resolved config.
        verbose: Keras verbosity.

    Returns:
        The output of `evaluate`.
    """
    steps = (
        ("teacher", lambda: train_classifier(config, "teacher", verbose)),
        ("student", lambda: train_classifier(config, "student", verbose)),
        (distill_step_name(config["distill"]["method"]), lambda: distill(config, verbose)),
    )
    for name, run_step in steps:
        if os.path.exists(os.path.join(config["run_dir"], name, "metrics.json")):
            print(f"{name}: finished earlier in {config['run_dir']}, reused", flush=True)
        else:
            run_step()
    return evaluate(config)


def _load_student(config, model_path=None):
    """`(student, path)`: `model_path` (a classifier or a distiller's student),
    else the run's distilled student of the last epoch."""
    step = distill_step_name(config["distill"]["method"])
    path = model_path or os.path.join(config["run_dir"], step, "last_student.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model at {path}; run distill first, or pass --model.")
    model = keras.saving.load_model(path)
    return (model.student if isinstance(model, Distiller) else model), path


def raw_test_images(config):
    """The config's test images as a client has them: uint8, with their labels.

    Images of ImageNet-style datasets are resized and center-cropped to the
    model's size (as the evaluation does) and rounded back to uint8, so that
    every artifact, TFLite included, reads the same pixels.

    Returns:
        `(images, labels)` numpy arrays.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    spec = config["data"]
    builder = data.prepared_builder(spec["dataset"], spec["data_dir"], spec["manual_dir"],
                                    spec["download"])
    dataset = builder.as_dataset(split=spec["test_split"], as_supervised=True)
    if spec["test_size"] is not None:
        dataset = dataset.take(spec["test_size"])
    prep = preprocessing(config)
    if prep["resize"] != "none":
        dataset = dataset.map(lambda image, label: (tf.cast(tf.clip_by_value(tf.round(
            data.resize_raw(image[None], prep)[0]), 0, 255), tf.uint8), label))
    images, labels = [], []
    for image, label in tfds.as_numpy(dataset.batch(1000)):
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def report(config, model_path=None, latency_runs=100):
    """The compression report of a run: teacher, distilled student, its TFLite exports.

    Exports into `<run_dir>/report/` (never overwritten) and measures every
    artifact on the config's raw test images (see `hksan_keras.report`).

    Args:
        config: A resolved config.
        model_path: The student (`.keras` classifier or distiller); defaults
            to the run's distilled student of the last epoch.
        latency_runs: Timed runs per artifact.

    Returns:
        The rows, also in `<run_dir>/report/report.json`.
    """
    from hksan_keras import report as reports

    student, path = _load_student(config, model_path)
    teacher_path = _teacher_path(config)
    teacher = keras.saving.load_model(teacher_path)
    train, _, num_classes, _ = load_data(config)
    for model, where in ((student, path), (teacher, teacher_path)):
        check_model_fits(model, config, num_classes, where)
    images, labels = raw_test_images(config)
    rows = reports.compression_report(
        teacher, student, images, labels, preprocessing(config),
        os.path.join(config["run_dir"], "report"), representative_data=train,
        latency_runs=latency_runs)
    print(f"Compression report ({len(labels)} test images, {path}):")
    print(reports.format_report(rows), flush=True)
    return rows


def visualize(config, model_path=None, num_images=8):
    """Attention maps of the run's HKSAN distiller and its learning curves, as PNGs.

    Writes `<run_dir>/visualize/attention.png` (per row: a test image, then
    per stage the teacher's and the student's attention over it) and
    `curves.png` (accuracy and every loss term per epoch of each step).

    Args:
        config: A resolved config.
        model_path: An `HKSANDistiller` `.keras` file; defaults to the run's.
        num_images: How many test images to draw.

    Returns:
        The paths written.
    """
    from hksan_keras import visualize as pictures

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
    written = pictures.visualize_run(distiller, images, preprocessing(config), config["run_dir"], directory)
    print(f"wrote {written['attention']}" + (f" and {written['curves']}" if written["curves"] else ""),
          flush=True)
    return written


def preprocessing(config):
    """The evaluation preprocessing of a config's dataset (a `data.preprocessing_spec`)."""
    return data.dataset_preprocessing(config["data"]["dataset"], config["data"]["image_size"])


def export(config, model_path=None, format="tf_saved_model", quantization="float32"):
    """Exports the run's distilled student (or `model_path`) for raw uint8 images.

    Args:
        config: A resolved config.
        model_path: A `.keras` classifier or distiller; defaults to the
            distilled student of the last epoch.
        format: "tf_saved_model" (to <run_dir>/export/saved_model) or
            "tflite" (to <run_dir>/export/student_<quantization>.tflite).
        quantization: For TFLite: "float32", "float16", "dynamic" or "int8"
            (calibrated on batches of the config's training pipeline).

    Returns:
        The path written.
    """
    from hksan_keras import export as exporters

    model, path = _load_student(config, model_path)
    check_model_fits(model, config, None, path)
    spec = preprocessing(config)
    directory = os.path.join(config["run_dir"], "export")
    os.makedirs(directory, exist_ok=True)
    exporters.write_preprocessing(spec, os.path.join(config["run_dir"], "preprocessing.json"))
    if format == "tflite":
        representative = load_data(config)[0] if quantization == "int8" else None
        written = exporters.export_tflite(
            model, os.path.join(directory, f"student_{quantization}.tflite"), spec,
            quantization, representative,
        )
    else:
        written = exporters.export_saved_model(model, os.path.join(directory, "saved_model"), spec)
    print(f"exported {path} to {written}", flush=True)
    return written
