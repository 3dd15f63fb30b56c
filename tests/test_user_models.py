"""The models users arrive with: Sequential and nested (fine-tuning) models,
softmax heads in every spelling, soft labels, Keras callbacks that watch
accuracy, DKD on two classes, export without a pipeline's preprocessing."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import hksan_keras
from hksan_keras import losses
from hksan_keras.taps import detect_stages
from conftest import fast_tier_keeps

STAGE_METHODS = ("fitnets", "at", "nst", "vid", "reviewkd", "crd", "hksan")
# FSP compares flow matrices entry by entry: pairs of equal widths only
# (the tutorial pair, not the wrapped backbone with a narrower student).
EQUAL_WIDTH_STAGE_METHODS = STAGE_METHODS + ("fsp",)


def build(method, teacher, student, num_examples=16):
    """A stage distiller with what some methods cannot do without."""
    needed = {"crd": {"num_examples": num_examples, "num_negatives": 8}, "fsp": {"init_steps": 1}}
    return hksan_keras.distillers.get(method)(teacher, student, **needed.get(method, {}))


def tutorial_cnn(name, classes=2, activation=None, size=8):
    # As in Keras's own distillation tutorial (size=None: any input size).
    return keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes, activation=activation),
    ], name=name)


def backbone(name="backbone", size=16):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block2")(x)
    return keras.Model(inputs, x, name=name)


def plain_student(classes=3):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="s1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="s2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x), name="student")


def data(shape, classes, n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n,) + shape).astype("float32"),
            rng.integers(0, classes, size=(n,)))


def fit_few_steps(distiller, images, labels, batch_size=8):
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), **(
        {"d_optimizer": keras.optimizers.Adam(1e-4)} if hasattr(distiller, "discriminator") else {}))
    before = [np.array(w) for w in distiller.student.trainable_weights]
    if isinstance(distiller, hksan_keras.distillers.CRDDistiller):
        # CRD's batches carry each example's index.
        images = {"images": images, "index": np.arange(len(labels))}
    history = distiller.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in history.values()), history
    after = distiller.student.trainable_weights
    assert any(not np.allclose(b, np.array(a)) for b, a in zip(before, after))
    return history


@pytest.mark.parametrize("method", EQUAL_WIDTH_STAGE_METHODS)
def test_every_stage_method_trains_a_sequential_pair(method):
    keras.utils.set_random_seed(0)
    teacher, student = tutorial_cnn("teacher"), tutorial_cnn("student")
    distiller = build(method, teacher, student)
    assert distiller.teacher_stages == [teacher.layers[0].name, teacher.layers[2].name]
    assert distiller.student_stages == [student.layers[0].name, student.layers[2].name]
    fit_few_steps(distiller, *data((8, 8, 3), 2))


def nested_sequential(backbone_size=16):
    return keras.Sequential([keras.Input((16, 16, 3)), backbone(size=backbone_size),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)], name="teacher")


def nested_functional():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = backbone()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name="teacher")


@pytest.mark.parametrize("wrapper", [nested_sequential, nested_functional])
@pytest.mark.parametrize("method", fast_tier_keeps(STAGE_METHODS, "fitnets", "hksan"))
def test_stage_methods_tap_a_backbone_nested_in_a_fine_tuning_wrapper(wrapper, method):
    keras.utils.set_random_seed(0)
    teacher = wrapper()
    assert detect_stages(teacher) == ["backbone/block1", "backbone/block2"]
    distiller = build(method, teacher, plain_student())
    assert distiller.teacher_stages == ["backbone/block1", "backbone/block2"]
    # The backbone is tapped, not copied: the stage model holds its variables.
    inner = teacher.get_layer("backbone")
    tapped = {id(v) for v in distiller.teacher_features.weights}
    assert all(id(v) in tapped for v in inner.weights)
    images, labels = data((16, 16, 3), 3)
    features = distiller.teacher_features(images)
    reference = keras.Model(inner.inputs, inner.get_layer("block2").output)(
        keras.layers.Rescaling(1 / 255.0)(images) if wrapper is nested_functional else images)
    np.testing.assert_allclose(features[1], reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features[-1], teacher(images), rtol=1e-5, atol=1e-6)
    fit_few_steps(distiller, images, labels)


@pytest.mark.parametrize("method", fast_tier_keeps(EQUAL_WIDTH_STAGE_METHODS, "at", "hksan"))
def test_every_stage_method_trains_a_pair_built_for_any_input_size(method):
    # keras.Input((None, None, 3)): every feature map's height and width are
    # unknown in the model's own graph; detection traces it at a known size.
    keras.utils.set_random_seed(0)
    teacher, student = tutorial_cnn("teacher", size=None), tutorial_cnn("student", size=None)
    distiller = build(method, teacher, student)
    assert distiller.teacher_stages == [teacher.layers[0].name, teacher.layers[2].name]
    assert distiller.student_stages == [student.layers[0].name, student.layers[2].name]
    fit_few_steps(distiller, *data((8, 8, 3), 2))


def test_a_backbone_built_for_any_input_size_keeps_its_stages_inside_a_fixed_wrapper(monkeypatch):
    # KerasHub backbones default to image_shape=(None, None, 3), and so does
    # keras.applications without input_shape: inside the wrapper, the
    # backbone's own layers still hold their first call's unknown sizes.
    teacher = nested_sequential(backbone_size=None)
    assert teacher.get_layer("backbone").get_layer("block2").output.shape[1:3] == (None, None)
    assert detect_stages(teacher) == ["backbone/block1", "backbone/block2"]
    inputs = keras.Input((16, 16, 3))  # the functional wrapper of the fine-tuning guides
    features = backbone(size=None)(inputs, training=False)
    functional = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(features)))
    assert detect_stages(functional) == ["backbone/block1", "backbone/block2"]
    # Where the graph cannot be traced at a known size, detection says so
    # rather than keep one stage for every unknown size.
    monkeypatch.setattr(hksan_keras.taps, "_traced_shapes", lambda model: {})
    with pytest.raises(ValueError, match=r"unknown height and width .* pass the stage layer paths explicitly"):
        detect_stages(teacher)


@pytest.mark.parametrize("method", fast_tier_keeps(("at", "hksan", "fsp", "reviewkd"), "at", "fsp"))
def test_batches_of_unknown_image_size_train_or_are_refused_with_the_fix(method):
    teacher, student = tutorial_cnn("teacher", size=None), tutorial_cnn("student", size=None)
    distiller = build(method, teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), **(
        {"d_optimizer": keras.optimizers.Adam(1e-4)} if hasattr(distiller, "discriminator") else {}))
    images, labels = data((8, 8, 3), 2, n=64)
    batches = tf.data.Dataset.from_generator(  # the size known only when run
        lambda: iter([(images[:32], labels[:32]), (images[32:], labels[32:])]),
        output_signature=(tf.TensorSpec((None, None, None, 3), tf.float32), tf.TensorSpec((None,), tf.int64)))
    assert batches.element_spec[0].shape.as_list() == [None, None, None, 3]
    if method in ("at", "hksan"):
        # Maps compared at one resolution need no size.
        history = distiller.fit(batches, epochs=1, verbose=0).history
        assert all(np.isfinite(v[-1]) for v in history.values()), history
    else:
        # Pooling by size needs one.
        with pytest.raises(ValueError, match="height and width are unknown where the training step is traced"):
            distiller.fit(batches, epochs=1, verbose=0)


def test_a_student_sharing_the_teachers_layers_is_refused_with_the_fix():
    teacher = nested_sequential()
    student = keras.Sequential([keras.Input((16, 16, 3)), teacher.get_layer("backbone"),
                                keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)], name="student")
    with pytest.raises(ValueError, match=r"shares 4 weights with the teacher 'teacher' \(block1/kernel.*"
                                         r"freeze them in the student too.*keras.models.clone_model"):
        hksan_keras.distillers.get("kd")(teacher, student)
    # A frozen input step shared by both (an adapted Normalization) is fine.
    normalization = keras.layers.Normalization(mean=[0.5] * 3, variance=[0.25] * 3)
    hksan_keras.distillers.get("kd")(
        keras.Sequential([keras.Input((8, 8, 3)), normalization, *tutorial_cnn("teacher").layers]),
        keras.Sequential([keras.Input((8, 8, 3)), normalization, *tutorial_cnn("student").layers]))


def test_random_augmentation_inside_the_student_is_warned_about():
    def with_augmentation(name):
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.RandomFlip(name="flip"),
                                 *tutorial_cnn(name).layers], name=name)

    with pytest.warns(UserWarning, match=r"The student 'student' has random augmentation layers \['flip'\].*"
                                         r"Augment in the input pipeline instead") as caught:
        hksan_keras.distillers.get("at")(tutorial_cnn("teacher"), with_augmentation("student"))
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        # In inference mode the teacher's random layers do nothing.
        warnings.simplefilter("error")
        hksan_keras.distillers.get("kd")(with_augmentation("teacher"), tutorial_cnn("student"))


def test_nested_layers_are_named_by_path_and_errors_list_the_reachable_ones():
    teacher = nested_sequential()
    distiller = hksan_keras.distillers.ATDistiller(
        teacher, plain_student(), teacher_stages=["backbone/block1", "backbone/block2"],
        student_stages=["s1", "s2"])
    assert distiller.teacher_stages == ["backbone/block1", "backbone/block2"]
    with pytest.raises(ValueError) as error:
        hksan_keras.distillers.ATDistiller(teacher, plain_student(), teacher_stages=["block1", "block2"])
    message = str(error.value)
    assert "has no layer named 'block1'" in message
    assert "'backbone/<layer name>'" in message and "'backbone/block1'" in message


def test_models_nested_two_levels_deep_are_tapped_by_their_full_path():
    inner = backbone("inner")
    middle_input = keras.Input((16, 16, 3))
    middle = keras.Model(middle_input, inner(middle_input), name="middle")
    teacher = keras.Sequential([keras.Input((16, 16, 3)), middle, keras.layers.GlobalAveragePooling2D(),
                                keras.layers.Dense(3)], name="teacher")
    assert detect_stages(teacher) == ["middle/inner/block1", "middle/inner/block2"]
    images, labels = data((16, 16, 3), 3)
    distiller = hksan_keras.distillers.ATDistiller(teacher, plain_student())
    reference = keras.Model(inner.inputs, inner.get_layer("block1").output)(images)
    np.testing.assert_allclose(distiller.teacher_features(images)[0], reference, rtol=1e-5, atol=1e-6)
    fit_few_steps(distiller, images, labels)


def test_a_layer_called_twice_is_never_a_stage_and_naming_it_says_why():
    block_input = keras.Input((16, 16, 3))
    shared = keras.Model(
        block_input, keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(block_input),
        name="shared")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(3, 1, name="mix")(inputs)
    x = keras.layers.MaxPooling2D()(shared(shared(x)))
    x = keras.layers.Conv2D(8, 3, padding="same", name="deep")(x)
    head = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    teacher = keras.Model(inputs, head, name="teacher")
    assert detect_stages(teacher) == ["mix", "deep"]
    with pytest.raises(ValueError, match="'shared' of 'teacher' is called 2 times"):
        hksan_keras.taps.stage_model(teacher, ["shared/conv"])
    with pytest.raises(ValueError, match="'shared' of 'teacher' is called 2 times"):
        hksan_keras.distillers.ATDistiller(
            teacher, plain_student(), teacher_stages=["shared/conv", "deep"], student_stages=["s1", "s2"])


def test_preprocessing_layers_are_not_stages():
    model = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classifier_activation=None)
    stages = detect_stages(model)
    assert not any(model.get_layer(s).__class__.__module__.count("preprocessing") for s in stages)
    assert model.get_layer(stages[0]).output.shape[1] == 16  # the stem's resolution, not the image's


def test_probabilities_are_refused_in_every_spelling_and_logits_model_fixes_them():
    logits_net = tutorial_cnn("inner")
    i = keras.Input((8, 8, 3))
    spellings = {
        "tf.nn.softmax": tutorial_cnn("t1", activation=tf.nn.softmax),
        "Softmax layer": keras.Sequential([keras.Input((8, 8, 3))] + list(tutorial_cnn("t2").layers) + [keras.layers.Softmax()]),
        "wrapped": keras.Sequential([logits_net, keras.layers.Softmax()]),
        "functional": keras.Model(i, keras.layers.Activation("softmax")(logits_net(i))),
    }
    images, labels = data((8, 8, 3), 2)
    for spelling, teacher in spellings.items():
        with pytest.raises(ValueError, match=r"ends with a softmax.*logits_model"):
            hksan_keras.distillers.KDDistiller(teacher, tutorial_cnn("student"))
        logits = hksan_keras.logits_model(teacher)
        np.testing.assert_allclose(keras.ops.softmax(logits(images)), teacher(images), atol=1e-6)
        assert {id(v) for v in logits.weights} == {id(v) for v in teacher.weights}, spelling
        fit_few_steps(hksan_keras.HKSANDistiller(logits, tutorial_cnn("student")), images, labels)


def test_probability_outputs_are_refused_by_value_on_the_first_batch():
    # A head the static check cannot read: softmax inside a Lambda.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    probs = keras.layers.Lambda(lambda t: keras.ops.softmax(t))(keras.layers.Dense(2)(x))
    teacher = keras.Model(inputs, probs)
    distiller = hksan_keras.distillers.KDDistiller(teacher, tutorial_cnn("student"))
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"outputs probabilities \(on the first batch every row"):
        distiller.fit(*data((8, 8, 3), 2), batch_size=8, verbose=0)


def test_soft_labels_train_with_the_soft_cross_entropy():
    a, b = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0])
    soft = 0.6 * np.eye(4)[a] + 0.4 * np.eye(4)[b]
    logits = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = float(np.mean(-(soft * log_p).sum(-1)))
    got = float(losses.label_loss(losses.prepare_labels(keras.ops.convert_to_tensor(soft)), logits))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    hard = float(np.mean(-log_p[np.arange(4), a]))
    assert abs(got - hard) > 1e-3
    # The distillers and evaluate use it.
    keras.utils.set_random_seed(0)
    teacher, student = tutorial_cnn("teacher", 4), tutorial_cnn("student", 4)
    images = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    distiller = hksan_keras.distillers.StudentAlone(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    evaluated = distiller.evaluate(images, soft.astype("float32"), batch_size=4, verbose=0, return_dict=True)
    s_logits = np.asarray(student(images))
    log_q = s_logits - np.log(np.exp(s_logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(evaluated["loss"], np.mean(-(soft * log_q).sum(-1)), rtol=1e-5)
    history = distiller.fit(images, soft.astype("float32"), batch_size=4, epochs=1, verbose=0).history
    np.testing.assert_allclose(history["label_loss"][0], np.mean(-(soft * log_q).sum(-1)), rtol=1e-5)


def test_kd_label_term_uses_soft_rows_and_one_hot_integers_give_the_hard_loss():
    keras.utils.set_random_seed(0)
    teacher, student = tutorial_cnn("teacher", 4), tutorial_cnn("student", 4)
    images = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    a, b = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0])
    soft = (0.6 * np.eye(4)[a] + 0.4 * np.eye(4)[b]).astype("float32")
    s_logits = np.asarray(student(images))
    log_q = s_logits - np.log(np.exp(s_logits).sum(-1, keepdims=True))
    for labels, expected in ((soft, np.mean(-(soft * log_q).sum(-1))),
                             (np.eye(4, dtype="int64")[a], np.mean(-log_q[np.arange(4), a]))):
        distiller = hksan_keras.distillers.KDDistiller(teacher, student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.0))
        history = distiller.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
        np.testing.assert_allclose(history["label_loss"][0], expected, rtol=1e-5)


def test_softmax_rounded_to_16_bits_is_still_seen_as_probabilities():
    logits = np.random.default_rng(0).normal(size=(64, 100)) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rounded = keras.ops.convert_to_numpy(keras.ops.cast(probabilities, "bfloat16"))
    assert hksan_keras.logits.looks_like_probabilities(rounded)
    assert not hksan_keras.logits.looks_like_probabilities(logits)


def test_a_sigmoid_head_is_refused_with_its_own_fix():
    with pytest.raises(ValueError, match="ends with a sigmoid .* independent per-class probabilities"):
        hksan_keras.distillers.KDDistiller(tutorial_cnn("teacher", 3, "sigmoid"), tutorial_cnn("student", 3))


def test_label_rows_that_are_not_distributions_are_refused():
    teacher, student = tutorial_cnn("teacher", 4), tutorial_cnn("student", 4)
    distiller = hksan_keras.distillers.KDDistiller(teacher, student)
    distiller.compile(optimizer="sgd")
    images = np.zeros((4, 8, 8, 3), "float32")
    multi_hot = np.array([[1, 1, 0, 0]] * 4, "float32")
    with pytest.raises(ValueError, match=r"not probability distributions \(row 0 sums to 2"):
        distiller.fit(images, multi_hot, batch_size=4, verbose=0)


@pytest.mark.parametrize("callback", [
    lambda p: keras.callbacks.ModelCheckpoint(str(p / "best.keras"), monitor="val_accuracy", save_best_only=True),
    lambda p: keras.callbacks.EarlyStopping(monitor="val_accuracy", restore_best_weights=True, patience=5),
])
def test_callbacks_that_watch_val_accuracy_work_in_auto_mode(tmp_path, callback):
    keras.utils.set_random_seed(0)
    images, labels = data((8, 8, 3), 2, n=32)
    distiller = hksan_keras.distillers.KDDistiller(tutorial_cnn("teacher"), tutorial_cnn("student"))
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    cb = callback(tmp_path)
    history = distiller.fit(images, labels, batch_size=8, epochs=2, verbose=0,
                            validation_data=(images, labels), callbacks=[cb])
    assert len(history.history["val_accuracy"]) == 2
    assert cb.monitor_op is keras.ops.greater


def test_dkd_warns_on_two_classes():
    with pytest.warns(UserWarning, match="non-target term .* is identically zero"):
        hksan_keras.distillers.DKDDistiller(tutorial_cnn("teacher"), tutorial_cnn("student"))


@pytest.mark.parametrize("method", ["kd+ls", "dkd+ls"])
def test_logit_standardization_warns_on_two_classes(method):
    distiller_class = hksan_keras.distillers.get(method)
    with pytest.warns(UserWarning, match=r"logit_standardization on 2 classes: .* -0.71 and \+0.71") as caught:
        distiller_class(tutorial_cnn("teacher"), tutorial_cnn("student"))
    # The warning names the line that built the distiller, not the library's.
    assert {w.filename for w in caught} == {__file__}
    # The z-scores the message states.
    np.testing.assert_allclose(np.asarray(losses.standardize_logits(np.array([[0.3, 2.0], [5.0, -1.0]]))),
                               [[-0.5 ** 0.5, 0.5 ** 0.5], [0.5 ** 0.5, -0.5 ** 0.5]], rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distiller_class(tutorial_cnn("teacher", classes=3), tutorial_cnn("student", classes=3))


def test_export_without_preprocessing_names_the_identity_and_custom_specs(tmp_path):
    distiller = hksan_keras.distillers.KDDistiller(tutorial_cnn("teacher"), tutorial_cnn("student"))
    with pytest.raises(ValueError) as error:
        distiller.export_student(str(tmp_path / "student"))
    message = str(error.value)
    assert "preprocessing_spec(([0, 0, 0], [1, 1, 1]))" in message
    assert "preprocessing_spec((mean, std))" in message


def test_a_subclassed_student_distilled_by_kd_exports_for_raw_images(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3)
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(keras.ops.mean(self.conv(x), axis=(1, 2)))

    student = Subclassed()
    student(np.zeros((1, 8, 8, 3), "float32"))
    distiller = hksan_keras.distillers.KDDistiller(tutorial_cnn("teacher"), student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    distiller.fit(*data((8, 8, 3), 2), batch_size=8, verbose=0)
    spec = hksan_keras.data.preprocessing_spec(([0, 0, 0], [1, 1, 1]), 8)
    path = distiller.export_student(str(tmp_path / "student"), preprocessing=spec)
    served = tf.saved_model.load(path).signatures["serving_default"]
    raw = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 3)).astype("uint8")
    probabilities = served(images=tf.constant(raw))["probabilities"].numpy()
    expected = keras.ops.softmax(student(raw.astype("float32"))).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)


def plain_cnn(widths, name):
    """A user's own CNN: Conv2D + ReLU stages, no batch normalisation."""
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_stage{i}")(x)
        if i < len(widths) - 1:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name=name)


