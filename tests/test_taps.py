import keras
import numpy as np
import pytest

import hksan_keras
from hksan_keras.taps import detect_stages
from conftest import tiny_resnet


CIFAR_MODELS = sorted(n for n in hksan_keras.models.MODELS if not n.endswith("_imagenet"))


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_zoo_stages_are_detected_by_resolution(name):
    model = hksan_keras.models.get(name, num_classes=10)
    assert detect_stages(model) == ["stage1", "stage2", "stage3"]
    assert [model.get_layer(f"stage{i}").output.shape[1] for i in (1, 2, 3)] == [32, 16, 8]


def test_imagenet_resnet_stages_with_the_stem_dropped():
    model = hksan_keras.models.get("resnet18_imagenet", num_classes=1000)
    assert detect_stages(model)[0] == "stem_relu"
    assert detect_stages(model, num_stages=4) == ["stage1", "stage2", "stage3", "stage4"]


def test_detection_on_keras_applications_and_sequential():
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    assert detect_stages(resnet, num_stages=4) == [
        "conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out",
    ]
    sequential = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, padding="same", name="conv_a"),
        keras.layers.MaxPooling2D(name="pool_a"),
        keras.layers.Conv2D(8, 3, padding="same", name="conv_b"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    assert detect_stages(sequential) == ["conv_a", "conv_b"]


def test_distiller_accepts_stage_names_and_different_depths(teacher):
    student = hksan_keras.models.cifar_resnet(
        20, num_classes=10, stage_widths=(4, 8, 12), stem_width=4, input_shape=(16, 16, 3)
    )
    distiller = hksan_keras.HKSANDistiller(
        teacher, student,
        teacher_stages=["stage1", "stage2", "stage3"],
        student_stages=["stage1_block2_out", "stage2", "stage3"],
    )
    assert distiller.student_stages == ["stage1_block2_out", "stage2", "stage3"]


def test_mismatched_class_counts_are_rejected(teacher):
    with pytest.raises(ValueError, match="teacher predicts 10 classes and the student 7"):
        hksan_keras.HKSANDistiller(teacher, tiny_resnet((4, 8, 12), num_classes=7))


def test_unknown_stage_name_is_rejected(teacher, student):
    with pytest.raises(ValueError, match="student 'student' has no layer named 'block9'"):
        hksan_keras.HKSANDistiller(teacher, student, student_stages=["stage1", "block9", "stage3"])


def test_stage_that_is_not_a_feature_map_is_rejected(teacher, student):
    with pytest.raises(ValueError, match="a stage must output one 4-D feature map"):
        hksan_keras.HKSANDistiller(teacher, student, teacher_stages=["stage1", "stage2", "pool"])


def test_different_stage_counts_are_rejected(teacher, student):
    with pytest.raises(ValueError, match="teacher has 3 stages .* student 2"):
        hksan_keras.HKSANDistiller(teacher, student, student_stages=["stage2", "stage3"])


def test_probability_outputs_are_rejected(teacher):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    with pytest.raises(ValueError, match="ends with a softmax activation"):
        hksan_keras.HKSANDistiller(teacher, keras.Model(inputs, outputs))


def test_subclassed_models_train_with_logit_methods_and_stage_methods_say_how_to_wrap(teacher):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    model = Subclassed()
    model(keras.ops.ones((1, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"no symbolic inputs.*wrap a subclassed backbone.*KDDistiller"):
        hksan_keras.HKSANDistiller(teacher, model)
    # Logit-only methods tap no layer: any built model is accepted, as
    # teacher and as student.
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(8,))
    for method in ("kd", "dkd", "anc"):
        for pair in ((model, tiny_resnet((4, 8, 12))), (teacher, model)):
            distiller = hksan_keras.distillers.get(method)(*pair)
            distiller.compile(optimizer=keras.optimizers.SGD(0.01))
            history = distiller.fit(images, labels, batch_size=4, epochs=1, verbose=0)
            assert np.isfinite(history.history["loss"][-1]), method


def test_invalid_hyperparameters_are_rejected(teacher, student):
    with pytest.raises(ValueError, match="discriminator_steps must be >= 1"):
        hksan_keras.HKSANDistiller(teacher, student, discriminator_steps=0)
    with pytest.raises(ValueError, match="squeeze_weight must be >= 0"):
        hksan_keras.HKSANDistiller(teacher, student, squeeze_weight=-1.0)
