"""The compression report: what the student costs and keeps, measured on the artifacts.

For the teacher, the float student and each TFLite export of the student:
weights, multiply-accumulates per image, file size, top-1 accuracy on test
images fed raw (uint8) through the exported artifact itself (the SavedModel's
serving signature, the TFLite interpreter), and latency per image at batch 1
on this machine's CPU (median of repeated runs).
"""

import json
import os
import time

import keras
import numpy as np

from hksan_keras.build import check_model_fits
from hksan_keras.data import config_preprocessing, load_data, raw_test_images
from hksan_keras.runs import load_student, teacher_path
from hksan_keras.checks import require


def count_macs(model):
    """Multiply-accumulates of one forward pass of one image.

    Counts convolutions (standard, depthwise, separable) and dense layers,
    which dominate CNN cost; normalisation, activations and pooling are
    left out, as is usual.

    Args:
        model: A built functional or Sequential `keras.Model`.

    Returns:
        The count, an int.

    Example:

    >>> count_macs(hksan_keras.models.cifar_resnet(20, num_classes=10))  # ~41 M
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        kernel = getattr(layer, "kernel", None)
        output_shape = tuple(getattr(layer, "output").shape) if hasattr(layer, "output") else None
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c = output_shape[1:]
            kh, kw = layer.kernel_size
            total += h * w * c * kh * kw
        elif isinstance(layer, keras.layers.SeparableConv2D):
            h, w, c_out = output_shape[1:]
            kh, kw = layer.kernel_size
            c_in = layer.depthwise_kernel.shape[2]
            total += h * w * c_in * layer.depth_multiplier * (kh * kw + c_out)
        elif isinstance(layer, keras.layers.Conv2D) and kernel is not None:
            h, w, _ = output_shape[1:]
            total += h * w * int(np.prod(kernel.shape))
        elif isinstance(layer, keras.layers.Dense) and kernel is not None:
            positions = int(np.prod(output_shape[1:-1])) if len(output_shape) > 2 else 1
            total += positions * int(np.prod(kernel.shape))
    return int(total)


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name))
                   for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def _median_latency_ms(run_one, image, runs):
    run_one(image)  # warm-up (tracing, allocation)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_one(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _saved_model_row(name, model, path, raw_images, labels, latency_runs):
    tf = require("tensorflow", "hksan_keras.report")

    serve = tf.saved_model.load(path).signatures["serving_default"]
    predictions = []
    for start in range(0, len(raw_images), 250):
        batch = tf.constant(raw_images[start:start + 250])
        predictions.append(serve(images=batch)["class_ids"].numpy())
    predictions = np.concatenate(predictions)
    latency = _median_latency_ms(
        lambda image: serve(images=tf.constant(image)), raw_images[:1], latency_runs)
    return _row(name, model, path, float(np.mean(predictions == labels)), latency)


def _row(name, model, path, accuracy, latency_ms):
    return {
        "model": name,
        "artifact": path,
        "weights": int(model.count_params()),
        "macs_per_image": count_macs(model),
        "file_bytes": _size(path),
        "accuracy": accuracy,
        "latency_ms_batch1": latency_ms,
    }


def _tflite_row(name, model, path, raw_images, labels, latency_runs):
    tf = require("tensorflow", "hksan_keras.report")

    from hksan_keras.export import quantize_input, tflite_predict

    probabilities = tflite_predict(path, raw_images)
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    image = quantize_input(raw_images[:1], source)

    def invoke(value):
        interpreter.set_tensor(source["index"], value)
        interpreter.invoke()

    accuracy = float(np.mean(np.argmax(probabilities, axis=-1) == labels))
    return _row(name, model, path, accuracy, _median_latency_ms(invoke, image, latency_runs))


def compression_report(teacher, student, raw_images, labels, preprocessing, directory,
                       quantizations=("float32", "float16", "dynamic", "int8"),
                       representative_data=None, latency_runs=100):
    """Exports teacher and student and measures every artifact.

    Args:
        teacher: The teacher `keras.Model`.
        student: The student `keras.Model`.
        raw_images: uint8 test images (N, H, W, 3) at the models' size.
        labels: Their integer labels (N,).
        preprocessing: The training pipeline's preprocessing spec.
        directory: A new directory for the artifacts and `report.json`.
        quantizations: The TFLite variants of the student to measure.
        representative_data: Training batches for the int8 calibration.
        latency_runs: Timed runs per artifact (the median is reported).

    Returns:
        A list of rows (dicts), also written to `directory/report.json`.

    Example:

    >>> rows = compression_report(teacher, student, x_test, y_test,
    ...                           train_ds.preprocessing, "report",
    ...                           representative_data=train_ds)
    >>> print(format_report(rows))
    """
    from hksan_keras import export

    if os.path.exists(directory):
        raise FileExistsError(f"{directory} exists; choose a new directory or remove it first.")
    os.makedirs(directory)
    raw_images = np.asarray(raw_images)
    labels = np.asarray(labels).reshape(-1)
    rows = []
    for name, model in (("teacher", teacher), ("student", student)):
        path = export.export_saved_model(model, os.path.join(directory, f"{name}_saved_model"),
                                         preprocessing)
        rows.append(_saved_model_row(f"{name} (SavedModel, float32)", model, path, raw_images,
                                     labels, latency_runs))
    for quantization in quantizations:
        path = export.export_tflite(
            student, os.path.join(directory, f"student_{quantization}.tflite"), preprocessing,
            quantization, representative_data if quantization == "int8" else None)
        rows.append(_tflite_row(f"student (TFLite, {quantization})", student, path, raw_images,
                                labels, latency_runs))
    with open(os.path.join(directory, "report.json"), "w") as f:
        json.dump({"test_images": int(len(labels)), "rows": rows}, f, indent=2)
    return rows


def format_report(rows):
    """The report as a Markdown table."""
    teacher = rows[0]
    lines = ["| model | weights | MACs / image | file | top-1 % | latency ms (batch 1) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ratio = teacher["macs_per_image"] / max(row["macs_per_image"], 1)
        lines.append(
            f"| {row['model']} | {row['weights']:,} | {row['macs_per_image'] / 1e6:.1f} M"
            f"{'' if row is teacher else f' ({ratio:.1f}x fewer)'} | {row['file_bytes'] / 1024:.0f} KiB "
            f"| {100 * row['accuracy']:.2f} | {row['latency_ms_batch1']:.2f} |")
    return "\n".join(lines)


def report_step(config, model_path=None, latency_runs=100):
    """The compression report of a run: teacher, distilled student, its TFLite exports.

    The `hksan-keras report` command: exports into `<run_dir>/report/`
    (never overwritten) and measures every artifact on the config's raw
    test images (see `compression_report`).

    Args:
        config: A resolved experiment config (see `hksan_keras.config`).
        model_path: The student (`.keras` classifier or distiller); defaults
            to the run's distilled student of the last epoch.
        latency_runs: Timed runs per artifact.

    Returns:
        The rows, also in `<run_dir>/report/report.json`.

    Raises:
        FileNotFoundError: No student or no trained teacher.
        ConfigError: A model does not fit the config's dataset.

    Example:

    >>> rows = report_step(config, latency_runs=20)
    """
    student, path = load_student(config, model_path)
    teacher_file = teacher_path(config)
    teacher = keras.saving.load_model(teacher_file)
    train, _, num_classes, _ = load_data(config)
    for model, where in ((student, path), (teacher, teacher_file)):
        check_model_fits(model, config, num_classes, where)
    images, labels = raw_test_images(config)
    rows = compression_report(
        teacher, student, images, labels, config_preprocessing(config),
        os.path.join(config["run_dir"], "report"), representative_data=train,
        latency_runs=latency_runs)
    print(f"Compression report ({len(labels)} test images, {path}):")
    print(format_report(rows), flush=True)
    return rows
