"""What a config describes, built: the models, the distiller and its optimizers.

The translation from a resolved config (see `hksan_keras.config`) to Keras
objects, shared by the experiment steps (`hksan_keras.experiment`) and the
export, report and visualize steps, which also check that a loaded model
fits the config's data.
"""

import keras

from hksan_keras import data, models
from hksan_keras.config import ConfigError
from hksan_keras.distillers import (
    METHODS,
    AdversarialDistiller,
    Distiller,
    StageDistiller,
)
from hksan_keras.training import milestone_sgd


def build_models(config, num_classes, teacher_weights=False):
    """The teacher and student of a config, from the model zoo.

    Args:
        config: A resolved config.
        num_classes: Number of classes of the dataset.
        teacher_weights: Load `teacher.weights` into the teacher (the
            teacher step of such a config; later steps read the run's
            saved teacher).

    Returns:
        `(teacher, student)` functional models, untrained but for the
        teacher with `teacher_weights`. Each one's initial weights depend
        only on `seed` and its own section (the seed is set before each is
        built, which resets Python's, NumPy's and the backend's global
        random state), so the student trained alone and the distilled
        student of a run start from the same weights.

    Example:

    >>> teacher, student = build_models(config, num_classes=10)
    """
    shape = data.config_input_shape(config)
    keras.utils.set_random_seed(config["seed"])
    teacher = models.get(
        config["teacher"]["model"], num_classes,
        weight_decay=config["teacher"]["weight_decay"], input_shape=shape,
        weights=config["teacher"]["weights"] if teacher_weights else None,
    )
    keras.utils.set_random_seed(config["seed"])
    student = models.get(
        config["student"]["model"], num_classes,
        weight_decay=config["student"]["weight_decay"], input_shape=shape,
    )
    return teacher, student


def build_distiller(config, teacher, student, steps_per_epoch, num_examples=None):
    """The config's distiller (`distill.method`) around a teacher and a student.

    Args:
        config: A resolved config.
        teacher: The trained teacher.
        student: The untrained student.
        steps_per_epoch: Batches per epoch (DKD's warm-up is set in epochs).
        num_examples: Training examples, for CRD's memory bank; by default
            read from the config's dataset.

    Returns:
        `(distiller, pretrain_teacher_attention_epochs)`; the second is 0
        except for HKSAN with pretraining.

    Example:

    >>> distiller, pretrain_epochs = build_distiller(config, teacher, student, 391)
    """
    method = config["distill"]["method"]
    cls = METHODS[method]
    options = dict(config["distill"][method])
    pretrain_epochs = options.pop("pretrain_teacher_attention_epochs", 0)
    # Options that configs give in epochs and the constructors in steps.
    for epochs, steps in (("warmup_epochs", "warmup_steps"), ("init_epochs", "init_steps")):
        if epochs in options:
            options[steps] = round(options.pop(epochs) * steps_per_epoch)
    if issubclass(cls, StageDistiller):
        for key in ("num_stages", "teacher_stages", "student_stages"):
            options[key] = config["distill"][key]
    if issubclass(cls, AdversarialDistiller):
        options["seed"] = config["seed"]
    if cls.NEEDS_EXAMPLE_INDEX:
        # CRD's memory bank: one entry per training example.
        if num_examples is None:
            spec = data.data_spec(config)
            num_examples = data.num_examples(
                spec["dataset"], spec["train_split"], spec["data_dir"], spec["train_size"])
        options["num_examples"] = num_examples
    return cls(teacher, student, **options), pretrain_epochs


def compile_distiller(distiller, config, steps_per_epoch):
    """Compiles a distiller with the config's optimizers.

    The student trains with `distill`'s milestone SGD (the same recipe as
    the student alone, so that the two are comparable); an adversarial
    method's discriminator with Adam (`d_learning_rate`, `d_beta_1`).

    Args:
        distiller: The output of `build_distiller`.
        config: A resolved config.
        steps_per_epoch: Batches per epoch (milestones are set in epochs).
    """
    recipe = config["distill"]
    kwargs = {}
    if isinstance(distiller, AdversarialDistiller):
        kwargs["d_optimizer"] = keras.optimizers.Adam(
            recipe["d_learning_rate"], beta_1=recipe["d_beta_1"]
        )
    distiller.compile(
        optimizer=milestone_sgd(recipe, steps_per_epoch), jit_compile=config["jit_compile"], **kwargs
    )


def check_model_fits(model, config, num_classes, path):
    """Raises a ConfigError when a loaded model cannot take the config's data.

    Args:
        model: A loaded classifier or distiller.
        config: A resolved config.
        num_classes: The dataset's number of classes (None: not checked).
        path: Where the model came from (for the message).

    Raises:
        ConfigError: The model's input shape or number of classes differs
            from the config's dataset.
    """
    classifier = model.student if isinstance(model, Distiller) else model
    if not getattr(classifier, "inputs", None):
        return
    expected = data.config_input_shape(config)
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