def _label_loss_after_one_epoch(method, teacher_fn, student_fn, images, labels, learning_rate):
    teacher, student = teacher_fn(), student_fn()
    distiller = hksan_keras.distillers.get(method)(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    history = distiller.fit(images, labels, batch_size=32, epochs=1, shuffle=False, verbose=0).history
    for name, values in history.items():
        assert np.all(np.isfinite(values)), (method, name, values)
    return history["label_loss"][-1]


@pytest.fixture(scope="module")
def cifar_images(cifar_data_dir):
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(tfds.load(
        "cifar10", split="train[:320]", data_dir=cifar_data_dir, as_supervised=True, batch_size=-1))
    # Normalised as the library's pipelines do (mean 0, about unit variance).
    return ((images / 255.0 - 0.47) / 0.25).astype("float32"), labels.astype("int32")


@pytest.mark.full  # trains on real CIFAR-10
@pytest.mark.parametrize("learning_rate", [0.05, 0.1])
def test_hksan_defaults_train_a_plain_cnn_pair_without_batch_norm(cifar_images, learning_rate):
    # Without clipping the logit, attention and squeeze terms together made
    # the weights grow without bound: DivergenceError within 10 steps at
    # both learning rates (seed 0).
    images, labels = cifar_images

    def seeded(widths, name, seed):
        def build():
            keras.utils.set_random_seed(seed)
            return plain_cnn(widths, name)
        return build

    teacher, student = seeded((16, 32, 64), "teacher", 0), seeded((8, 16, 32), "student", 100)
    alone = _label_loss_after_one_epoch("student", teacher, student, images, labels, learning_rate)
    hksan = _label_loss_after_one_epoch("hksan", teacher, student, images, labels, learning_rate)
    assert hksan < 1.5 * alone, (hksan, alone)


def test_hksan_defaults_train_a_tiny_student_from_an_untrained_teacher():
    from conftest import tiny_resnet

    rng = np.random.default_rng(0)
    images = rng.normal(size=(320, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(320,))

    def seeded(widths, name, seed):
        def build():
            keras.utils.set_random_seed(seed)
            return tiny_resnet(widths, name=name)
        return build

    teacher, student = seeded((8, 16, 24), "teacher", 1), seeded((4, 8, 12), "student", 2)
    alone = _label_loss_after_one_epoch("student", teacher, student, images, labels, 0.05)
    hksan = _label_loss_after_one_epoch("hksan", teacher, student, images, labels, 0.05)
    assert hksan < 2.5 * alone, (hksan, alone)
