"""What every distiller shares: a frozen teacher, a student, the train_step,
label metrics, evaluation, saving and export of the student.

A method is a subclass that names its loss terms (`LOSS_TERMS`), computes
them (`loss_terms`) and weights them (`term_weights`). The one `train_step`
here runs teacher and student, asks the subclass for its terms, sums them
with their weights plus the student's own regularisation, and updates the
student side. Adversarial methods add discriminator updates through
`update_discriminator` (see adversarial.py).
"""

import inspect

import keras
from keras import ops

from hksan_keras.checks import (
    check_augmentation_layers,
    check_batch,
    check_same_input_shape,
    check_separate_weights,
    check_teacher_is_trained,
    drop_removed_options,
    first_batch,
)
from hksan_keras.logits import check_last_activation, check_logits
from hksan_keras.options import Option, Options
from hksan_keras.losses import class_indices, label_loss, prepare_labels
from hksan_keras.taps import (
    image_shape,
    is_graph_model,
    require_model,
    resolve_stages,
    stage_model,
)


def _num_classes(model, role, input_shape):
    require_model(model, role)
    if is_graph_model(model):
        shape = tuple(model.outputs[0].shape)
    elif input_shape is None:
        raise ValueError(
            f"The {role} '{model.name}' is a subclassed model whose input shape "
            "is unknown. Build it by calling it on a batch of images first."
        )
    else:
        spec = model.compute_output_spec(
            keras.KerasTensor((None,) + tuple(input_shape))
        )
        shape = tuple(spec.shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"The {role} '{model.name}' must output logits of shape "
            f"(batch, num_classes); its output shape is {shape}."
        )
    return shape[-1]


# Metrics the distillers report that are better when higher (for Keras
# callbacks with mode="auto"; every other reported value is a loss).
MAXIMIZED_METRICS = ("accuracy",)


def _on_tensorflow():
    return keras.backend.backend() == "tensorflow"


def strategy_scope(model):
    """The model's `tf.distribute` strategy scope; no scope on other backends.

    On JAX, `keras.distribution` places variables by itself.
    """
    import contextlib

    return model.distribute_strategy.scope() if _on_tensorflow() else contextlib.nullcontext()


def num_replicas():
    """Replicas that each hold a slice of the global batch.

    1 without a `tf.distribute` strategy, and on JAX, where the step sees
    the global batch (`keras.distribution` shards it under `jit`).
    """
    if not _on_tensorflow():
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _cross_replica_sum(value):
    if not _on_tensorflow():
        return value
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def replica_id():
    """This replica's index in its sync group (0 without a strategy, and on JAX)."""
    if not _on_tensorflow():
        return 0
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return context.replica_id_in_sync_group if context is not None else 0


def uniform_per_replica(shape, seed_generator, maxval=1.0, dtype="float32"):
    """Uniform numbers in [0, maxval) of `shape`, a different draw on each replica.

    Under a `tf.distribute` strategy the step's seed (one per step, from
    `seed_generator`) is combined with the replica's index;
    `keras.random.uniform` alone would draw the same numbers on every
    replica. On other backends the step sees the global batch: one draw.

    Args:
        shape: Shape of the draw.
        seed_generator: A `keras.random.SeedGenerator`.
        maxval: The exclusive upper bound.
        dtype: A float dtype, or an integer one for integers 0 .. maxval - 1.

    Returns:
        A tensor of `shape` and `dtype`.
    """
    if not _on_tensorflow():
        if "int" in keras.backend.standardize_dtype(dtype):
            return keras.random.randint(shape, 0, maxval, dtype=dtype, seed=seed_generator)
        return keras.random.uniform(shape, 0.0, maxval, dtype=dtype, seed=seed_generator)
    import tensorflow as tf

    seed = ops.cast(seed_generator.next(), "int32")
    seed = seed + ops.stack([0, ops.cast(replica_id(), "int32")])
    return tf.random.stateless_uniform(shape, seed=seed, minval=0, maxval=maxval, dtype=dtype)


def all_replicas(value):
    """`value` of every replica, concatenated on axis 0 (itself on one replica and on JAX)."""
    if num_replicas() == 1:
        return value
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_gather(value, axis=0)


def after(value, updates):
    """`value`, computed only after `updates` ran (TensorFlow graphs).

    Under a `tf.distribute` strategy, reads and writes of a mirrored
    variable are not ordered by program order alone. JAX steps are pure
    functions of the variables' values, which need no ordering.
    """
    if not _on_tensorflow():
        return value
    import tensorflow as tf

    with tf.control_dependencies(updates):
        return tf.identity(value)


