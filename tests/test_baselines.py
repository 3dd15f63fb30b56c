"""The baseline distillers: each trains what it should, its terms are right,
and it goes through configs, `.keras` files and Keras's own Distiller."""

import keras
import numpy as np
import pytest
from keras import ops

import hksan_keras
from hksan_keras import distillers, losses
from conftest import fast_tier_keeps, fit_inputs, method_kwargs, student_for, tiny_resnet


def _values(variables):
    return [np.array(v) for v in variables]


def _changed(before, variables):
    return any(not np.allclose(b, np.array(v)) for b, v in zip(before, variables))


@pytest.mark.parametrize("method", sorted(distillers.METHODS))
def test_every_method_trains_the_student_and_reports_its_terms(method, teacher, student, batch):
    student = student_for(method, student)
    distiller = distillers.get(method)(teacher, student, **method_kwargs(method))
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    teacher_before = _values(teacher.weights)
    student_before = _values(student.trainable_variables)
    history = distiller.fit(*fit_inputs(method, batch), batch_size=16, epochs=1, verbose=0)
    assert not _changed(teacher_before, teacher.weights)
    assert _changed(student_before, student.trainable_variables)
    for name in ("loss", "accuracy") + type(distiller).LOSS_TERMS:
        assert np.isfinite(history.history[name][-1]), name
    assert set(distiller.evaluate(*batch, verbose=0, return_dict=True)) == {"loss", "accuracy"}


def test_student_alone_never_runs_the_teacher(teacher, student, batch):
    calls = []
    teacher.call = lambda *args, **kwargs: calls.append(1)
    baseline = distillers.StudentAlone(teacher, student)
    baseline.compile(optimizer="sgd")
    baseline.fit(*batch, epochs=1, verbose=0)
    assert calls == []


def test_kd_equals_hintons_loss_by_hand():
    teacher_logits = np.array([[2.0, -1.0, 0.5]])
    student_logits = np.array([[0.1, 0.3, -2.0]])
    T = 2.0
    p = np.exp(teacher_logits / T) / np.exp(teacher_logits / T).sum()
    q = np.exp(student_logits / T) / np.exp(student_logits / T).sum()
    by_hand = T**2 * np.sum(p * np.log(p / q))
    ours = float(losses.kd_loss(ops.array(teacher_logits), ops.array(student_logits), T))
    assert by_hand == pytest.approx(0.97, abs=0.005)
    assert ours == pytest.approx(by_hand, rel=1e-5)
    keras_version = float(hksan_keras.keras_losses.HintonKDLoss(T).compute_loss(
        ops.array(teacher_logits), ops.array(student_logits)))
    assert keras_version == pytest.approx(by_hand, rel=1e-5)


def test_dkd_terms_by_hand():
    teacher_logits = np.array([[2.0, -1.0, 0.5, 0.0]])
    student_logits = np.array([[0.1, 0.3, -2.0, 1.0]])
    T, label = 2.0, 0
    p = np.exp(teacher_logits[0] / T) / np.exp(teacher_logits[0] / T).sum()
    q = np.exp(student_logits[0] / T) / np.exp(student_logits[0] / T).sum()
    pb, qb = np.array([p[0], 1 - p[0]]), np.array([q[0], 1 - q[0]])
    tckd = np.sum(pb * np.log(pb / qb))
    pn, qn = p[1:] / p[1:].sum(), q[1:] / q[1:].sum()
    nckd = np.sum(pn * np.log(pn / qn))
    ours = float(losses.dkd_loss(ops.array([label]), ops.array(teacher_logits),
                                 ops.array(student_logits), alpha=1.0, beta=8.0, temperature=T))
    assert ours == pytest.approx(T**2 * (tckd + 8.0 * nckd), rel=1e-4)
    # DKD with alpha = beta = 1 is not KD unless the target probabilities agree.
    assert T**2 * (tckd + nckd) != pytest.approx(float(losses.kd_loss(
        ops.array(teacher_logits), ops.array(student_logits), T)), rel=1e-3)


def test_feature_terms_vanish_on_identical_features_and_not_otherwise():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 8, 8, 4)).astype("float32")
    b = rng.normal(size=(2, 8, 8, 6)).astype("float32")
    assert float(losses.attention_transfer_loss([a], [a])) == pytest.approx(0.0, abs=1e-7)
    assert float(losses.neuron_selectivity_loss([a], [a])) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.attention_transfer_loss([a], [b])) > 0
    assert float(losses.neuron_selectivity_loss([a], [b])) > 0
    # A student stage twice the teacher's resolution is pooled to it.
    big = rng.normal(size=(2, 16, 16, 4)).astype("float32")
    assert np.isfinite(float(losses.attention_transfer_loss([a], [big])))
    with pytest.raises(ValueError, match="whole multiple"):
        losses.attention_transfer_loss([a], [rng.normal(size=(2, 12, 12, 4)).astype("float32")])


