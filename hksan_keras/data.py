"""Input pipelines (TensorFlow only): tensorflow-datasets, image folders, arrays.

Every pipeline yields `(images, labels)` batches of float32 images,
normalised per channel, and int64 labels. Training pipelines shuffle and
augment; evaluation pipelines never augment. Augmentation draws its random
numbers from `tf.data.Dataset.random(seed)` through stateless image ops, so
the same seed gives the same batches, and each epoch gets new draws. (Keras's
random preprocessing layers are not repeatable inside tf.data, even with a
seed: checked with Keras 3.15.)

- CIFAR-10/100: 4-pixel zero padding, random 32x32 crop, horizontal flip.
- ImageNet and other image datasets: random resized crop (8%-100% of the
  area, aspect ratio 3/4-4/3) and flip for training; resize of the shorter
  side to image_size / 0.875 and center crop for evaluation.
"""

import math
import os
import warnings

import numpy as np

from hksan_keras.checks import MissingDependencyError, require, user_stacklevel

CIFAR_STATS = {
    "cifar10": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
}
IMAGENET_STATS = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
SHUFFLE_BUFFER = 10_000


def resolve_data_dir(data_dir=None):
    """The TFDS data directory: `data_dir`, else $TFDS_DATA_DIR, else TFDS's default.

    Args:
        data_dir: An explicit directory, or None.

    Returns:
        A directory path, or None to let TFDS use its default.
    """
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def _random_seeds(seed):
    """An endless dataset of stateless seeds, new ones every epoch."""
    tf = require("tensorflow", "hksan_keras.data")

    return tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True
    ).batch(2)


def _cifar_augment(image, label, seed):
    tf = require("tensorflow", "hksan_keras.data")

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
    image = tf.image.stateless_random_crop(image, (32, 32, 3), seeds[0])
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    return image, label


def _resized_crop_augment(image_size, encoded=False):
    """Random resized crop + flip; with `encoded`, of a JPEG string.

    A JPEG is decoded only inside the crop window (`decode_and_crop_jpeg`):
    an ImageNet image is decoded at a fraction of its size.
    """
    tf = require("tensorflow", "hksan_keras.data")

    def augment(image, label, seed):
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
        shape = tf.image.extract_jpeg_shape(image) if encoded else tf.shape(image)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seeds[0],
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.08, 1.0),
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        if encoded:
            window = tf.stack([begin[0], begin[1], size[0], size[1]])
            image = tf.image.decode_and_crop_jpeg(image, window, channels=3)
        else:
            image = tf.slice(image, begin, size)
        image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
        return image, label

    return augment


CROP_FRACTION = 0.875


def center_crop(images, image_size):
    """Evaluation resize: shorter side to image_size / 0.875, then a center crop.

    The one implementation used by the evaluation pipelines and by the
    exported serving graph.

    Args:
        images: One image (H, W, C) or a batch (B, H, W, C), any size.
        image_size: The side of the square output.

    Returns:
        Float images of spatial size (image_size, image_size).
    """
    tf = require("tensorflow", "hksan_keras.data")

    spatial = tf.shape(images)[-3:-1]
    shape = tf.cast(spatial, tf.float32)
    scale = (image_size / CROP_FRACTION) / tf.reduce_min(shape)
    images = tf.image.resize(images, tf.cast(tf.round(shape * scale), tf.int32))
    return tf.image.resize_with_crop_or_pad(images, image_size, image_size)


def _center_crop(image_size, encoded=False):
    tf = require("tensorflow", "hksan_keras.data")

    def crop(image, label):
        if encoded:
            image = tf.cast(tf.io.decode_jpeg(image, channels=3), tf.float32)
        return center_crop(image, image_size), label

    return crop


RESIZE_MODES = ("none", "shorter_side_then_center_crop", "center_square_then_resize")


