"""ReviewKD: Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review" (CVPR 2021)."""

import keras
from keras import ops

from hksan_keras import losses
from hksan_keras.distillers.base import KeepStateOnEmptyBatch, StageDistiller
from hksan_keras.options import Option

# mdistiller's cap on the fusion modules' width.
MAX_MID_CHANNELS = 512


def nearest_resize(x, size):
    """Nearest-neighbour resize of (batch, H, W, C) to `size`, as PyTorch's.

    Output pixel `i` along an axis of length `n` resized to `m` takes input
    pixel `floor(i * n / m)` (PyTorch's "nearest"); whole-number factors
    repeat or subsample pixels, others gather. All of it compiles with XLA,
    unlike the gradient of TensorFlow's nearest resize.
    """
    height, width = x.shape[1], x.shape[2]
    if (height, width) == tuple(size):
        return x
    if size[0] % height == 0 and size[1] % width == 0:
        return ops.repeat(ops.repeat(x, size[0] // height, axis=1), size[1] // width, axis=2)
    rows = [i * height // size[0] for i in range(size[0])]
    columns = [j * width // size[1] for j in range(size[1])]
    return ops.take(ops.take(x, rows, axis=1), columns, axis=2)


@keras.saving.register_keras_serializable(package="hksan_keras")
class AttentionBasedFusion(keras.layers.Layer):
    """ReviewKD's attention-based fusion (ABF) of one student level.

    The level's features go through a 1x1 convolution and batch
    normalisation to `mid_channels`; with `fuse`, they are mixed with the
    deeper levels' fused features (`residual`, resized by nearest neighbour)
    through two per-position sigmoid weights from a 1x1 convolution of both;
    the result is resized to `out_size` where it differs and mapped by a 3x3
    convolution and batch normalisation to the teacher's `out_channels`.

    Args:
        mid_channels: Width of the fused features.
        out_channels: The teacher level's width.
        fuse: Whether a deeper level's features are fused in (every level
            but the deepest).
        **kwargs: Standard layer arguments.

    Call args:
        features: The student level, (batch, H, W, C_s).
        residual: The deeper levels' fused features, (batch, h, w,
            mid_channels), or None for the deepest level.
        out_size: (height, width) of the teacher's level.
        training: Batch normalisation mode.

    Returns:
        `(output, fused)`: the prediction of the teacher's level, (batch,
        out_size..., out_channels), and the fused features passed to the
        next shallower level.
    """

    def __init__(self, mid_channels, out_channels, fuse, **kwargs):
        super().__init__(**kwargs)
        self.mid_channels = int(mid_channels)
        self.out_channels = int(out_channels)
        self.fuse = bool(fuse)
        # The sublayers compute in this layer's dtype (float32 in the
        # distiller), not the global mixed-precision policy.
        policy = self.dtype_policy
        # LeCun-uniform is ReviewKD's kaiming_uniform_(a=1): bound sqrt(3 / fan_in).
        self.reduce = keras.layers.Conv2D(self.mid_channels, 1, use_bias=False,
                                          kernel_initializer="lecun_uniform", name="reduce", dtype=policy)
        self.reduce_norm = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="reduce_norm", dtype=policy)
        self.attention = (keras.layers.Conv2D(2, 1, activation="sigmoid", name="attention", dtype=policy)
                          if self.fuse else None)
        self.output_conv = keras.layers.Conv2D(self.out_channels, 3, padding="same", use_bias=False,
                                               kernel_initializer="lecun_uniform", name="output_conv", dtype=policy)
        self.output_norm = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="output_norm", dtype=policy)

    def build(self, input_shape):
        self.reduce.build(input_shape)
        mid = (None, None, None, self.mid_channels)
        self.reduce_norm.build(mid)
        if self.attention is not None:
            self.attention.build((None, None, None, 2 * self.mid_channels))
        self.output_conv.build(mid)
        self.output_norm.build((None, None, None, self.out_channels))

    def call(self, features, residual=None, out_size=None, training=None):
        x = self.reduce_norm(self.reduce(features), training=training)
        size = tuple(x.shape[1:3])
        if self.attention is not None:
            residual = nearest_resize(residual, size)
            weights = self.attention(ops.concatenate([x, residual], axis=-1))
            x = x * weights[..., 0:1] + residual * weights[..., 1:2]
        if out_size is not None:
            x = nearest_resize(x, out_size)
        return self.output_norm(self.output_conv(x), training=training), x

    def get_config(self):
        return {**super().get_config(), "mid_channels": self.mid_channels,
                "out_channels": self.out_channels, "fuse": self.fuse}


@keras.saving.register_keras_serializable(package="hksan_keras")
class ReviewKDDistiller(StageDistiller):
    """Knowledge review: each teacher level predicted from the student's deeper levels too.

        L_S = label_weight * CE(y, l_S)
            + min(step / warmup_steps, 1) * reviewkd_weight * HCL(ABF(F_S), F_T)

    The levels are the stages plus the deepest stage's global average (a
    1x1 map, the pooled embedding of a classifier that ends in pooling and
    the logits). From the deepest level up, an `AttentionBasedFusion` per
    level fuses the student's level with what the deeper levels gave and
    predicts the teacher's level; `losses.hierarchical_context_loss`
    compares the predictions with the teacher's levels at full resolution
    and pooled to 4x4, 2x2 and 1x1. The fusion modules train with the
    student. ReviewKD reads the teacher's stages before their last
    activation; this class reads the stage outputs (after it), as every
    stage method here does.

    Defaults are ReviewKD's CIFAR code (`--kd-loss-weight 1.0`, warm-up 20
    epochs, CE 1); its scripts set the weight per pair (ResNet-56 to
    ResNet-20: 0.6; ResNet-110 to ResNet-32: 1; WRN-40-2 to WRN-16-2 and
    ResNet-32x4 to ResNet-8x4: 5), which the pair's configs here set. The
    fusion width is the student's deepest width, at most 512 (mdistiller's).

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        reviewkd_weight: Weight of the review term.
        warmup_steps: Student steps over which that weight rises linearly
            from 0; 0 for none. (Configs set `warmup_epochs`, 20.)
        teacher_stages, student_stages, num_stages, label_weight,
            global_clipnorm: See `StageDistiller` and `Distiller`.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md).

    Example:

    >>> distiller = ReviewKDDistiller(teacher, student, reviewkd_weight=0.6, warmup_steps=20 * 391)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=240)
    """

    LOSS_TERMS = ("label_loss", "review_loss")
    OPTIONS = StageDistiller.OPTIONS.extend(
        Option("reviewkd_weight", 1.0, "weight", "weight of the review (HCL) term; configs set the pair's"),
        Option("warmup_steps", 0, "count", "student steps over which the review weight rises linearly to it",
               config=False),
        Option("warmup_epochs", 20, "count", "the warm-up in epochs (configs; converted to warmup_steps)",
               constructor=False),
    )

    def __init__(self, teacher, student, reviewkd_weight=OPTIONS.reviewkd_weight,
                 warmup_steps=OPTIONS.warmup_steps, teacher_stages=OPTIONS.teacher_stages,
                 student_stages=OPTIONS.student_stages, num_stages=OPTIONS.num_stages,
                 label_weight=OPTIONS.label_weight, global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        ReviewKDDistiller.OPTIONS.check(locals())
        kwargs.setdefault("name", "reviewkd_distiller")
        super().__init__(teacher, student, teacher_stages=teacher_stages, student_stages=student_stages,
                         num_stages=num_stages, label_weight=label_weight,
                         global_clipnorm=global_clipnorm, **kwargs)
        self.reviewkd_weight = float(reviewkd_weight)
        self.warmup_steps = int(warmup_steps)
        student_widths = [shape[-1] for shape in self.student_shapes]
        teacher_widths = [shape[-1] for shape in self.teacher_shapes]
        mid_channels = min(MAX_MID_CHANNELS, student_widths[-1])
        # Levels shallow to deep: the stages, then the pooled deepest stage.
        in_widths, out_widths = student_widths + student_widths[-1:], teacher_widths + teacher_widths[-1:]
        self.fusions = []
        for i, (in_width, out_width) in enumerate(zip(in_widths, out_widths)):
            fusion = AttentionBasedFusion(mid_channels, out_width, fuse=i < len(in_widths) - 1,
                                          name=f"abf_{i + 1}", dtype="float32")
            fusion.build((None, None, None, in_width))
            self.fusions.append(fusion)

    @staticmethod
    def _levels(features):
        features = [ops.cast(f, "float32") for f in features]
        return features + [ops.mean(features[-1], axis=(1, 2), keepdims=True)]

    def extra_trainable_variables(self):
        return [v for fusion in self.fusions for v in fusion.trainable_variables]

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        losses.require_known_sizes(*teacher["features"], *student["features"])
        teacher_levels = self._levels(teacher["features"])
        student_levels = self._levels(student["features"])
        batch_size = ops.cast(ops.shape(student_levels[0])[0], "float32")
        predictions, fused = [], None
        for fusion, level, target in zip(self.fusions[::-1], student_levels[::-1], teacher_levels[::-1]):
            # Their batch normalisation, like the student's, must not take
            # NaN statistics from a replica without examples.
            with KeepStateOnEmptyBatch(fusion, batch_size):
                prediction, fused = fusion(level, fused, out_size=tuple(target.shape[1:3]), training=True)
            predictions.insert(0, prediction)
        terms["review_loss"] = losses.hierarchical_context_loss(teacher_levels, predictions)
        return terms

    def term_weights(self):
        weight = self.reviewkd_weight
        if self.warmup_steps:
            step = ops.cast(self.optimizer.iterations + 1, "float32")
            weight = weight * ops.minimum(step / self.warmup_steps, 1.0)
        return {**super().term_weights(), "review_loss": weight}

    def get_config(self):
        return {**super().get_config(), "reviewkd_weight": self.reviewkd_weight,
                "warmup_steps": self.warmup_steps}
