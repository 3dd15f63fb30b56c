"""Checks that name a bad input before training starts.

Everything here runs eagerly, outside the training graph: on the models when
a distiller is built, and on the first batch of the training data when `fit`
is called. Errors are `ValueError` or `TypeError` whose message names the
argument, the value and the fix.
"""

import math

import numpy as np


ANY_VALUE = object()


def user_stacklevel():
    """The `stacklevel` for `warnings.warn` that names the user's line.

    Counts the frames from the function calling `warnings.warn` out to the
    first one outside the hksan_keras package, so that a warning raised
    deep in a distiller's constructor points at the line that built it.
    """
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def drop_removed_options(owner, config, removed):
    """A saved config without the options `owner` no longer takes.

    `from_config` calls this, so that files saved by an older version load
    whenever they used the behaviour that now always applies, and fail with
    the option's name otherwise (rather than a bare `TypeError`).

    Args:
        owner: The class name, for the message.
        config: The saved config dict.
        removed: `{name: value}`: each removed option and the value whose
            behaviour is the one kept (`ANY_VALUE` for one that only
            mattered with another removed option, such as a temperature).

    Returns:
        A copy of `config` without the removed options.

    Raises:
        ValueError: The config sets a removed option to another value.

    Example:

    >>> drop_removed_options("HKSANDistiller", {"scale_guide": False},
    ...                      {"scale_guide": False})
    {}
    """
    refused = [
        f"{name}={config[name]!r}"
        for name, kept in removed.items()
        if name in config and kept is not ANY_VALUE and config[name] != kept
    ]
    if refused:
        raise ValueError(
            f"This {owner} was saved by an older hksan_keras with "
            f"{', '.join(refused)}, an option removed since (see "
            "docs/results.md for the measurements that retired it). Load it "
            "with that version, or load the student saved beside it."
        )
    return {key: value for key, value in config.items() if key not in removed}


def check_same_input_shape(teacher, student):
    """Raises if teacher and student cannot take the same batch of images.

    Args:
        teacher: The teacher `keras.Model`.
        student: The student `keras.Model`.

    Raises:
        ValueError: Their known input dimensions differ.
    """
    from hksan_keras.taps import image_shape

    teacher_shape = image_shape(teacher)
    student_shape = image_shape(student)
    mismatch = len(teacher_shape) != len(student_shape) or any(
        t is not None and s is not None and t != s
        for t, s in zip(teacher_shape, student_shape)
    )
    if mismatch:
        raise ValueError(
            f"The teacher '{teacher.name}' takes images of shape {teacher_shape} "
            f"and the student '{student.name}' {student_shape}, but distillation "
            "feeds both the same batch. Build them for the same input size "
            "(e.g. both with input_shape="
            f"{tuple(d for d in teacher_shape)})."
        )


def check_separate_weights(teacher, student):
    """Raises if the student shares weights with the teacher.

    Distillation freezes the teacher (`teacher.trainable = False`), which
    would freeze every layer the two share and leave that part of the
    student untrained (a student built on the teacher's own backbone).

    Args:
        teacher: The teacher `keras.Model`.
        student: The student `keras.Model`.

    Raises:
        ValueError: A trainable weight of the student is one of the
            teacher's; the message names them.
    """
    teacher_weights = {id(w) for w in teacher.weights}
    # Trainable ones only: a frozen input step (an adapted Normalization)
    # shared by both loses nothing.
    shared = [w.path for w in student.trainable_weights if id(w) in teacher_weights]
    if shared:
        raise ValueError(
            f"The student '{student.name}' shares {len(shared)} weights with the teacher "
            f"'{teacher.name}' ({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}). "
            "Distillation freezes the teacher, which would freeze them in the student too. "
            "Give the student its own layers: keras.models.clone_model(layer_or_model) makes "
            "a copy, and copy.set_weights(original.get_weights()) starts it from the same values."
        )


def check_augmentation_layers(model, role):
    """Warns if `model` holds random augmentation layers.

    Distillers run the student in training mode, where Keras's random
    preprocessing layers (RandomFlip, RandomTranslation, RandAugment, MixUp,
    ...) change its images, and the teacher in inference mode, where they do
    nothing: the two would see different images, and their logits and
    feature maps would no longer describe the same one.

    Args:
        model: The student `keras.Model`.
        role: Its role, for the message.

    Returns:
        The names of the random layers found (nested models included).
    """
    import warnings

    import keras

    found = [
        layer.name
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if ".preprocessing" in type(layer).__module__
        and any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values())
    ]
    if found:
        warnings.warn(
            f"The {role} '{model.name}' has random augmentation layers {found}: in training the student "
            "sees images they changed and the teacher (in inference mode) the originals, so their outputs "
            "do not describe the same image. Augment in the input pipeline instead, where both models see "
            "the same images (e.g. train.map(lambda x, y: (augment(x, training=True), y))), and build the "
            "models without these layers.",
            stacklevel=user_stacklevel(),
        )
    return found


