"""Export of a trained classifier for serving (SavedModel) or phones (TFLite)."""

import os
import tempfile


def _refuse_existing(path):
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; choose a new path or remove it first.")


def export_saved_model(model, path):
    """Writes a TensorFlow SavedModel whose `serve` signature returns logits.

    Args:
        model: A `keras.Model`.
        path: Directory to create; an existing one is never overwritten.

    Returns:
        `path`.

    Example:

    >>> export_saved_model(distiller.student, "student_savedmodel")
    >>> tf.saved_model.load("student_savedmodel").serve(images)
    """
    _refuse_existing(path)
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def export_tflite(model, path, optimize=False):
    """Writes a TFLite flatbuffer of the model (float32, or dynamic-range int8).

    Args:
        model: A `keras.Model`.
        path: The `.tflite` file to create; never overwritten.
        optimize: Apply TFLite's default (dynamic-range) quantisation.

    Returns:
        `path`.

    Example:

    >>> export_tflite(distiller.student, "student.tflite")
    """
    import tensorflow as tf

    _refuse_existing(path)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        saved_model = os.path.join(saved_model_dir, "model")
        model.export(saved_model, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = converter.convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path
