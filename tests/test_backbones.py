"""Real backbones as teachers: keras.applications (weights=None, small
inputs), bare and inside a fine-tuning wrapper, and a KerasHub image
classifier built from a backbone class with random weights (no preset
download). HKSAN is fitted a few steps on each bare backbone; on each
wrapped one, HKSAN and FitNets (its stages and FitNets' regressors' shapes),
and every stage-based method on the wrapped MobileNetV3Small and the KerasHub
classifier: the stages are found by the same code for every method, so each
method meets a nested backbone once and each backbone meets two methods."""

import keras
import numpy as np
import pytest

import hksan_keras
from hksan_keras.taps import detect_stages, get_layer

# The full tier only (keras.applications and KerasHub backbones).
pytestmark = pytest.mark.full


STAGE_METHODS = ("fitnets", "at", "nst", "hksan")
# The backbone on which every stage-based method trains (the cheapest).
ALL_METHODS_ON = "MobileNetV3Small"
SHAPE = (32, 32, 3)

APPLICATIONS = {
    "ResNet50V2": lambda **kw: keras.applications.ResNet50V2(**kw),
    "MobileNetV3Small": lambda **kw: keras.applications.MobileNetV3Small(**kw),
    "EfficientNetV2B0": lambda **kw: keras.applications.EfficientNetV2B0(**kw),
    "ConvNeXtTiny": lambda **kw: keras.applications.ConvNeXtTiny(**kw),
}


def zoo_student():
    return hksan_keras.models.cifar_resnet(
        8, num_classes=10, stem_width=4, stage_widths=(4, 8, 12), input_shape=SHAPE, name="student")


def fine_tuning_wrapper(base):
    # The usual transfer-learning teacher: a headless backbone, pooling, a new head.
    return keras.Sequential([keras.Input(SHAPE), base, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(10)], name="teacher")


def fit_each_method(teacher, methods=STAGE_METHODS):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8,) + SHAPE).astype("float32")
    labels = rng.integers(0, 10, size=(8,))
    found = {}
    for method in methods:
        keras.utils.set_random_seed(0)
        distiller = hksan_keras.distillers.get(method)(teacher, zoo_student(), num_stages=3)
        distiller.compile(optimizer=keras.optimizers.SGD(0.01), **(
            {"d_optimizer": keras.optimizers.Adam(1e-4)} if hasattr(distiller, "discriminator") else {}))
        history = distiller.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
        assert all(np.isfinite(v[-1]) for v in history.values()), (method, history)
        found[method] = distiller.teacher_stages
    return found


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_keras_applications_backbones_bare_and_wrapped(name):
    keras.utils.set_random_seed(0)
    bare = APPLICATIONS[name](weights=None, input_shape=SHAPE, classes=10, classifier_activation=None)
    stages = detect_stages(bare, num_stages=3)
    assert all(len(get_layer(bare, s).output.shape) == 4 for s in stages)
    assert not any("preprocessing" in type(get_layer(bare, s)).__module__ for s in stages)
    # Every method on the wrapped backbone below; the bare one with HKSAN.
    assert set(map(tuple, fit_each_method(bare, ("hksan",)).values())) == {tuple(stages)}

    base = APPLICATIONS[name](weights=None, input_shape=SHAPE, include_top=False)
    wrapped = fine_tuning_wrapper(base)
    nested = detect_stages(wrapped, num_stages=3)
    assert nested == [f"{base.name}/{s}" for s in detect_stages(base, num_stages=3)]
    # The stages are the backbone's own layers' outputs, not a copy's.
    images = np.random.default_rng(1).normal(size=(2,) + SHAPE).astype("float32")
    tapped = hksan_keras.taps.stage_model(wrapped, nested)(images)
    inner_names = detect_stages(base, num_stages=3)
    from_bare = hksan_keras.taps.stage_model(base, inner_names)(images)
    for path, got, want in zip(inner_names, tapped, from_bare):
        if "/" not in path:  # a layer of the backbone's own graph: Keras taps it too
            want = keras.Model(base.inputs, get_layer(base, path).output)(images)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    methods = STAGE_METHODS if name == ALL_METHODS_ON else ("fitnets", "hksan")
    assert set(map(tuple, fit_each_method(wrapped, methods).values())) == {tuple(nested)}


def test_keras_hub_image_classifier():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 16, 32], stackwise_num_blocks=[1, 1, 1],
        stackwise_num_strides=[1, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=SHAPE)
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=10, activation=None)
    stages = detect_stages(classifier, num_stages=3)
    assert stages == [f"{backbone.name}/stack{i}_block0_out" for i in range(3)]
    assert set(map(tuple, fit_each_method(classifier).values())) == {tuple(stages)}
