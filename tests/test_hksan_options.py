"""HKSAN's terms do not depend on the teacher's scale; the adversarial options work."""

import keras
import numpy as np
import pytest
from keras import ops

import hksan_keras
from conftest import fast_tier_keeps
from hksan_keras import losses


@pytest.fixture(scope="module")
def untrained_deep_pair():
    keras.utils.set_random_seed(0)
    teacher = hksan_keras.models.cifar_resnet(32, num_classes=10, name="untrained_resnet32")
    student = hksan_keras.models.cifar_resnet(20, num_classes=10, name="resnet20")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(64,))
    return teacher, student, images, labels


@pytest.mark.parametrize("method", fast_tier_keeps(["hksan", "anc"], "hksan"))
@pytest.mark.parametrize("learning_rate", [0.05, 0.1])
def test_untrained_deep_teacher_gives_finite_losses_with_default_settings(
    untrained_deep_pair, method, learning_rate
):
    teacher, student, images, labels = untrained_deep_pair
    # The situation of the bug report: inference-mode logits of an untrained
    # deep ResNet are in the hundreds.
    assert float(ops.max(ops.abs(teacher(images, training=False)))) > 50
    fresh_student = keras.models.clone_model(student)
    distiller = hksan_keras.distillers.get(method)(teacher, fresh_student)
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    history = distiller.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    for name, values in history.history.items():
        assert np.isfinite(values).all(), (name, values)
    assert all(np.isfinite(v.numpy()).all() for v in fresh_student.trainable_variables)


@pytest.mark.parametrize("method", fast_tier_keeps(["hksan", "anc"], "hksan"))
def test_teacher_with_small_logits_does_not_inflate_the_relative_term(untrained_deep_pair, method):
    teacher, student, images, labels = untrained_deep_pair
    # Logit variance ~2 (an untrained teacher's head scaled down, as label
    # smoothing or a fresh head would give): dividing by it made the term a
    # raw L2 at weight ~5, which diverged at lr 0.1 within 12 steps.
    small = keras.models.clone_model(teacher)
    small.set_weights(teacher.get_weights())
    head = small.layers[-1]
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 0.01, bias * 0.0])
    variance = float(losses.teacher_logit_variance(small(images, training=False)))
    assert 0.5 < variance < losses.RELATIVE_SCALE_FLOOR
    distiller = hksan_keras.distillers.get(method)(small, keras.models.clone_model(student))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    history = distiller.fit(images, labels, batch_size=16, epochs=3, verbose=0)
    for name, values in history.history.items():
        assert np.isfinite(values).all(), (name, values)
    assert history.history["logit_loss"][-1] < 1.0


def test_squared_logit_distance_grows_with_the_teachers_scale_and_unknown_ones_are_refused():
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(8, 10)).astype("float32")
    student = rng.normal(size=(8, 10)).astype("float32")
    # The raw distance grows with the square of the scale.
    raw = float(losses.logit_matching_loss(100 * teacher, student, "squared"))
    assert raw > 1000 * float(losses.logit_matching_loss(teacher, student, "squared"))
    for unknown in ("cosine", "standardized"):
        with pytest.raises(ValueError, match="distance must be one of"):
            losses.logit_matching_loss(teacher, student, unknown)


def test_relative_logit_distance_is_the_squared_one_over_the_teachers_variance():
    rng = np.random.default_rng(5)
    teacher = rng.normal(size=(8, 10)).astype("float32") * 5
    student = rng.normal(size=(8, 10)).astype("float32")
    centered = teacher - teacher.mean(axis=1, keepdims=True)
    assert np.mean(centered**2) > losses.RELATIVE_SCALE_FLOOR
    expected = np.mean((student - teacher) ** 2) / np.mean(centered**2)
    np.testing.assert_allclose(float(losses.logit_matching_loss(teacher, student, "relative")),
                               expected, rtol=1e-4)
    # Both networks 100 times larger: the same value (the raw one grows 10^4 times).
    np.testing.assert_allclose(
        float(losses.logit_matching_loss(100 * teacher, 100 * student, "relative")), expected, rtol=1e-4)
    # A teacher with small logits is divided by the floor, not by its variance.
    small = teacher / 10
    np.testing.assert_allclose(
        float(losses.logit_matching_loss(small, student, "relative")),
        np.mean((student - small) ** 2) / losses.RELATIVE_SCALE_FLOOR, rtol=1e-4)


def test_normalized_features_make_squeezed_knowledge_scale_free():
    rng = np.random.default_rng(2)
    maps = [rng.normal(size=(2, 8, 8, 16)).astype("float32"),
            rng.normal(size=(2, 4, 4, 32)).astype("float32")]
    keras.utils.set_random_seed(3)
    squeeze = hksan_keras.attention.HierarchicalSqueeze([16, 32], 10, normalize_features=True)
    small = squeeze(maps)
    large = squeeze([500.0 * m for m in maps])
    for k_small, k_large in zip(small["squeezed"], large["squeezed"]):
        np.testing.assert_allclose(k_small, k_large, rtol=1e-4, atol=1e-4)