def check_logit_standardization(num_classes, method):
    """Warns that standardised logits of two classes carry no confidence.

    z-scored over two classes, every example's logits are -1/sqrt(2) and
    +1/sqrt(2) in some order (`losses.standardize_logits`, sample standard
    deviation): the softened predictions then say only which class is
    larger, not by how much.

    Args:
        num_classes: The models' number of classes.
        method: The distiller's name, for the message.
    """
    import warnings

    if num_classes == 2:
        warnings.warn(
            f"{method} with logit_standardization on 2 classes: z-scored, each example's two logits are "
            "-0.71 and +0.71, so the teacher passes on only which class it predicts, not how sure it is. Use it "
            "without logit_standardization on two classes.",
            stacklevel=user_stacklevel(),
        )


def check_batch(images, labels, num_classes, image_shape):
    """Raises if a batch of images and labels does not fit the models.

    Args:
        images: A batch of images (array or tensor).
        labels: Integer labels of shape (batch,) or (batch, 1), or rows of
            shape (batch, num_classes) that are probability distributions
            (one-hot or soft labels: label smoothing, mixup, CutMix).
        num_classes: The models' number of classes.
        image_shape: The models' input shape without the batch dimension
            (None for unknown dimensions).

    Raises:
        ValueError: Empty batch, wrong image rank or channels, labels out of
            range or of another width, label rows that are not distributions.
        TypeError: Class-index labels of a float dtype, or labels that are
            not numbers at all.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    expected_rank = len(image_shape) + 1
    if images.ndim != expected_rank:
        raise ValueError(
            f"The images have shape {images.shape} (rank {images.ndim}), but the "
            f"models take batches of shape (batch, {', '.join(map(str, image_shape))}) "
            f"(rank {expected_rank}). Batch the dataset (e.g. dataset.batch(64)) "
            "and give each image its height, width and channels."
        )
    if images.shape[0] == 0:
        raise ValueError("The first batch of the training data is empty; it holds no images.")
    for axis, (got, want) in enumerate(zip(images.shape[1:], image_shape), start=1):
        if want is not None and got != want:
            what = "channels" if axis == len(image_shape) else f"size along axis {axis}"
            raise ValueError(
                f"The images have shape {images.shape[1:]}, but the models take "
                f"{tuple(image_shape)}: {what} {got} instead of {want}. "
                + ("Convert them (e.g. grayscale to RGB with tf.image.grayscale_to_rgb)."
                   if axis == len(image_shape)
                   else "Resize them in the input pipeline (e.g. keras.layers.Resizing).")
            )
    if labels.dtype.kind not in "iubf":
        raise TypeError(
            f"The labels have dtype {labels.dtype}; they must be integer class "
            "indices (or one-hot rows)."
        )
    if labels.ndim == 2 and labels.shape[-1] != 1:
        if labels.shape[-1] != num_classes:
            raise ValueError(
                f"The labels have shape {labels.shape}: rows of width "
                f"{labels.shape[-1]}, but the models predict {num_classes} classes. "
                f"Pass integer class indices of shape (batch,) or one-hot rows of width "
                f"{num_classes}."
            )
        rows = labels.astype("float64")
        sums = rows.sum(axis=-1)
        if np.any(rows < 0) or np.any(np.abs(sums - 1.0) > 1e-3):
            worst = int(np.argmax(np.abs(sums - 1.0) + (rows < 0).any(axis=-1)))
            raise ValueError(
                f"The labels are rows of width {num_classes} but not probability "
                f"distributions (row {worst} sums to {sums[worst]:.4g}"
                f"{' and has negative entries' if (rows[worst] < 0).any() else ''}). "
                "Rows are read as soft labels (one-hot, label smoothing, mixup): "
                "each must be non-negative and sum to 1. Pass integer class "
                "indices of shape (batch,), or normalise the rows."
            )
        return
    if labels.ndim > 2:
        raise ValueError(
            f"The labels have shape {labels.shape}; pass integer class indices of "
            f"shape (batch,) or one-hot rows of shape (batch, {num_classes})."
        )
    if labels.dtype.kind == "f":
        raise TypeError(
            f"The labels are floats ({labels.dtype}) of shape {labels.shape}; class "
            "indices must be integers. Cast them (e.g. tf.cast(labels, 'int32')), "
            "or pass one-hot rows."
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"A label is {bad}, outside [0, {num_classes}): the models predict "
            f"{num_classes} classes. Check the dataset's labels, or build teacher and "
            "student with the dataset's number of classes."
        )


class MissingDependencyError(ImportError):
    """A Python module that a step needs is not installed; the message names the pip command."""


def require(module, purpose):
    """Imports `module` (TensorFlow or TFDS), or says in one line what needs it.

    The distillers train on JAX without TensorFlow; the data pipelines,
    TFDS, export, the report and the command line need it.

    Args:
        module: The module's import name, e.g. "tensorflow".
        purpose: What needs it, e.g. "hksan_keras.data".

    Returns:
        The module.

    Raises:
        MissingDependencyError: It cannot be imported; the message names
            `purpose`, the module and how to install it.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{purpose} needs {module}, which cannot be imported ({error}). Install it "
            "(pip install tensorflow tensorflow-datasets); without it the distillers still "
            "train on JAX from numpy arrays or a keras.utils.PyDataset."
        ) from None


