"""What every distiller shares: a frozen teacher, a student, label metrics,
evaluation, saving and export of the student."""

import keras
from keras import ops

from hksan_keras.losses import label_loss, sparse_labels
from hksan_keras.taps import require_graph


def _num_classes(model, role):
    require_graph(model, role)
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"The {role} '{model.name}' must output logits of shape "
            f"(batch, num_classes); its output shape is {shape}."
        )
    return shape[-1]


def _reject_probability_outputs(model, role):
    last = model.layers[-1] if model.layers else None
    activation = getattr(last, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") in (
        "softmax",
        "sigmoid",
    ):
        raise ValueError(
            f"The {role} '{model.name}' ends with a {activation.__name__} "
            "activation, but distillation needs logits. Rebuild it without "
            "the final activation (e.g. keras.applications models take "
            "`classifier_activation=None`)."
        )


@keras.saving.register_keras_serializable(package="hksan_keras")
class Distiller(keras.Model):
    """Base class of the distillers: frozen teacher, trained student.

    Subclasses implement `train_step`. The base gives them:
    `call()` returns the student's logits (so `predict` serves the student),
    `evaluate` reports the student's cross-entropy ("loss") and accuracy
    ("accuracy") on the labels, and `export_student` writes a SavedModel.

    The teacher is frozen by setting `teacher.trainable = False` on the
    model passed in.

    Args:
        teacher: A trained `keras.Model` that outputs logits.
        student: A `keras.Model` that outputs logits for the same classes.
        **kwargs: Standard `keras.Model` arguments (e.g. `name`).

    Example:

    >>> distiller = hksan_keras.HKSANDistiller(teacher, student)
    >>> distiller.evaluate(test_ds)   # {"loss": ..., "accuracy": ...}
    >>> distiller.student.save("student.keras")
    """

    def __init__(self, teacher, student, **kwargs):
        super().__init__(**kwargs)
        teacher_classes = _num_classes(teacher, "teacher")
        student_classes = _num_classes(student, "student")
        if teacher_classes != student_classes:
            raise ValueError(
                f"The teacher predicts {teacher_classes} classes and the "
                f"student {student_classes}; build the student with "
                f"num_classes={teacher_classes}."
            )
        _reject_probability_outputs(teacher, "teacher")
        _reject_probability_outputs(student, "student")
        self.num_classes = teacher_classes
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="accuracy"
        )

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    @staticmethod
    def unpack_batch(data):
        """Splits a batch into images and integer labels.

        Args:
            data: `(images, labels)`; labels may be integers or one-hot.

        Returns:
            A tuple `(images, labels)` with labels of shape (batch,).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError(
                "Distillation needs labels: pass (images, labels) batches."
            )
        if sample_weight is not None:
            raise ValueError(
                "Sample weights are not supported by the distillers; pass "
                "(images, labels) batches without weights."
            )
        return x, sparse_labels(y)

    def test_step(self, data):
        images, labels = self.unpack_batch(data)
        logits = self.student(images, training=False)
        batch_size = ops.cast(ops.shape(labels)[0], "float32")
        self.loss_tracker.update_state(
            label_loss(labels, logits), sample_weight=batch_size
        )
        self.accuracy_tracker.update_state(labels, logits)
        return {
            "loss": self.loss_tracker.result(),
            "accuracy": self.accuracy_tracker.result(),
        }

    def export_student(self, filepath, format="tf_saved_model"):
        """Exports the student alone for serving or phones.

        Args:
            filepath: Directory (SavedModel) or `.tflite` file to create; an
                existing path is never overwritten.
            format: "tf_saved_model" or "tflite".

        Returns:
            The path written.

        Example:

        >>> distiller.export_student("student_savedmodel")
        >>> served = tf.saved_model.load("student_savedmodel")
        >>> logits = served.serve(images)
        """
        from hksan_keras import export

        if format == "tflite":
            return export.export_tflite(self.student, filepath)
        if format == "tf_saved_model":
            return export.export_saved_model(self.student, filepath)
        raise ValueError(f"format must be 'tf_saved_model' or 'tflite', got {format!r}.")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for role in ("teacher", "student"):
            config[role] = keras.saving.deserialize_keras_object(config[role])
        return cls(**config)