def test_pooled_squeeze_target_leaves_out_the_guide_shift():
    rng = np.random.default_rng(4)
    feature_map = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    guide = rng.normal(size=(2, 6)).astype("float32")
    keras.utils.set_random_seed(5)
    guided = hksan_keras.attention.TaskDrivenAttention(8)
    guided([feature_map, guide])
    pooled = hksan_keras.attention.TaskDrivenAttention(8, include_guide=False)
    pooled([feature_map, guide])
    pooled.set_weights(guided.get_weights())
    k_guided, attention = guided([feature_map, guide])
    k_pooled, same_attention = pooled([feature_map, guide])
    np.testing.assert_allclose(attention, same_attention, rtol=1e-6)
    shift = guided.guide_projection(guide)
    # The attention sums to one, so k_guided = sum(M * L) + g exactly.
    np.testing.assert_allclose(k_guided, k_pooled + shift, rtol=1e-4, atol=1e-5)


def test_source_loss_is_binary_cross_entropy_on_the_logit_by_hand():
    source = np.array([0.5, -1.0, 2.0], dtype="float32")
    np.testing.assert_allclose(
        float(losses.source_loss(source, True)), np.mean(np.log1p(np.exp(-source))), rtol=1e-5)
    np.testing.assert_allclose(
        float(losses.source_loss(source, False)), np.mean(np.log1p(np.exp(source))), rtol=1e-5)


@pytest.mark.parametrize("options", [
    {"discriminator": {"class_head": False}},
    {"squeeze_target": "pooled", "logit_distance": "squared", "normalize_features": False},
])
def test_hksan_options_train_and_round_trip_through_config(teacher, student, batch, options):
    distiller = hksan_keras.HKSANDistiller(teacher, student, **options)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = distiller.fit(*batch, batch_size=8, epochs=1, verbose=0)
    assert all(np.isfinite(v).all() for v in history.history.values())
    config = distiller.get_config()
    for key, value in options.items():
        if key == "discriminator":
            assert config[key] == {**hksan_keras.LogitDiscriminator.default_settings(), **value}
        else:
            assert config[key] == value
    if "discriminator" in options:
        assert distiller.discriminator.output_layer.units == 1


@pytest.mark.parametrize("method", fast_tier_keeps(["hksan", "anc", "xu"], "hksan"))
def test_discriminator_reads_the_raw_logits_and_no_kd_term_is_left(teacher, student, batch, method):
    # Without perturbation D's third input is the student's logits again.
    distiller = hksan_keras.distillers.get(method)(
        teacher, student, discriminator={"perturbation_rate": 0.0})
    assert "kd_loss" not in distiller.LOSS_TERMS
    rng = np.random.default_rng(6)
    teacher_logits, student_logits = (
        ops.convert_to_tensor(rng.normal(size=(4, 10)).astype("float32") * 5) for _ in range(2))
    labels = np.array([1, 0, 3, 9])
    sources, _ = distiller.discriminate(labels, teacher_logits, student_logits)
    inputs = [teacher_logits, student_logits, student_logits]
    if distiller.CONDITIONAL:
        inputs = [ops.concatenate([x, ops.one_hot(labels, 10)], axis=-1) for x in inputs]
    expected, _ = distiller.discriminator(ops.concatenate(inputs, axis=0), training=True)
    np.testing.assert_allclose(ops.concatenate(sources, axis=0), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("removed, kept, other", [
    ("kd_weight", 0.0, 1.0), ("adversarial_warmup_steps", 0, 100), ("gan_loss", "vanilla", "least_squares"),
    ("discriminator_input", "logits", "probabilities"), ("scale_guide", False, True),
    ("stop_student_guide_gradient", False, True), ("squeeze_distance", "squared", "relative"),
    ("attention_maps", "activation", "estimator"),
])
def test_a_saved_config_with_a_removed_option_loads_at_the_kept_behaviour_and_names_it_otherwise(
        teacher, student, removed, kept, other):
    config = hksan_keras.HKSANDistiller(teacher, student).get_config()
    # Files saved by the older version hold every option at its value.
    older = {**config, removed: kept, "kd_temperature": 4.0, "discriminator_temperature": 4.0}
    loaded = hksan_keras.HKSANDistiller.from_config(older).get_config()
    options = [key for key in config if key not in ("teacher", "student")]
    assert {key: loaded[key] for key in options} == {key: config[key] for key in options}
    assert removed not in loaded
    with pytest.raises(ValueError, match=f"{removed}={other!r}, an option removed since"):
        hksan_keras.HKSANDistiller.from_config({**config, removed: other})
    # The constructor refuses it (Keras names unknown arguments).
    with pytest.raises((TypeError, ValueError), match=removed):
        hksan_keras.HKSANDistiller(teacher, student, **{removed: kept})


def test_no_discriminator_work_without_adversarial_weight(teacher, student, batch):
    distiller = hksan_keras.HKSANDistiller(teacher, student, adversarial_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    before = [v.numpy().copy() for v in distiller.discriminator.variables]
    student_before = [v.numpy().copy() for v in student.trainable_variables]
    history = distiller.fit(*batch, batch_size=8, epochs=1, verbose=0)
    for old, variable in zip(before, distiller.discriminator.variables):
        np.testing.assert_array_equal(old, variable.numpy())
    assert int(distiller.d_optimizer.iterations.numpy()) == 0
    assert history.history["adversarial_loss"][-1] == 0.0
    assert any(not np.array_equal(old, v.numpy())
               for old, v in zip(student_before, student.trainable_variables))


@pytest.mark.parametrize("argument, value, message", [
    ("logit_distance", "cosine", "logit_distance must be one of"),
    ("logit_distance", "standardized", "logit_distance=.standardized. was removed"),
    ("squeeze_target", "both", "squeeze_target must be one of"),
])
def test_bad_options_are_named(teacher, student, argument, value, message):
    with pytest.raises(ValueError, match=message):
        hksan_keras.HKSANDistiller(teacher, student, **{argument: value})
