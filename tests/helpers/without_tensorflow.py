"""hksan_keras on JAX where TensorFlow cannot be imported.

Run by test_without_tensorflow.py in a fresh process with KERAS_BACKEND=jax:

    python without_tensorflow.py OUTPUT_DIR

An import hook makes `tensorflow` and `tensorflow_datasets` fail to import,
as in an environment where they are not installed. In one process (one
start-up of JAX and Keras) it:

- trains KD from numpy arrays, and HKSAN from a keras.utils.PyDataset
  under mixed_float16 (both optimizers loss-scaled), saves and reloads
  each student;
- trains CRD a few steps and draws its negatives;
- calls hksan_keras.data.array_dataset, which needs TensorFlow;
- runs the `hksan-keras train-teacher` command, which needs it too;
- runs benchmarks/throughput.py for HKSAN under mixed_bfloat16;

and writes what it saw to OUTPUT_DIR/results.json.
"""

import contextlib
import importlib.abc
import io
import json
import os
import runpy
import sys

BLOCKED = ("tensorflow", "tensorflow_datasets", "tf_keras")


class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTensorFlow())
output_dir = sys.argv[1]
repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import hksan_keras  # noqa: E402
from hksan_keras import cli  # noqa: E402

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
results = {}
for name, method, data, policy in (("kd_arrays", "kd", "arrays", "float32"),
                                   ("hksan_pydataset", "hksan", "pydataset", "mixed_float16")):
    keras.mixed_precision.set_global_policy(policy)
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
            np.asarray(reloaded.predict(images, verbose=0), "float32")
            - np.asarray(distiller.student.predict(images, verbose=0), "float32")))),
        "loss_scaled": [isinstance(o, keras.optimizers.LossScaleOptimizer)
                        for o in (distiller.optimizer, getattr(distiller, "d_optimizer", None)) if o is not None],
    }
keras.mixed_precision.set_global_policy("float32")

# CRD's own negative sampling and memory updates (test_jax's step
# comparison fixes the negatives): a few steps, then a draw of negatives.
teacher, student = models()
crd = hksan_keras.distillers.METHODS["crd"](teacher, student, num_examples=32, num_negatives=16)
crd.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
history = crd.fit({"images": images, "index": np.arange(32)}, labels, batch_size=8, epochs=2, verbose=0)
known = np.asarray(crd.memory_classes)
negatives = np.asarray(crd._negatives(np.arange(8, dtype="int32"), labels[:8]))
results["crd"] = {
    "loss": [float(v) for v in history.history["crd_loss"]],
    "classes_stored": bool(np.array_equal(known, labels)),
    "negatives_shape": list(negatives.shape),
    "negatives_of_other_classes": bool(np.all(known[negatives] != labels[:8, None])),
}

try:
    hksan_keras.data.array_dataset(images, labels, batch_size=8)
except ImportError as error:
    results["data_error"] = str(error)

stderr = io.StringIO()
sys.argv = ["hksan-keras", "train-teacher", "--config=" + os.path.join(repo_root, "configs", "cifar10_resnet56_resnet20_quick.json"),
            "--run_dir=" + os.path.join(output_dir, "run")]
with contextlib.redirect_stderr(stderr):
    try:
        cli.run()
        results["cli_exit"] = 0
    except SystemExit as exit:
        results["cli_exit"] = exit.code
results["cli_stderr"] = stderr.getvalue()

sys.argv = ["throughput.py", "--pairs=resnet8:resnet8_narrow", "--modes=mixed_bfloat16", "--methods=hksan",
            "--batch_sizes=8", "--warmup_steps=1", "--steps=1", "--repeats=1",
            "--output=" + os.path.join(output_dir, "throughput")]
runpy.run_path(os.path.join(repo_root, "benchmarks", "throughput.py"), run_name="__main__")

results["tensorflow_imported"] = "tensorflow" in sys.modules
with open(os.path.join(output_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
