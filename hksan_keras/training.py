"""Small training recipes shared by the examples and benchmarks."""

import keras


def cosine_sgd(learning_rate, total_steps, momentum=0.9):
    """SGD with Nesterov momentum and a cosine decay to zero.

    Args:
        learning_rate: Initial learning rate.
        total_steps: Steps over which the rate decays to zero.
        momentum: Momentum factor.

    Returns:
        A `keras.optimizers.SGD`.

    Example:

    >>> optimizer = cosine_sgd(0.1, total_steps=10 * steps_per_epoch)
    """
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    return keras.optimizers.SGD(schedule, momentum=momentum, nesterov=True)


def train_classifier(model, train, epochs, steps_per_epoch, learning_rate=0.1, **fit_kwargs):
    """Trains a logits classifier on labels alone (a teacher, or a student baseline).

    Args:
        model: A `keras.Model` that outputs logits.
        train: A dataset of `(images, labels)` batches.
        epochs: Number of epochs.
        steps_per_epoch: Batches per epoch (sets the length of the schedule).
        learning_rate: Initial rate of `cosine_sgd`.
        **fit_kwargs: Passed to `fit` (`validation_data`, `callbacks`, ...).

    Returns:
        The `History` of `fit`.

    Example:

    >>> train_classifier(teacher, train_ds, epochs=10, steps_per_epoch=79)
    """
    model.compile(
        cosine_sgd(learning_rate, epochs * steps_per_epoch),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model.fit(train, epochs=epochs, **fit_kwargs)
