"""hksan_keras on JAX where TensorFlow cannot be imported.

Run by test_jax.py in a fresh process with KERAS_BACKEND=jax:

    python without_tensorflow.py OUTPUT_DIR [CLI ARGUMENTS...]
    python without_tensorflow.py OUTPUT_DIR --script=PATH [ITS ARGUMENTS...]

An import hook makes `tensorflow` and `tensorflow_datasets` fail to import,
as in an environment where they are not installed. Without CLI arguments
it trains KD from numpy arrays and HKSAN from a keras.utils.PyDataset, saves and reloads the student, and writes
OUTPUT_DIR/results.json; with them it runs the `hksan-keras` command, or
with --script=PATH that Python script.
"""

import importlib.abc
import json
import os
import sys

BLOCKED = ("tensorflow", "tensorflow_datasets", "tf_keras")


class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTensorFlow())
output_dir = sys.argv[1]

if len(sys.argv) > 2 and sys.argv[2].startswith("--script="):
    import runpy

    script = sys.argv[2].removeprefix("--script=")
    sys.argv = [script, *sys.argv[3:]]
    runpy.run_path(script, run_name="__main__")
    sys.exit(0)
if len(sys.argv) > 2:
    from hksan_keras.cli import run

    sys.argv = ["hksan-keras", *sys.argv[2:]]
    run()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import hksan_keras  # noqa: E402

assert keras.backend.backend() == "jax"


def models():
    keras.utils.set_random_seed(0)
    teacher = hksan_keras.models.cifar_resnet(8, num_classes=10, stem_width=8, stage_widths=(8, 16, 24),
                                              input_shape=(16, 16, 3))
    student = hksan_keras.models.cifar_resnet(8, num_classes=10, stem_width=4, stage_widths=(4, 8, 12),
                                              input_shape=(16, 16, 3))
    return teacher, student


class Batches(keras.utils.PyDataset):
    def __init__(self, images, labels):
        super().__init__()
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images) // 8

    def __getitem__(self, i):
        return self.images[8 * i : 8 * i + 8], self.labels[8 * i : 8 * i + 8]


rng = np.random.default_rng(0)
images = rng.normal(size=(32, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 10, size=(32,))
results = {"tensorflow_imported": False}
for name, method, data in (("kd_arrays", "kd", "arrays"), ("hksan_pydataset", "hksan", "pydataset")):
    teacher, student = models()
    distiller = hksan_keras.distillers.METHODS[method](teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    if data == "arrays":
        history = distiller.fit(images, labels, batch_size=8, epochs=2, verbose=0)
    else:
        history = distiller.fit(Batches(images, labels), epochs=2, verbose=0)
    path = os.path.join(output_dir, f"{name}.keras")
    distiller.student.save(path)
    reloaded = keras.saving.load_model(path)
    results[name] = {
        "loss": [float(v) for v in history.history["loss"]],
        "evaluate": distiller.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True),
        "reloaded_max_difference": float(np.max(np.abs(
            reloaded.predict(images, verbose=0) - distiller.student.predict(images, verbose=0)))),
    }
try:
    hksan_keras.data.array_dataset(images, labels, batch_size=8)
except ImportError as error:
    results["data_error"] = str(error)
results["tensorflow_imported"] = "tensorflow" in sys.modules
with open(os.path.join(output_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
