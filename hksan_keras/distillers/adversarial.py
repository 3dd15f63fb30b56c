"""The adversarial machinery shared by HKSAN, ANC and Xu et al.: a logit
discriminator, its optimizer, k_D discriminator updates per student step, and
the logit-matching term that all three pair with it."""

import keras
from keras import ops

from hksan_keras import losses
from hksan_keras.checks import ANY_VALUE
from hksan_keras.discriminators import LogitDiscriminator
from hksan_keras.distillers.base import (
    Distiller,
    cross_replica_mean,
    strategy_scope,
    uniform_per_replica,
)
from hksan_keras.options import Option


def check_discriminator_spec(spec):
    """Raises if `spec` does not describe a discriminator (see `AdversarialDistiller`).

    Args:
        spec: `None`, an unbuilt `LogitDiscriminator`, or a dict of its
            settings (and optionally `num_classes`).

    Raises:
        ValueError: The layer is built, the dict names an unknown setting,
            or a setting is outside its values (`LogitDiscriminator.check_settings`).
        TypeError: The spec is of another type.
    """
    if spec is None:
        return
    if isinstance(spec, LogitDiscriminator):
        if spec.built:
            raise ValueError(
                "discriminator must be a LogitDiscriminator that is not built "
                "yet: the distiller copies its settings, not its weights."
            )
        return
    if not isinstance(spec, dict):
        raise TypeError(
            "discriminator must be None, a LogitDiscriminator or a dict of its "
            f"arguments, got {spec!r}."
        )
    settings = {key: value for key, value in spec.items() if key != "num_classes"}
    unknown = sorted(set(settings) - set(LogitDiscriminator.SETTINGS))
    if unknown:
        raise ValueError(
            f"discriminator has unknown settings {unknown}; a "
            f"LogitDiscriminator takes {list(LogitDiscriminator.SETTINGS)}."
        )
    LogitDiscriminator.check_settings(**settings)


def discriminator_option(**settings):
    """The `discriminator` option of a method whose D has these settings.

    Args:
        **settings: The method's settings that differ from
            `LogitDiscriminator`'s defaults.

    Returns:
        An `Option` whose default is the method's complete spec.
    """
    return Option(
        "discriminator", {**LogitDiscriminator.default_settings(), **settings}, "spec",
        "the logit discriminator D; a dict overrides this spec key by key",
        nullable=True, check=check_discriminator_spec,
        values=("a dict of LogitDiscriminator settings over this default; in Python also an unbuilt "
                "LogitDiscriminator, or None for this default"),
    )


