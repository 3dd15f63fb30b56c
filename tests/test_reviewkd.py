"""ReviewKD (Chen et al., CVPR 2021): pooling and HCL by hand, the fusion modules, the distiller."""

import keras
import numpy as np
import pytest

from hksan_keras import distillers, losses, models
from hksan_keras.distillers.reviewkd import AttentionBasedFusion, nearest_resize


def _adaptive_pool(x, size):
    # PyTorch's adaptive average pooling bins, written out.
    n = x.shape[1]
    bins = [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]
    return np.stack([np.stack([x[:, a:b, c:d].mean(axis=(1, 2)) for c, d in bins], 1) for a, b in bins], 1)


@pytest.mark.parametrize("height, size", [(8, 4), (7, 4), (7, 2), (5, 1)])
def test_adaptive_pooling_uses_pytorchs_bins(height, size):
    x = np.random.default_rng(0).normal(size=(2, height, height, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(losses.adaptive_average_pool(x, size)), _adaptive_pool(x, size),
                               rtol=1e-5, atol=1e-6)


def test_hcl_is_the_weighted_pyramid_of_mean_squared_errors():
    rng = np.random.default_rng(1)
    teacher = [rng.normal(size=(2, 8, 8, 3)).astype("float32"), rng.normal(size=(2, 1, 1, 5)).astype("float32")]
    student = [rng.normal(size=(2, 8, 8, 3)).astype("float32"), rng.normal(size=(2, 1, 1, 5)).astype("float32")]
    mse = lambda a, b: np.mean((a - b) ** 2)  # noqa: E731
    # 8x8: full (1), 4x4 (1/2), 2x2 (1/4), 1x1 (1/8), over 1 + 7/8; 1x1: full only.
    first = (mse(student[0], teacher[0]) + sum(
        w * mse(_adaptive_pool(student[0], s), _adaptive_pool(teacher[0], s))
        for s, w in ((4, 0.5), (2, 0.25), (1, 0.125)))) / 1.875
    expected = first + mse(student[1], teacher[1])
    assert float(losses.hierarchical_context_loss(teacher, student)) == pytest.approx(expected, rel=1e-5)
    assert float(losses.hierarchical_context_loss(teacher, teacher)) == 0.0


def test_the_fusion_mixes_the_deeper_levels_and_predicts_the_teachers_shape():
    keras.utils.set_random_seed(0)
    fusion = AttentionBasedFusion(6, 10, fuse=True)
    fusion.build((None, None, None, 4))
    features = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype("float32")
    residual = np.random.default_rng(3).normal(size=(2, 4, 4, 6)).astype("float32")
    output, fused = fusion(features, residual, out_size=(8, 8), training=False)
    assert tuple(output.shape) == (2, 8, 8, 10) and tuple(fused.shape) == (2, 8, 8, 6)
    # The fused features are a per-position weighting of both inputs, with
    # the residual upsampled by nearest neighbour.
    x = np.asarray(fusion.reduce_norm(fusion.reduce(features), training=False))
    up = residual.repeat(2, axis=1).repeat(2, axis=2)
    z = np.asarray(fusion.attention(np.concatenate([x, up], -1)))
    np.testing.assert_allclose(np.asarray(fused), x * z[..., :1] + up * z[..., 1:], rtol=1e-5, atol=1e-5)
    deepest = AttentionBasedFusion(6, 10, fuse=False)
    deepest.build((None, None, None, 4))
    output, _ = deepest(features[:, :1, :1], None, out_size=(2, 2), training=False)
    assert tuple(output.shape) == (2, 2, 2, 10) and deepest.attention is None
    assert AttentionBasedFusion.from_config(fusion.get_config()).fuse is True


def test_a_zoo_pair_gets_one_fusion_per_level_and_fit_trains_them_with_the_student(batch):
    teacher = models.get("resnet20", 10, input_shape=(16, 16, 3))
    student = models.get("resnet8_narrow", 10, input_shape=(16, 16, 3))
    distiller = distillers.ReviewKDDistiller(teacher, student, warmup_steps=4)
    assert [f.out_channels for f in distiller.fusions] == [16, 32, 64, 64]
    assert [f.mid_channels for f in distiller.fusions] == [32] * 4
    assert [f.fuse for f in distiller.fusions] == [True, True, True, False]
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    assert float(distiller.term_weights()["review_loss"]) == pytest.approx(0.25)
    fusion_before = [np.array(v) for v in distiller.extra_trainable_variables()]
    teacher_before = [np.array(v) for v in teacher.weights]
    history = distiller.fit(*batch, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(history["review_loss"][-1])
    assert all(not np.array_equal(b, np.array(v)) for b, v in zip(fusion_before, distiller.extra_trainable_variables())
               if b.ndim == 4)
    assert all(np.array_equal(b, np.array(v)) for b, v in zip(teacher_before, teacher.weights))
    assert float(distiller.term_weights()["review_loss"]) == pytest.approx(0.75)


def test_nearest_resize_repeats_subsamples_or_falls_back_like_pytorch():
    x = np.arange(2 * 4 * 4 * 1, dtype="float32").reshape(2, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(nearest_resize(x, (8, 8))), x.repeat(2, 1).repeat(2, 2))
    np.testing.assert_array_equal(np.asarray(nearest_resize(x, (2, 2))), x[:, ::2, ::2])
    # 4 -> 6: PyTorch's nearest takes floor(i * 4 / 6) = 0, 0, 1, 2, 2, 3.
    np.testing.assert_array_equal(np.asarray(nearest_resize(x, (6, 6))), x[:, [0, 0, 1, 2, 2, 3]][:, :, [0, 0, 1, 2, 2, 3]])
