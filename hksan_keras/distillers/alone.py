"""The student trained alone, on the labels, through the same train_step."""

import keras

from hksan_keras.distillers.base import Distiller


@keras.saving.register_keras_serializable(package="hksan_keras")
class StudentAlone(Distiller):
    """The baseline without a teacher's help: `label_weight * CE(y, l_S)`.

    The teacher is kept (for the same interface and `.keras` files) but never
    run. Training the student through the distillers' train_step, with the
    same optimizer and schedule, makes it the fair "no distillation" row of
    a comparison.

    Args:
        teacher: A `keras.Model` giving logits (not used in training).
        student: The `keras.Model` to train.
        label_weight: Weight of the label cross-entropy.
        global_clipnorm: See `Distiller`.
        **kwargs: Standard `keras.Model` arguments.

    Example:

    >>> baseline = StudentAlone(teacher, student)
    >>> baseline.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> baseline.fit(train_ds, epochs=10)
    """

    USES_TEACHER = False

    def __init__(self, teacher, student, label_weight=Distiller.OPTIONS.label_weight,
                 global_clipnorm=Distiller.OPTIONS.global_clipnorm, **kwargs):
        kwargs.setdefault("name", "student_alone")
        super().__init__(teacher, student, label_weight=label_weight, global_clipnorm=global_clipnorm,
                         **kwargs)
