"""The logit discriminator: a source head (teacher or student) and class heads."""

import keras

from hksan_keras.options import Option, Options


@keras.saving.register_keras_serializable(package="hksan_keras")
class LogitDiscriminator(keras.layers.Layer):
    """Tells teacher logits from student logits, and classifies both.

    BatchNorm -> [Dense -> BatchNorm -> ReLU] x len(units)
    -> Dense(1 + num_classes). The first output unit is the source logit
    (teacher = real, student = fake); the other `num_classes` units are the
    class logits of the class-conditional head (absent with
    `class_head=False`: then Dense(1)).

    Batch normalisation is synchronised across replicas under a
    `tf.distribute` strategy, so the discriminator sees the same statistics
    whatever the number of devices.

    The same object is the `discriminator` argument of the adversarial
    distillers (`HKSANDistiller`, `ANCDistiller`,
    `ConditionalAdversarialDistiller`): there it is a spec, whose settings
    (`SETTINGS`, the constructor arguments) the distiller copies into the
    discriminator it builds for its class count, in float32. Besides D's
    architecture and weight penalty, the spec holds D's other regulariser,
    which the distiller applies when it trains D: student logits perturbed
    by dropout at `perturbation_rate`, shown to D as real with weight
    `fake_as_real_weight` (KSANC's and ANC's).

    Args:
        num_classes: Number of classes (the width of the logits it reads);
            `None` takes the width of the first input (a distiller passes
            its own).
        units: Widths of the hidden Dense layers.
        regularization: mu, the L1 and L2 factor on every Dense kernel (the
            term that keeps the discriminator from overpowering the
            student); 0 for none.
        class_head: Whether D also classifies its input (HKSAN's and
            KSANC's class-conditional head; ANC's and Xu's D has none).
        fake_as_real_weight: nu, the weight of "perturbed student logits are
            real" in D's loss (0 turns the term off).
        perturbation_rate: The dropout rate that perturbs those student
            logits, in [0, 1).
        batch_norm_momentum: Momentum of the moving statistics.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Returns (from `call`):
        A tuple `(source_logits, class_logits)` of shapes (batch,) and
        (batch, num_classes); `class_logits` is None without a class head.

    Raises:
        ValueError: If a width is below 1, `regularization` or
            `fake_as_real_weight` is negative, or `perturbation_rate` is
            outside [0, 1).

    Example:

    >>> discriminator = LogitDiscriminator(10)
    >>> source, classes = discriminator(keras.random.normal((4, 10)))
    >>> source.shape, classes.shape
    ((4,), (4, 10))
    >>> # As a distiller's spec: a wider D without the class head.
    >>> spec = LogitDiscriminator(units=(512, 512), class_head=False)
    >>> distiller = hksan_keras.HKSANDistiller(teacher, student, discriminator=spec)
    """

    # The settings of a spec: the constructor arguments but the class count.
    # KSANC's discriminator (Shu et al. 2019, which HKSAN keeps): two hidden
    # layers of 256, mu = 1e-5, perturbed student logits shown as real at
    # weight 0.1 with dropout 0.5 (ANC's regulariser, Belagiannis et al. 2018).
    OPTIONS = Options([
        Option("units", [256, 256], "widths", "widths of D's hidden Dense layers"),
        Option("regularization", 1e-5, "weight", "mu, the L1 and L2 factor on D's kernels; 0: none"),
        Option("class_head", True, "flag", "D also classifies its input (HKSAN's and KSANC's head)"),
        Option("fake_as_real_weight", 0.1, "weight",
               "nu, weight of 'dropout-perturbed student logits are real' in D's loss; 0: off"),
        Option("perturbation_rate", 0.5, "fraction", "the dropout rate of those student logits"),
        Option("batch_norm_momentum", 0.9, "probability", "momentum of D's batch-norm statistics"),
    ])
    SETTINGS = tuple(OPTIONS.names())

    def __init__(
        self,
        num_classes=None,
        units=OPTIONS.units,
        regularization=OPTIONS.regularization,
        class_head=OPTIONS.class_head,
        fake_as_real_weight=OPTIONS.fake_as_real_weight,
        perturbation_rate=OPTIONS.perturbation_rate,
        batch_norm_momentum=OPTIONS.batch_norm_momentum,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.check_settings(
            units=units,
            regularization=regularization,
            class_head=class_head,
            fake_as_real_weight=fake_as_real_weight,
            perturbation_rate=perturbation_rate,
            batch_norm_momentum=batch_norm_momentum,
        )
        self.units = [int(u) for u in units]
        self.regularization = float(regularization)
        self.class_head = bool(class_head)
        self.fake_as_real_weight = float(fake_as_real_weight)
        self.perturbation_rate = float(perturbation_rate)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.num_classes = None
        if num_classes is not None:
            self._make_layers(num_classes)

    @staticmethod
    def check_settings(**settings):
        """Raises if a setting of a spec is outside its values; builds nothing.

        Args:
            **settings: Some of `SETTINGS`, as for the constructor.

        Raises:
            ValueError: A width is below 1, a weight negative, a rate or
                momentum outside [0, 1).
            TypeError: A setting of the wrong type.

        Example:

        >>> LogitDiscriminator.check_settings(perturbation_rate=1.5)
        Traceback (most recent call last):
        ValueError: perturbation_rate must be in [0, 1), got 1.5.
        """
        LogitDiscriminator.OPTIONS.check(settings)

    def _make_layers(self, num_classes):
        self.num_classes = int(num_classes)
        self.kernel_regularizer = (
            keras.regularizers.L1L2(l1=self.regularization, l2=self.regularization)
            if self.regularization
            else None
        )

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
            for i, units in enumerate(self.units, start=1)
        ]
        self.hidden_norms = [
            batch_norm(f"norm_{i}")
            for i in range(1, len(self.units) + 1)
        ]
        self.output_layer = keras.layers.Dense(
            1 + self.num_classes if self.class_head else 1,
            kernel_regularizer=self.kernel_regularizer,
            name="source_and_class",
            dtype=self.dtype_policy,
        )

    def settings(self):
        """The spec's settings: `{name: value}` for each of `SETTINGS`."""
        return {name: getattr(self, name) for name in self.SETTINGS}

    @classmethod
    def default_settings(cls):
        """The declared defaults of `SETTINGS`, without building a layer."""
        return cls.OPTIONS.config_defaults()

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.num_classes is None:
            self._make_layers(shape[-1])
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
        return (input_shape[0],), (input_shape[0], self.num_classes or input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, **self.settings()})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Older versions named the widths `hidden_units` and took the
        # regulariser itself (always L1L2(mu, mu) or none).
        if "hidden_units" in config:
            config["units"] = config.pop("hidden_units")
        if "kernel_regularizer" in config:
            regularizer = config.pop("kernel_regularizer")
            regularizer = keras.regularizers.get(regularizer) if regularizer else None
            config["regularization"] = _penalty(regularizer)
        return cls(**config)


def _penalty(regularizer):
    """mu of an `L1L2(mu, mu)` (0 for none); raises for any other regulariser."""
    if regularizer is None:
        return 0.0
    l1, l2 = (float(getattr(regularizer, name, -1)) for name in ("l1", "l2"))
    if not isinstance(regularizer, keras.regularizers.L1L2) or l1 != l2:
        raise ValueError(
            "This LogitDiscriminator was saved with the kernel regulariser "
            f"{keras.regularizers.serialize(regularizer)}; it now takes "
            "regularization=mu, the factor of L1L2(mu, mu), only."
        )
    return l1