def center_square_then_resize(images, image_size):
    """The largest centered square, resized to image_size (as folder_dataset reads files).

    Args and returns as for `center_crop`: images (H, W, C) or (B, H, W, C)
    of any size in, float images of spatial size (image_size, image_size)
    out.
    """
    tf = require("tensorflow", "hksan_keras.data")

    spatial = tf.shape(images)[-3:-1]
    side = tf.reduce_min(spatial)
    images = tf.image.resize_with_crop_or_pad(images, side, side)
    return tf.image.resize(images, (image_size, image_size))


def resize_raw(images, preprocessing):
    """Raw images of any size to the model's size, as the spec's evaluation does.

    Args:
        images: A batch (B, H, W, 3) of raw pixel values (any dtype).
        preprocessing: A `preprocessing_spec`.

    Returns:
        Float32 images (unchanged in size when the spec's resize is "none").
    """
    tf = require("tensorflow", "hksan_keras.data")

    images = tf.cast(images, tf.float32)
    if preprocessing["resize"] == "shorter_side_then_center_crop":
        return center_crop(images, preprocessing["image_size"])
    if preprocessing["resize"] == "center_square_then_resize":
        return center_square_then_resize(images, preprocessing["image_size"])
    return images


def preprocessing_spec(stats, image_size=None, resize="none"):
    """What the evaluation pipeline does to a raw image, as plain data.

    Written as JSON next to exported models and in run directories, and
    applied inside the exported serving graph.

    Args:
        stats: `(mean, std)` per channel, in the [0, 255] scale.
        image_size: The model's square input side (None: any).
        resize: How a raw image of any size becomes the model's size:
            "none" (it must have it already), "shorter_side_then_center_crop"
            (shorter side to image_size / 0.875, then a center crop: the
            ImageNet-style evaluation of `tfds_dataset`) or
            "center_square_then_resize" (as `folder_dataset` reads files).

    Returns:
        A dict with "mean", "std", "image_size", "resize" and, for
        "shorter_side_then_center_crop", "crop_fraction".
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}.")
    spec = {
        "mean": [float(v) for v in stats[0]],
        "std": [float(v) for v in stats[1]],
        "image_size": None if image_size is None else int(image_size),
        "resize": resize,
        "input": "uint8 RGB images, pixel values 0-255",
    }
    if resize == "shorter_side_then_center_crop":
        spec["crop_fraction"] = CROP_FRACTION
    return spec


def dataset_preprocessing(name, image_size=224):
    """The `preprocessing_spec` of `tfds_dataset(name, ...)`'s evaluation pipeline."""
    if name in CIFAR_STATS:
        return preprocessing_spec(CIFAR_STATS[name], 32)
    return preprocessing_spec(IMAGENET_STATS, image_size, "shorter_side_then_center_crop")


