"""The experiment steps: train the teacher, the student alone, distil, evaluate.

Each step takes a resolved config (`hksan_keras.config.resolve_config`) and
writes into `<run_dir>/<step>/` (layout and resume rules: `hksan_keras.runs`);
rerunning an interrupted step resumes it, and a finished step is never
overwritten. The models and the distiller come from `hksan_keras.build`, the
data from `hksan_keras.data.load_data`, the optimizers from
`hksan_keras.training.milestone_sgd`. The export, report and visualize steps
live beside their modules (`export.export_step`, `report.report_step`,
`visualize.visualize_step`). TensorFlow only (tf.data pipelines).
"""

import json
import os

import keras

from hksan_keras.build import build_distiller, build_models, check_model_fits, compile_distiller
from hksan_keras.callbacks import BestStudentCheckpoint
from hksan_keras.data import config_preprocessing, load_data
from hksan_keras.distillers import METHODS, Distiller, HKSANDistiller
from hksan_keras.distribute import make_strategy
from hksan_keras.runs import Step, distill_step_name, is_finished, last_epoch_models, teacher_path
from hksan_keras.training import milestone_sgd
from hksan_keras.visualize import AttentionImages


def train_on_labels(config, role, verbose=1):
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

    Raises:
        ValueError: `role` is neither "teacher" nor "student".
        FileExistsError: The step finished earlier in this run directory.

    Example:

    >>> train_on_labels(config, "teacher", verbose=2)
    """
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}.")
    if role == "teacher" and config["teacher"]["weights"]:
        return _teacher_from_weights(config)
    # A multi-worker strategy must exist before any other TensorFlow op.
    strategy = make_strategy(config["strategy"])
    step = Step(config, role)
    train, test, num_classes, steps_per_epoch = load_data(config, role)
    keras.mixed_precision.set_global_policy(config["mixed_precision"])
    recipe = config["teacher"] if role == "teacher" else config["distill"]
    with strategy.scope():
        teacher, student = build_models(config, num_classes)
        model = teacher if role == "teacher" else student
        keras.utils.set_random_seed(config["seed"])
        model.compile(
            milestone_sgd(recipe, steps_per_epoch),
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


def _teacher_from_weights(config):
    """The teacher step of `teacher.weights`: load, test and save, no training.

    The saved `<run_dir>/teacher/last.keras` is what every later step reads,
    as for a trained teacher.
    """
    step = Step(config, "teacher")
    _, test, num_classes, _ = load_data(config, "teacher")
    # Saved in the config's precision, as a trained teacher would be.
    keras.mixed_precision.set_global_policy(config["mixed_precision"])
    teacher, _ = build_models(config, num_classes, teacher_weights=True)
    teacher.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    accuracy = float(teacher.evaluate(test, verbose=0, return_dict=True)["accuracy"])
    teacher.save(os.path.join(step.directory, "last.keras"))
    weights = config["teacher"]["weights"]
    print(f"teacher: {config['teacher']['model']} with weights {weights!r} (not trained here), "
          f"test accuracy {accuracy:.4f}", flush=True)
    return step.finish({
        "model": config["teacher"]["model"], "weights": weights,
        "best_epoch_test_accuracy": accuracy, "last_epoch_test_accuracy": accuracy,
    })


def distill(config, verbose=1):
    """Distils the config's student from its trained teacher with `distill.method`.

    Writes into `<run_dir>/distill/` for HKSAN and `<run_dir>/distill_<method>/`
    for the other methods, so that one run directory holds a comparison.

    Args:
        config: A resolved config.
        verbose: Keras verbosity.

    Returns:
        The step's final metrics (also in `<run_dir>/<step>/metrics.json`).

    Raises:
        FileNotFoundError: No trained teacher (see `runs.teacher_path`).
        FileExistsError: The step finished earlier in this run directory.

    Example:

    >>> distill(resolve_config(path, ["distill.method=kd"]))
    """
    # A multi-worker strategy must exist before any other TensorFlow op.
    strategy = make_strategy(config["strategy"])
    teacher_file = teacher_path(config)
    method = config["distill"]["method"]
    step = Step(config, distill_step_name(method))
    train, test, num_classes, steps_per_epoch = load_data(
        config, with_index=METHODS[method].NEEDS_EXAMPLE_INDEX)
    keras.mixed_precision.set_global_policy(config["mixed_precision"])
    with strategy.scope():
        teacher = keras.saving.load_model(teacher_file)
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
            config["attention_images_every_epochs"], config_preprocessing(config)))
    callbacks = step.callbacks(epochs, extra)
    distiller.fit(train, validation_data=test, epochs=epochs,
                  callbacks=callbacks, verbose=verbose)
    distiller.student.save(os.path.join(step.directory, "last_student.keras"))
    distiller.save(os.path.join(step.directory, "distiller.keras"))
    return step.finish({
        "method": method, "teacher": teacher_file, "student": config["student"]["model"],
    })


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

    Raises:
        FileNotFoundError: No model at `model_path`, or none in the run.
        ConfigError: A model does not fit the config's dataset.

    Example:

    >>> evaluate(config)["distilled_student"]["accuracy"]
    """
    if model_path:
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"No model at {model_path}.")
        paths = {os.path.basename(model_path): model_path}
    else:
        paths = last_epoch_models(config)
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


def accuracy_table(results):
    """The lines that end an experiment: each model's test accuracy, and the gain.

    Args:
        results: The output of `evaluate`, `{name: {"accuracy": ...}}`.

    Returns:
        A list of lines: a heading, one line per model (accuracy in %), and
        for each distilled student its gain over the student trained alone,
        in percentage points, where the run has both.

    Example:

    >>> print("\\n".join(accuracy_table(evaluate(config))))
    Test accuracy (last epoch)
      teacher               92.10 %
      student               55.40 %
      distilled_student     59.80 %   +4.40 points over the student alone
    """
    lines = ["Test accuracy (last epoch)"]
    alone = results.get("student", {}).get("accuracy")
    for name, scores in results.items():
        line = f"  {name:<28} {100 * scores['accuracy']:6.2f} %"
        if alone is not None and name.startswith("distilled_student"):
            line += f"   {100 * (scores['accuracy'] - alone):+.2f} points over the student alone"
        lines.append(line)
    return lines


def run_experiment(config, verbose=1):
    """Teacher, student alone, distillation (`distill.method`) and evaluation.

    Steps that finished earlier in the same run directory are reused, and an
    interrupted one resumes.

    Args:
        config: A resolved config.
        verbose: Keras verbosity.

    Returns:
        The output of `evaluate`.

    Example:

    >>> run_experiment(resolve_config("configs/cifar10_resnet56_resnet20_quick.json"))
    """
    steps = (
        ("teacher", lambda: train_on_labels(config, "teacher", verbose)),
        ("student", lambda: train_on_labels(config, "student", verbose)),
        (distill_step_name(config["distill"]["method"]), lambda: distill(config, verbose)),
    )
    for name, run_step in steps:
        if is_finished(config, name):
            print(f"{name}: finished earlier in {config['run_dir']}, reused", flush=True)
        else:
            run_step()
    return evaluate(config)
