"""Trained weights that ship inside the package, as keras.applications' `weights=`.

Each shipped file is a Keras `.weights.h5` of one zoo model trained on one
dataset, listed in `weights/manifest.json` beside it with what a user needs
to trust it: the test accuracy measured on the whole test set after loading
the file, the number of training images, the recipe, the exact command that
trained it, the git revision and the file's SHA-256. docs/models.md is
generated from it (`python -m hksan_keras.models.pretrained > docs/models.md`).

The shipped teachers were trained on every training image of their dataset;
the benchmark protocols in benchmarks/ train their own teachers outside their
validation splits and never use these.
"""

import datetime
import hashlib
import json
import os
import pathlib

WEIGHTS_DIR = pathlib.Path(__file__).parent / "weights"
MANIFEST_NAME = "manifest.json"


def manifest(directory=None):
    """The shipped weights: `{model name: {dataset: entry}}`.

    Args:
        directory: Where the weights and `manifest.json` are (default: the
            package's `hksan_keras/models/weights/`).

    Returns:
        A dict of dicts; each entry has "file", "sha256", "num_classes",
        "input_shape", "test_accuracy" (a fraction), "test_accuracy_first_1000"
        (on the test split's first 1,000 images, what the tests check),
        "train_images",
        "recipe", "command", "revision" and "date".
    """
    path = pathlib.Path(directory or WEIGHTS_DIR) / MANIFEST_NAME
    if not path.exists():
        return {}
    with open(path) as f:
        return json.load(f)


def _available(entries):
    pairs = [f"{name} on {dataset}" for name, by_dataset in sorted(entries.items()) for dataset in sorted(by_dataset)]
    return ", ".join(pairs) if pairs else "none yet"


def entry(name, dataset, directory=None):
    """The manifest entry of `name`'s weights trained on `dataset`.

    Raises:
        ValueError: no weights ship for this model and dataset; the message
            lists the pairs that do.
    """
    entries = manifest(directory)
    if dataset not in entries.get(name, {}):
        raise ValueError(
            f"No shipped weights for {name!r} trained on {dataset!r}; shipped: {_available(entries)}. "
            "Use no weights (weights=None; in a config teacher.weights=null) for random initial weights, or the "
            "path of a .weights.h5 file of the same model."
        )
    return entries[name][dataset]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_path(weights):
    """Whether `weights` names a file rather than a dataset (as keras.applications decides)."""
    return str(weights).endswith(".h5") or os.sep in str(weights) or os.path.exists(str(weights))


def load_weights(model, name, weights, directory=None):
    """Loads shipped or user weights into a freshly built zoo model.

    Args:
        model: The `keras.Model` built by `hksan_keras.models.get(name, ...)`.
        name: Its zoo name ("resnet56", ...), the manifest's key.
        weights: None (keep the random initial weights), a dataset name with
            shipped weights ("cifar10"), or the path of a `.weights.h5` file
            saved from the same architecture.
        directory: Where shipped weights are (default: the package's).

    Returns:
        `model`, with its weights loaded.

    Raises:
        ValueError: no weights ship for `name` on that dataset; the model's
            number of classes differs from the weights'; or the shipped file
            does not match its recorded SHA-256 (a damaged install or a Git
            LFS pointer).
        FileNotFoundError: `weights` is a path that does not exist.
    """
    if weights is None:
        return model
    if is_path(weights):
        if not os.path.exists(weights):
            raise FileNotFoundError(f"weights={weights!r}: no such file.")
        model.load_weights(weights)
        return model
    found = entry(name, weights, directory)
    classes = model.output.shape[-1]
    if classes != found["num_classes"]:
        raise ValueError(
            f"The shipped {name} weights for {weights!r} have {found['num_classes']} classes, but the model was "
            f"built with num_classes={classes}. Build it with num_classes={found['num_classes']} (or leave "
            "num_classes unset), then replace its head for your classes."
        )
    path = pathlib.Path(directory or WEIGHTS_DIR) / found["file"]
    if not path.exists() or _sha256(path) != found["sha256"]:
        raise ValueError(
            f"The shipped weights file {path} is missing or damaged (its SHA-256 differs from the manifest's). "
            "Reinstall hksan-keras; from a git clone, make sure the file is not a Git LFS pointer."
        )
    model.load_weights(path)
    return model


