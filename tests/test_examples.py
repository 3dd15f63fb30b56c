"""The examples run as they are, on a tiny budget, so that they never rot."""

import os
import subprocess
import sys

import numpy as np

from conftest import REPO_ROOT
import pytest


# The full tier only (runs the example scripts).
pytestmark = pytest.mark.full


def run_example(name, *args):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / name), *args],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_own_model_on_numpy_arrays(cifar_data_dir, tmp_path):
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(tfds.load(
        "cifar10", split="test[:300]", as_supervised=True, batch_size=-1, data_dir=cifar_data_dir))
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    out = run_example("own_model_own_data.py", f"--images={tmp_path / 'x.npy'}",
                      f"--labels={tmp_path / 'y.npy'}", "--epochs=1")
    assert "distilled student test accuracy:" in out


def test_own_model_on_an_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, color in enumerate(((200, 30, 30), (30, 30, 200), (30, 200, 30))):
        folder = tmp_path / f"class_{label}"
        folder.mkdir()
        for index in range(12):
            pixels = np.clip(rng.normal(color, 40, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.png")
    out = run_example("own_model_own_data.py", f"--folder={tmp_path}", "--image_size=32", "--epochs=1")
    assert "distilled student test accuracy:" in out


def test_keras_applications_teacher(cifar_data_dir):
    out = run_example("keras_applications_teacher.py", f"--data_dir={cifar_data_dir}",
                      "--train_size=128", "--test_size=128", "--epochs=1")
    assert "teacher stages: ['block_" in out
    assert "distilled student test accuracy:" in out


def test_custom_callbacks(cifar_data_dir, tmp_path):
    output_dir = tmp_path / "callbacks"
    out = run_example("custom_callbacks.py", f"--data_dir={cifar_data_dir}", f"--output_dir={output_dir}",
                      "--train_size=128", "--epochs=2")
    assert "epoch 2: discriminator loss" in out and "best student test accuracy:" in out
    assert (output_dir / "best_student.keras").is_file() and (output_dir / "history.csv").is_file()
    assert any((output_dir / "logs").rglob("*tfevents*"))


def test_finetune_a_keras_applications_backbone_and_distil(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    for label, color in enumerate(((200, 30, 30), (30, 30, 200))):
        (folder / f"class_{label}").mkdir(parents=True)
        for index in range(10):
            pixels = np.clip(rng.normal(color, 40, size=(40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"class_{label}" / f"{index}.png")
    out = run_example("finetune_and_distill.py", f"--folder={folder}", "--image_size=32", "--weights=none",
                      "--epochs=1", "--batch_size=8", f"--output_dir={tmp_path / 'run'}")
    assert "teacher stages: ['MobileNetV3Small/" in out
    assert "student stages: ['resnet14/stage1', 'resnet14/stage2', 'resnet14/stage3']" in out
    assert (tmp_path / "run" / "student_savedmodel" / "saved_model.pb").is_file()
    assert "distilled student validation accuracy:" in out
