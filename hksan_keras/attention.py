"""The task-driven attention estimator and the hierarchical squeeze.

Pure `keras.ops` and Keras layers: these run on any Keras backend.
"""

import keras
from keras import ops

from hksan_keras.checks import drop_removed_options

HIERARCHIES = ("hierarchical", "flat")
SQUEEZE_TARGETS = ("guided", "pooled")


def _inverse_rms(x, axis, keepdims=False):
    """1 over x's root mean square along `axis` (finite for an all-zero x)."""
    return ops.rsqrt(ops.mean(ops.square(x), axis=axis, keepdims=keepdims) + 1e-6)


def _rms_normalize(x, axis):
    """x over its root mean square along `axis`."""
    return x * _inverse_rms(x, axis, keepdims=True)


@keras.saving.register_keras_serializable(package="hksan_keras")
class TaskDrivenAttention(keras.layers.Layer):
    """Squeezes one feature map into one vector with guided spatial attention.

    Given a feature map `L` (batch, H, W, F) and a guide vector (batch, D):

        g = Dense(F)(guide)
        L_hat = L + g                       (broadcast over H x W)
        M = softmax over the H*W positions of Conv1x1(1)(L_hat)
        k = sum over positions of M * L_hat

    `k` is the stage's squeezed knowledge and `M` its attention map. Since M
    sums to one, `k = sum(M * L) + g`: with `include_guide=False` the layer
    returns the attention-pooled features `sum(M * L)` alone (the guide then
    only steers where M looks), so that a match of `k` cannot be made by the
    guide projection without the features.

    Args:
        units: F, the channel count of the feature map (and of `k`).
        include_guide: Whether `k` pools the guided map `L_hat` (KSANC) or
            the feature map `L`.
        **kwargs: Standard `keras.layers.Layer` arguments.

    Returns (from `call`):
        A tuple `(squeezed, attention)`: `squeezed` of shape (batch, F) and
        `attention` of shape (batch, H, W), non-negative and summing to one
        over positions.

    Example:

    >>> layer = TaskDrivenAttention(64)
    >>> k, m = layer([keras.random.normal((2, 8, 8, 64)),
    ...               keras.random.normal((2, 128))])
    >>> k.shape, m.shape
    ((2, 64), (2, 8, 8))
    """

    def __init__(self, units, include_guide=True, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.include_guide = bool(include_guide)
        # Sublayers share this layer's dtype policy (Keras does not pass it on).
        self.guide_projection = keras.layers.Dense(
            self.units, name="guide_projection", dtype=self.dtype_policy
        )
        self.attention_score = keras.layers.Conv2D(
            1, 1, name="attention_score", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        feature_shape, guide_shape = input_shape
        if feature_shape[-1] != self.units:
            raise ValueError(
                f"{self.name}: expected a feature map with {self.units} "
                f"channels, got shape {tuple(feature_shape)}."
            )
        self.guide_projection.build(guide_shape)
        self.attention_score.build(feature_shape)
        self.built = True

    def call(self, inputs):
        feature_map, guide = inputs
        return self.attend(feature_map, guide)

    def attend(self, feature_map, guide, scale=None, transform=None, shift=None):
        """The layer's computation on `L = scale * (feature_map @ transform) + shift`.

        `HierarchicalSqueeze` passes its normalisation (a per-example
        `scale`), its 1x1 channel transform (`transform`, a (C, F) matrix)
        and that transform's bias (`shift`) here instead of applying them to
        the whole map. Neither `L` nor the guided map `L + g` is ever built:
        everything up to the softmax is linear in the map, so the 1x1 score
        convolution of `L + g` is `scale * (feature_map @ (transform w)) +
        (shift + g) w + b`, and since M sums to one, `sum(M * (L + g))` is
        `scale * sum(M * feature_map) @ transform + shift + g` (positions
        pooled first, then transformed). Same values as building the maps,
        without the map-sized work (and its gradient) that made the squeeze
        memory-bound.

        Args:
            feature_map: (batch, H, W, C); C is F without a `transform`.
            guide: (batch, guide width).
            scale: None (1) or a per-example factor, shape (batch,).
            transform: None (identity) or a (C, F) matrix.
            shift: None (0) or a per-channel offset, shape (F,).

        Returns:
            `(squeezed, attention)`, as `call`.
        """
        projected_guide = self.guide_projection(guide)
        height, width = feature_map.shape[1], feature_map.shape[2]
        if height is None or width is None:
            height, width = ops.shape(feature_map)[1], ops.shape(feature_map)[2]
        positions = ops.reshape(feature_map, (-1, height * width, feature_map.shape[-1]))
        score_kernel = ops.cast(self.attention_score.kernel[0, 0], self.compute_dtype)
        score_bias = ops.cast(self.attention_score.bias, self.compute_dtype)
        map_score_kernel = score_kernel if transform is None else ops.matmul(transform, score_kernel)
        scores = ops.squeeze(ops.matmul(positions, map_score_kernel), axis=-1)
        if scale is not None:
            scores = scores * scale[:, None]
        offset = projected_guide if shift is None else projected_guide + shift
        scores = scores + ops.matmul(offset, score_kernel) + score_bias
        # Softmax over all positions of the flat (batch, H*W) view.
        flat_attention = ops.softmax(scores, axis=-1)
        attention = ops.reshape(flat_attention, (-1, height, width))
        # sum over positions of M * feature_map, as one batched matrix product.
        squeezed = ops.squeeze(ops.matmul(flat_attention[:, None, :], positions), axis=1)
        if transform is not None:
            squeezed = ops.matmul(squeezed, transform)
        if scale is not None:
            squeezed = squeezed * scale[:, None]
        if shift is not None:
            squeezed = squeezed + shift
        if self.include_guide:
            squeezed = squeezed + projected_guide
        return squeezed, attention

    def compute_output_shape(self, input_shape):
        feature_shape, _ = input_shape
        return (feature_shape[0], self.units), tuple(feature_shape[:3])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "include_guide": self.include_guide})
        return config


