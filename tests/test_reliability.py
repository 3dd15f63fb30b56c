"""Bad input is named before training; a diverging run says why; seeded runs repeat."""

import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import hksan_keras
from hksan_keras import checks
from hksan_keras.build import check_model_fits
from hksan_keras.callbacks import DivergenceError
from hksan_keras.config import ConfigError, resolve_config
from conftest import REPO_ROOT, tiny_resnet


def _distiller(teacher, student, **kwargs):
    distiller = hksan_keras.distillers.KDDistiller(teacher, student, **kwargs)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    return distiller


def test_teacher_and_student_of_different_input_sizes_are_refused(teacher):
    student = hksan_keras.models.cifar_resnet(
        8, num_classes=10, stem_width=4, stage_widths=(4, 8, 12), input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"takes images of shape \(16, 16, 3\).*\(32, 32, 3\)"):
        hksan_keras.HKSANDistiller(teacher, student)


@pytest.mark.parametrize("labels, error, message", [
    (np.full(32, 10), ValueError, r"A label is 10, outside \[0, 10\)"),
    (np.full(32, -1), ValueError, r"A label is -1, outside \[0, 10\)"),
    (np.zeros(32, dtype="float32"), TypeError, "labels are floats"),
    (np.zeros((32, 7), dtype="float32"), ValueError, "rows of width 7, but the models predict 10"),
])
def test_bad_labels_are_named_before_training(teacher, student, batch, labels, error, message):
    distiller = _distiller(teacher, student)
    before = [v.numpy().copy() for v in student.trainable_variables]
    with pytest.raises(error, match=message):
        distiller.fit(batch[0], labels, batch_size=8, verbose=0)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, student.trainable_variables))