def make_pipeline(
    dataset,
    batch_size,
    training,
    stats,
    augment=None,
    preprocess=None,
    seed=None,
    cache=True,
    with_index=False,
):
    """Turns a dataset of single `(image, label)` pairs into batches.

    Args:
        dataset: `tf.data.Dataset` of (image uint8/float in [0, 255], label);
            images may be encoded strings when `augment` and `preprocess`
            decode them. A label is a class index (batched as int64) or a
            row of per-class values (float rows batched as float32, integer
            rows as int64).
        batch_size: Batch size.
        training: Shuffle and augment.
        stats: `(mean, std)` per channel, in the [0, 255] scale.
        augment: `fn(image, label, seed) -> (image, label)` for training.
        preprocess: `fn(image, label) -> (image, label)` for evaluation (and
            for training when `augment` is None).
        seed: Seed of shuffling and augmentation.
        cache: Cache decoded examples in memory (small datasets).
        with_index: Give each example its position in `dataset` (fixed
            before any shuffling): batches are then
            `({"images": images, "index": int64 indices}, labels)`, as CRD's
            memory bank needs (`distillers.CRDDistiller`).

    Returns:
        A batched, prefetched `tf.data.Dataset`.
    """
    tf = require("tensorflow", "hksan_keras.data")

    autotune = tf.data.AUTOTUNE
    mean, std = (tf.constant(v, tf.float32) for v in stats)

    def label_dtype(label):
        # Rows of floats (one-hot, or soft from mixup or label smoothing)
        # stay float32: cast to integers they would be rounded to zeros.
        if label.dtype.is_floating and label.shape.rank and label.shape[-1] != 1:
            return tf.cast(label, tf.float32)
        return tf.cast(label, tf.int64)

    def to_float(image, label):
        if image.dtype != tf.string:
            image = tf.cast(image, tf.float32)
        # With `with_index` the label slot carries (label, index) until the end.
        return image, tf.nest.map_structure(label_dtype, label)

    def normalize(image, label):
        return (image - mean) / std, label

    if with_index:
        dataset = dataset.enumerate().map(lambda index, pair: (pair[0], (pair[1], index)))
    # Cached and shuffled as they come (uint8: a quarter of float32's
    # memory); cast afterwards, which gives the same values.
    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(
            SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.map(to_float, num_parallel_calls=autotune)
    if training and augment is not None:
        dataset = tf.data.Dataset.zip(
            (dataset, _random_seeds(seed if seed is not None else 0))
        ).map(
            lambda pair, seeds: augment(*pair, seeds),
            num_parallel_calls=autotune,
        )
    elif preprocess is not None:
        dataset = dataset.map(preprocess, num_parallel_calls=autotune)
    dataset = dataset.map(normalize, num_parallel_calls=autotune)
    if with_index:
        dataset = dataset.map(lambda image, pair: ({"images": image, "index": pair[1]}, pair[0]))
    return dataset.batch(batch_size).prefetch(autotune)


def prepared_builder(name, data_dir, manual_dir=None, download=True):
    """A TFDS builder whose data is prepared, downloading it first if allowed."""
    tfds = require("tensorflow_datasets", "hksan_keras.data")

    builder = tfds.builder(name, data_dir=resolve_data_dir(data_dir))
    if builder.is_prepared():
        return builder
    if not download and not manual_dir:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and "
            "downloading is off. Pass data_dir (or set TFDS_DATA_DIR) to the "
            "directory that holds it, or allow downloading (download=True, "
            "data.download=true)."
        )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    try:
        # As tfds.load does: download and prepare on first use, with TFDS's
        # own progress bars, into data_dir or TFDS's default directory.
        builder.download_and_prepare(download_config=config)
    except ImportError as error:
        # Not the network: a module TFDS imports lazily on this path only.
        # (TFDS re-raises lazy imports without the module's name.)
        module = error.name or getattr(error.__cause__, "name", None)
        if module:
            package = module.split(".")[0]
            raise MissingDependencyError(
                f"Preparing TFDS dataset {name!r} needs the Python module "
                f"{module!r}, which is not installed: pip install {package}"
            ) from error
        raise MissingDependencyError(
            f"Preparing TFDS dataset {name!r} failed to import a module: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else error!r}. "
            "Install what it names with pip."
        ) from error
    except Exception as error:  # noqa: BLE001 - any failure gets the same explanation
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and could "
            f"not be downloaded and prepared there ({type(error).__name__}: {reason[:200]}). "
            "Connect to the internet, or pass data_dir (or set TFDS_DATA_DIR) to a "
            "directory that holds it prepared"
            + ("; imagenet2012 needs manual_dir, the folder with ILSVRC2012's tar files."
               if name == "imagenet2012" else ".")
        ) from None
    return builder


