"""Logit standardisation (Sun et al., CVPR 2024): the z-score, KD+LS and DKD+LS."""

import numpy as np
import pytest

from hksan_keras import distillers, losses

TEACHER = np.array([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -0.4, 1.5]], "float32")
STUDENT = np.array([[0.1, 0.3, -2.0, 1.0], [-1.0, 0.0, 2.0, 0.5]], "float32")
LABELS = np.array([0, 3])


def _z(logits):
    # The paper's z-score, written out: sample standard deviation (n - 1).
    mean = logits.mean(-1, keepdims=True)
    std = np.sqrt(((logits - mean) ** 2).sum(-1, keepdims=True) / (logits.shape[-1] - 1))
    return (logits - mean) / (std + 1e-7)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_standardized_logits_have_mean_zero_and_sample_std_one():
    np.testing.assert_allclose(np.asarray(losses.standardize_logits(np.array([[1.0, 2.0, 3.0]], "float32"))),
                               [[-1.0, 0.0, 1.0]], atol=1e-6)
    z = np.asarray(losses.standardize_logits(TEACHER))
    np.testing.assert_allclose(z.mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(-1, ddof=1), 1.0, atol=1e-5)


def test_kd_ls_term_is_the_papers_formula(teacher, student):
    # T^2 * KL(softmax(z_T / T) || softmax(z_S / T)), batch mean, T = 2.
    p = _softmax(_z(TEACHER) / 2.0)
    q = _softmax(_z(STUDENT) / 2.0)
    expected = 4.0 * np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
    distiller = distillers.KDLSDistiller(teacher, student)
    terms = distiller.loss_terms(LABELS, {"logits": TEACHER}, {"logits": STUDENT})
    assert float(terms["kd_loss"]) == pytest.approx(expected, rel=1e-5)
    weights = distiller.term_weights()
    assert (weights["kd_loss"], weights["label_loss"], distiller.temperature) == (9.0, 0.1, 2.0)


@pytest.mark.parametrize("method", ["kd+ls", "dkd+ls"])
def test_the_standardized_terms_ignore_the_students_logit_scale_and_shift(method, teacher, student):
    distiller = distillers.get(method)(teacher, student)
    term = distiller.LOSS_TERMS[-1]
    plain = distiller.loss_terms(LABELS, {"logits": TEACHER}, {"logits": STUDENT})[term]
    moved = distiller.loss_terms(LABELS, {"logits": TEACHER}, {"logits": 3.0 * STUDENT + 5.0})[term]
    assert float(moved) == pytest.approx(float(plain), rel=1e-4)
    # Without standardisation the same change moves the term.
    unstandardized = distillers.get(method.split("+")[0])(teacher, student)
    before = unstandardized.loss_terms(LABELS, {"logits": TEACHER}, {"logits": STUDENT})[term]
    after = unstandardized.loss_terms(LABELS, {"logits": TEACHER}, {"logits": 3.0 * STUDENT + 5.0})[term]
    assert abs(float(after) - float(before)) > 0.1


def test_dkd_ls_is_dkd_on_standardized_logits_with_the_papers_weights(teacher, student):
    distiller = distillers.DKDLSDistiller(teacher, student)
    assert (distiller.alpha, distiller.beta, distiller.temperature) == (9.0, 72.0, 2.0)
    expected = losses.dkd_loss(LABELS, _z(TEACHER).astype("float32"), _z(STUDENT).astype("float32"),
                               alpha=9.0, beta=72.0, temperature=2.0)
    terms = distiller.loss_terms(LABELS, {"logits": TEACHER}, {"logits": STUDENT})
    assert float(terms["dkd_loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_logit_standardization_is_an_option_of_kd_and_dkd(teacher, student):
    kd = distillers.KDDistiller(teacher, student, logit_standardization=True, temperature=2.0)
    ls = distillers.KDLSDistiller(teacher, student, kd_weight=0.9)
    a = kd.loss_terms(LABELS, {"logits": TEACHER}, {"logits": STUDENT})["kd_loss"]
    b = ls.loss_terms(LABELS, {"logits": TEACHER}, {"logits": STUDENT})["kd_loss"]
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    assert distillers.KDLSDistiller.from_config(ls.get_config()).logit_standardization is True
