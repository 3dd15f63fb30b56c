"""Fits a small distiller under MirroredStrategy on N logical CPU devices.

Run by test_distributed.py in a fresh process (devices must be configured
before TensorFlow starts):  python distributed_fit.py N OUTPUT.npz [METHOD [IMAGES]]

METHOD: a method's name, or "kd_clipped" (KD with global_clipnorm=0.05).

IMAGES (default 64) images in global batches of 16: 33 ends with a batch of
1 (one replica of two gets nothing), 35 with a batch of 3 (split 2 + 1).
"""

import sys

import tensorflow as tf

num_devices, output_path = int(sys.argv[1]), sys.argv[2]
method = sys.argv[3] if len(sys.argv) > 3 else "hksan"
num_images = int(sys.argv[4]) if len(sys.argv) > 4 else 64
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import hksan_keras  # noqa: E402
from distributed_fit_models import plain_cnn  # noqa: E402


strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_devices)])
rng = np.random.default_rng(0)
images = rng.normal(size=(num_images, 8, 8, 3)).astype("float32")
labels = rng.integers(0, 5, size=(num_images,))
dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)

with strategy.scope():
    keras.utils.set_random_seed(0)
    teacher = plain_cnn((8, 16), "teacher")
    # FSP compares flow matrices entry by entry: the teacher's widths.
    student = plain_cnn((8, 16) if method == "fsp" else (4, 8), "student")
    if method == "hksan":
        distiller = hksan_keras.HKSANDistiller(
            teacher, student, discriminator_steps=2, descriptor_units=8,
            logit_weight=1.0,  # replica invariance at a small step: float noise stays small
            discriminator={"units": (16,), "perturbation_rate": 0.0},
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.05), d_optimizer=keras.optimizers.SGD(0.05))
    elif method == "kd_clipped":
        # A norm every step exceeds: clipping acts on every update.
        distiller = hksan_keras.distillers.get("kd")(teacher, student, global_clipnorm=0.05)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    elif method == "crd":
        # Its batches carry each example's index (the memory bank's row).
        dataset = tf.data.Dataset.from_tensor_slices(
            ({"images": images, "index": np.arange(num_images)}, labels)).batch(16)
        distiller = hksan_keras.distillers.get(method)(teacher, student, num_examples=num_images, num_negatives=16)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    elif method == "fsp":
        # Two steps of the FSP stage, then the labels.
        distiller = hksan_keras.distillers.get(method)(teacher, student, init_steps=2)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    else:
        distiller = hksan_keras.distillers.get(method)(teacher, student)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
history = distiller.fit(dataset, epochs=2, verbose=0).history
evaluation = distiller.evaluate(dataset, verbose=0, return_dict=True)
memory = {}
if method == "crd":
    # Every replica applied every replica's updates: the copies are equal.
    copies = [np.array(v) for v in strategy.experimental_local_results(distiller.student_memory.value)]
    memory["memory_copies_equal"] = all(np.array_equal(copies[0], c) for c in copies)
    memory["memory_copies"] = len(copies)
np.savez(
    output_path,
    replicas=strategy.num_replicas_in_sync,
    **memory,
    **{f"history_{k}": np.array(v) for k, v in history.items()},
    **{f"evaluate_{k}": np.array(v) for k, v in evaluation.items()},
    **{f"student_{i}": np.array(w) for i, w in enumerate(student.get_weights())},
    **({f"discriminator_{i}": np.array(w) for i, w in enumerate(distiller.discriminator.get_weights())}
       if hasattr(distiller, "discriminator") else {}),
)
