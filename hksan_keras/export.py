"""Export of a trained classifier for serving (SavedModel) or phones (TFLite).

Exported models take the images a client has: uint8 RGB, pixel values 0-255.
The evaluation preprocessing of the training pipeline (a
`hksan_keras.data.preprocessing_spec`: per-channel statistics, and for
ImageNet-style data the resize and center crop) runs inside the exported
graph, and is also written as `preprocessing.json` next to the model.
"""

import json
import os
import tempfile

import numpy as np

from hksan_keras.taps import image_shape
from hksan_keras.checks import require

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


def _refuse_existing(path):
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; choose a new path or remove it first.")


def _check_spec(model, preprocessing):
    if preprocessing is None:
        raise ValueError(
            "export needs the preprocessing of the training pipeline, so that the "
            "exported model takes raw uint8 images, and the training data carried "
            "none (the pipelines of hksan_keras.data set `dataset.preprocessing`; "
            "keras.utils.image_dataset_from_directory and plain arrays do not). "
            "Pass the spec of what your pipeline did to the raw pixels:\n"
            "  - the model took raw 0..255 pixels (normalisation inside the model, "
            "or none): preprocessing=hksan_keras.data.preprocessing_spec("
            "([0, 0, 0], [1, 1, 1]))\n"
            "  - the pipeline computed (pixels - mean) / std (in the 0..255 scale): "
            "preprocessing=hksan_keras.data.preprocessing_spec((mean, std))\n"
            "  - it was a hksan_keras.data pipeline of a named dataset: "
            "preprocessing=hksan_keras.data.dataset_preprocessing('cifar10').\n"
            "A spec that differs from the training pipeline exports a model whose "
            "probabilities differ from the student's."
        )
    size = tuple(image_shape(model)[:2])
    if preprocessing["image_size"] is not None and None not in size:
        if size != (preprocessing["image_size"],) * 2:
            raise ValueError(
                f"The model takes {size} images but the preprocessing makes "
                f"{preprocessing['image_size']}x{preprocessing['image_size']} ones; "
                "pass the preprocessing of the pipeline it was trained with."
            )


def raw_to_model_input(images, preprocessing):
    """Raw images (uint8 or float pixel values 0-255) to the model's input.

    Args:
        images: A batch (B, H, W, 3).
        preprocessing: A `hksan_keras.data.preprocessing_spec`.

    Returns:
        Float32 images, resized as the spec says and normalised per channel.
    """
    tf = require("tensorflow", "hksan_keras.export")

    from hksan_keras import data

    x = data.resize_raw(images, preprocessing)
    mean = tf.constant(preprocessing["mean"], tf.float32)
    std = tf.constant(preprocessing["std"], tf.float32)
    return (x - mean) / std


def _raw_input_shape(model, preprocessing):
    if preprocessing["resize"] == "none":
        return (None,) + tuple(image_shape(model))
    return (None, None, None, 3)


def write_preprocessing(preprocessing, path):
    """Writes a preprocessing spec as JSON (sorted keys, readable)."""
    with open(path, "w") as f:
        json.dump(preprocessing, f, indent=2, sort_keys=True)
    return path