@keras.saving.register_keras_serializable(package="hksan_keras")
class HierarchicalSqueeze(keras.layers.Layer):
    """All of one network's squeezed knowledge: descriptor, estimators, heads.

    Takes the K stage feature maps of one network (shallow to deep) and
    returns one squeezed vector per stage:

    1. An optional 1x1 "channel transform" per stage maps the stage to the
       target width `stage_widths[i]` (the student's side, so its squeezed
       vectors have the teacher's widths).
    2. A global task descriptor `g`: Conv1x1(descriptor_units) on the deepest
       (untransformed) stage, then global average pooling.
    3. One `TaskDrivenAttention` per stage, applied deep to shallow. With
       `hierarchy="hierarchical"` the guide of stage i is `[g ; k^(i+1)]`, so
       each level is conditioned on the level above it; with
       `hierarchy="flat"` every guide is `g` (KSANC exactly).
    4. One linear task head per stage, `Dense(num_classes)` on `k^i`, whose
       cross-entropy with the labels makes the estimators task-driven.

    Args:
        stage_widths: Widths F_i of the squeezed vectors, shallow to deep.
        num_classes: Number of classes of the task heads.
        descriptor_units: Width D_g of the global task descriptor.
        hierarchy: "hierarchical" (top-down guides) or "flat".
        channel_transform: Whether to map each stage to `stage_widths[i]`
            with a 1x1 convolution first.
        squeeze_target: "guided": `k^i` pools the guided map (KSANC);
            "pooled": `k^i` pools the feature map, the guide only steering the
            attention (see `TaskDrivenAttention`).
        normalize_features: Divide every stage feature map by its root mean
            square (per example, over positions and channels) before
            anything else, so that descriptor, estimators and task heads see
            inputs of the same scale whatever the network (the stages of
            an untrained deep ResNet reach several hundred, enough to make
            the estimators diverge at the recipes' learning rates).
        normalize_guide: With "hierarchical", the deeper vector `k^(i+1)`
            joins the guide divided by its root mean square and as a
            constant (no gradient). Raw, it is as large as the features, and
            the chain of guides can make a strongly weighted squeeze term
            diverge; normalised and constant, it is as stable as "flat".
        **kwargs: Standard `keras.layers.Layer` arguments.

    Returns (from `call`):
        A dict with lists, shallow to deep: `"squeezed"` (batch, F_i),
        `"attention"` (batch, H_i, W_i), `"task_logits"`
        (batch, num_classes) and `"guides"` (the guide each estimator got).

    Example:

    >>> squeeze = HierarchicalSqueeze([16, 32], num_classes=10)
    >>> out = squeeze([keras.random.normal((2, 8, 8, 16)),
    ...                keras.random.normal((2, 4, 4, 32))])
    >>> [k.shape for k in out["squeezed"]]
    [(2, 16), (2, 32)]
    """

    # Options that older versions took and saved; `from_config` names them.
    REMOVED_OPTIONS = {"scale_guide": False, "stop_guide_gradient": False}

    def __init__(
        self,
        stage_widths,
        num_classes,
        descriptor_units=128,
        hierarchy="hierarchical",
        channel_transform=False,
        normalize_guide=False,
        squeeze_target="guided",
        normalize_features=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hierarchy not in HIERARCHIES:
            raise ValueError(
                f"hierarchy must be one of {HIERARCHIES}, got {hierarchy!r}."
            )
        if squeeze_target not in SQUEEZE_TARGETS:
            raise ValueError(
                f"squeeze_target must be one of {SQUEEZE_TARGETS}, got {squeeze_target!r}."
            )
        self.squeeze_target = squeeze_target
        self.normalize_features = bool(normalize_features)
        self.stage_widths = [int(w) for w in stage_widths]
        self.num_classes = int(num_classes)
        self.descriptor_units = int(descriptor_units)
        self.hierarchy = hierarchy
        self.channel_transform = bool(channel_transform)
        self.normalize_guide = bool(normalize_guide)
        stages = range(1, len(self.stage_widths) + 1)
        self.channel_transforms = (
            [
                keras.layers.Conv2D(w, 1, name=f"channel_transform_{i}", dtype=self.dtype_policy)
                for i, w in zip(stages, self.stage_widths)
            ]
            if self.channel_transform
            else []
        )
        self.descriptor = keras.layers.Conv2D(
            self.descriptor_units, 1, name="global_descriptor", dtype=self.dtype_policy
        )
        self.estimators = [
            TaskDrivenAttention(
                w,
                include_guide=squeeze_target == "guided",
                name=f"attention_{i}",
                dtype=self.dtype_policy,
            )
            for i, w in zip(stages, self.stage_widths)
        ]
        self.task_heads = [
            keras.layers.Dense(
                self.num_classes, name=f"task_head_{i}", dtype=self.dtype_policy
            )
            for i in stages
        ]

    def _guide_width(self, stage_index):
        deepest = stage_index == len(self.stage_widths) - 1
        if self.hierarchy == "flat" or deepest:
            return self.descriptor_units
        return self.descriptor_units + self.stage_widths[stage_index + 1]

    def build(self, input_shape):
        input_shape = [tuple(s) for s in input_shape]
        if len(input_shape) != len(self.stage_widths):
            raise ValueError(
                f"{self.name}: expected {len(self.stage_widths)} stage feature "
                f"maps, got {len(input_shape)}."
            )
        self.descriptor.build(input_shape[-1])
        for i, shape in enumerate(input_shape):
            if self.channel_transform:
                self.channel_transforms[i].build(shape)
                shape = shape[:3] + (self.stage_widths[i],)
            self.estimators[i].build((shape, (shape[0], self._guide_width(i))))
            self.task_heads[i].build((shape[0], self.stage_widths[i]))
        self.built = True

    def call(self, stage_features):
        stage_features = list(stage_features)
        num_stages = len(stage_features)
        # Normalisation and channel transforms are linear per example: they
        # reach the estimators as a scale, a matrix and a shift (`attend`),
        # so that no normalised or transformed copy of a map is built.
        scales = [None] * num_stages
        if self.normalize_features:
            scales = [_inverse_rms(f, axis=(1, 2, 3)) for f in stage_features]
        # mean over positions of Conv1x1(scale * L) = scale * mean(L) W + b.
        descriptor = ops.matmul(
            ops.mean(stage_features[-1], axis=(1, 2)),
            ops.cast(self.descriptor.kernel[0, 0], self.compute_dtype),
        )
        if scales[-1] is not None:
            descriptor = descriptor * scales[-1][:, None]
        descriptor = descriptor + ops.cast(self.descriptor.bias, self.compute_dtype)
        transforms, shifts = [None] * num_stages, [None] * num_stages
        if self.channel_transform:
            transforms = [
                ops.cast(transform.kernel[0, 0], self.compute_dtype)
                for transform in self.channel_transforms
            ]
            shifts = [
                ops.cast(transform.bias, self.compute_dtype)
                for transform in self.channel_transforms
            ]
        squeezed = [None] * num_stages
        attention = [None] * num_stages
        guides = [None] * num_stages
        for i in reversed(range(num_stages)):
            guide = descriptor
            if self.hierarchy == "hierarchical" and i < num_stages - 1:
                above = squeezed[i + 1]
                if self.normalize_guide:
                    above = _rms_normalize(ops.stop_gradient(above), axis=-1)
                guide = ops.concatenate([descriptor, above], axis=-1)
            guides[i] = guide
            squeezed[i], attention[i] = self.estimators[i].attend(
                stage_features[i], guide, scales[i], transforms[i], shifts[i]
            )
        task_logits = [head(k) for head, k in zip(self.task_heads, squeezed)]
        return {
            "squeezed": squeezed,
            "attention": attention,
            "task_logits": task_logits,
            "guides": guides,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "stage_widths": self.stage_widths,
                "num_classes": self.num_classes,
                "descriptor_units": self.descriptor_units,
                "hierarchy": self.hierarchy,
                "channel_transform": self.channel_transform,
                "normalize_guide": self.normalize_guide,
                "squeeze_target": self.squeeze_target,
                "normalize_features": self.normalize_features,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(drop_removed_options(cls.__name__, config, cls.REMOVED_OPTIONS))
