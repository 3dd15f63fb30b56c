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


def _dkd(labels, teacher, student, alpha, beta, temperature):
    # Zhao et al. (CVPR 2022), eq. 7, written out: alpha TCKD + beta NCKD,
    # each T^2 KL, batch mean; NCKD over the non-target classes only.
    rows = np.arange(len(labels))
    p_t, p_s = _softmax(teacher / temperature), _softmax(student / temperature)
    b_t = np.stack([p_t[rows, labels], 1 - p_t[rows, labels]], -1)
    b_s = np.stack([p_s[rows, labels], 1 - p_s[rows, labels]], -1)
    tckd = np.sum(b_t * np.log(b_t / b_s), -1)
    others = np.ones_like(teacher, bool)
    others[rows, labels] = False
    q_t = _softmax(np.where(others, teacher / temperature, -np.inf))
    q_s = _softmax(np.where(others, student / temperature, -np.inf))
    nckd = np.sum(np.where(others, q_t * np.log(np.where(others, q_t / np.where(others, q_s, 1.0), 1.0)), 0.0), -1)
    return temperature ** 2 * np.mean(alpha * tckd + beta * nckd)


def test_dkd_ls_term_is_the_papers_formula_on_z_scores(teacher, student):
    expected = _dkd(LABELS, _z(TEACHER).astype("float64"), _z(STUDENT).astype("float64"), 9.0, 72.0, 2.0)
    terms = distillers.DKDLSDistiller(teacher, student).loss_terms(
        LABELS, {"logits": TEACHER}, {"logits": STUDENT})
    assert float(terms["dkd_loss"]) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("method", ["kd+ls", "dkd+ls"])
def test_the_standardized_terms_vanish_for_any_scale_and_shift_of_the_teachers_logits(method, teacher, student):
    # Sun et al.'s point: a student whose logits are an affine copy of the
    # teacher's (scale 3, shift 5) has learnt its relations: zero with
    # standardisation, far from zero without.
    term = distillers.get(method).LOSS_TERMS[-1]
    copy = {"logits": 3.0 * TEACHER + 5.0}
    standardized = distillers.get(method)(teacher, student).loss_terms(LABELS, {"logits": TEACHER}, copy)[term]
    # float32 round-off in the KL, times DKD+LS's weights (beta 72, T^2 4).
    assert abs(float(standardized)) < 1e-4
    plain = distillers.get(method.split("+")[0])(teacher, student).loss_terms(LABELS, {"logits": TEACHER}, copy)[term]
    assert float(plain) > 0.1