def export_saved_model(model, path, preprocessing=None):
    """Writes a SavedModel that serves raw uint8 images.

    Signatures:

    - `serving_default`: `images` uint8 (batch, H, W, 3) at the model's
      size (any size when the preprocessing resizes) -> `probabilities`
      (batch, classes) and `class_ids` (batch,).
    - `serve_preprocessed`: `images` float32, already preprocessed as the
      training pipeline does -> `logits`, `probabilities`, `class_ids`.
    - `serve`: preprocessed float32 images -> logits (Keras's own endpoint).

    `preprocessing.json` is written inside the SavedModel directory.

    Args:
        model: A `keras.Model` that outputs logits.
        path: Directory to create; an existing one is never overwritten.
        preprocessing: The `preprocessing` of the training pipeline
            (`dataset.preprocessing`, or `data.dataset_preprocessing(name)`).

    Returns:
        `path`.

    Example:

    >>> export_saved_model(student, "student_savedmodel", train_ds.preprocessing)
    >>> served = tf.saved_model.load("student_savedmodel")
    >>> served.signatures["serving_default"](images=uint8_images)["class_ids"]
    """
    import keras
    tf = require("tensorflow", "hksan_keras.export")

    _refuse_existing(path)
    _check_spec(model, preprocessing)
    archive = keras.export.ExportArchive()
    archive.track(model)
    preprocessed_spec = tf.TensorSpec((None,) + tuple(image_shape(model)), tf.float32)

    def outputs(logits):
        logits = tf.cast(logits, tf.float32)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "class_ids": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }

    def serve_raw(images):
        return outputs(model(raw_to_model_input(images, preprocessing), training=False))

    def serve_preprocessed(images):
        logits = tf.cast(model(images, training=False), tf.float32)
        return {"logits": logits, **outputs(logits)}

    archive.add_endpoint(
        "serving_default", serve_raw,
        input_signature=[tf.TensorSpec(_raw_input_shape(model, preprocessing), tf.uint8, name="images")],
    )
    archive.add_endpoint(
        "serve_preprocessed", serve_preprocessed,
        input_signature=[tf.TensorSpec(preprocessed_spec.shape, tf.float32, name="images")],
    )
    archive.add_endpoint(
        "serve", lambda images: model(images, training=False), input_signature=[preprocessed_spec]
    )
    archive.write_out(path, verbose=False)
    write_preprocessing(preprocessing, os.path.join(path, "preprocessing.json"))
    return path


def _representative_raw_images(representative_data, preprocessing, num_batches):
    """Raw-pixel batches (float 0-255) from a pipeline of preprocessed batches."""
    mean = np.asarray(preprocessing["mean"], "float32")
    std = np.asarray(preprocessing["std"], "float32")
    for count, batch in enumerate(representative_data):
        if count >= num_batches:
            break
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        for image in np.asarray(images):
            # The pipelines normalise; the TFLite model reads raw pixels.
            yield [np.clip(image * std + mean, 0, 255)[None].astype("float32")]


def export_tflite(model, path, preprocessing=None, quantization="float32",
                  representative_data=None, representative_batches=8):
    """Writes a TFLite model that takes raw uint8 images.

    Its input is uint8 (1, H, W, 3) at the model's size (resize on the
    device as `preprocessing` says); the normalisation runs inside. Its
    output is the class probabilities (batch, classes).

    Args:
        model: A `keras.Model` that outputs logits.
        path: The `.tflite` file to create; never overwritten.
        preprocessing: The training pipeline's `preprocessing`.
        quantization: "float32"; "float16" (weights in float16); "dynamic"
            (dynamic-range: int8 weights, float activations); "int8" (full
            integer post-training quantisation: int8 weights and
            activations, uint8 input, calibrated on `representative_data`).
        representative_data: For "int8": a dataset of `(images, labels)`
            batches from the training pipeline (preprocessed as it
            yields them; they are mapped back to raw pixels here).
        representative_batches: How many of its batches calibrate.

    Returns:
        `path`.

    Example:

    >>> export_tflite(student, "student_int8.tflite", train_ds.preprocessing,
    ...               quantization="int8", representative_data=train_ds)
    """
    import keras
    tf = require("tensorflow", "hksan_keras.export")

    _refuse_existing(path)
    _check_spec(model, preprocessing)
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' calibrates on representative images: pass "
            "representative_data=train_dataset (a few batches are read)."
        )
    height, width, channels = image_shape(model)
    raw = dict(preprocessing, resize="none")  # the device resizes; the model normalises
    integer = quantization == "int8"

    def classify(images):
        logits = model(raw_to_model_input(images, raw), training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    # Through a SavedModel, as Keras's own TFLite export does: the converter
    # freezes the variables of a SavedModel (not those a tf.function captures).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", classify, input_signature=[tf.TensorSpec(
        (1, height, width, channels), tf.float32 if integer else tf.uint8, name="images")])
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serve"])
        flatbuffer = _convert(converter, quantization, integer, representative_data,
                              preprocessing, representative_batches)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    write_preprocessing(preprocessing, os.path.splitext(path)[0] + ".preprocessing.json")
    return path


