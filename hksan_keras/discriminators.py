"""The logit discriminator: a source head (teacher or student) and class heads."""

import keras


@keras.saving.register_keras_serializable(package="hksan_keras")
class LogitDiscriminator(keras.layers.Layer):
    """Tells teacher logits from student logits, and classifies both.

    BatchNorm -> [Dense -> BatchNorm -> ReLU] x len(hidden_units)
    -> Dense(1 + num_classes). The first output unit is the source logit
    (teacher = real, student = fake); the other `num_classes` units are the
    class logits of the class-conditional head (absent with
    `class_head=False`: then Dense(1)).

    Batch normalisation is synchronised across replicas under a
    `tf.distribute` strategy, so the discriminator sees the same statistics
    whatever the number of devices.

    Args:
        num_classes: Number of classes (the width of the logits it reads).
        hidden_units: Widths of the hidden Dense layers.
        class_head: Whether D also classifies its input.
        kernel_regularizer: Regulariser of every Dense kernel (the distiller
            passes `L1L2(mu, mu)`, the term that keeps the discriminator from
            overpowering the student).
        batch_norm_momentum: Momentum of the moving statistics.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Returns (from `call`):
        A tuple `(source_logits, class_logits)` of shapes (batch,) and
        (batch, num_classes); `class_logits` is None without a class head.

    Example:

    >>> discriminator = LogitDiscriminator(10)
    >>> source, classes = discriminator(keras.random.normal((4, 10)))
    >>> source.shape, classes.shape
    ((4,), (4, 10))
    """

    def __init__(
        self,
        num_classes,
        hidden_units=(256, 256),
        class_head=True,
        kernel_regularizer=None,
        batch_norm_momentum=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.hidden_units = [int(u) for u in hidden_units]
        self.class_head = bool(class_head)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.batch_norm_momentum = float(batch_norm_momentum)

        def batch_norm(name):
            return keras.layers.BatchNormalization(
                momentum=self.batch_norm_momentum,
                synchronized=keras.backend.backend() == "tensorflow",
                name=name,
                dtype=self.dtype_policy,
            )

        self.input_norm = batch_norm("input_norm")
        self.hidden_dense = [
            keras.layers.Dense(
                units,
                use_bias=False,
                kernel_regularizer=self.kernel_regularizer,
                name=f"dense_{i}",
                dtype=self.dtype_policy,
            )
            for i, units in enumerate(self.hidden_units, start=1)
        ]
        self.hidden_norms = [
            batch_norm(f"norm_{i}")
            for i in range(1, len(self.hidden_units) + 1)
        ]
        self.output_layer = keras.layers.Dense(
            1 + self.num_classes if self.class_head else 1,
            kernel_regularizer=self.kernel_regularizer,
            name="source_and_class",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.input_norm.build(shape)
        for dense, norm in zip(self.hidden_dense, self.hidden_norms):
            dense.build(shape)
            shape = shape[:-1] + (dense.units,)
            norm.build(shape)
        self.output_layer.build(shape)
        self.built = True

    def call(self, logits, training=None):
        x = self.input_norm(logits, training=training)
        for dense, norm in zip(self.hidden_dense, self.hidden_norms):
            x = keras.activations.relu(norm(dense(x), training=training))
        outputs = self.output_layer(x)
        if not self.class_head:
            return outputs[:, 0], None
        return outputs[:, 0], outputs[:, 1:]

    def compute_output_shape(self, input_shape):
        if not self.class_head:
            return (input_shape[0],), None
        return (input_shape[0],), (input_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "hidden_units": self.hidden_units,
                "class_head": self.class_head,
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                )
                if self.kernel_regularizer
                else None,
                "batch_norm_momentum": self.batch_norm_momentum,
            }
        )
        return config