def replica_share(batch_size):
    """This replica's share of the global batch: local size / global size.

    A term that is a mean over the local batch, multiplied by this share
    and summed over replicas, is the mean over the global batch, however
    unevenly the batch is split (as `tf.nn.compute_average_loss` reduces).
    1 without a strategy; 0 on a replica that holds no example.

    Args:
        batch_size: This replica's number of examples (a float32 scalar).
    """
    return batch_size / ops.maximum(_cross_replica_sum(batch_size), 1.0)


def clip_by_global_norm(gradients, clipnorm, loss_scale=1.0):
    """Scales gradients so that the update's global L2 norm is at most `clipnorm`.

    As `keras.optimizers.Optimizer(global_clipnorm=...)` does on one device
    (Pascanu et al., "On the difficulty of training recurrent neural
    networks", ICML 2013). Under a strategy the norm is that of the
    gradient summed over replicas (the update that is applied, not each
    replica's part of it), so every replica scales by the same factor and
    the weights equal one device's.

    Args:
        gradients: List of gradient tensors (or None), this replica's part.
        clipnorm: The largest global norm, a positive float.
        loss_scale: The factor the loss was multiplied by before
            differentiating (mixed_float16's loss scale); the norm is
            measured and clipped on the unscaled gradient.

    Returns:
        A tuple `(clipped_gradients, norm)`: the gradients, scaled by
        `min(1, clipnorm / norm)`, and the unscaled global norm before
        clipping (a float32 scalar).
    """
    present = [g for g in gradients if g is not None]
    if not present:
        return gradients, ops.zeros((), "float32")
    present = _cross_replica_sum(present)
    norm = ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(g)) for g in present])))
    norm = norm / ops.cast(loss_scale, norm.dtype)
    factor = ops.minimum(1.0, clipnorm / ops.maximum(norm, 1e-12))
    return [None if g is None else g * ops.cast(factor, g.dtype) for g in gradients], norm


def where_examples(batch_size, value):
    """`value`, or 0 on a replica with no example (where a mean is NaN)."""
    return ops.where(batch_size > 0, value, ops.zeros_like(value))


def gradients_of_examples(batch_size, gradients):
    """The gradients, or zeros on a replica that holds no example.

    On an empty batch, normalisations over the batch (batch normalisation's
    statistics) have NaN gradients even where the loss is weighted by 0;
    summed over replicas they would poison every weight.
    """
    return [
        None if g is None else ops.where(batch_size > 0, g, ops.zeros_like(g))
        for g in gradients
    ]


class KeepStateOnEmptyBatch:
    """Restores a model's non-trainable state if the replica's batch is empty.

    Batch normalisation updates its moving statistics with the batch's
    mean and variance, NaN for an empty batch; under a strategy each
    replica keeps its own copy, which would then serve NaN forever. Use
    around the forward pass:

        with KeepStateOnEmptyBatch(model, batch_size):
            outputs = model(images, training=True)

    Nothing is done without a strategy (a batch is never empty there).
    """

    def __init__(self, model, batch_size):
        self.variables = model.non_trainable_variables if num_replicas() > 1 else []
        self.batch_size = batch_size

    def __enter__(self):
        if not self.variables:
            return self
        import tensorflow as tf

        self.saved = [tf.identity(v.value) for v in self.variables]
        # Reading a mirrored variable is not ordered before the layers'
        # updates of it by itself: make the forward pass wait for the copy.
        self._dependencies = tf.control_dependencies(self.saved)
        self._dependencies.__enter__()
        return self

    def __exit__(self, *exc_info):
        if not self.variables:
            return False
        self._dependencies.__exit__(*exc_info)
        for variable, saved in zip(self.variables, self.saved):
            variable.assign(ops.where(self.batch_size > 0, variable, saved))
        return False


def cross_replica_mean(value, batch_size):
    """The global-batch mean of a statistic computed on each replica's batch.

    Args:
        value: A per-replica mean over its local batch.
        batch_size: The local batch size (float32 scalar); each replica's
            value is weighted by it, so uneven splits and empty replicas
            give the global batch's mean.

    Returns:
        The mean over replicas (the value itself without a strategy).
    """
    total = _cross_replica_sum(where_examples(batch_size, value * batch_size))
    return total / ops.maximum(_cross_replica_sum(batch_size), 1e-12)


