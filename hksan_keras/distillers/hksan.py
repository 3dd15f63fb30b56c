"""HKSANDistiller: squeezed hierarchical attention + adversarial logit matching.

README.md ("The method as implemented") states the method. The math
(attention, losses, discriminator) is backend-agnostic; `train_step` is the
one TensorFlow-only piece (tape, gradient application, replica count).
"""

import keras
from keras import ops

from hksan_keras import losses
from hksan_keras.attention import HierarchicalSqueeze
from hksan_keras.discriminators import LogitDiscriminator
from hksan_keras.distillers.base import Distiller
from hksan_keras.taps import resolve_stages, stage_model

LOSS_TERMS = (
    "logit_loss",
    "squeeze_loss",
    "adversarial_loss",
    "label_loss",
    "task_loss",
    "teacher_task_loss",
    "discriminator_loss",
)


def _num_replicas():
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def task_head_loss(y_true, y_pred):
    """Mean cross-entropy of stacked per-stage task heads.

    Args:
        y_true: Integer labels, shape (batch,).
        y_pred: Stacked logits, shape (batch, num_stages, num_classes).

    Returns:
        Per-example loss, shape (batch,).
    """
    labels = losses.sparse_labels(y_true)
    repeated = ops.repeat(labels[:, None], ops.shape(y_pred)[1], axis=1)
    return ops.mean(
        ops.sparse_categorical_crossentropy(repeated, y_pred, from_logits=True),
        axis=1,
    )