def test_attention_map_is_unit_norm_mean_of_squares():
    feature = np.arange(2 * 2 * 3, dtype="float32").reshape(1, 2, 2, 3)
    expected = (feature**2).mean(-1).reshape(1, -1)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(np.array(losses.attention_map(ops.array(feature))), expected, rtol=1e-5)


def test_dkd_warmup_scales_its_term(teacher, student, batch):
    distiller = distillers.DKDDistiller(teacher, student, warmup_steps=4)
    distiller.compile(optimizer="sgd")
    assert float(distiller.term_weights()["dkd_loss"]) == pytest.approx(0.25)


def test_fitnets_trains_its_regressor_and_checks_the_stage(teacher, student, batch):
    distiller = distillers.FitNetsDistiller(teacher, student)
    assert distiller.hint_index == 1
    assert distiller.regressor.output_shape[-1] == distiller.teacher_shapes[1][-1]
    before = _values(distiller.regressor.trainable_variables)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    distiller.fit(*batch, epochs=1, verbose=0)
    assert _changed(before, distiller.regressor.trainable_variables)
    with pytest.raises(ValueError, match="out of range"):
        distillers.FitNetsDistiller(teacher, student, hint_stage=5)


def test_conditional_discriminator_reads_logits_and_labels(teacher, student, batch):
    xu = distillers.ConditionalAdversarialDistiller(teacher, student)
    anc = distillers.ANCDistiller(teacher, student)
    assert xu.discriminator.input_norm.gamma.shape == (20,)
    assert anc.discriminator.input_norm.gamma.shape == (10,)
    assert anc.discriminator.output_layer.units == 1
    assert hksan_keras.HKSANDistiller(teacher, student).discriminator.output_layer.units == 11


@pytest.mark.parametrize("method", fast_tier_keeps(sorted(distillers.METHODS), "kd", "fitnets", "hksan"))
def test_every_method_round_trips_through_keras_files_with_its_optimizer(
        method, teacher, student, batch, tmp_path):
    distiller = distillers.get(method)(teacher, student_for(method, student), **method_kwargs(method))
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    distiller.fit(*fit_inputs(method, batch), batch_size=16, epochs=1, verbose=0)
    path = str(tmp_path / f"{method}.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(distiller)
    np.testing.assert_allclose(restored.predict(batch[0], verbose=0),
                               distiller.predict(batch[0], verbose=0), atol=1e-5)
    # Every variable comes back, the method's own included (VID's
    # regressors and variances, ReviewKD's fusions and their batch
    # statistics, CRD's memories, the discriminators).
    assert [v.path for v in restored.weights] == [v.path for v in distiller.weights]
    for original, loaded in zip(distiller.weights, restored.weights):
        np.testing.assert_allclose(np.array(loaded), np.array(original), atol=1e-6, err_msg=original.path)
    # Compiled again, with the optimizer's state (step count, momentum).
    assert int(restored.optimizer.iterations.numpy()) == 2
    np.testing.assert_allclose(float(restored.optimizer.momentum), 0.9)
    assert len(restored.optimizer.variables) == len(distiller.optimizer.variables)
    for original, loaded in zip(distiller.optimizer.variables, restored.optimizer.variables):
        np.testing.assert_allclose(np.array(loaded), np.array(original), atol=1e-6)
    restored.fit(*fit_inputs(method, batch), batch_size=16, epochs=1, verbose=0)
    assert int(restored.optimizer.iterations.numpy()) == 4
    assert set(restored.evaluate(*batch, verbose=0, return_dict=True)) == {"loss", "accuracy"}


def test_keras_distiller_takes_our_losses(batch):
    teacher = tiny_resnet((8, 16, 24), name="teacher")
    student = tiny_resnet((4, 8, 12), name="student")
    distiller = keras.distillation.Distiller(
        teacher, student,
        distillation_losses=[hksan_keras.keras_losses.HintonKDLoss(4.0),
                             hksan_keras.keras_losses.AttentionTransferLoss("stage2", "stage2")],
        distillation_loss_weights=[1.0, 1000.0],
        student_loss_weight=0.1,
    )
    distiller.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = distiller.fit(*batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="choose one of"):
        distillers.get("pkt")