def _global_result(metric):
    """A mean metric's result over every replica's examples so far.

    In a replica context `metric.result()` reads the replica's own total and
    count; summing both over replicas gives the value of the whole data,
    however unevenly the batches were split.
    """
    total = _cross_replica_sum(ops.convert_to_tensor(metric.total))
    count = _cross_replica_sum(ops.convert_to_tensor(metric.count))
    return ops.divide_no_nan(total, count)


def _per_replica_report(logs):
    """The step's metric results, shaped for Keras's cross-worker reduction.

    Under MultiWorkerMirroredStrategy Keras (3.15) averages each reported
    value across workers with `strategy.reduce("MEAN", v, axis=0)`, which
    fails on scalars (keras-team/keras#20585); a shape (1,) value averages
    to the scalar wanted. Elsewhere the scalars go out as they are.
    """
    if not _on_tensorflow():
        return logs
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    extended = getattr(strategy, "extended", None)
    multi_worker = getattr(extended, "_in_multi_worker_mode", lambda: False)()
    if not multi_worker:
        return logs
    return {name: ops.reshape(value, (1,)) for name, value in logs.items()}


@keras.saving.register_keras_serializable(package="hksan_keras")
class Distiller(keras.Model):
    """Base class of the distillers: frozen teacher, trained student.

    `call()` returns the student's logits (so `predict` serves the student),
    `evaluate` reports the student's cross-entropy ("loss") and accuracy
    ("accuracy") on the labels, and `export_student` writes a SavedModel or
    a TFLite file. `fit` runs `train_step`, which minimises

        sum over LOSS_TERMS of term_weights()[term] * term
        + the student's own regularisation losses (weight decay)

    and reports "loss" (that sum), "accuracy" (the student's, in training
    mode) and every term of `LOSS_TERMS`, unweighted.

    The teacher is frozen by setting `teacher.trainable = False` on the
    model passed in; it runs in inference mode.

    Subclasses set `LOSS_TERMS` and override `loss_terms` and
    `term_weights`; optionally `teacher_outputs`, `student_outputs`,
    `extra_trainable_variables` and `update_discriminator`.

    Args:
        teacher: A trained `keras.Model` that outputs logits.
        student: A `keras.Model` that outputs logits for the same classes.
        label_weight: Weight of the student's label cross-entropy.
        global_clipnorm: If set, the student side's gradient is scaled so
            that its global L2 norm is at most this value before each
            update (`clip_by_global_norm`), and "gradient_norm" (the mean
            norm before clipping, over the steps whose gradient is finite:
            mixed_float16's overflowed steps, which the loss scale
            optimizer skips, are not counted) is reported. Unlike the optimizer's own
            `global_clipnorm`, the norm is that of the whole update under
            a strategy. `None` (the default here; see each method's own)
            leaves the gradient as it is.
        **kwargs: Standard `keras.Model` arguments (e.g. `name`).

    Example:

    >>> distiller = hksan_keras.distillers.KDDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    >>> distiller.evaluate(test_ds)   # {"loss": ..., "accuracy": ...}
    >>> distiller.student.save("student.keras")
    """

    LOSS_TERMS = ("label_loss",)
    USES_TEACHER = True
    # Whether training batches must carry each example's index
    # (({"images", "index"}, labels); CRD's memory bank).
    NEEDS_EXAMPLE_INDEX = False
    # Options of older versions: {name: the value whose behaviour is kept}.
    # `from_config` drops them where a saved config holds that value and
    # refuses other values by name (see checks.drop_removed_options).
    REMOVED_OPTIONS = {}
    # The options of the method (hksan_keras.options): each subclass extends
    # its parent's; defaults, checks, config keys and docs/options.md come
    # from here.
    OPTIONS = Options([
        Option("label_weight", 1.0, "weight", "weight of the student's label cross-entropy"),
        Option("global_clipnorm", None, "positive",
               "clip the student side's update to this global L2 norm (Pascanu et al. 2013); "
               "None: no clipping", nullable=True),
    ])

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A signature's defaults are bound when its `def` runs, so a subclass
        # that changes a default in OPTIONS but inherits __init__ would build
        # with the parent's default while configs and docs say the new one.
        parameters = inspect.signature(cls.__init__).parameters
        stale = [
            f"{option.name} (OPTIONS {option.default!r}, __init__ {parameters[option.name].default!r})"
            for option in cls.OPTIONS
            if option.constructor and option.name in parameters
            and parameters[option.name].default is not inspect.Parameter.empty
            and parameters[option.name].default != option.default
        ]
        if stale:
            raise TypeError(
                f"{cls.__name__}.OPTIONS and its __init__ disagree on the defaults of "
                f"{', '.join(stale)}: redeclare __init__ with each argument's default read "
                "from OPTIONS (e.g. temperature=OPTIONS.temperature).")

    def __init__(self, teacher, student, label_weight=OPTIONS.label_weight,
                 global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        Distiller.OPTIONS.check(locals())
        super().__init__(**kwargs)
        require_model(teacher, "teacher")
        require_model(student, "student")
        shapes = {"teacher": image_shape(teacher), "student": image_shape(student)}
        known = next((s for s in shapes.values() if s is not None), None)
        teacher_classes = _num_classes(teacher, "teacher", shapes["teacher"] or known)
        student_classes = _num_classes(student, "student", shapes["student"] or known)
        if teacher_classes != student_classes:
            raise ValueError(
                f"The teacher predicts {teacher_classes} classes and the "
                f"student {student_classes}; build the student with "
                f"num_classes={teacher_classes}."
            )
        check_last_activation(teacher, "teacher")
        check_last_activation(student, "student")
        if shapes["teacher"] is not None and shapes["student"] is not None:
            check_same_input_shape(teacher, student)
        check_separate_weights(teacher, student)
        # The teacher runs in inference mode, where its random layers do nothing.
        check_augmentation_layers(student, "student")
        self.image_shape = known
        self.num_classes = teacher_classes
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.label_weight = float(label_weight)
        self.global_clipnorm = None if global_clipnorm is None else float(global_clipnorm)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="accuracy"
        )
        self.term_trackers = {
            term: keras.metrics.Mean(name=term) for term in self.LOSS_TERMS
        }
        self.gradient_norm_tracker = (
            keras.metrics.Mean(name="gradient_norm") if self.global_clipnorm else None
        )
        # Subclasses build their own layers in their constructors.
        self.built = True

    @property
    def metrics(self):
        metrics = [self.loss_tracker, self.accuracy_tracker] + list(
            self.term_trackers.values()
        )
        return metrics + ([self.gradient_norm_tracker] if self.gradient_norm_tracker else [])

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    @staticmethod
    def unpack_batch(data):
        """Splits a batch into images and labels.

        Args:
            data: `(images, labels)`; labels may be class indices or rows
                that are distributions (one-hot, soft).

        Returns:
            A tuple `(images, labels)`: labels as `losses.prepare_labels`
            gives them (int32 indices of shape (batch,), or float32 rows of
            shape (batch, num_classes) kept as they are).
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
        return x, prepare_labels(y)

    def compile(self, optimizer="adam", **kwargs):
        """Configures the student's optimizer.

        Args:
            optimizer: Optimizer of the student side (the student and any
                layers the method trains with it).
            **kwargs: Other `keras.Model.compile` arguments (`jit_compile`,
                `steps_per_execution`, `run_eagerly`). `loss` and `metrics`
                are not accepted: the distiller computes its own.
        """
        if keras.backend.backend() not in ("tensorflow", "jax"):
            raise RuntimeError(
                f"{type(self).__name__} trains on the TensorFlow and JAX "
                f"backends, but Keras runs on {keras.backend.backend()!r}. Set "
                "KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax before importing keras."
            )
        for argument in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if kwargs.pop(argument, None) is not None:
                raise ValueError(
                    f"{type(self).__name__}.compile() does not take "
                    f"`{argument}`: the distiller computes its own loss terms "
                    "(set their weights in the constructor) and reports loss "
                    "and accuracy."
                )
        with strategy_scope(self):
            super().compile(optimizer=optimizer, **kwargs)
            self.optimizer.build(self.optimizer_variables())

    def get_compile_config(self):
        # Saved in `.keras` files so that a loaded distiller is compiled again
        # (its optimizers and their state restored) and can go on training.
        if not self.compiled:
            return None
        return {
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "jit_compile": self.jit_compile,
            "steps_per_execution": self.steps_per_execution,
        }

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    def fit(self, x=None, y=None, batch_size=None, callbacks=None, **kwargs):
        """`keras.Model.fit`, after checking the data and with a divergence guard.

        Before training, the first batch is checked against the models
        (image rank, size and channels; labels integer and in range, or
        distributions of the right width; not empty) and a bad one raises a ValueError or
        TypeError that names it, and teacher and student are run on it: one
        that outputs probabilities instead of logits is refused (see
        `hksan_keras.logits_model`). A `DivergenceGuard` is added in front of the
        callbacks (unless one is given), so that a non-finite loss stops
        training at once with a message naming the term, before any
        checkpoint callback can save the broken weights.

        Args:
            x, y, batch_size, callbacks, **kwargs: As for `keras.Model.fit`.

        Returns:
            The `History`.
        """
        from hksan_keras.callbacks import DivergenceGuard

        if getattr(x, "preprocessing", None) is not None:
            # Kept for export_student: what the served model must do to raw images.
            self.preprocessing = x.preprocessing
        sample = first_batch(x, y, batch_size)
        if sample is not None:
            check_batch(
                sample[0],
                sample[1],
                self.num_classes,
                self.image_shape or tuple(sample[0].shape[1:]),
            )
            if self.USES_TEACHER:
                check_logits(self.teacher, sample[0][:64], "teacher")
                self.check_teacher_accuracy(sample)
            check_logits(self.student, sample[0][:64], "student")
        callbacks = list(callbacks or [])
        self._set_metric_directions(callbacks)
        if not any(isinstance(c, DivergenceGuard) for c in callbacks):
            guard = DivergenceGuard(
                sample_images=None if sample is None else sample[0][:64]
            )
            callbacks.insert(0, guard)
        return super().fit(x, y, batch_size=batch_size, callbacks=callbacks, **kwargs)

    def check_teacher_accuracy(self, sample):
        """Warns when the teacher is near chance on `(images, labels)`.

        `fit` calls it on the first batch (256 images at most), before
        training, once per distiller (HKSAN's attention pretraining first):
        see `hksan_keras.checks.check_teacher_is_trained`.

        Args:
            sample: A batch `(images, labels)` as numpy arrays.

        Returns:
            The teacher's accuracy on the batch it was checked on.
        """
        if getattr(self, "_teacher_accuracy", None) is None:  # once: pretraining, then fit
            self._teacher_accuracy = check_teacher_is_trained(
                self.teacher, [(sample[0][:256], sample[1][:256])], self.num_classes)
        return self._teacher_accuracy

    def _set_metric_directions(self, callbacks):
        # Keras callbacks with mode="auto" (ModelCheckpoint, EarlyStopping)
        # read a metric's direction only from compiled metrics and set
        # `monitor_op` on first use; the distillers' accuracy is their own
        # tracker, so set it as Keras would for a compiled accuracy.
        for callback in callbacks:
            name = str(getattr(callback, "monitor", "")).removeprefix("val_")
            if (
                getattr(callback, "mode", None) == "auto"
                and hasattr(callback, "monitor_op")
                and callback.monitor_op is None
                and name in MAXIMIZED_METRICS
            ):
                callback.monitor_op = ops.greater

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (3.15) builds a compiled model on a first batch before
        # training; under MultiWorkerMirroredStrategy that batch is a
        # PerReplica value it cannot convert (keras-team/keras#20585).
        # A distiller needs no such build: its layers are built in the
        # constructor and its optimizers in `compile`.
        return None

    # --- What a method defines -------------------------------------------

    def teacher_outputs(self, images):
        """The teacher's outputs the method needs: `{"logits": ...}` here."""
        return {"logits": self.teacher(images, training=False)}

    def student_outputs(self, images, training):
        """The student's outputs the method needs: `{"logits": ...}` here."""
        return {"logits": self.student(images, training=training)}

    def extra_trainable_variables(self):
        """Variables the method trains with the student (regressors, heads)."""
        return []

    def loss_terms(self, labels, teacher, student):
        """Every term of `LOSS_TERMS`, unweighted, as scalars.

        Args:
            labels: Class indices, shape (batch,), or soft rows, shape
                (batch, num_classes) (see `losses.prepare_labels`).
            teacher: Output of `teacher_outputs` (constants).
            student: Output of `student_outputs` (differentiable).

        Returns:
            A dict `{term: scalar}`.
        """
        return {"label_loss": label_loss(labels, student["logits"])}

    def term_weights(self):
        """The weight of each term in the student's objective."""
        return {"label_loss": self.label_weight}

    def update_discriminator(self, labels, teacher, student):
        """Adversarial methods update their discriminator here; None otherwise.

        The updates go through `minimize`, which is what reads and writes
        variables on every backend (on JAX, the variables are read and
        written only inside it); returns the terms to report.
        """
        return None

    # --- Shared machinery ---------------------------------------------------

    def trainable_student_side(self):
        """All variables the student's optimizer updates."""
        return self.student.trainable_variables + self.extra_trainable_variables()

    def optimizer_variables(self):
        """Every variable the student's optimizer may ever update (built at compile)."""
        return self.trainable_student_side()

    def other_optimizers(self):
        """Optimizers besides `self.optimizer` that the step updates (the discriminator's)."""
        return []

    # --- The step -----------------------------------------------------------
    # Keras calls train_step(data) on TensorFlow and train_step(state, data)
    # on JAX, where the step is a pure function of the variables' values
    # (jax_step.py). Both run the same pieces below, in the same order:
    # teacher, student forward, discriminator updates, objective, gradient,
    # clipping, update, metrics.

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            from hksan_keras.distillers import jax_step

            return jax_step.train_step(self, *args)
        return self._tensorflow_train_step(*args)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            from hksan_keras.distillers import jax_step

            return jax_step.test_step(self, *args)
        return self.evaluate_batch(*args)

    def teacher_float32(self, images):
        """`teacher_outputs`, as float32 constants (empty if the method uses no teacher).

        Loss terms are computed in float32 whatever the models' dtype policy
        (mixed_float16 / mixed_bfloat16 teachers and students are fine).
        """
        if not self.USES_TEACHER:
            return {}
        return {
            name: keras.tree.map_structure(lambda t: ops.cast(ops.stop_gradient(t), "float32"), value)
            for name, value in self.teacher_outputs(images).items()
        }

    def student_float32(self, images, batch_size):
        """`student_outputs` in training mode, as float32."""
        with KeepStateOnEmptyBatch(self.student, batch_size):
            outputs = self.student_outputs(images, training=True)
        return keras.tree.map_structure(lambda t: ops.cast(t, "float32"), outputs)

    def regularization(self):
        """The student's own regularisation losses (weight decay), summed, float32."""
        if not self.student.losses:
            return ops.zeros((), "float32")
        return ops.sum([ops.cast(l, "float32") for l in self.student.losses])

    def objective(self, labels, teacher, student, regularization):
        """The student side's loss: weighted terms plus regularisation.

        Returns:
            `(loss, terms)`: the float32 scalar and `loss_terms`' dict.
        """
        terms = self.loss_terms(labels, teacher, student)
        loss = regularization
        for term, weight in self.term_weights().items():
            if isinstance(weight, (int, float)) and weight == 0:
                continue
            loss = loss + weight * ops.cast(terms[term], "float32")
        return loss, terms

    @staticmethod
    def scaled_for_gradient(loss, batch_size, optimizer):
        """What to differentiate: the loss, as this replica's share, loss-scaled.

        Gradients are summed across replicas: weighting each replica's mean
        by its share of the global batch makes the update that of the
        global-batch mean for any split (an empty replica adds 0).
        """
        return optimizer.scale_loss(where_examples(batch_size, loss) * replica_share(batch_size))

    def minimize(self, loss_fn, variables, optimizer, batch_size):
        """One update of `variables` by `optimizer` on the loss `loss_fn()` returns.

        The step's way to train a part besides the student side (the
        discriminator), on any backend.

        Args:
            loss_fn: A function of no arguments that reads `variables`
                and returns a float32 scalar, a mean over this replica's
                batch.
            variables: The variables to update; `optimizer` was built on
                exactly these.
            optimizer: A built Keras optimizer.
            batch_size: This replica's number of examples (float32 scalar).

        Returns:
            The loss, before the update.
        """
        if keras.backend.backend() == "jax":
            from hksan_keras.distillers import jax_step

            return jax_step.minimize(self, loss_fn, variables, optimizer, batch_size)
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()
            scaled_loss = self.scaled_for_gradient(loss, batch_size, optimizer)
        gradients = gradients_of_examples(batch_size, tape.gradient(scaled_loss, variables))
        optimizer.apply(gradients, variables)
        return loss

    def clip(self, gradients):
        """The gradients, clipped to `global_clipnorm` (and the norm recorded), if set."""
        if not self.global_clipnorm:
            return gradients
        gradients, gradient_norm = clip_by_global_norm(
            gradients, self.global_clipnorm, self.optimizer.scale_loss(1.0)
        )
        # Under mixed_float16 an overflowed step (skipped by the loss
        # scale optimizer) has no finite norm: it is not counted.
        finite = ops.isfinite(gradient_norm)
        self.gradient_norm_tracker.update_state(
            ops.where(finite, gradient_norm, 0.0), sample_weight=ops.cast(finite, "float32")
        )
        return gradients

    def record(self, batch_size, loss, terms, labels, logits):
        """Updates the metrics with the step's values; returns the logs."""
        terms = {
            name: where_examples(batch_size, ops.cast(value, "float32"))
            for name, value in terms.items()
        }
        self.loss_tracker.update_state(
            where_examples(batch_size, loss), sample_weight=batch_size
        )
        self.accuracy_tracker.update_state(class_indices(labels), logits)
        for term, value in terms.items():
            self.term_trackers[term].update_state(value, sample_weight=batch_size)
        return _per_replica_report({metric.name: metric.result() for metric in self.metrics})

    def _tensorflow_train_step(self, data):
        import tensorflow as tf

        images, labels = self.unpack_batch(data)
        teacher = self.teacher_float32(images)
        variables = self.trainable_student_side()
        batch_size = ops.cast(ops.shape(images)[0], "float32")
        with tf.GradientTape() as tape:
            student = self.student_float32(images, batch_size)
            with tape.stop_recording():
                discriminator_terms = self.update_discriminator(
                    labels, teacher, keras.tree.map_structure(ops.stop_gradient, student)
                )
            loss, terms = self.objective(labels, teacher, student, self.regularization())
            scaled_loss = self.scaled_for_gradient(loss, batch_size, self.optimizer)
        gradients = gradients_of_examples(batch_size, tape.gradient(scaled_loss, variables))
        self.optimizer.apply(self.clip(gradients), variables)
        return self.record(batch_size, loss, {**terms, **(discriminator_terms or {})}, labels, student["logits"])

    def evaluate_batch(self, data):
        """The test step's body: the student's label loss and accuracy on a batch."""
        images, labels = self.unpack_batch(data)
        logits = ops.cast(self.student(images, training=False), "float32")
        batch_size = ops.cast(ops.shape(logits)[0], "float32")
        self.loss_tracker.update_state(
            where_examples(batch_size, label_loss(labels, logits)),
            sample_weight=batch_size,
        )
        self.accuracy_tracker.update_state(class_indices(labels), logits)
        # evaluate reports what this step returns (its keys are not all the
        # metrics), so return the global batch's values, not one replica's.
        return _per_replica_report({
            "loss": _global_result(self.loss_tracker),
            "accuracy": _global_result(self.accuracy_tracker),
        })

    # --- The JAX trainer's state also carries `other_optimizers()` ----------
    # Keras's JAX trainer passes (trainable, non-trainable, optimizer,
    # metrics) values through its jitted step and writes them back; the
    # other optimizers' variables ride at the end of the optimizer list.

    def _other_optimizer_variables(self):
        return [v for optimizer in self.other_optimizers() for v in optimizer.variables]

    def _get_jax_state(self, trainable_variables=False, non_trainable_variables=False,
                       optimizer_variables=False, metrics_variables=False, purge_model_variables=False):
        state = super()._get_jax_state(
            trainable_variables=trainable_variables, non_trainable_variables=non_trainable_variables,
            optimizer_variables=optimizer_variables, metrics_variables=metrics_variables,
            purge_model_variables=purge_model_variables)
        if optimizer_variables and self._other_optimizer_variables():
            state = list(state)
            position = int(trainable_variables) + int(non_trainable_variables)
            state[position] = list(state[position]) + [v.value for v in self._other_optimizer_variables()]
            state = tuple(state)
        return state

    def jax_state_sync(self):
        state = getattr(self, "_jax_state", None)
        if state and not self._jax_state_synced and state.get("optimizer_variables"):
            own = len(self.optimizer.variables)
            values = list(state["optimizer_variables"])
            for variable, value in zip(self._other_optimizer_variables(), values[own:]):
                variable.assign(value)
            state["optimizer_variables"] = values[:own]
        super().jax_state_sync()

    def _get_state_sharding_spec(self):
        trainable, non_trainable, optimizer, metrics = super()._get_state_sharding_spec()
        optimizer = list(optimizer) + [v.value.sharding for v in self._other_optimizer_variables()]
        return trainable, non_trainable, optimizer, metrics

    def export_student(
        self,
        filepath,
        format="tf_saved_model",
        preprocessing=None,
        quantization="float32",
        representative_data=None,
    ):
        """Exports the student alone, taking raw uint8 images, for serving or phones.

        Args:
            filepath: Directory (SavedModel) or `.tflite` file to create; an
                existing path is never overwritten.
            format: "tf_saved_model" or "tflite".
            preprocessing: The training pipeline's preprocessing; defaults
                to that of the dataset last given to `fit` (the pipelines of
                `hksan_keras.data` carry it as `dataset.preprocessing`).
            quantization: For TFLite: "float32", "float16", "dynamic" or
                "int8" (see `hksan_keras.export.export_tflite`).
            representative_data: For "int8": training batches to calibrate on.

        Returns:
            The path written.

        Example:

        >>> distiller.fit(train_ds, epochs=10)
        >>> distiller.export_student("student_savedmodel")
        >>> served = tf.saved_model.load("student_savedmodel")
        >>> served.signatures["serving_default"](images=uint8_images)
        """
        from hksan_keras import export

        preprocessing = preprocessing or getattr(self, "preprocessing", None)
        if format == "tflite":
            return export.export_tflite(
                self.student, filepath, preprocessing, quantization, representative_data
            )
        if format == "tf_saved_model":
            return export.export_saved_model(self.student, filepath, preprocessing)
        raise ValueError(f"format must be 'tf_saved_model' or 'tflite', got {format!r}.")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student),
                "label_weight": self.label_weight,
                "global_clipnorm": self.global_clipnorm,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = drop_removed_options(cls.__name__, config, cls.REMOVED_OPTIONS)
        # Files saved before gradient clipping existed trained without it;
        # they keep doing so (HKSAN's default would otherwise switch it on).
        config.setdefault("global_clipnorm", None)
        for role in ("teacher", "student"):
            config[role] = keras.saving.deserialize_keras_object(config[role])
        return cls(**config)


