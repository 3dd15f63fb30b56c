"""The compression report measures the exported artifacts themselves."""

import json

import keras
import numpy as np
import pytest

from hksan_keras import data, report
from conftest import tiny_resnet


def test_macs_are_counted_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)              # 8*8*3*3*3*4 = 6912
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4*4*3*3 = 576
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)                                # 4*10 = 40
    assert report.count_macs(keras.Model(inputs, outputs)) == 6912 + 576 + 40


def test_report_rows_for_teacher_student_and_each_tflite(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=40)
    train = data.array_dataset(images, labels, batch_size=8, training=True, seed=0)
    teacher, student = tiny_resnet((8, 16, 24)), tiny_resnet((4, 8, 12))
    rows = report.compression_report(
        teacher, student, images, labels, train.preprocessing, str(tmp_path / "report"),
        quantizations=("float32", "int8"), representative_data=train, latency_runs=3)
    assert [r["model"] for r in rows] == [
        "teacher (SavedModel, float32)", "student (SavedModel, float32)",
        "student (TFLite, float32)", "student (TFLite, int8)"]
    assert rows[0]["weights"] == teacher.count_params() and rows[1]["weights"] == student.count_params()
    assert rows[0]["macs_per_image"] > rows[1]["macs_per_image"] == rows[3]["macs_per_image"] > 0
    for row in rows:
        assert row["file_bytes"] > 1000 and 0 <= row["accuracy"] <= 1 and row["latency_ms_batch1"] > 0
    assert rows[3]["file_bytes"] < rows[2]["file_bytes"]
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["test_images"] == 40 and len(saved["rows"]) == 4
    table = report.format_report(rows)
    assert table.count("\n") == 5 and "fewer" in table
    with pytest.raises(FileExistsError, match="exists"):
        report.compression_report(teacher, student, images, labels, train.preprocessing,
                                  str(tmp_path / "report"))


def test_the_experiment_ends_with_each_accuracy_and_the_gain_over_the_student_alone():
    from hksan_keras.experiment import accuracy_table

    lines = accuracy_table({
        "teacher": {"accuracy": 0.9234},
        "student": {"accuracy": 0.55},
        "distilled_student": {"accuracy": 0.5925},
        "distilled_student_kd": {"accuracy": 0.54},
    })
    assert lines[0] == "Test accuracy (last epoch)"
    assert lines[1].split() == ["teacher", "92.34", "%"]
    assert lines[3].split()[:4] == ["distilled_student", "59.25", "%", "+4.25"]
    assert lines[4].split()[3] == "-1.00"
    # Without a student trained alone there is no gain to state.
    assert "points" not in "".join(accuracy_table({"distilled_student": {"accuracy": 0.6}}))