@keras.saving.register_keras_serializable(package="hksan_keras")
class HKSANDistiller(Distiller):
    """Hierarchical Knowledge Squeezed Adversarial Network distillation.

    At every stage of teacher and student a task-driven attention estimator
    squeezes the feature map into one vector (the student's stages are first
    mapped to the teacher's widths by 1x1 convolutions); the student learns to
    match the teacher's squeezed vectors and logits, and to fool a logit
    discriminator that is trained in alternation with it.

    Each `train_step` runs the frozen teacher (inference mode) and the student
    once on the batch, makes `discriminator_steps` discriminator updates with
    `d_optimizer`, then one update of the student side with `optimizer`:

        L_S = logit_weight * mean((l_S - l_T)^2)
            + squeeze_weight * sum_i mean((k_S^i - k_T^i)^2)
            + adversarial_weight * [BCE(D_src(l_S), real) + CE(y, D_cls(l_S))]
            + label_weight * CE(y, l_S)
            + task_weight * mean_i CE(y, head_i(k_S^i))
            + the student's own regularisation losses (weight decay)

        L_D = BCE(D_src(l_T), real) + BCE(D_src(l_S), fake)
            + CE(y, D_cls(l_T)) + CE(y, D_cls(l_S))
            + fake_as_real_weight * BCE(D_src(dropout(l_S)), real)
            + discriminator_regularization * (L1 + L2 of D's kernels)

    Task-driven teacher attention: by default (`train_teacher_attention=True`)
    the teacher's estimators and task heads are trained during distillation
    by `task_weight * mean_i CE(y, head_i(k_T^i))`, with the student's
    optimizer; the matching loss never reaches them (the teacher's squeezed
    vectors are targets). Alternatively call `pretrain_teacher_attention`
    first: it fits them on the labels and then freezes them, so the student
    chases fixed targets from the first step.

    Metrics from `fit`: "loss" (L_S, the student's whole objective),
    "accuracy" (the student's, in training mode) and each term of
    `LOSS_TERMS`, unweighted. From `evaluate`: the student's label
    cross-entropy ("loss") and accuracy.

    Args:
        teacher: Trained functional or Sequential `keras.Model` giving logits.
        student: Functional or Sequential `keras.Model` giving logits for the
            same classes.
        teacher_stages: Names of the teacher's stage layers, shallow to deep;
            `None` detects them where the resolution changes.
        student_stages: The same for the student.
        num_stages: With detection, keep only the deepest `num_stages`.
        hierarchy: "hierarchical" (guide of stage i is [g ; k^(i+1)]) or
            "flat" (guide is g: KSANC).
        descriptor_units: Width of the global task descriptor g.
        logit_weight: Weight of the logit L2 term.
        squeeze_weight: Weight of the squeezed-knowledge matching term.
        adversarial_weight: Weight of the student's adversarial term.
        label_weight: Weight of the student's label cross-entropy.
        task_weight: Weight of the attention estimators' task loss.
        discriminator_steps: k_D, discriminator updates per student update.
        discriminator_units: Hidden widths of the discriminator.
        discriminator_regularization: mu, the L1 and L2 factor on the
            discriminator's kernels.
        fake_as_real_weight: nu, weight of "perturbed student logits are
            real" in the discriminator's loss.
        perturbation_rate: Dropout rate that perturbs those student logits.
        train_teacher_attention: Whether `fit` trains the teacher's
            estimators (see above).
        seed: Seed of the perturbation dropout.
        **kwargs: Standard `keras.Model` arguments (e.g. `name`).

    Example:

    >>> teacher = hksan_keras.models.cifar_resnet(56, num_classes=10)
    >>> student = hksan_keras.models.cifar_resnet(20, num_classes=10)
    >>> distiller = hksan_keras.HKSANDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
    ...                   d_optimizer=keras.optimizers.Adam(1e-4))
    >>> distiller.fit(train_ds, validation_data=test_ds, epochs=10)
    >>> distiller.student.save("student.keras")
    """

    def __init__(
        self,
        teacher,
        student,
        teacher_stages=None,
        student_stages=None,
        num_stages=None,
        hierarchy="hierarchical",
        descriptor_units=128,
        logit_weight=1.0,
        squeeze_weight=0.1,
        adversarial_weight=0.1,
        label_weight=1.0,
        task_weight=1.0,
        discriminator_steps=1,
        discriminator_units=(256, 256),
        discriminator_regularization=1e-5,
        fake_as_real_weight=0.1,
        perturbation_rate=0.5,
        train_teacher_attention=True,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("name", "hksan_distiller")
        super().__init__(teacher, student, **kwargs)
        if int(discriminator_steps) < 1:
            raise ValueError(
                f"discriminator_steps must be >= 1, got {discriminator_steps}."
            )
        for weight_name, value in (
            ("logit_weight", logit_weight),
            ("squeeze_weight", squeeze_weight),
            ("adversarial_weight", adversarial_weight),
            ("label_weight", label_weight),
            ("task_weight", task_weight),
            ("discriminator_regularization", discriminator_regularization),
            ("fake_as_real_weight", fake_as_real_weight),
        ):
            if value < 0:
                raise ValueError(f"{weight_name} must be >= 0, got {value}.")
        if not 0 <= perturbation_rate < 1:
            raise ValueError(
                f"perturbation_rate must be in [0, 1), got {perturbation_rate}."
            )
        self.teacher_stages = resolve_stages(
            teacher, teacher_stages, num_stages, role="teacher"
        )
        self.student_stages = resolve_stages(
            student, student_stages, num_stages, role="student"
        )
        if len(self.teacher_stages) != len(self.student_stages):
            raise ValueError(
                f"The teacher has {len(self.teacher_stages)} stages "
                f"{self.teacher_stages} and the student "
                f"{len(self.student_stages)} {self.student_stages}; they must "
                "have as many. Pass teacher_stages=[...] and "
                "student_stages=[...], or num_stages=K to keep the deepest K."
            )
        self.num_stages = num_stages
        self.hierarchy = hierarchy
        self.descriptor_units = int(descriptor_units)
        self.logit_weight = float(logit_weight)
        self.squeeze_weight = float(squeeze_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.label_weight = float(label_weight)
        self.task_weight = float(task_weight)
        self.discriminator_steps = int(discriminator_steps)
        self.discriminator_units = [int(u) for u in discriminator_units]
        self.discriminator_regularization = float(discriminator_regularization)
        self.fake_as_real_weight = float(fake_as_real_weight)
        self.perturbation_rate = float(perturbation_rate)
        self.train_teacher_attention = bool(train_teacher_attention)
        self.seed = seed

        self.teacher_features = stage_model(
            teacher, self.teacher_stages, name="teacher_features"
        )
        self.student_features = stage_model(
            student, self.student_stages, name="student_features"
        )
        teacher_shapes = [
            tuple(t.shape) for t in self.teacher_features.outputs[:-1]
        ]
        student_shapes = [
            tuple(t.shape) for t in self.student_features.outputs[:-1]
        ]
        teacher_widths = [shape[-1] for shape in teacher_shapes]
        self.teacher_squeeze = HierarchicalSqueeze(
            teacher_widths,
            self.num_classes,
            descriptor_units=self.descriptor_units,
            hierarchy=hierarchy,
            name="teacher_squeeze",
        )
        self.student_squeeze = HierarchicalSqueeze(
            teacher_widths,
            self.num_classes,
            descriptor_units=self.descriptor_units,
            hierarchy=hierarchy,
            channel_transform=True,
            name="student_squeeze",
        )
        self.discriminator = LogitDiscriminator(
            self.num_classes,
            hidden_units=self.discriminator_units,
            kernel_regularizer=keras.regularizers.L1L2(
                l1=self.discriminator_regularization,
                l2=self.discriminator_regularization,
            )
            if self.discriminator_regularization
            else None,
            name="discriminator",
        )
        self.teacher_squeeze.build(teacher_shapes)
        self.student_squeeze.build(student_shapes)
        self.discriminator.build((None, self.num_classes))
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.term_trackers = {
            term: keras.metrics.Mean(name=term) for term in LOSS_TERMS
        }
        self.built = True

    @property
    def metrics(self):
        return super().metrics + list(self.term_trackers.values())

    def _student_side_variables(self, include_teacher_attention):
        variables = (
            self.student.trainable_variables
            + self.student_squeeze.trainable_variables
        )
        if include_teacher_attention:
            variables = variables + self.teacher_squeeze.trainable_variables
        return variables

    def compile(self, optimizer="adam", d_optimizer=None, **kwargs):
        """Configures the two optimizers.

        Args:
            optimizer: Optimizer of the student side (student, its channel
                transforms and attention estimators, and the teacher's
                estimators while they are trained).
            d_optimizer: Optimizer of the discriminator; defaults to
                `Adam(1e-4, beta_1=0.5)`, the usual GAN setting.
            **kwargs: Other `keras.Model.compile` arguments (`jit_compile`,
                `steps_per_execution`, `run_eagerly`). `loss` and `metrics`
                are not accepted: the distiller computes its own.
        """
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "HKSANDistiller's train_step is written for the TensorFlow "
                f"backend, but Keras runs on {keras.backend.backend()!r}. Set "
                "KERAS_BACKEND=tensorflow before importing keras."
            )
        for argument in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if kwargs.pop(argument, None) is not None:
                raise ValueError(
                    f"HKSANDistiller.compile() does not take `{argument}`: the "
                    "distiller computes its own loss terms (set their weights "
                    "in the constructor) and reports loss and accuracy."
                )
        with self.distribute_strategy.scope():
            d_optimizer = (
                keras.optimizers.get(d_optimizer)
                if d_optimizer is not None
                else keras.optimizers.Adam(1e-4, beta_1=0.5)
            )
            super().compile(optimizer=optimizer, **kwargs)
            self.d_optimizer = d_optimizer
            self.optimizer.build(self._student_side_variables(True))
            self.d_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:
            config["d_optimizer"] = keras.saving.serialize_keras_object(
                self.d_optimizer
            )
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    def _discriminate(self, teacher_logits, student_logits):
        """Runs D on teacher, student and perturbed student logits together.

        One batch of all three keeps D's batch statistics the same in the
        discriminator and the student updates.
        """
        perturbed = keras.random.dropout(
            ops.stop_gradient(student_logits),
            self.perturbation_rate,
            seed=self.seed_generator,
        )
        source, classes = self.discriminator(
            ops.concatenate([teacher_logits, student_logits, perturbed], axis=0),
            training=True,
        )
        batch = ops.shape(teacher_logits)[0]

        def split(tensor):
            return tensor[:batch], tensor[batch : 2 * batch], tensor[2 * batch :]

        return split(source), split(classes)

    def _discriminator_update(self, labels, teacher_logits, student_logits):
        import tensorflow as tf

        variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            sources, classes = self._discriminate(teacher_logits, student_logits)
            loss = losses.discriminator_loss(
                labels,
                sources[0],
                classes[0],
                sources[1],
                classes[1],
                perturbed_student_source=sources[2],
                fake_as_real_weight=self.fake_as_real_weight,
            )
            if self.discriminator.losses:
                loss = loss + ops.sum(self.discriminator.losses)
            scaled_loss = self.d_optimizer.scale_loss(loss / _num_replicas())
        gradients = tape.gradient(scaled_loss, variables)
        self.d_optimizer.apply(gradients, variables)
        return loss

    def train_step(self, data):
        import tensorflow as tf

        images, labels = self.unpack_batch(data)
        teacher_outputs = self.teacher_features(images, training=False)
        teacher_maps = [ops.stop_gradient(t) for t in teacher_outputs[:-1]]
        teacher_logits = ops.stop_gradient(teacher_outputs[-1])
        variables = self._student_side_variables(self.train_teacher_attention)

        with tf.GradientTape() as tape:
            student_outputs = self.student_features(images, training=True)
            student_logits = student_outputs[-1]
            student_squeezed = self.student_squeeze(student_outputs[:-1])
            teacher_squeezed = self.teacher_squeeze(teacher_maps)

            with tape.stop_recording():
                for _ in range(self.discriminator_steps):
                    discriminator_loss = self._discriminator_update(
                        labels, teacher_logits, ops.stop_gradient(student_logits)
                    )

            sources, classes = self._discriminate(teacher_logits, student_logits)
            terms = {
                "logit_loss": losses.logit_matching_loss(
                    teacher_logits, student_logits
                ),
                "squeeze_loss": losses.squeezed_knowledge_loss(
                    [ops.stop_gradient(k) for k in teacher_squeezed["squeezed"]],
                    student_squeezed["squeezed"],
                ),
                "adversarial_loss": losses.adversarial_student_loss(
                    labels, sources[1], classes[1]
                ),
                "label_loss": losses.label_loss(labels, student_logits),
                "task_loss": losses.task_loss(
                    labels, student_squeezed["task_logits"]
                ),
                "teacher_task_loss": losses.task_loss(
                    labels, teacher_squeezed["task_logits"]
                ),
            }
            loss = (
                self.logit_weight * terms["logit_loss"]
                + self.squeeze_weight * terms["squeeze_loss"]
                + self.adversarial_weight * terms["adversarial_loss"]
                + self.label_weight * terms["label_loss"]
                + self.task_weight * terms["task_loss"]
            )
            if self.train_teacher_attention:
                loss = loss + self.task_weight * terms["teacher_task_loss"]
            if self.student.losses:
                loss = loss + ops.sum(self.student.losses)
            # Each replica holds a slice of the global batch and gradients are
            # summed across replicas, so dividing by the replica count makes
            # the update that of the global-batch mean.
            scaled_loss = self.optimizer.scale_loss(loss / _num_replicas())

        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(gradients, variables)

        terms["discriminator_loss"] = discriminator_loss
        batch_size = ops.cast(ops.shape(labels)[0], "float32")
        self.loss_tracker.update_state(loss, sample_weight=batch_size)
        self.accuracy_tracker.update_state(labels, student_logits)
        for term, value in terms.items():
            self.term_trackers[term].update_state(value, sample_weight=batch_size)
        return {metric.name: metric.result() for metric in self.metrics}

    def squeeze(self, images):
        """Squeezed knowledge and attention maps of teacher and student.

        Args:
            images: A batch of images, as the models take them.

        Returns:
            A dict `{"teacher": ..., "student": ...}`, each the output of a
            `HierarchicalSqueeze`: lists, shallow to deep, of "squeezed"
            (batch, F_i), "attention" (batch, H_i, W_i) and "task_logits".

        Example:

        >>> maps = distiller.squeeze(images)["student"]["attention"]
        """
        teacher_outputs = self.teacher_features(images, training=False)
        student_outputs = self.student_features(images, training=False)
        return {
            "teacher": self.teacher_squeeze(teacher_outputs[:-1]),
            "student": self.student_squeeze(student_outputs[:-1]),
        }

    def pretrain_teacher_attention(
        self, x, y=None, epochs=1, optimizer="adam", **fit_kwargs
    ):
        """Fits the teacher's attention estimators on the labels, then freezes them.

        Trains the teacher's descriptor, estimators and task heads (the
        teacher backbone stays frozen) with a mean cross-entropy over the
        per-stage task heads, using `keras.Model.fit`. Afterwards
        `train_teacher_attention` is False, so `fit` leaves them as they are.

        Args:
            x: Batches of `(images, labels)`, or images (anything `fit`
                takes).
            y: Labels, when `x` holds images only.
            epochs: Epochs of this pretraining.
            optimizer: Optimizer for it.
            **fit_kwargs: Passed to `fit` (`callbacks`, `verbose`, ...).

        Returns:
            The `History` of that fit.

        Example:

        >>> distiller.pretrain_teacher_attention(train_ds, epochs=1)
        >>> distiller.compile(...); distiller.fit(train_ds, epochs=10)
        """
        inputs = self.teacher.input
        feature_maps = self.teacher_features(inputs, training=False)[:-1]
        task_logits = self.teacher_squeeze(feature_maps)["task_logits"]
        stacked = keras.layers.Lambda(
            lambda heads: ops.stack(heads, axis=1), name="task_heads"
        )(task_logits)
        attention_model = keras.Model(inputs, stacked, name="teacher_attention")
        attention_model.compile(optimizer=optimizer, loss=task_head_loss)
        history = attention_model.fit(x, y, epochs=epochs, **fit_kwargs)
        self.train_teacher_attention = False
        # train_step reads the flag when traced: drop a traced function.
        self.train_function = None
        return history

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_stages": self.teacher_stages,
                "student_stages": self.student_stages,
                "num_stages": self.num_stages,
                "hierarchy": self.hierarchy,
                "descriptor_units": self.descriptor_units,
                "logit_weight": self.logit_weight,
                "squeeze_weight": self.squeeze_weight,
                "adversarial_weight": self.adversarial_weight,
                "label_weight": self.label_weight,
                "task_weight": self.task_weight,
                "discriminator_steps": self.discriminator_steps,
                "discriminator_units": self.discriminator_units,
                "discriminator_regularization": self.discriminator_regularization,
                "fake_as_real_weight": self.fake_as_real_weight,
                "perturbation_rate": self.perturbation_rate,
                "train_teacher_attention": self.train_teacher_attention,
                "seed": self.seed,
            }
        )
        return config
