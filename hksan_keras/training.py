"""The SGD recipes: cosine decay for the examples, milestones for the configs.

Every optimizer that trains a teacher, a student alone or a distilled
student is built here, by `sgd`, so that the recipes differ only in their
learning-rate schedule.
"""

import keras


def sgd(schedule, momentum=0.9, nesterov=True):
    """The SGD of every recipe here: momentum, Nesterov by default.

    Args:
        schedule: A learning rate or a `keras.optimizers.schedules` schedule.
        momentum: Momentum factor.
        nesterov: Whether to use Nesterov momentum.

    Returns:
        A `keras.optimizers.SGD`.

    Example:

    >>> optimizer = sgd(0.1, momentum=0.9, nesterov=False)
    """
    return keras.optimizers.SGD(schedule, momentum=momentum, nesterov=nesterov)


def milestone_sgd(recipe, steps_per_epoch):
    """The SGD of an experiment config's training section (`teacher` or `distill`).

    The learning rate starts at `learning_rate` and is multiplied by
    `lr_decay` at each epoch of `lr_milestones` (a piecewise-constant
    schedule); with no milestones it stays constant.

    Args:
        recipe: A config section with `learning_rate`, `lr_milestones`,
            `lr_decay`, `momentum` and `nesterov`.
        steps_per_epoch: Batches per epoch (milestones are set in epochs).

    Returns:
        A `keras.optimizers.SGD`.

    Example:

    >>> optimizer = milestone_sgd(config["distill"], steps_per_epoch=391)
    """
    boundaries = [m * steps_per_epoch for m in recipe["lr_milestones"]]
    values = [recipe["learning_rate"] * recipe["lr_decay"] ** i for i in range(len(boundaries) + 1)]
    schedule = (
        keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        if boundaries
        else recipe["learning_rate"]
    )
    return sgd(schedule, momentum=recipe["momentum"], nesterov=recipe["nesterov"])


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
    return sgd(schedule, momentum=momentum, nesterov=True)


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