def tfds_dataset(
    name,
    split,
    batch_size=128,
    training=False,
    data_dir=None,
    manual_dir=None,
    take=None,
    image_size=224,
    seed=None,
    download=True,
    with_index=False,
):
    """A pipeline over any TFDS image-classification dataset.

    Prepared data in `data_dir` (or $TFDS_DATA_DIR, else TFDS's default
    directory) is read as is; a dataset not prepared there is downloaded and
    prepared first, as `tfds.load` does (`imagenet2012` from `manual_dir`),
    unless `download=False`.

    Args:
        name: TFDS name: "cifar10", "cifar100", "imagenet2012", or any other
            dataset with (image, label) supervised keys.
        split: A TFDS split ("train", "test", "validation", "train[:10%]").
        batch_size: Batch size.
        training: Shuffle and augment.
        data_dir: TFDS data directory.
        manual_dir: TFDS manual download directory (ImageNet).
        take: Use only the first `take` examples of the split.
        image_size: Output size for non-CIFAR datasets.
        seed: Seed of shuffling and augmentation.
        download: Download and prepare the dataset when it is not prepared.
        with_index: Batches of `({"images": ..., "index": ...}, labels)`
            with each example's position in the split (see
            `make_pipeline`); the files are then read in their fixed order.

    Returns:
        A batched `tf.data.Dataset` of (images, labels).

    Example:

    >>> train = tfds_dataset("cifar10", "train", training=True,
    ...                      data_dir="../shared/data/tensorflow_datasets")
    """
    tfds = require("tensorflow_datasets", "hksan_keras.data")

    builder = prepared_builder(name, data_dir, manual_dir, download)
    # ImageNet: files read in shuffled order when training, JPEGs decoded in
    # the pipeline's map (cropped while decoding), not by TFDS.
    encoded = name == "imagenet2012"
    # Example indices need the same file order every epoch.
    shuffle_files = training and encoded and not with_index
    dataset = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(shuffle_seed=seed) if shuffle_files else None,
        decoders={"image": tfds.decode.SkipDecoding()} if encoded else None,
    )
    if take is not None:
        dataset = dataset.take(take)
    if name in CIFAR_STATS:
        pipeline = make_pipeline(
            dataset, batch_size, training, CIFAR_STATS[name],
            augment=_cifar_augment, seed=seed, with_index=with_index,
        )
    else:
        pipeline = make_pipeline(
            dataset, batch_size, training, IMAGENET_STATS,
            augment=_resized_crop_augment(image_size, encoded),
            preprocess=_center_crop(image_size, encoded), seed=seed,
            cache=not encoded, with_index=with_index,
        )
    pipeline.preprocessing = dataset_preprocessing(name, image_size)
    return pipeline


def cifar_dataset(name="cifar10", split="train", batch_size=128, training=False,
                  data_dir=None, take=None, seed=None):
    """A CIFAR-10/100 pipeline (see `tfds_dataset`).

    Args:
        name: "cifar10" or "cifar100".
        split: A TFDS split.
        batch_size: Batch size.
        training: Shuffle and augment (pad 4 + random crop + flip).
        data_dir: TFDS data directory.
        take: Use only the first `take` examples.
        seed: Seed of shuffling and augmentation.

    Returns:
        A batched `tf.data.Dataset` of float32 images (batch, 32, 32, 3),
        normalised per channel, and int64 labels.

    Example:

    >>> test = cifar_dataset("cifar10", "test", data_dir=data_dir)
    """
    if name not in CIFAR_STATS:
        raise ValueError(f"name must be one of {sorted(CIFAR_STATS)}, got {name!r}.")
    return tfds_dataset(name, split, batch_size, training, data_dir, take=take, seed=seed)


