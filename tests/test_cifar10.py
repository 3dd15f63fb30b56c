"""Distillation on a small slice of real CIFAR-10 (tensorflow-datasets)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import hksan_keras
from conftest import REPO_ROOT
from hksan_keras.data import cifar_dataset


# The full tier only (trains on real CIFAR-10 in subprocesses).
pytestmark = pytest.mark.full


def _small_resnet(widths, name):
    return hksan_keras.models.cifar_resnet(
        8, num_classes=10, stem_width=widths[0], stage_widths=widths, name=name
    )


def test_distillation_lowers_training_loss_and_beats_an_untrained_student(cifar_data_dir):
    keras.utils.set_random_seed(0)
    train = cifar_dataset("cifar10", "train", 64, training=True, data_dir=cifar_data_dir, take=2048, seed=0)
    test = cifar_dataset("cifar10", "test", 256, data_dir=cifar_data_dir, take=1024)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    teacher = _small_resnet((16, 32, 64), "teacher")
    teacher.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss, metrics=["accuracy"])
    teacher.fit(train, epochs=3, verbose=0)

    student = _small_resnet((8, 16, 32), "student")
    untrained = hksan_keras.HKSANDistiller(teacher, student)
    untrained.compile()
    untrained_accuracy = untrained.evaluate(test, verbose=0, return_dict=True)["accuracy"]

    distiller = hksan_keras.HKSANDistiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = distiller.fit(train, validation_data=test, epochs=3, verbose=0)

    train_loss = history.history["loss"]
    assert train_loss[-1] < train_loss[0], train_loss
    assert history.history["label_loss"][-1] < history.history["label_loss"][0]
    distilled_accuracy = history.history["val_accuracy"][-1]
    assert distilled_accuracy > untrained_accuracy + 0.1, (distilled_accuracy, untrained_accuracy)
    # evaluate() agrees with the validation numbers of the last epoch.
    np.testing.assert_allclose(
        distiller.evaluate(test, verbose=0, return_dict=True)["accuracy"], distilled_accuracy, rtol=1e-6
    )


def test_example_script_runs_end_to_end(cifar_data_dir, tmp_path):
    output_dir = tmp_path / "run"
    command = [
        sys.executable, str(REPO_ROOT / "examples" / "distill_cifar10.py"),
        f"--data_dir={cifar_data_dir}", "--train_size=256", "--test_size=256",
        "--teacher_epochs=1", "--epochs=1", "--batch_size=64", f"--output_dir={output_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distilled student test accuracy:" in result.stdout
    for name in ("distiller.keras", "student.keras", "history.csv"):
        assert (output_dir / name).is_file(), name
    # A second run into the same directory refuses instead of overwriting it.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "exists" in again.stderr