def test_one_hot_labels_are_accepted(teacher, student, batch):
    one_hot = np.eye(10, dtype="float32")[batch[1]]
    history = _distiller(teacher, student).fit(batch[0], one_hot, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("images, message", [
    (np.zeros((32, 16, 16), "float32"), r"rank 3.*rank 4"),
    (np.zeros((32, 16, 16, 1), "float32"), "channels 1 instead of 3"),
    (np.zeros((32, 24, 24, 3), "float32"), "size along axis 1 24 instead of 16"),
])
def test_images_of_the_wrong_shape_are_named(teacher, student, batch, images, message):
    with pytest.raises(ValueError, match=message):
        _distiller(teacher, student).fit(images, batch[1], batch_size=8, verbose=0)


def test_an_empty_dataset_is_refused(teacher, student, batch):
    empty = tf.data.Dataset.from_tensor_slices(batch).take(0).batch(8)
    with pytest.raises(ValueError, match="training dataset is empty"):
        _distiller(teacher, student).fit(empty, verbose=0)


@pytest.mark.parametrize("value, error, message", [
    (-0.5, ValueError, "kd_weight must be >= 0, got -0.5"),
    (float("nan"), ValueError, "kd_weight must be a finite number, got nan"),
    ("0.9", TypeError, "kd_weight must be a number, got '0.9'"),
])
def test_bad_loss_weights_are_named(teacher, student, value, error, message):
    with pytest.raises(error, match=message):
        hksan_keras.distillers.KDDistiller(teacher, student, kd_weight=value)


@pytest.mark.full  # a subprocess
def test_unknown_config_keys_and_flags_are_named(tmp_path):
    with pytest.raises(ConfigError, match="Unknown config key 'distill.hksan.squeez_weight'"):
        resolve_config(
            str(REPO_ROOT / "configs" / "cifar10_resnet56_resnet20_quick.json"),
            ["distill.hksan.squeez_weight=1"])
    result = subprocess.run(
        [sys.executable, "-m", "hksan_keras.cli", "distill",
         "--config=configs/cifar10_resnet56_resnet20_quick.json", "--epoch=3"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode != 0
    assert "Unknown command line flag 'epoch'" in result.stderr


def test_a_model_of_another_architecture_is_named(tmp_path):
    config = resolve_config(
        str(REPO_ROOT / "configs" / "cifar10_resnet56_resnet20_quick.json"), run_dir=str(tmp_path))
    wrong_size = tiny_resnet((4, 8, 12))  # 16x16 images
    with pytest.raises(ConfigError, match=r"images of shape \(16, 16, 3\).*feeds \(32, 32, 3\)"):
        check_model_fits(wrong_size, config, 10, "x.keras")
    hundred = hksan_keras.models.cifar_resnet(8, num_classes=100)
    with pytest.raises(ConfigError, match="100 classes, but cifar10 has 10"):
        check_model_fits(hundred, config, 10, "x.keras")


def test_a_diverging_run_stops_naming_the_term_and_keeps_the_last_good_checkpoint(
        student, batch, tmp_path):
    keras.utils.set_random_seed(1)
    base = tiny_resnet((8, 16, 24), name="base")
    # An untrained teacher with logits in the thousands, and raw distances.
    teacher = keras.Model(base.input, keras.layers.Rescaling(1000.0)(base.output), name="huge")
    distiller = hksan_keras.distillers.ANCDistiller(teacher, student, logit_distance="squared")
    # One quiet epoch (4 steps at a tiny rate), then a rate that diverges.
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([4], [1e-6, 10.0])
    distiller.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9))
    backup_dir = str(tmp_path / "backup")
    backup = keras.callbacks.BackupAndRestore(backup_dir)
    with pytest.raises(DivergenceError) as caught:
        distiller.fit(*batch, batch_size=8, epochs=5, callbacks=[backup], verbose=0)
    message = str(caught.value)
    assert re.search(r"Training diverged at step \d+ \(epoch [2-5], batch \d+\): "
                     r"'(label_loss|logit_loss|adversarial_loss|discriminator_loss)' became", message)
    assert "teacher's logits reach" in message and "learning rate is 10" in message
    # The backup of epoch 1 is there, and its weights are finite.
    assert os.path.exists(os.path.join(backup_dir, "training_metadata.json"))
    restored = hksan_keras.distillers.ANCDistiller(
        teacher, keras.models.clone_model(student), logit_distance="squared")
    restored.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9))
    restored.load_weights(os.path.join(backup_dir, "latest.weights.h5"))
    assert all(np.isfinite(v.numpy()).all() for v in restored.student.trainable_variables)


def test_the_divergence_message_names_the_term_that_ran_away_first():
    from hksan_keras.callbacks import DivergenceGuard

    class Optimizer:
        iterations = tf.Variable(4)
        learning_rate = 0.1

    class Model:
        LOSS_TERMS = ("label_loss", "logit_loss", "squeeze_loss")
        optimizer = Optimizer()

        def term_weights(self):
            return {"label_loss": 1.0, "logit_loss": 10.0, "squeeze_loss": 0.3}

    guard = DivergenceGuard()
    guard.set_model(Model())
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    # Each batch's own values; the logs hold running means over the epoch.
    own = [{"label_loss": 2.0, "logit_loss": 0.1, "squeeze_loss": 10.0},   # objective 6
           {"label_loss": 2.5, "logit_loss": 0.3, "squeeze_loss": 15.0},   # nothing alone above 6
           {"label_loss": 3.0, "logit_loss": 0.5, "squeeze_loss": 50.0},   # 0.3 x 50 = 15 > 6
           {"label_loss": 9.0, "logit_loss": 40.0, "squeeze_loss": 60.0}]  # 10 x 40 = 400, later
    for batch in range(len(own)):
        logs = {k: float(np.mean([row[k] for row in own[:batch + 1]])) for k in own[0]}
        guard.on_train_batch_end(batch, logs)
    with pytest.raises(DivergenceError) as caught:
        guard.on_train_batch_end(4, {"label_loss": float("nan"), "logit_loss": float("inf"),
                                     "squeeze_loss": 1.0})
    message = str(caught.value)
    assert "'logit_loss' became inf first" in message
    assert ("'squeeze_loss' ran away first: on batch 3 its weighted value (0.3 x 50 = 15) alone "
            "exceeded the whole objective of the epoch's first batch (6)") in message


