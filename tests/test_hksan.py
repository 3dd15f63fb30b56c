import os

import keras
import numpy as np
import pytest

import hksan_keras
from conftest import fast_tier_keeps


def _weights(variables):
    return [np.array(v.numpy()) for v in variables]


def _changed(before, variables):
    return any(not np.array_equal(b, v.numpy()) for b, v in zip(before, variables))


def _fit(distiller, batch, epochs=1, **compile_kwargs):
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), **compile_kwargs)
    images, labels = batch
    return distiller.fit(images, labels, batch_size=8, epochs=epochs, verbose=0)


def test_fit_trains_student_discriminator_and_estimators_but_never_the_teacher(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    teacher_before = _weights(teacher.weights)  # moving statistics included
    student_before = _weights(student.trainable_variables)
    discriminator_before = _weights(distiller.discriminator.trainable_variables)
    squeeze_before = _weights(distiller.teacher_squeeze.trainable_variables)
    history = _fit(distiller, batch)
    assert not _changed(teacher_before, teacher.weights)
    assert _changed(student_before, student.trainable_variables)
    assert _changed(discriminator_before, distiller.discriminator.trainable_variables)
    # Task-driven by default: the teacher's estimators learn from the labels.
    assert _changed(squeeze_before, distiller.teacher_squeeze.trainable_variables)
    for name in ("loss", "accuracy") + hksan_keras.HKSANDistiller.LOSS_TERMS:
        assert np.isfinite(history.history[name]).all(), name


@pytest.mark.parametrize("discriminator_steps", fast_tier_keeps([1, 2], 2))
def test_discriminator_takes_k_steps_per_student_step(teacher, student, batch, discriminator_steps):
    distiller = hksan_keras.HKSANDistiller(teacher, student, discriminator_steps=discriminator_steps)
    _fit(distiller, batch)
    student_steps = int(distiller.optimizer.iterations.numpy())
    assert student_steps == 4
    assert int(distiller.d_optimizer.iterations.numpy()) == discriminator_steps * student_steps


def test_zero_weights_remove_their_terms_from_the_student_objective(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(
        teacher, student, logit_weight=0.0, squeeze_weight=0.0, adversarial_weight=0.0,
        attention_weight=0.0, task_weight=0.0, label_weight=1.0,
    )
    history = _fit(distiller, batch)
    regularisation = float(sum(student.losses))
    # With only the label term left, loss = label CE + weight decay.
    np.testing.assert_allclose(
        history.history["loss"][0], history.history["label_loss"][0] + regularisation, rtol=0.05
    )


def test_squeeze_widths_follow_the_teacher_and_maps_are_distributions(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    squeezed = distiller.squeeze(batch[0][:4])
    for side in ("teacher", "student"):
        assert [k.shape[-1] for k in squeezed[side]["squeezed"]] == [8, 16, 24]
        for attention in squeezed[side]["attention"]:
            attention = keras.ops.convert_to_numpy(attention)
            assert (attention >= 0).all()
            np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert [m.shape[1] for m in squeezed["student"]["attention"]] == [16, 8, 4]


def test_pretrained_teacher_attention_stays_fixed_during_fit(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    before = _weights(distiller.teacher_squeeze.trainable_variables)
    history = distiller.pretrain_teacher_attention(*batch, batch_size=8, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]
    assert _changed(before, distiller.teacher_squeeze.trainable_variables)
    assert distiller.train_teacher_attention is False
    pretrained = _weights(distiller.teacher_squeeze.trainable_variables)
    _fit(distiller, batch)
    assert not _changed(pretrained, distiller.teacher_squeeze.trainable_variables)


def test_evaluate_reports_student_label_loss_and_accuracy(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    distiller.compile()
    images, labels = batch
    result = distiller.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)
    logits = student.predict(images, verbose=0)
    expected_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    expected_accuracy = np.mean(logits.argmax(-1) == labels)
    np.testing.assert_allclose(result["loss"], float(expected_loss), rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], expected_accuracy, rtol=1e-6)
    np.testing.assert_allclose(distiller.predict(images, verbose=0), logits, rtol=1e-5, atol=1e-6)


def test_compile_rejects_a_loss(teacher, student):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    with pytest.raises(ValueError, match="does not take `loss`"):
        distiller.compile(optimizer="sgd", loss="mse")


def test_sample_weights_are_rejected_with_a_message(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    distiller.compile()
    images, labels = batch
    with pytest.raises(ValueError, match="Sample weights are not supported"):
        distiller.fit(images, labels, sample_weight=np.ones(len(labels)), verbose=0)


def test_distiller_and_student_round_trip_through_keras_files(teacher, student, batch, tmp_path):
    distiller = hksan_keras.HKSANDistiller(
        teacher, student, hierarchy="flat", discriminator_steps=2, squeeze_weight=0.5, seed=3
    )
    _fit(distiller, batch, d_optimizer=keras.optimizers.Adam(2e-4))
    images = batch[0]
    expected = distiller.predict(images, verbose=0)

    path = str(tmp_path / "run.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, hksan_keras.HKSANDistiller)
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)
    assert restored.hierarchy == "flat" and restored.discriminator_steps == 2
    assert restored.squeeze_weight == 0.5
    for name in ("teacher_squeeze", "student_squeeze", "discriminator"):
        for a, b in zip(getattr(distiller, name).weights, getattr(restored, name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(restored.d_optimizer.iterations.numpy()) == int(distiller.d_optimizer.iterations.numpy())
    np.testing.assert_allclose(float(restored.d_optimizer.learning_rate.numpy()), 2e-4, rtol=1e-6)
    # Training goes on after loading, with both optimizers.
    restored.fit(images, batch[1], batch_size=8, epochs=1, verbose=0)
    assert int(restored.d_optimizer.iterations.numpy()) == 16

    student_path = str(tmp_path / "student.keras")
    distiller.student.save(student_path)
    restored_student = keras.saving.load_model(student_path)
    np.testing.assert_array_equal(restored_student.predict(images, verbose=0), expected)


def test_export_student_serves_the_same_logits_and_never_overwrites(teacher, student, batch, tmp_path):
    import tensorflow as tf

    distiller = hksan_keras.HKSANDistiller(teacher, student)
    _fit(distiller, batch)
    path = str(tmp_path / "student_savedmodel")
    with pytest.raises(ValueError, match="needs the preprocessing"):
        distiller.export_student(path)
    spec = hksan_keras.data.preprocessing_spec(((0.0,) * 3, (1.0,) * 3), 16)
    distiller.export_student(path, preprocessing=spec)
    served = tf.saved_model.load(path)
    images = batch[0]
    expected = distiller.predict(images, verbose=0)
    np.testing.assert_allclose(served.serve(images).numpy(), expected, rtol=1e-5, atol=1e-5)
    preprocessed = served.signatures["serve_preprocessed"](images=tf.constant(images))
    np.testing.assert_allclose(preprocessed["logits"].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert os.path.isfile(os.path.join(path, "preprocessing.json"))
    with pytest.raises(FileExistsError, match="exists"):
        distiller.export_student(path)
    assert os.path.exists(os.path.join(path, "saved_model.pb"))


def test_attention_term_trains_the_student_only_and_round_trips(teacher, student, batch):
    weight = 1000.0
    distiller = hksan_keras.HKSANDistiller(
        teacher, student, attention_weight=weight,
        logit_weight=0.0, squeeze_weight=0.0, adversarial_weight=0.0, task_weight=0.0,
        label_weight=0.0,
    )
    teacher_squeeze_before = _weights(distiller.teacher_squeeze.trainable_variables)
    student_before = _weights(student.trainable_variables)
    history = _fit(distiller, batch)
    assert np.isfinite(history.history["attention_loss"]).all()
    assert history.history["attention_loss"][0] > 0
    # The attention term alone moves the student; the teacher's maps are targets.
    assert _changed(student_before, student.trainable_variables)
    assert not _changed(teacher_squeeze_before, distiller.teacher_squeeze.trainable_variables)
    restored = hksan_keras.HKSANDistiller.from_config(distiller.get_config())
    assert restored.attention_weight == weight


def test_attention_term_is_ats_activation_maps_by_default_and_off_at_weight_0(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    assert distiller.attention_weight == 1000.0
    assert _fit(distiller, batch).history["attention_loss"][0] > 0
    images, labels = batch
    teacher_out = distiller.teacher_outputs(images)
    student_out = distiller.student_outputs(images, training=False)
    np.testing.assert_allclose(
        float(distiller.loss_terms(labels, teacher_out, student_out)["attention_loss"]),
        float(hksan_keras.losses.attention_transfer_loss(teacher_out["features"], student_out["features"])),
        rtol=1e-5)
    off = hksan_keras.HKSANDistiller(teacher, student, attention_weight=0.0)
    assert _fit(off, batch).history["attention_loss"][0] == 0.0
