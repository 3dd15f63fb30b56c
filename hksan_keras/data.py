"""CIFAR input pipelines from tensorflow-datasets (TensorFlow only).

A minimal pipeline for the examples, tests and benchmarks: real TFDS data,
per-channel normalisation, the standard CIFAR augmentation (4-pixel pad,
random 32x32 crop, horizontal flip) for training, batching and prefetch.
"""

import os

CIFAR_STATS = {
    "cifar10": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
}


def resolve_data_dir(data_dir=None):
    """The TFDS data directory: `data_dir`, else $TFDS_DATA_DIR, else TFDS's default.

    Args:
        data_dir: An explicit directory, or None.

    Returns:
        A directory path, or None to let TFDS use its default.
    """
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def cifar_dataset(
    name="cifar10",
    split="train",
    batch_size=128,
    training=False,
    data_dir=None,
    take=None,
    seed=None,
):
    """A batched, normalised CIFAR `tf.data.Dataset` of (images, labels).

    Args:
        name: "cifar10" or "cifar100".
        split: A TFDS split ("train", "test", "train[:10%]", ...).
        batch_size: Batch size.
        training: Shuffle and augment (pad 4 + random crop + flip).
        data_dir: TFDS data directory (see `resolve_data_dir`). Prepared data
            there is read as is; nothing is downloaded.
        take: If given, use only the first `take` examples of the split.
        seed: Seed of shuffling and augmentation.

    Returns:
        A `tf.data.Dataset` yielding float32 images (batch, 32, 32, 3),
        normalised per channel, and int64 labels (batch,).

    Example:

    >>> train = cifar_dataset("cifar10", "train", training=True,
    ...                       data_dir="../shared/data/tensorflow_datasets")
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    if name not in CIFAR_STATS:
        raise ValueError(f"name must be one of {sorted(CIFAR_STATS)}, got {name!r}.")
    data_dir = resolve_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in "
            f"{builder.data_dir!r}. Pass data_dir= (or set TFDS_DATA_DIR) to "
            "the directory that holds it, or run "
            f"`tfds.builder({name!r}).download_and_prepare()` on a machine with "
            "internet access."
        )
    dataset = builder.as_dataset(split=split, as_supervised=True)
    if take is not None:
        dataset = dataset.take(take)
    mean, std = (tf.constant(v, tf.float32) for v in CIFAR_STATS[name])

    def normalize(image, label):
        return (tf.cast(image, tf.float32) - mean) / std, label

    dataset = dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        dataset = dataset.cache().shuffle(
            10_000, seed=seed, reshuffle_each_iteration=True
        )
        rng = tf.random.Generator.from_seed(seed if seed is not None else 0)

        def augment(image, label):
            seeds = rng.make_seeds(2)
            image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
            image = tf.image.stateless_random_crop(image, (32, 32, 3), seeds[:, 0])
            image = tf.image.stateless_random_flip_left_right(image, seeds[:, 1])
            return image, label

        dataset = dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.cache()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
