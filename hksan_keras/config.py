"""Experiment configs: JSON files with defaults, inheritance and overrides.

A config file holds only what differs from `DEFAULTS` (or from the file it
`"extends"`, a path relative to itself). Every key is checked against
`DEFAULTS`, and every override is parsed and type-checked, before anything
is trained; `resolve_config` then checks the values themselves (model and
method names, choices, the discriminator spec, epochs).
"""

import copy
import json
import os

from hksan_keras import models
from hksan_keras.distillers import METHODS
from hksan_keras.distribute import STRATEGIES
from hksan_keras.options import KINDS


class ConfigError(ValueError):
    """A config file, key or value that cannot be used, with the fix in its message."""


# Keys of older versions that are nested now: {old key: new path}.
_MOVED = {
    "discriminator_units": "discriminator.units",
    "discriminator_regularization": "discriminator.regularization",
    "class_head": "discriminator.class_head",
    "fake_as_real_weight": "discriminator.fake_as_real_weight",
    "perturbation_rate": "discriminator.perturbation_rate",
}

DEFAULTS = {
    "name": "experiment",
    "description": "",
    "run_dir": None,
    "seed": 0,
    # BackupAndRestore every this many steps (null: at every epoch's end).
    "backup_every_steps": None,
    # HKSAN: write the attention maps of 8 test images to TensorBoard every
    # this many epochs (0: never).
    "attention_images_every_epochs": 1,
    # "float32", "mixed_float16" (GPUs) or "mixed_bfloat16" (TPUs, recent
    # CPUs and GPUs); loss terms stay float32 in every case.
    "mixed_precision": "float32",
    # XLA for the train step (Keras's "auto" turns it on for one GPU).
    "jit_compile": False,
    # "default" (one device), "mirrored" (local GPUs) or "multi_worker"
    # (workers from TF_CONFIG; only the chief writes the run directory).
    "strategy": "default",
    "data": {
        "dataset": "cifar10",
        "data_dir": None,
        "manual_dir": None,
        # Download and prepare a TFDS dataset that is not prepared yet.
        "download": True,
        "train_split": "train",
        "test_split": "test",
        "train_size": None,
        "test_size": None,
        "batch_size": 64,
        "image_size": 224,
    },
    "teacher": {
        "model": "resnet56",
        "path": None,
        # Trained weights instead of training: a dataset whose weights ship
        # with the package ("cifar10") or a .weights.h5 path
        # (hksan_keras.models.pretrained); train-teacher then only loads,
        # tests and saves them.
        "weights": None,
        # The teacher's own training images, when they differ from the
        # students' (data.train_split / data.train_size).
        "train_split": None,
        "train_size": None,
        "epochs": 240,
        "learning_rate": 0.05,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 5e-4,
        "lr_milestones": [150, 180, 210],
        "lr_decay": 0.1,
    },
    "student": {
        "model": "resnet20",
        "weight_decay": 5e-4,
    },
    "distill": {
        "method": "hksan",
        "epochs": 240,
        "learning_rate": 0.05,
        "momentum": 0.9,
        "nesterov": False,
        "lr_milestones": [150, 180, 210],
        "lr_decay": 0.1,
        "d_learning_rate": 1e-4,
        "d_beta_1": 0.5,
        "num_stages": None,
        "teacher_stages": None,
        "student_stages": None,
        # One section per method, from its distiller's OPTIONS declaration
        # (hksan_keras.options; every key and default: docs/options.md).
        **{method: cls.OPTIONS.config_defaults() for method, cls in METHODS.items()},
    },
}

# Keys whose value may be null or a value of this type.
_NULLABLE = {
    "run_dir": str,
    "backup_every_steps": int,
    "data.data_dir": str,
    "data.manual_dir": str,
    "data.train_size": int,
    "data.test_size": int,
    "teacher.path": str,
    "teacher.weights": str,
    "teacher.train_split": str,
    "teacher.train_size": int,
    "distill.num_stages": int,
    "distill.teacher_stages": list,
    "distill.student_stages": list,
    **{
        f"distill.{method}.{option.name}": KINDS[option.kind][1]
        for method, cls in METHODS.items()
        for option in cls.OPTIONS
        if option.config and option.nullable and option.kind != "spec"
    },
}