def array_dataset(images, labels, batch_size=128, training=False, seed=None, stats=None, with_index=False):
    """A pipeline over numpy arrays of images in [0, 255] and their labels.

    Args:
        images: Array (N, H, W, C).
        labels: Array (N,) (or (N, 1)) of class indices, or (N, classes)
            rows: one-hot, or soft (mixup, label smoothing; float rows are
            kept as float32 and trained on with the soft cross-entropy).
        batch_size: Batch size.
        training: Shuffle and flip horizontally.
        seed: Seed of shuffling and augmentation.
        stats: `(mean, std)` per channel in the [0, 255] scale, or the
            `preprocessing` of another pipeline (`stats=train.preprocessing`:
            held-out images normalised like the training images, as the
            exported model does). Default: these images' own, which only a
            training pipeline should use (a warning says so otherwise).
        with_index: Batches of `({"images": ..., "index": ...}, labels)`,
            the index being the row in `images` (see `make_pipeline`).

    Returns:
        A batched `tf.data.Dataset` of (images, labels), with the
        normalisation it applies in its `preprocessing` attribute (a
        `preprocessing_spec`, for `export_saved_model`).

    Raises:
        ValueError: Labels of another shape, or not one per image.

    Example:

    >>> train = array_dataset(x_train, y_train, training=True, seed=0)
    >>> test = array_dataset(x_test, y_test, stats=train.preprocessing)
    """
    tf = require("tensorflow", "hksan_keras.data")

    images = np.asarray(images)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim not in (1, 2) or len(images) != len(labels):
        raise ValueError(
            f"Got {len(images)} images and labels of shape {labels.shape}: give one label per image, "
            "as class indices of shape (N,) or rows of shape (N, classes)."
        )
    if isinstance(stats, dict):
        stats = (tuple(stats["mean"]), tuple(stats["std"]))
    if stats is None:
        if not training:
            warnings.warn(
                "array_dataset(training=False) without stats normalises these images with their own mean and "
                "std, not the training images'. Pass stats=train.preprocessing (the training pipeline's).",
                stacklevel=user_stacklevel())
        pixels = images.reshape(-1, images.shape[-1]).astype("float64")
        stats = (tuple(pixels.mean(0)), tuple(pixels.std(0) + 1e-6))

    def flip(image, label, seed):
        return tf.image.stateless_random_flip_left_right(image, tf.cast(seed, tf.int64)), label

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    pipeline = make_pipeline(dataset, batch_size, training, stats, augment=flip, seed=seed, with_index=with_index)
    # Kept so that an exported model can apply the same normalisation.
    pipeline.preprocessing = preprocessing_spec(stats, images.shape[1])
    return pipeline


def folder_dataset(directory, batch_size=64, training=False, image_size=224, seed=None,
                   validation_split=None, subset=None, split_seed=0):
    """A pipeline over an image folder with one subfolder per class.

    Uses `keras.utils.image_dataset_from_directory` to list and decode the
    files (class indices follow the sorted subfolder names), then the
    ImageNet-style preprocessing of `tfds_dataset`.

    Args:
        directory: Folder with one subfolder of images per class.
        batch_size: Batch size.
        training: Shuffle and augment (random resized crop + flip).
        image_size: Output size.
        seed: Seed of shuffling and augmentation.
        validation_split: Fraction held out, with `subset`.
        subset: "training" or "validation" when `validation_split` is set.
        split_seed: Seed of the file order that `validation_split` divides:
            the training and validation calls must give the same one (the
            default does), and it stays the same whatever `seed` a run
            uses, so that runs of several seeds validate on the same files.

    Returns:
        A batched `tf.data.Dataset` of (images, labels).

    Example:

    >>> train = folder_dataset("flowers/", training=True, image_size=64,
    ...                        validation_split=0.2, subset="training", seed=0)
    """
    import keras

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Image folder {directory!r} does not exist.")
    files = keras.utils.image_dataset_from_directory(
        directory,
        batch_size=None,
        image_size=(image_size, image_size),
        # Files in a seeded random order, not class by class: what a split
        # divides, and what training reads (shuffled again with `seed` below).
        shuffle=training or validation_split is not None,
        seed=split_seed,
        validation_split=validation_split,
        subset=subset,
        crop_to_aspect_ratio=True,
    )
    pipeline = make_pipeline(
        files, batch_size, training, IMAGENET_STATS,
        augment=_resized_crop_augment(image_size), seed=seed,
    )
    pipeline.preprocessing = preprocessing_spec(
        IMAGENET_STATS, image_size, "center_square_then_resize"
    )
    return pipeline


def num_examples(name, split, data_dir=None, take=None):
    """How many examples a TFDS split holds (capped by `take`)."""
    tfds = require("tensorflow_datasets", "hksan_keras.data")

    builder = tfds.builder(name, data_dir=resolve_data_dir(data_dir))
    count = builder.info.splits[split].num_examples
    return min(count, take) if take is not None else count


