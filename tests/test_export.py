"""A student trained on the library's CIFAR-10 pipeline, exported, serves raw uint8 images."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import hksan_keras
from hksan_keras import data, export


# The full tier only (SavedModel and TFLite export, served in subprocesses).
pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def trained(cifar_data_dir):
    keras.utils.set_random_seed(0)
    train = data.cifar_dataset("cifar10", "train", batch_size=64, training=True,
                               data_dir=cifar_data_dir, take=2048, seed=0)
    teacher = hksan_keras.models.get("resnet8_narrow", 10)
    student = hksan_keras.models.get("resnet8_narrow", 10)
    distiller = hksan_keras.distillers.StudentAlone(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    distiller.fit(train, epochs=2, verbose=0)
    # Raw test images, in the order of the evaluation pipeline.
    raw = tfds.as_numpy(tfds.builder("cifar10", data_dir=cifar_data_dir).as_dataset(
        split="test", as_supervised=True).take(200).batch(200))
    raw_images, labels = next(iter(raw))
    pipeline = data.cifar_dataset("cifar10", "test", batch_size=200, data_dir=cifar_data_dir, take=200)
    expected = np.argmax(distiller.predict(pipeline, verbose=0), axis=-1)
    return distiller, train, raw_images, labels, expected


def test_saved_model_serves_raw_uint8_images_like_the_pipeline(trained, tmp_path):
    distiller, _, raw_images, _, expected = trained
    path = str(tmp_path / "served")
    distiller.export_student(path)  # preprocessing remembered from fit
    spec = json.loads(open(os.path.join(path, "preprocessing.json")).read())
    assert spec["mean"] == pytest.approx(list(data.CIFAR_STATS["cifar10"][0]))
    np.save(tmp_path / "images.npy", raw_images)
    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"images={tmp_path / 'images.npy'}", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "out" / "class_ids.npy")
    assert raw_images.dtype == np.uint8 and served.shape == expected.shape
    np.testing.assert_array_equal(served, expected)


def test_int8_tflite_takes_uint8_images_and_agrees_with_the_float_student(trained, tmp_path):
    distiller, train, raw_images, labels, expected = trained
    float_path = distiller.export_student(str(tmp_path / "student.tflite"), format="tflite")
    int8_path = distiller.export_student(str(tmp_path / "student_int8.tflite"), format="tflite",
                                         quantization="int8", representative_data=train)
    interpreter = tf.lite.Interpreter(model_path=int8_path)
    source = interpreter.get_input_details()[0]
    assert source["dtype"] == np.uint8 and tuple(source["shape"]) == (1, 32, 32, 3)
    scale, zero_point = source["quantization"]
    assert scale == pytest.approx(1.0, rel=0.05) and abs(zero_point) <= 2  # raw pixel values
    float_ids = np.argmax(export.tflite_predict(float_path, raw_images), axis=-1)
    np.testing.assert_array_equal(float_ids, expected)
    int8_ids = np.argmax(export.tflite_predict(int8_path, raw_images), axis=-1)
    agreement = float(np.mean(int8_ids == expected))
    # Measured 0.975 on these 200 images (a 2-epoch ResNet-8/2 student, 28.5%
    # accurate: near-tied classes make this a hard case for int8).
    assert agreement >= 0.93, agreement
    for quantization in ("float16", "dynamic"):
        path = distiller.export_student(str(tmp_path / f"student_{quantization}.tflite"),
                                        format="tflite", quantization=quantization)
        ids = np.argmax(export.tflite_predict(path, raw_images), axis=-1)
        assert float(np.mean(ids == expected)) >= 0.95
    assert os.path.getsize(int8_path) < 0.5 * os.path.getsize(float_path)


def test_int8_without_representative_data_is_refused(trained, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        trained[0].export_student(str(tmp_path / "x.tflite"), format="tflite", quantization="int8")
