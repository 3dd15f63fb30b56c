"""DIST (Huang et al., NeurIPS 2022): its two terms by hand, their minimum, the distiller."""

import keras
import numpy as np
import pytest

from hksan_keras import distillers, losses

TEACHER = np.array([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.4, 1.5], [1.0, 1.0, -2.0, 0.1]], "float32")
STUDENT = np.array([[0.1, 0.3, -2.0, 1.0], [-1.0, 0.0, 2.0, 0.5], [0.4, 0.9, -0.3, 0.0]], "float32")
LABELS = np.array([0, 3, 1])


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _pearson(a, b):
    # The textbook formula: covariance over the product of the deviations.
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())


def test_both_terms_are_the_papers_formulas():
    T = 4.0
    p_s, p_t = _softmax(STUDENT / T), _softmax(TEACHER / T)
    inter = T**2 * (1 - np.mean([_pearson(p_s[i], p_t[i]) for i in range(3)]))
    intra = T**2 * (1 - np.mean([_pearson(p_s[:, c], p_t[:, c]) for c in range(4)]))
    assert float(losses.dist_inter_class_loss(TEACHER, STUDENT, T)) == pytest.approx(inter, rel=1e-5)
    assert float(losses.dist_intra_class_loss(TEACHER, STUDENT, T)) == pytest.approx(intra, rel=1e-5)
    assert float(losses.dist_loss(TEACHER, STUDENT, T, beta=2.0, gamma=3.0)) == pytest.approx(
        2 * inter + 3 * intra, rel=1e-5)


def test_the_terms_vanish_for_the_teachers_own_logits_and_are_largest_for_reversed_relations():
    # Zero up to float32 rounding (the terms reach 2 * 2 * 2 * T^2 = 128).
    assert float(losses.dist_loss(TEACHER, TEACHER)) == pytest.approx(0.0, abs=2e-4)
    # Negated logits reverse every ranking: correlations near -1.
    assert float(losses.dist_inter_class_loss(TEACHER, -TEACHER, 1.0)) > 1.5
    assert float(losses.dist_intra_class_loss(TEACHER, -TEACHER, 1.0)) > 1.5
    # A constant row has correlation 0 (not NaN) with anything.
    constant = np.zeros_like(STUDENT)
    assert float(losses.dist_inter_class_loss(TEACHER, constant, 4.0)) == pytest.approx(16.0, rel=1e-5)


def test_the_correlation_ignores_a_positive_affine_map():
    a = np.array([[0.1, 0.5, 0.2, 0.9]], "float32")
    b = np.array([[0.3, 0.2, 0.8, 0.4]], "float32")
    r = float(losses.pearson_correlation(a, b)[0])
    assert r == pytest.approx(_pearson(a[0], b[0]), rel=1e-5)
    assert float(losses.pearson_correlation(3.0 * a + 1.0, b)[0]) == pytest.approx(r, rel=1e-5)


def test_the_distiller_weighs_the_terms_with_the_papers_cifar_defaults(teacher, student):
    distiller = distillers.get("dist")(teacher, student)
    assert type(distiller) is distillers.DISTDistiller
    assert distiller.term_weights() == {"label_loss": 1.0, "inter_class_loss": 2.0, "intra_class_loss": 2.0}
    assert distiller.temperature == 4.0
    terms = distiller.loss_terms(LABELS, {"logits": TEACHER}, {"logits": STUDENT})
    assert float(terms["inter_class_loss"]) == pytest.approx(
        float(losses.dist_inter_class_loss(TEACHER, STUDENT, 4.0)), rel=1e-6)
    restored = distillers.DISTDistiller.from_config(
        distillers.DISTDistiller(teacher, student, temperature=2.0, beta=1.0, gamma=0.5).get_config())
    assert (restored.temperature, restored.beta, restored.gamma) == (2.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="gamma"):
        distillers.DISTDistiller(teacher, student, gamma=-1.0)


def test_fit_moves_the_student_toward_the_teachers_relations(teacher, student, batch):
    distiller = distillers.DISTDistiller(teacher, student, label_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = distiller.fit(*batch, batch_size=16, epochs=4, verbose=0).history
    total = np.array(history["inter_class_loss"]) + np.array(history["intra_class_loss"])
    assert total[-1] < total[0]