def num_classes(name, data_dir=None):
    """How many classes a TFDS dataset's `label` feature has."""
    tfds = require("tensorflow_datasets", "hksan_keras.data")

    builder = tfds.builder(name, data_dir=resolve_data_dir(data_dir))
    return builder.info.features["label"].num_classes


# The facts and pipelines of an experiment config's `data` section (see
# hksan_keras.config): the steps of hksan_keras.experiment and the
# export/report/visualize steps read their data through these.


def config_input_shape(config):
    """The image shape a config's models take: 32x32 for CIFAR, else `data.image_size`.

    Args:
        config: A resolved experiment config.

    Returns:
        `(height, width, 3)`.
    """
    if config["data"]["dataset"] in CIFAR_STATS:
        return (32, 32, 3)
    size = config["data"]["image_size"]
    return (size, size, 3)


def config_preprocessing(config):
    """The evaluation preprocessing of a config's dataset (a `preprocessing_spec`).

    Args:
        config: A resolved experiment config.

    Returns:
        The spec that exported models and `preprocessing.json` carry.
    """
    return dataset_preprocessing(config["data"]["dataset"], config["data"]["image_size"])


def data_spec(config, role="student"):
    """The `data` section as a role trains on it.

    Args:
        config: A resolved experiment config.
        role: "teacher" takes `teacher.train_split`/`teacher.train_size`
            where the config sets them; anything else `data`'s.

    Returns:
        A copy of `config["data"]` with the role's training split and size.
    """
    spec = dict(config["data"])
    if role == "teacher":
        for key in ("train_split", "train_size"):
            if config["teacher"][key] is not None:
                spec[key] = config["teacher"][key]
    return spec


def load_data(config, role="student", with_index=False):
    """The training and test pipelines of a config and the dataset's facts.

    Args:
        config: A resolved experiment config.
        role: "teacher" trains on `teacher.train_split`/`teacher.train_size`
            where the config sets them; anything else on `data`'s.
        with_index: Training batches carry each example's index (CRD).

    Returns:
        `(train, test, num_classes, steps_per_epoch)`.

    Example:

    >>> train, test, classes, steps = load_data(config, "teacher")
    """
    spec = data_spec(config, role)
    common = dict(
        data_dir=spec["data_dir"], manual_dir=spec["manual_dir"],
        image_size=spec["image_size"], download=spec["download"],
    )
    train = tfds_dataset(
        spec["dataset"], spec["train_split"], spec["batch_size"], training=True,
        take=spec["train_size"], seed=config["seed"], with_index=with_index, **common,
    )
    test = tfds_dataset(
        spec["dataset"], spec["test_split"], max(spec["batch_size"], 256),
        take=spec["test_size"], **common,
    )
    examples = num_examples(
        spec["dataset"], spec["train_split"], spec["data_dir"], spec["train_size"]
    )
    classes = num_classes(spec["dataset"], spec["data_dir"])
    return train, test, classes, math.ceil(examples / spec["batch_size"])


def raw_test_images(config):
    """A config's test images as a client has them: uint8, with their labels.

    Images of ImageNet-style datasets are resized and center-cropped to the
    model's size (as the evaluation does) and rounded back to uint8, so that
    every artifact, TFLite included, reads the same pixels.

    Args:
        config: A resolved experiment config.

    Returns:
        `(images, labels)` numpy arrays.
    """
    tf = require("tensorflow", "hksan_keras.data")
    tfds = require("tensorflow_datasets", "hksan_keras.data")

    spec = config["data"]
    builder = prepared_builder(spec["dataset"], spec["data_dir"], spec["manual_dir"],
                               spec["download"])
    dataset = builder.as_dataset(split=spec["test_split"], as_supervised=True)
    if spec["test_size"] is not None:
        dataset = dataset.take(spec["test_size"])
    prep = config_preprocessing(config)
    if prep["resize"] != "none":
        dataset = dataset.map(lambda image, label: (tf.cast(tf.clip_by_value(tf.round(
            resize_raw(image[None], prep)[0]), 0, 255), tf.uint8), label))
    images, labels = [], []
    for image, label in tfds.as_numpy(dataset.batch(1000)):
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)
