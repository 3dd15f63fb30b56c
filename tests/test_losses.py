import keras
import numpy as np
import pytest

from hksan_keras import LogitDiscriminator, losses


def _bce_with_logits(target, logit):
    probability = 1 / (1 + np.exp(-logit))
    return -(target * np.log(probability) + (1 - target) * np.log(1 - probability))


def _cross_entropy(label, logits):
    logits = logits - logits.max()
    return -(logits[label] - np.log(np.exp(logits).sum()))


def test_logit_and_squeeze_losses_match_hand_computation():
    teacher = np.array([[2.0, -1.0, 0.5]], "float32")
    student = np.array([[0.1, 0.3, -2.0]], "float32")
    expected = ((student - teacher) ** 2).mean()
    np.testing.assert_allclose(float(losses.logit_matching_loss(teacher, student)), expected, rtol=1e-6)
    squeeze = losses.squeezed_knowledge_loss([teacher, 2 * teacher], [student, student])
    expected = ((student - teacher) ** 2).mean() + ((student - 2 * teacher) ** 2).mean()
    np.testing.assert_allclose(float(squeeze), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="must match"):
        losses.squeezed_knowledge_loss([teacher], [student, student])


def test_adversarial_and_discriminator_losses_match_hand_computation():
    labels = np.array([1, 0])
    t_src, s_src, p_src = np.array([1.5, -0.5]), np.array([0.2, -2.0]), np.array([0.3, 0.1])
    t_cls = np.array([[0.1, 2.0], [1.0, -1.0]])
    s_cls = np.array([[0.5, 0.5], [-1.0, 2.0]])
    ce = lambda logits: np.mean([_cross_entropy(y, l) for y, l in zip(labels, logits)])
    expected_student = _bce_with_logits(1, s_src).mean() + ce(s_cls)
    got_student = losses.adversarial_student_loss(labels, s_src.astype("float32"), s_cls.astype("float32"))
    np.testing.assert_allclose(float(got_student), expected_student, rtol=1e-5)
    expected_d = (
        _bce_with_logits(1, t_src).mean() + _bce_with_logits(0, s_src).mean()
        + ce(t_cls) + ce(s_cls) + 0.3 * _bce_with_logits(1, p_src).mean()
    )
    got_d = losses.discriminator_loss(
        labels, *(a.astype("float32") for a in (t_src, t_cls, s_src, s_cls)),
        perturbed_student_source=p_src.astype("float32"), fake_as_real_weight=0.3,
    )
    np.testing.assert_allclose(float(got_d), expected_d, rtol=1e-5)


def test_one_hot_labels_become_class_indices():
    one_hot = np.eye(4)[[3, 0, 2]]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(losses.class_indices(one_hot)), [3, 0, 2])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(losses.class_indices(np.array([[1], [2]]))), [1, 2])


def test_discriminator_heads_and_regularisation():
    discriminator = LogitDiscriminator(7, units=(16,), regularization=1e-3)
    source, classes = discriminator(keras.random.normal((5, 7)), training=True)
    assert tuple(source.shape) == (5,) and tuple(classes.shape) == (5, 7)
    kernels = [discriminator.hidden_dense[0].kernel, discriminator.output_layer.kernel]
    expected = sum(1e-3 * np.abs(k.numpy()).sum() + 1e-3 * (k.numpy() ** 2).sum() for k in kernels)
    np.testing.assert_allclose(float(sum(discriminator.losses)), expected, rtol=1e-4)
    clone = LogitDiscriminator.from_config(discriminator.get_config())
    assert clone.units == [16] and clone.kernel_regularizer.l1 == discriminator.kernel_regularizer.l1
    assert clone.get_config() == discriminator.get_config()
    # A layer saved by an older version (hidden_units, its regulariser).
    older = {**discriminator.get_config(), "hidden_units": [16],
             "kernel_regularizer": keras.regularizers.serialize(keras.regularizers.L1L2(1e-3, 1e-3))}
    for key in ("units", "regularization", "fake_as_real_weight", "perturbation_rate"):
        older.pop(key)
    assert LogitDiscriminator.from_config(older).get_config() == discriminator.get_config()


def test_normalized_terms_have_finite_gradients_at_all_zero_features():
    import tensorflow as tf

    zeros = tf.zeros((2, 4, 4, 3))
    other = tf.ones((2, 4, 4, 3))
    for loss in (lambda s: losses.attention_transfer_loss([other], [s]),
                 lambda s: losses.neuron_selectivity_loss([other], [s])):
        with tf.GradientTape() as tape:
            tape.watch(zeros)
            value = loss(zeros)
        assert np.all(np.isfinite(tape.gradient(value, zeros).numpy()))
