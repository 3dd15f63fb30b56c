"""VID (Ahn et al., CVPR 2019): its loss by hand, its minimum, its regressors."""

import keras
import numpy as np
import pytest

from hksan_keras import distillers, losses, models
from hksan_keras.distillers.vid import VIDRegressor


def test_vid_loss_is_the_gaussian_negative_log_likelihood():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    mean = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    variance = np.array([0.5, 1.0, 2.0, 5.0], "float32")
    # 0.5 * ((mu - t)^2 / sigma^2 + log sigma^2), averaged over every element.
    expected = np.mean(0.5 * ((mean - teacher) ** 2 / variance + np.log(variance)))
    assert float(losses.vid_loss(teacher, mean, variance)) == pytest.approx(expected, rel=1e-5)


def test_for_a_fixed_variance_the_loss_is_smallest_at_the_teachers_features():
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    variance = np.array([0.5, 2.0, 5.0], "float32")
    at_teacher = float(losses.vid_loss(teacher, teacher, variance))
    assert at_teacher == pytest.approx(0.5 * np.mean(np.log(variance)), rel=1e-5)
    for scale in (0.01, 0.1, 1.0):
        moved = teacher + scale * rng.normal(size=teacher.shape).astype("float32")
        assert float(losses.vid_loss(teacher, moved, variance)) > at_teacher


def test_the_regressor_starts_at_variance_5_and_predicts_the_teachers_width():
    regressor = VIDRegressor(12)
    out = regressor(np.zeros((2, 4, 4, 6), "float32"))
    assert out.shape == (2, 4, 4, 12)
    np.testing.assert_allclose(np.asarray(regressor.variance()), 5.0, rtol=1e-6)
    assert [tuple(c.kernel.shape) for c in regressor.convolutions] == [(1, 1, 6, 12), (1, 1, 12, 12),
                                                                        (1, 1, 12, 12)]


def test_every_stage_of_a_zoo_pair_gets_a_regressor_and_fit_trains_them(batch):
    teacher = models.get("resnet20", 10, input_shape=(16, 16, 3))
    student = models.get("resnet8_narrow", 10, input_shape=(16, 16, 3))
    distiller = distillers.VIDDistiller(teacher, student)
    assert len(distiller.regressors) == len(distiller.teacher_stages) == 3
    assert [r.teacher_channels for r in distiller.regressors] == [16, 32, 64]
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    teacher_before = [np.array(v) for v in teacher.weights]
    alpha_before = [np.array(r.alpha) for r in distiller.regressors]
    history = distiller.fit(*batch, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["vid_loss"][-1])
    assert all(np.array_equal(b, np.array(v)) for b, v in zip(teacher_before, teacher.weights))
    assert any(not np.allclose(b, np.array(r.alpha)) for b, r in zip(alpha_before, distiller.regressors))


def _pool(x, factor):
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def test_the_distillers_term_sums_every_stage_with_the_larger_map_pooled_by_hand(teacher, student):
    distiller = distillers.VIDDistiller(teacher, student)
    rng = np.random.default_rng(2)
    for regressor in distiller.regressors:
        regressor.alpha.assign(rng.normal(size=regressor.alpha.shape).astype("float32"))
    # Stage 1: the student's map is twice the teacher's size; stage 2: the
    # teacher's is; stage 3: equal. Widths are the fixtures' (4/8/12, 8/16/24).
    student_maps = [rng.normal(size=s).astype("float32") for s in [(2, 4, 4, 4), (2, 2, 2, 8), (2, 2, 2, 12)]]
    teacher_maps = [rng.normal(size=s).astype("float32") for s in [(2, 2, 2, 8), (2, 4, 4, 16), (2, 2, 2, 24)]]
    logits = rng.normal(size=(2, 10)).astype("float32")
    terms = distiller.loss_terms(np.array([0, 1]), {"logits": logits, "features": teacher_maps},
                                 {"logits": logits, "features": student_maps})
    expected = 0.0
    for regressor, s_map, t_map in zip(distiller.regressors, student_maps, teacher_maps):
        if s_map.shape[1] > t_map.shape[1]:
            s_map = _pool(s_map, s_map.shape[1] // t_map.shape[1])
        elif t_map.shape[1] > s_map.shape[1]:
            t_map = _pool(t_map, t_map.shape[1] // s_map.shape[1])
        mean = s_map
        for i, convolution in enumerate(regressor.convolutions):
            mean = mean @ np.array(convolution.kernel)[0, 0]
            mean = np.maximum(mean, 0.0) if i < 2 else mean
        variance = np.log1p(np.exp(np.array(regressor.alpha))) + 1e-5
        expected += np.mean(0.5 * ((mean - t_map) ** 2 / variance + np.log(variance)))
    assert float(terms["vid_loss"]) == pytest.approx(expected, rel=1e-4)