def ship(model, name, dataset, test_accuracy, train_images, recipe, command, revision, directory=None,
         test_accuracy_first_1000=None):
    """Writes a trained zoo model's weights and its manifest entry (maintainers).

    The file is `<name>_<dataset>.weights.h5`; an existing entry for the same
    model and dataset is replaced, the others are kept.

    Args:
        model: The trained model (built by `models.get(name, ...)`).
        name: Its zoo name.
        dataset: The dataset it was trained on ("cifar10").
        test_accuracy: Its accuracy on the whole test set, a fraction,
            measured after loading the written file.
        train_images: How many training images it saw.
        recipe: One line: optimizer, schedule, epochs, batch, augmentation.
        command: The exact command that trained it.
        revision: The git revision checked out when shipping (train and ship
            from the same checkout).
        directory: Where to write (default: the package's weights folder).
        test_accuracy_first_1000: Its accuracy on the test split's first
            1,000 images, a fraction, measured the same way: the figure a
            quick test of the installed file compares with.

    Returns:
        The path of the weights file.
    """
    directory = pathlib.Path(directory or WEIGHTS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}_{dataset}.weights.h5"
    model.save_weights(path)
    entries = manifest(directory)
    entries.setdefault(name, {})[dataset] = {
        "file": path.name,
        "sha256": _sha256(path),
        "num_classes": int(model.output.shape[-1]),
        "input_shape": [int(d) for d in model.input.shape[1:]],
        "test_accuracy": round(float(test_accuracy), 4),
        "test_accuracy_first_1000": (None if test_accuracy_first_1000 is None
                                     else round(float(test_accuracy_first_1000), 4)),
        "train_images": int(train_images),
        "recipe": recipe,
        "command": command,
        "revision": revision,
        "date": datetime.date.today().isoformat(),
    }
    with open(directory / MANIFEST_NAME, "w") as f:
        json.dump(entries, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def markdown(directory=None):
    """docs/models.md: how to load shipped weights and the table of them."""
    lines = [
        "# Trained weights in the package",
        "",
        "Generated from `hksan_keras/models/weights/manifest.json` by",
        "`python -m hksan_keras.models.pretrained > docs/models.md`; a test keeps them equal.",
        "",
        "```python",
        'teacher = hksan_keras.models.get("resnet56", weights="cifar10")',
        'teacher = hksan_keras.models.cifar_resnet(56, num_classes=10, weights="cifar10")',
        "```",
        "",
        "`weights` is None (random initial weights), a dataset named below, or the path of a",
        "`.weights.h5` file saved from the same architecture, as in `keras.applications`. A model",
        "and dataset without shipped weights, or a different `num_classes`, is refused with the",
        "list of what ships. These teachers saw every training image of their dataset (no",
        "validation split held out); the benchmark protocols train their own teachers instead.",
        "They expect what `hksan_keras.data`'s pipelines give: float images normalised per channel",
        "with the dataset's statistics (`hksan_keras.data.CIFAR_STATS`, pixels in 0..255: `(x - mean) / std`);",
        "an exported student carries that preprocessing itself. Test accuracy is measured on the whole",
        "test split after loading the shipped file (`scripts/ship_weights.py`, which writes the file and",
        "its entry; the revision is the checkout's when shipping).",
        "",
        "| model | dataset | test accuracy (%) | training images | recipe | command | revision |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [
        f"| {name} | {dataset} | {100 * e['test_accuracy']:.2f} | {e['train_images']} | {e['recipe']} "
        f"| `{e['command']}` | {e['revision'][:7]} |"
        for name, by_dataset in sorted(manifest(directory).items())
        for dataset, e in sorted(by_dataset.items())
    ]
    lines += rows or ["| (none shipped yet) | | | | | | |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
