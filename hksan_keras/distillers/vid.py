"""VID: Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information
Distillation for Knowledge Transfer" (CVPR 2019)."""

import math

import keras
from keras import ops

from hksan_keras import losses
from hksan_keras.distillers.base import StageDistiller
from hksan_keras.options import Option

# RepDistiller's VIDLoss (Tian et al.'s CRD code, which the CIFAR tables
# of KD methods use): the variance starts at 5 and never falls below 1e-5.
INITIAL_VARIANCE = 5.0
VARIANCE_FLOOR = 1e-5


@keras.saving.register_keras_serializable(package="hksan_keras")
class VIDRegressor(keras.layers.Layer):
    """VID's q(t | s) for one stage: a mean regressor and a variance per channel.

    mu(s) = conv1x1 -> ReLU -> conv1x1 -> ReLU -> conv1x1 (no biases, the
    hidden width the teacher's), sigma^2 = softplus(alpha) + 1e-5, one alpha
    per teacher channel, starting where sigma^2 = 5 (RepDistiller's VIDLoss).

    Args:
        teacher_channels: C_t, the width of the teacher stage it predicts.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Returns (from `call`):
        mu(s), shape (batch, H, W, C_t), for a student map (batch, H, W, C_s).

    Example:

    >>> regressor = VIDRegressor(64)
    >>> mean = regressor(keras.random.normal((2, 8, 8, 32)))   # (2, 8, 8, 64)
    >>> regressor.variance()                                    # (64,), all 5
    """

    def __init__(self, teacher_channels, **kwargs):
        super().__init__(**kwargs)
        self.teacher_channels = int(teacher_channels)
        self.convolutions = [
            keras.layers.Conv2D(self.teacher_channels, 1, use_bias=False, name=f"conv_{i}",
                                dtype=self.dtype_policy)
            for i in range(1, 4)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for convolution in self.convolutions:
            convolution.build(shape)
            shape = shape[:-1] + (self.teacher_channels,)
        # softplus(alpha) + floor = INITIAL_VARIANCE at the start.
        start = math.log(math.expm1(INITIAL_VARIANCE - VARIANCE_FLOOR))
        self.alpha = self.add_weight(
            name="alpha", shape=(self.teacher_channels,),
            initializer=keras.initializers.Constant(start))
        self.built = True

    def call(self, student_map):
        x = student_map
        for i, convolution in enumerate(self.convolutions):
            x = convolution(x)
            if i < len(self.convolutions) - 1:
                x = ops.relu(x)
        return x

    def variance(self):
        """sigma^2 per teacher channel, shape (C_t,): softplus(alpha) + 1e-5."""
        return ops.softplus(self.alpha) + VARIANCE_FLOOR

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.teacher_channels,)

    def get_config(self):
        return {**super().get_config(), "teacher_channels": self.teacher_channels}


@keras.saving.register_keras_serializable(package="hksan_keras")
class VIDDistiller(StageDistiller):
    """Variational information distillation at every stage.

        L_S = label_weight * CE(y, l_S)
            + vid_weight * sum_i mean(0.5 * ((mu_i(F_S^i) - F_T^i)^2 / sigma_i^2 + log sigma_i^2))

    One `VIDRegressor` per stage pair predicts the teacher's stage from the
    student's (the larger map average-pooled to the smaller's size first);
    regressors and variances train with the student. The weight 1 and
    every stage are RepDistiller's CIFAR setting (`--distill vid -a 0 -b 1`).

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        vid_weight: Weight of the VID term.
        teacher_stages, student_stages, num_stages, label_weight,
            global_clipnorm: See `StageDistiller` and `Distiller`.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md).

    Example:

    >>> distiller = VIDDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    LOSS_TERMS = ("label_loss", "vid_loss")
    OPTIONS = StageDistiller.OPTIONS.extend(
        Option("vid_weight", 1.0, "weight", "weight of the VID term (RepDistiller's)"),
    )

    def __init__(self, teacher, student, vid_weight=OPTIONS.vid_weight,
                 teacher_stages=OPTIONS.teacher_stages,
                 student_stages=OPTIONS.student_stages, num_stages=OPTIONS.num_stages,
                 label_weight=OPTIONS.label_weight, global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        VIDDistiller.OPTIONS.check(locals())
        kwargs.setdefault("name", "vid_distiller")
        super().__init__(teacher, student, teacher_stages=teacher_stages, student_stages=student_stages,
                         num_stages=num_stages, label_weight=label_weight,
                         global_clipnorm=global_clipnorm, **kwargs)
        self.vid_weight = float(vid_weight)
        self.regressors = []
        for i, (t_shape, s_shape) in enumerate(zip(self.teacher_shapes, self.student_shapes)):
            regressor = VIDRegressor(t_shape[-1], name=f"vid_regressor_{i + 1}", dtype="float32")
            # The student map is pooled to the smaller resolution first.
            size = s_shape[1:3] if s_shape[1] is None or t_shape[1] is None else (
                min(s_shape[1], t_shape[1]), min(s_shape[2], t_shape[2]))
            regressor.build((None, *size, s_shape[-1]))
            self.regressors.append(regressor)

    def extra_trainable_variables(self):
        return [v for regressor in self.regressors for v in regressor.trainable_variables]

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        total = 0.0
        for regressor, t_map, s_map in zip(self.regressors, teacher["features"], student["features"]):
            s_map, t_map = losses.match_resolution(s_map, t_map)
            total = total + losses.vid_loss(t_map, regressor(s_map), regressor.variance())
        terms["vid_loss"] = total
        return terms

    def term_weights(self):
        return {**super().term_weights(), "vid_loss": self.vid_weight}

    def get_config(self):
        return {**super().get_config(), "vid_weight": self.vid_weight}
