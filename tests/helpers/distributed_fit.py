"""Fits small distillers under MirroredStrategy on N logical CPU devices.

Run by test_distributed.py in a fresh process (devices must be configured
before TensorFlow starts), several cases in one process so that TensorFlow
starts once per device count:

    python distributed_fit.py N OUTPUT_DIR CASE [CASE ...]

Each CASE writes OUTPUT_DIR/CASE.npz, or CASE.err with the traceback where it
raised. A CASE is

- METHOD-IMAGES: a plain CNN (no batch normalisation) distilled by METHOD
  (a method's name, or "kd_clipped": KD with global_clipnorm=0.05) on
  IMAGES images in global batches of 16: 33 ends with a batch of 1 (one
  replica of two gets nothing), 35 with a batch of 3 (split 2 + 1);
- empty_replica-METHOD: zoo ResNets (batch normalisation) on 33 images, so
  that one replica of the last batch gets none; records what stayed finite.

Every case sets the random seed before it builds its models: its result does
not depend on the cases run before it in the process.
"""

import sys
import traceback

import tensorflow as tf

num_devices, output_dir, cases = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import hksan_keras  # noqa: E402
from distributed_fit_models import plain_cnn  # noqa: E402


strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(num_devices)])


def plain_cnn_case(method, num_images):
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
        elif method in ("crd", "crd_frozen"):
            # Its batches carry each example's index (the memory bank's row).
            # crd_frozen: no step moves the networks, so the memories that
            # the embeddings fill do not depend on the negatives drawn (each
            # replica draws its own) and can be compared with one device's.
            dataset = tf.data.Dataset.from_tensor_slices(
                ({"images": images, "index": np.arange(num_images)}, labels)).batch(16)
            distiller = hksan_keras.distillers.get("crd")(teacher, student, num_examples=num_images,
                                                          num_negatives=16)
            distiller.compile(optimizer=keras.optimizers.SGD(0.0 if method == "crd_frozen" else 0.05))
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
    if method in ("crd", "crd_frozen"):
        # Every replica applied every replica's updates: the copies are equal.
        copies = [np.array(v) for v in strategy.experimental_local_results(distiller.student_memory.value)]
        memory["memory_copies_equal"] = all(np.array_equal(copies[0], c) for c in copies)
        memory["memory_copies"] = len(copies)
        for name in ("student_memory", "teacher_memory", "memory_classes", "normalizers"):
            memory[f"memory_{name}"] = np.array(strategy.experimental_local_results(
                getattr(distiller, name).value)[0])
    return {
        "replicas": strategy.num_replicas_in_sync,
        **memory,
        **{f"history_{k}": np.array(v) for k, v in history.items()},
        **{f"evaluate_{k}": np.array(v) for k, v in evaluation.items()},
        **{f"student_{i}": np.array(w) for i, w in enumerate(student.get_weights())},
        **({f"discriminator_{i}": np.array(w) for i, w in enumerate(distiller.discriminator.get_weights())}
           if hasattr(distiller, "discriminator") else {}),
    }


def empty_replica_case(method):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(33, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(33,))
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)  # 16, 16, 1
    with strategy.scope():
        keras.utils.set_random_seed(0)
        models = [hksan_keras.models.cifar_resnet(8, num_classes=10, stem_width=4, stage_widths=(4, 8, 12),
                                                  input_shape=(16, 16, 3), name=name) for name in ("t", "s")]
        distiller = hksan_keras.distillers.get(method)(*models)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05), **(
            {"d_optimizer": keras.optimizers.Adam(1e-4)} if hasattr(distiller, "discriminator") else {}))
    history = distiller.fit(dataset, epochs=1, verbose=0).history
    evaluation = distiller.evaluate(dataset, verbose=0, return_dict=True)
    # Each replica keeps its own copy of the batch-norm statistics: read them all.
    copies = [np.asarray(copy) for w in models[1].weights
              for copy in strategy.experimental_local_results(w.value)]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "history_finite": all(np.isfinite(v[-1]) for v in history.values()),
        "evaluate_finite": all(np.isfinite(v) for v in evaluation.values()),
        "student_copies_finite": all(np.all(np.isfinite(c)) for c in copies),
        "copies": len(copies),
    }


for case in cases:
    kind, argument = case.rsplit("-", 1)
    try:
        result = empty_replica_case(argument) if kind == "empty_replica" else plain_cnn_case(kind, int(argument))
    except Exception:  # noqa: BLE001 - reported by the case's test; the other cases still run
        with open(f"{output_dir}/{case}.err", "w") as f:
            f.write(traceback.format_exc())
        continue
    np.savez(f"{output_dir}/{case}.npz", **result)