def test_an_untrained_teacher_is_reported(teacher, batch):
    dataset = tf.data.Dataset.from_tensor_slices((batch[0], np.zeros(32, "int64"))).batch(8)
    constant = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                 keras.layers.Dense(10, kernel_initializer="zeros",
                                                    bias_initializer=keras.initializers.Constant(
                                                        [0.0] + [1.0] * 9))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        accuracy = checks.check_teacher_is_trained(constant, dataset, 10)
    assert accuracy == 0.0
    assert any("teacher looks untrained" in str(w.message) for w in caught)


def test_near_chance_is_three_standard_errors_above_chance():
    # 100 images of 2 classes: chance 50 %, standard error 5 %, so below 65 %
    # is near chance (70 % is not).
    labels = np.zeros(100, "int64")
    for correct, warns in ((70, False), (60, True)):
        logits = np.zeros((100, 2), "float32")
        logits[correct:, 1] = 1.0  # the first `correct` predict class 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            accuracy = checks.check_teacher_is_trained(lambda images, training: logits, [(None, labels)], 2)
        assert accuracy == correct / 100
        assert any("teacher looks untrained" in str(w.message) for w in caught) == warns


def test_fit_warns_before_training_when_the_teacher_is_at_chance(student, batch):
    images = batch[0]
    labels = np.zeros(32, "int64")

    def teacher_predicting(label):
        return keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(
            10, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(5 * np.eye(10)[label] - 1))])

    for predicted, warns in ((0, False), (1, True)):
        distiller = hksan_keras.distillers.get("kd")(teacher_predicting(predicted), student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.01))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            distiller.fit(images, labels, batch_size=32, epochs=1, verbose=0)
        assert any("teacher looks untrained: 0.0% accurate on 32 images" in str(w.message)
                   for w in caught) == warns


def test_keras_files_written_by_the_library_load_in_safe_mode(teacher, student, batch, tmp_path):
    for method in ("hksan", "fitnets", "kd"):
        distiller = hksan_keras.distillers.get(method)(teacher, student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.01))
        distiller.fit(*batch, batch_size=16, epochs=1, verbose=0)
        path = str(tmp_path / f"{method}.keras")
        distiller.save(path)
        keras.saving.load_model(path, safe_mode=True)
        distiller.student.save(str(tmp_path / f"{method}_student.keras"))
        keras.saving.load_model(str(tmp_path / f"{method}_student.keras"), safe_mode=True)


SEEDED_RUN = """
import sys, numpy as np, keras, tensorflow as tf
sys.path.insert(0, {tests!r})
tf.config.experimental.enable_op_determinism()
keras.utils.set_random_seed(7)
import hksan_keras
from conftest import tiny_resnet
teacher, student = tiny_resnet((8, 16, 24)), tiny_resnet((4, 8, 12))
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 16, 16, 3)).astype("float32"); y = rng.integers(0, 10, 64)
d = hksan_keras.HKSANDistiller(teacher, student, seed=7)
d.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
d.fit(x, y, batch_size=16, epochs=2, verbose=0)
np.save({out!r}, np.concatenate([v.numpy().ravel() for v in student.weights]))
"""


@pytest.mark.full
def test_two_seeded_runs_give_bit_identical_students(tmp_path):
    results = []
    for run in range(2):
        out = str(tmp_path / f"run{run}.npy")
        script = SEEDED_RUN.format(tests=str(REPO_ROOT / "tests"), out=out)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(np.load(out))
    np.testing.assert_array_equal(results[0], results[1])