@keras.saving.register_keras_serializable(package="hksan_keras")
class StageDistiller(Distiller):
    """A distiller that also reads the stage feature maps of both networks.

    `teacher_outputs` and `student_outputs` return
    `{"features": [stage_1, ..., stage_K], "logits": ...}`, the stages found
    by `hksan_keras.taps` (by name, or detected where the resolution
    changes).

    Args:
        teacher: Trained functional or Sequential `keras.Model` giving logits.
        student: Functional or Sequential `keras.Model` giving logits.
        teacher_stages: Names of the teacher's stage layers, shallow to deep;
            `None` detects them.
        student_stages: The same for the student.
        num_stages: With detection, keep only the deepest `num_stages`.
        **kwargs: `label_weight`, `global_clipnorm` and standard
            `keras.Model` arguments.
    """

    # The stages are set by the config's `distill` section, shared by every
    # stage method, hence not keys of the method's own section.
    OPTIONS = Distiller.OPTIONS.extend(
        Option("teacher_stages", None, "names",
               "the teacher's stage layers, shallow to deep; None: detected", nullable=True, config=False),
        Option("student_stages", None, "names", "the same for the student", nullable=True, config=False),
        Option("num_stages", None, "steps", "with detection, keep only the deepest num_stages",
               nullable=True, config=False),
    )

    def __init__(
        self,
        teacher,
        student,
        teacher_stages=OPTIONS.teacher_stages,
        student_stages=OPTIONS.student_stages,
        num_stages=OPTIONS.num_stages,
        **kwargs,
    ):
        StageDistiller.OPTIONS.check(locals())
        super().__init__(teacher, student, **kwargs)
        num_stages = None if num_stages is None else int(num_stages)
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
        self.teacher_features = stage_model(
            teacher, self.teacher_stages, name="teacher_features"
        )
        self.student_features = stage_model(
            student, self.student_stages, name="student_features"
        )
        self.teacher_shapes = [
            tuple(t.shape) for t in self.teacher_features.outputs[:-1]
        ]
        self.student_shapes = [
            tuple(t.shape) for t in self.student_features.outputs[:-1]
        ]

    def teacher_outputs(self, images):
        outputs = self.teacher_features(images, training=False)
        return {"features": list(outputs[:-1]), "logits": outputs[-1]}

    def student_outputs(self, images, training):
        outputs = self.student_features(images, training=training)
        return {"features": list(outputs[:-1]), "logits": outputs[-1]}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "teacher_stages": self.teacher_stages,
                "student_stages": self.student_stages,
                "num_stages": self.num_stages,
            }
        )
        return config