@keras.saving.register_keras_serializable(package="hksan_keras")
class AdversarialDistiller(Distiller):
    """Base of the distillers that train a discriminator on the logits.

    In every `train_step`, after the student's forward pass, the
    discriminator takes `discriminator_steps` updates with `d_optimizer` on

        L_D = BCE(D_src(l_T), real) + BCE(D_src(l_S), fake)
            [+ CE(y, D_cls(l_T)) + CE(y, D_cls(l_S))]     with a class head
            + fake_as_real_weight * BCE(D_src(dropout(l_S)), real)
            + regularization * (L1 + L2 of D's kernels)

    and the student side then gets the "adversarial_loss" term

        BCE(D_src(l_S), real) [+ CE(y, D_cls(l_S))]       with a class head

    and the "logit_loss" term `logit_matching_loss(l_T, l_S, logit_distance)`,
    weighted by `logit_weight`. BCE is the vanilla GAN loss (binary
    cross-entropy on D's source logit; non-saturating for the student).

    D reads the raw logits. With `CONDITIONAL`, it reads them concatenated
    with the label rows (one-hot, or the soft rows as given: a conditional
    GAN).
    Teacher, student and perturbed student go through D as one batch, so its
    batch statistics are the same in both updates; its batch normalisation
    is synchronised across replicas.

    D is described by one argument, `discriminator`, a `LogitDiscriminator`
    spec (its widths, class head and regularisers: `units`,
    `class_head`, `regularization` mu, `fake_as_real_weight` nu,
    `perturbation_rate`); each method's default spec is the default of its
    `discriminator` option (docs/options.md).

    Args:
        teacher, student: As for `Distiller`.
        logit_weight: Weight of the logit-matching term (10 with the
            "relative" distance: for a trained CIFAR ResNet-20 teacher, whose
            per-example logit variance is ~15, about the raw L2 at weight
            0.7; chosen on validation, docs/results.md).
        logit_distance: "relative" (L2 over the teacher's logit variance,
            which keeps the term's size independent of the teacher's logit
            scale), "squared" (raw L2: KSANC's and ANC's term) or "l1" (Xu
            et al.'s).
        adversarial_weight: Weight of the student's adversarial term; at 0
            the discriminator is neither run nor trained.
        discriminator: The discriminator's spec: the method's default spec
            (or `None`, the same), a `LogitDiscriminator` that is not built yet (its
            settings that differ from `LogitDiscriminator`'s defaults
            override the method's: `LogitDiscriminator(units=(512, 512))`
            keeps ANC's source-only D; to set a value equal to
            `LogitDiscriminator`'s default where the method's differs, such
            as `class_head=True` for ANC, use a dict), or a dict of
            `LogitDiscriminator` arguments, which override the method's
            default spec key by key (e.g. `{"units": [128]}`).
            The distiller builds its own D from it, for its class count, in
            float32, as the attribute `discriminator`.
        discriminator_steps: k_D, discriminator updates per student update.
        seed: Seed of the perturbation dropout.
        label_weight, global_clipnorm: See `Distiller`.
        **kwargs: Standard `keras.Model` arguments.

    Raises:
        ValueError: If a weight is negative, `discriminator_steps` is below
            1, `logit_distance` is unknown, or the spec names an unknown
            setting, a bad value (see `LogitDiscriminator`) or another class
            count.
        TypeError: If `discriminator` is not a spec, or a setting of the
            spec is passed on its own (as older versions took it).
    """

    LOSS_TERMS = (
        "label_loss",
        "logit_loss",
        "adversarial_loss",
        "discriminator_loss",
    )
    CONDITIONAL = False
    # The logit weight and the discriminator are HKSAN's, chosen on
    # validation (docs/results.md); ANC and HKSAN share them.
    OPTIONS = Distiller.OPTIONS.extend(
        Option("logit_weight", 10.0, "weight", "weight of the logit-matching term"),
        Option("logit_distance", "relative", "choice",
               "the logit-matching distance: L2 over the teacher's logit variance, raw L2, or L1",
               choices=losses.LOGIT_DISTANCES,
               removed=(("standardized", "it lost on validation (docs/results.md); use 'relative' "
                                         "(the default) or 'squared'"),)),
        Option("adversarial_weight", 0.1, "weight",
               "weight of the student's adversarial term; at 0 D is neither run nor trained"),
        discriminator_option(),
        Option("discriminator_steps", 1, "steps", "k_D, discriminator updates per student update"),
        Option("seed", None, "integer", "seed of the perturbation dropout (configs: the run's seed)",
               nullable=True, config=False),
    )
    # Options of older versions (see Distiller.REMOVED_OPTIONS).
    REMOVED_OPTIONS = {
        "kd_weight": 0.0,
        "kd_temperature": ANY_VALUE,
        "adversarial_warmup_steps": 0,
        "gan_loss": "vanilla",
        "discriminator_input": "logits",
        "discriminator_temperature": ANY_VALUE,
    }
    # Options that older versions took flat, now settings of the
    # discriminator's spec: {old name: setting}.
    MOVED_OPTIONS = {
        "discriminator_units": "units",
        "discriminator_regularization": "regularization",
        "class_head": "class_head",
        "fake_as_real_weight": "fake_as_real_weight",
        "perturbation_rate": "perturbation_rate",
    }

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "DISCRIMINATOR" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__}.DISCRIMINATOR is no longer read: declare the method's "
                "discriminator in its options, OPTIONS = <parent>.OPTIONS.extend("
                "discriminator_option(**settings)), and redeclare __init__ with "
                "discriminator=OPTIONS.discriminator.")

    def __init__(
        self,
        teacher,
        student,
        logit_weight=OPTIONS.logit_weight,
        logit_distance=OPTIONS.logit_distance,
        adversarial_weight=OPTIONS.adversarial_weight,
        discriminator=OPTIONS.discriminator,
        discriminator_steps=OPTIONS.discriminator_steps,
        seed=OPTIONS.seed,
        label_weight=OPTIONS.label_weight,
        global_clipnorm=OPTIONS.global_clipnorm,
        **kwargs,
    ):
        moved = [name for name in self.MOVED_OPTIONS if name in kwargs]
        if moved:
            spec = {self.MOVED_OPTIONS[name]: kwargs[name] for name in moved}
            raise TypeError(
                f"{', '.join(moved)}: settings of the discriminator now; pass "
                f"discriminator={spec!r} (see hksan_keras.LogitDiscriminator)."
            )
        AdversarialDistiller.OPTIONS.check(locals())
        super().__init__(teacher, student, label_weight=label_weight, global_clipnorm=global_clipnorm,
                         **kwargs)
        self.logit_weight = float(logit_weight)
        self.logit_distance = logit_distance
        self.adversarial_weight = float(adversarial_weight)
        self.discriminator_steps = int(discriminator_steps)
        self.seed = None if seed is None else int(seed)
        self.discriminator = LogitDiscriminator(
            self.num_classes,
            **self.discriminator_settings(discriminator),
            name="discriminator",
            dtype="float32",
        )
        input_width = self.num_classes * (2 if self.CONDITIONAL else 1)
        self.discriminator.build((None, input_width))
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def discriminator_settings(self, spec):
        """The settings of the discriminator a spec describes, for this distiller.

        Args:
            spec: `None`, an unbuilt `LogitDiscriminator` or a dict of its
                arguments (see the class docstring).

        Returns:
            A dict with every key of `LogitDiscriminator.SETTINGS`.

        Raises:
            ValueError: The spec is built, names an unknown setting or
                another class count.
            TypeError: The spec is of another type.
        """
        check_discriminator_spec(spec)
        if isinstance(spec, LogitDiscriminator):
            # An instance overrides the method's defaults where it differs
            # from LogitDiscriminator's own, so LogitDiscriminator(units=...)
            # keeps ANC's and Xu's source-only D.
            defaults = LogitDiscriminator.default_settings()
            settings = {
                name: value for name, value in spec.settings().items()
                if value != defaults[name]
            }
            num_classes = spec.num_classes
        else:
            settings = dict(spec or {})
            num_classes = settings.pop("num_classes", None)
        if num_classes is not None and int(num_classes) != self.num_classes:
            raise ValueError(
                f"discriminator has num_classes={num_classes}, but the models "
                f"predict {self.num_classes} classes; leave it out."
            )
        # OPTIONS.discriminator is a copy: the declared default stays as it is.
        return {**self.OPTIONS.discriminator, **settings}

    def compile(self, optimizer="adam", d_optimizer=None, **kwargs):
        """Configures the two optimizers.

        Args:
            optimizer: Optimizer of the student side.
            d_optimizer: Optimizer of the discriminator; defaults to
                `Adam(1e-4, beta_1=0.5)`, the usual GAN setting.
            **kwargs: Other `keras.Model.compile` arguments (`jit_compile`,
                `steps_per_execution`, `run_eagerly`). `loss` and `metrics`
                are not accepted: the distiller computes its own.
        """
        super().compile(optimizer=optimizer, **kwargs)
        with strategy_scope(self):
            self.d_optimizer = (
                keras.optimizers.get(d_optimizer)
                if d_optimizer is not None
                else keras.optimizers.Adam(1e-4, beta_1=0.5)
            )
            if self.dtype_policy.name == "mixed_float16" and not isinstance(
                self.d_optimizer, keras.optimizers.LossScaleOptimizer
            ):
                # Keras wraps the student's optimizer itself under
                # mixed_float16; the discriminator's needs the same.
                self.d_optimizer = keras.optimizers.LossScaleOptimizer(self.d_optimizer)
            self.d_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["d_optimizer"] = keras.saving.serialize_keras_object(
                self.d_optimizer
            )
        return config

    def other_optimizers(self):
        return [self.d_optimizer] if getattr(self, "d_optimizer", None) is not None else []

    def perturb(self, logits):
        """Dropout of the student logits that D is shown as real (KSANC's regulariser).

        Each replica draws its own mask: the seed of a step is combined with
        the replica's index in the sync group (`keras.random.dropout` would
        draw the same mask on every replica). The masks are the backend's
        own random numbers: TensorFlow and JAX draw different ones.
        """
        rate = self.discriminator.perturbation_rate
        if not rate:
            return logits
        keep = uniform_per_replica(ops.shape(logits), self.seed_generator) >= rate
        return ops.where(keep, logits / (1.0 - rate), ops.zeros_like(logits))

    def discriminate(self, labels, teacher_logits, student_logits):
        """D on teacher, student and perturbed student logits, in one batch.

        Returns:
            `(sources, classes)`, each a tuple (teacher, student, perturbed);
            `classes` is None without a class head.
        """
        perturbed = self.perturb(ops.stop_gradient(student_logits))
        inputs = [teacher_logits, student_logits, perturbed]
        if self.CONDITIONAL:
            condition = losses.label_distribution(labels, self.num_classes, student_logits.dtype)
            inputs = [ops.concatenate([x, condition], axis=-1) for x in inputs]
        source, classes = self.discriminator(
            ops.concatenate(inputs, axis=0), training=True
        )
        batch = ops.shape(teacher_logits)[0]

        def split(tensor):
            if tensor is None:
                return None
            return tensor[:batch], tensor[batch : 2 * batch], tensor[2 * batch :]

        return split(source), split(classes)

    def discriminator_objective(self, labels, teacher, student):
        """D's loss on one batch (float32 scalar), its regularisers included."""
        sources, classes = self.discriminate(labels, teacher["logits"], student["logits"])
        loss = losses.discriminator_loss(
            labels,
            sources[0],
            classes[0] if classes else None,
            sources[1],
            classes[1] if classes else None,
            perturbed_student_source=sources[2],
            fake_as_real_weight=self.discriminator.fake_as_real_weight,
        )
        if self.discriminator.losses:
            loss = loss + ops.sum(self.discriminator.losses)
        return loss

    def update_discriminator(self, labels, teacher, student):
        if not self.adversarial_weight:
            # D could not change the student's objective: neither run nor train it.
            return None
        batch_size = ops.cast(ops.shape(student["logits"])[0], "float32")
        for _ in range(self.discriminator_steps):
            loss = self.minimize(
                lambda: self.discriminator_objective(labels, teacher, student),
                self.discriminator.trainable_variables, self.d_optimizer, batch_size,
            )
        return {"discriminator_loss": loss}

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        if self.adversarial_weight:
            sources, classes = self.discriminate(
                labels, teacher["logits"], student["logits"]
            )
            terms["adversarial_loss"] = losses.adversarial_student_loss(
                labels, sources[1], classes[1] if classes else None
            )
        else:
            terms["adversarial_loss"] = ops.zeros((), "float32")
        scale = None
        if self.logit_distance == "relative":
            scale = cross_replica_mean(
                losses.teacher_logit_variance(teacher["logits"]),
                ops.cast(ops.shape(teacher["logits"])[0], "float32"),
            )
        terms["logit_loss"] = losses.logit_matching_loss(
            teacher["logits"], student["logits"], self.logit_distance, scale
        )
        return terms

    def term_weights(self):
        weights = super().term_weights()
        weights["logit_loss"] = self.logit_weight
        weights["adversarial_loss"] = self.adversarial_weight
        return weights

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "logit_weight": self.logit_weight,
                "logit_distance": self.logit_distance,
                "adversarial_weight": self.adversarial_weight,
                "discriminator": self.discriminator.settings(),
                "discriminator_steps": self.discriminator_steps,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Files saved before the discriminator's spec hold its settings flat.
        config = dict(config)
        moved = {
            setting: config.pop(name)
            for name, setting in cls.MOVED_OPTIONS.items()
            if name in config
        }
        if moved:
            config["discriminator"] = {**moved, **(config.get("discriminator") or {})}
        return super().from_config(config)