def _images(x):
    # Batches of CRD carry {"images": ..., "index": ...}.
    return x["images"] if isinstance(x, dict) and "images" in x else x


def first_batch(x, y=None, batch_size=None):
    """The first (images, labels) batch of what `fit` was given, or None.

    Args:
        x: What `fit` takes as `x`: arrays, a `tf.data.Dataset`, a
            `keras.utils.PyDataset` or a Python generator.
        y: Labels when `x` holds images only.
        batch_size: The batch size of array inputs.

    Returns:
        `(images, labels)` as numpy arrays, or None when the input cannot be
        looked at without consuming it (a Python generator).

    Raises:
        ValueError: The dataset holds no batch at all.
    """
    try:
        import tensorflow as tf
    except ImportError:  # JAX without TensorFlow: no tf.data either.
        tf = None
    if tf is not None and isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise ValueError(
                    "The dataset yields no labels; it must yield (images, labels) batches."
                )
            return np.asarray(_images(element[0])), np.asarray(element[1])
        raise ValueError(
            "The training dataset is empty: it yields no batch, so fit would train "
            "nothing. Check its split, its filters and take()/skip()."
        )
    import keras

    if isinstance(x, keras.utils.PyDataset) and len(x) > 0:
        # Indexing a PyDataset loads one batch without consuming anything.
        element = x[0]
        if isinstance(element, (tuple, list)) and len(element) >= 2:
            return np.asarray(_images(element[0])), np.asarray(element[1])
        return None
    x = _images(x)
    if y is not None and hasattr(x, "shape") and hasattr(y, "__len__"):
        if len(x) == 0 or len(y) == 0:
            raise ValueError(
                "The training arrays are empty: fit would train nothing."
            )
        size = batch_size or 32
        return np.asarray(x[:size]), np.asarray(y[:size])
    return None


def check_teacher_is_trained(teacher, dataset, num_classes, batches=4):
    """Warns when the teacher's accuracy on a few batches is near chance.

    Near chance means less than three standard errors above it (chance
    accuracy p = 1 / num_classes over n images has standard error
    sqrt(p (1 - p) / n)): an untrained teacher, or one given images
    preprocessed otherwise than it was trained on (a keras.applications
    model with its own preprocessing inside, fed normalised images). Where
    three standard errors reach halfway from chance to 100 % (up to 36
    images of 2 classes, 4 of 10), the images are too few to tell and
    nothing is said.

    Args:
        teacher: The teacher `keras.Model` (logits).
        dataset: Batches of `(images, labels)`: a `tf.data.Dataset` (e.g.
            the test pipeline) or a list of numpy pairs. Labels are class
            indices or rows (scored by their largest entry).
        num_classes: Number of classes.
        batches: How many batches to score.

    Returns:
        The measured accuracy, or None when the dataset held no batch.

    Example:

    >>> check_teacher_is_trained(teacher, test_ds, 10)
    0.93
    """
    import warnings

    correct = total = 0
    source = dataset.take(batches) if hasattr(dataset, "take") else list(dataset)[:batches]
    for images, labels in source:
        predicted = np.argmax(np.asarray(teacher(images, training=False)), axis=-1)
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[-1] != 1:
            labels = np.argmax(labels, axis=-1)
        correct += int(np.sum(predicted == labels.reshape(-1)))
        total += len(predicted)
    if not total:
        return None
    accuracy = correct / total
    chance = 1.0 / num_classes
    margin = 3.0 * math.sqrt(chance * (1.0 - chance) / total)
    # Too few images to tell (three standard errors reach halfway from
    # chance to 100 %, e.g. up to 36 images of 2 classes): no verdict.
    if accuracy < chance + margin and margin < (1.0 - chance) / 2:
        warnings.warn(
            f"The teacher looks untrained: {100 * accuracy:.1f}% accurate on {total} "
            f"images, near chance ({100 * chance:.1f}%). Distilling from it teaches "
            "the student nothing. Train it first (hksan-keras train-teacher) or check "
            "teacher.path; or it expects images preprocessed otherwise (e.g. raw "
            "[0, 255] pixels for a keras.applications model with its own "
            "preprocessing inside).",
            stacklevel=user_stacklevel(),
        )
    return accuracy