def _convert(converter, quantization, integer, representative_data, preprocessing,
             representative_batches):
    tf = require("tensorflow", "hksan_keras.export")

    if quantization in ("float16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if integer:
        converter.representative_dataset = lambda: _representative_raw_images(
            representative_data, preprocessing, representative_batches
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def quantize_input(images, input_detail):
    """Raw images as a TFLite input tensor wants them (quantised for an int8 model).

    Args:
        images: Raw pixel values (N, H, W, 3).
        input_detail: An entry of `Interpreter.get_input_details()`.

    Returns:
        An array of the input's dtype.
    """
    values = np.asarray(images).astype("float32")
    scale, zero_point = input_detail["quantization"]
    if scale:  # int8 model: quantise the raw pixels as calibrated
        values = np.round(values / scale + zero_point)
        info = np.iinfo(input_detail["dtype"])
        values = np.clip(values, info.min, info.max)
    return values.astype(input_detail["dtype"])


def tflite_predict(path, images):
    """Class probabilities of a TFLite model from `export_tflite` on raw images.

    Args:
        path: The `.tflite` file.
        images: uint8 images (N, H, W, 3) at the model's size.

    Returns:
        Float probabilities (N, classes) (dequantised for an int8 model).
    """
    tf = require("tensorflow", "hksan_keras.export")

    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    results = []
    for image in np.asarray(images):
        interpreter.set_tensor(source["index"], quantize_input(image[None], source))
        interpreter.invoke()
        output = interpreter.get_tensor(target["index"]).astype("float32")
        scale, zero_point = target["quantization"]
        if scale:
            output = (output - zero_point) * scale
        results.append(output[0])
    return np.stack(results)


def export_step(config, model_path=None, format="tf_saved_model", quantization="float32"):
    """Exports the run's distilled student (or `model_path`) for raw uint8 images.

    The `hksan-keras export` command: writes into `<run_dir>/export/` and
    the preprocessing spec to `<run_dir>/preprocessing.json`.

    Args:
        config: A resolved experiment config (see `hksan_keras.config`).
        model_path: A `.keras` classifier or distiller; defaults to the
            distilled student of the last epoch.
        format: "tf_saved_model" (to <run_dir>/export/saved_model) or
            "tflite" (to <run_dir>/export/student_<quantization>.tflite).
        quantization: For TFLite: "float32", "float16", "dynamic" or "int8"
            (calibrated on batches of the config's training pipeline).

    Returns:
        The path written.

    Raises:
        FileNotFoundError: No model at `model_path` (or no distilled student).
        ConfigError: The model does not fit the config's dataset.

    Example:

    >>> export_step(config, format="tflite", quantization="int8")
    """
    # Imported here: hksan_keras.runs imports this module (write_preprocessing).
    from hksan_keras.build import check_model_fits
    from hksan_keras.data import config_preprocessing, load_data
    from hksan_keras.runs import load_student

    model, path = load_student(config, model_path)
    check_model_fits(model, config, None, path)
    spec = config_preprocessing(config)
    directory = os.path.join(config["run_dir"], "export")
    os.makedirs(directory, exist_ok=True)
    write_preprocessing(spec, os.path.join(config["run_dir"], "preprocessing.json"))
    if format == "tflite":
        representative = load_data(config)[0] if quantization == "int8" else None
        written = export_tflite(
            model, os.path.join(directory, f"student_{quantization}.tflite"), spec,
            quantization, representative,
        )
    else:
        written = export_saved_model(model, os.path.join(directory, "saved_model"), spec)
    print(f"exported {path} to {written}", flush=True)
    return written