def _merge(base, update, prefix=""):
    merged = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key == "extends" and not prefix:
            continue
        if key not in base:
            moved = _MOVED.get(key)
            if moved and moved.split(".")[0] in base:
                raise ConfigError(
                    f"Unknown config key '{path}': it is '{prefix}{moved}' now."
                )
            raise ConfigError(
                f"Unknown config key '{path}'. Known keys here: "
                f"{sorted(prefix + k for k in base)}."
            )
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key '{path}' must be a mapping, got {value!r}.")
            merged[key] = _merge(base[key], value, prefix=f"{path}.")
        else:
            merged[key] = _check_type(path, base[key], value)
    return merged


def _check_type(path, default, value):
    if value is None:
        if default is None or path in _NULLABLE:
            return None
        raise ConfigError(f"Config key '{path}' cannot be null.")
    expected = _NULLABLE.get(path) or type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is list and isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, expected) or (
        isinstance(value, bool) and expected is not bool
    ):
        raise ConfigError(
            f"Config key '{path}' expects {expected.__name__}, got {value!r}."
        )
    return value


def load_config(path):
    """Loads a config file (following `"extends"`) over `DEFAULTS`.

    Args:
        path: Path of a JSON config file.

    Returns:
        The complete config dict.

    Example:

    >>> config = load_config("configs/cifar10_resnet164_resnet20_quick.json")
    >>> config["distill"]["epochs"]
    """
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path!r} does not exist.")
    try:
        with open(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as error:
        raise ConfigError(f"Config file {path!r} is not valid JSON: {error}.") from None
    base = DEFAULTS
    if "extends" in content:
        parent = os.path.join(os.path.dirname(path), content["extends"])
        base = load_config(parent)
    return _merge(base, content)


def apply_overrides(config, overrides):
    """Applies `key.path=value` overrides; values are parsed as JSON when they can be.

    Args:
        config: A complete config dict.
        overrides: Strings such as "distill.epochs=2" or "data.dataset=cifar100".

    Returns:
        A new config dict.

    Example:

    >>> apply_overrides(config, ["distill.hksan.hierarchy=flat"])
    """
    update = {}
    for override in overrides:
        if "=" not in override:
            raise ConfigError(
                f"Override {override!r} is not of the form key.path=value."
            )
        path, raw = override.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = update
        keys = path.strip().split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return _merge(config, update)


def save_config(config, path):
    """Writes a resolved config as JSON."""
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

def resolve_config(path, overrides=(), run_dir=None, data_dir=None):
    """Loads, overrides and checks a config before anything is trained.

    Args:
        path: Config file (configs/....json).
        overrides: "key.path=value" strings.
        run_dir: Run directory; defaults to the config's, else runs/<name>.
        data_dir: TFDS data directory; overrides `data.data_dir`.

    Returns:
        The complete config, with `run_dir` filled in.

    Raises:
        ConfigError: A file, key or value that cannot be used (the message
            says which, and the fix), before anything is trained.

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
    # Every method's section, not only the chosen method's: a bad value is
    # a mistake wherever it is, and is named before anything trains.
    for method, cls in METHODS.items():
        try:
            cls.OPTIONS.check(config["distill"][method], where=f"distill.{method}.")
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None
    for section in ("teacher", "distill"):
        if config[section]["epochs"] < 1:
            raise ConfigError(f"{section}.epochs must be >= 1.")
    method = config["distill"]["method"]
    init_epochs = config["distill"][method].get("init_epochs")
    if init_epochs is not None and init_epochs >= config["distill"]["epochs"]:
        raise ConfigError(
            f"distill.{method}.init_epochs ({init_epochs}) must be smaller than distill.epochs "
            f"({config['distill']['epochs']}): the initialisation stage would leave no training on the labels."
        )
    weights = config["teacher"]["weights"]
    if weights is not None and not models.pretrained.is_path(weights):
        if weights != config["data"]["dataset"]:
            raise ConfigError(
                f"teacher.weights is {weights!r}, weights trained on another dataset than data.dataset "
                f"({config['data']['dataset']!r}). Use teacher.weights={config['data']['dataset']} if they ship, "
                "a .weights.h5 path, or null to train the teacher.")
        try:
            models.pretrained.entry(config["teacher"]["model"], weights)
        except ValueError as error:
            raise ConfigError(f"teacher.weights: {error}") from None
    return config
