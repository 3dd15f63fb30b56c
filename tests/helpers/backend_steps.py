"""A few training steps of every distiller on one Keras backend, from given weights.

Run by test_jax.py in a fresh process (the backend is chosen at import):

    KERAS_BACKEND=tensorflow python backend_steps.py OUTPUT.npz [--methods=a,b] [--devices=N]
    KERAS_BACKEND=jax python backend_steps.py OUTPUT.npz --init=INIT.npz [--devices=N]

Without --init, each distiller keeps the weights it was built with, and
OUTPUT.npz holds them as "<method>/init/<i>"; with --init it starts from
those. Either way OUTPUT.npz holds the weights after 8 steps (32 images,
batches of 8, 2 epochs; SGD with momentum; the discriminators' Adam) as
"<method>/final/<i>", the discriminator optimizer's variables as
"<method>/d_optimizer/<i>", the last epoch's logs as "<method>/logs/<name>"
and (kd, hksan, crd) `evaluate`'s as "<method>/evaluate/<name>".

Besides the methods of METHODS: "kd_clipped" (KD with global_clipnorm=0.05,
which clips every step) and "hksan_perturbed" (HKSAN with its default
perturbation dropout, whose masks differ by backend). On JAX, "student"
reads its batches from a tf.data.Dataset, the others from numpy arrays.

The random parts are fixed so that both backends draw the same: the
discriminator's perturbation dropout is off, and CRD's negatives are the
next K examples of other classes rather than a random draw (TensorFlow and
JAX have different random number generators).

--devices=N (JAX): N host devices (XLA_FLAGS) and
keras.distribution.DataParallel over them. --policy=NAME sets Keras's global dtype policy
(mixed_bfloat16, mixed_float16). --student_dir=DIR saves each student as DIR/<method>.keras,
and its predictions on the images as "<method>/predictions".
"""

import os
import sys

args = dict(a.removeprefix("--").split("=", 1) for a in sys.argv[2:])
output_path = sys.argv[1]
devices = int(args.get("devices", 1))
if devices > 1:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import hksan_keras  # noqa: E402
from hksan_keras.distillers import METHODS  # noqa: E402
from hksan_keras.distillers.crd import CRDDistiller  # noqa: E402

if devices > 1:
    keras.distribution.set_distribution(keras.distribution.DataParallel())
if "policy" in args:
    keras.mixed_precision.set_global_policy(args["policy"])

NUM_EXAMPLES = 32


def fixed_negatives(self, index, classes):
    # The next examples (cyclically) whose class differs from the anchor's.
    offsets = ops.arange(1, NUM_EXAMPLES, dtype="int32")
    candidates = (ops.cast(index, "int32")[:, None] + offsets[None, :]) % NUM_EXAMPLES
    other = ops.take(self.memory_classes, candidates) != ops.cast(classes, "float32")[:, None]
    keys = ops.cast(other, "float32") * 1000.0 - ops.cast(offsets, "float32")[None, :]
    _, positions = ops.top_k(keys, self.num_negatives)
    return ops.take_along_axis(candidates, positions, axis=1)


CRDDistiller._negatives = fixed_negatives


def tiny_resnet(widths, seed, name):
    keras.utils.set_random_seed(seed)
    return hksan_keras.models.cifar_resnet(8, num_classes=10, stem_width=widths[0], stage_widths=widths,
                                           input_shape=(16, 16, 3), name=name)


def build(method):
    variant = {"kd_clipped": ("kd", {"global_clipnorm": 0.05}), "hksan_perturbed": ("hksan", {})}
    method, extra = variant.get(method, (method, None))
    teacher = tiny_resnet((8, 16, 24), 1, "teacher")
    student = tiny_resnet((8, 16, 24) if method == "fsp" else (4, 8, 12), 2, "student")
    kwargs = {"fsp": {"init_steps": 2}, "crd": {"num_examples": NUM_EXAMPLES, "num_negatives": 8}}.get(method, {})
    if method in ("hksan", "anc", "xu") and extra is None:
        kwargs["discriminator"] = {"perturbation_rate": 0.0}
    kwargs.update(extra or {})
    distiller = METHODS[method](teacher, student, **kwargs)
    compile_kwargs = {"d_optimizer": keras.optimizers.Adam(1e-3, beta_1=0.5, epsilon=1e-3)} if method in ("hksan", "anc", "xu") else {}
    # A small learning rate keeps the 8 steps where rounding differences stay
    # rounding-sized. At 0.05 (measured 2026-12-01) DIST's steps (its two
    # Pearson terms weighted T^2 * 2 = 32 each) amplified them step over
    # step: 0.2 % of a weight's update after 4 steps, 13 % after 8 (FSP
    # 2.5 %). At 0.01 no weight of any method differs by more than 0.04 % of
    # its update (test_jax.py).
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), **compile_kwargs)
    return distiller


rng = np.random.default_rng(0)
images = rng.normal(size=(NUM_EXAMPLES, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 10, size=(NUM_EXAMPLES,))
init = np.load(args["init"]) if "init" in args else None
methods = args["methods"].split(",") if "methods" in args else [*METHODS, "kd_clipped", "hksan_perturbed"]
saved = {}
for method in methods:
    distiller = build(method)
    if init is not None:
        distiller.set_weights([init[f"{method}/init/{i}"] for i in range(len(distiller.weights))])
    else:
        saved.update({f"{method}/init/{i}": np.asarray(w) for i, w in enumerate(distiller.get_weights())})
    x = {"images": images, "index": np.arange(NUM_EXAMPLES)} if method == "crd" else images
    if method == "student" and keras.backend.backend() == "jax" and "init" in args:
        # The same batches from a tf.data pipeline, which Keras's JAX trainer reads as numpy.
        import tensorflow as tf

        history = distiller.fit(tf.data.Dataset.from_tensor_slices((x, labels)).batch(8), epochs=2, verbose=0)
    else:
        history = distiller.fit(x, labels, batch_size=8, epochs=2, shuffle=False, verbose=0)
    saved.update({f"{method}/final/{i}": np.asarray(w) for i, w in enumerate(distiller.get_weights())})
    saved.update({f"{method}/logs/{name}": np.float32(values[-1]) for name, values in history.history.items()})
    if method in ("kd", "hksan", "crd"):
        # One test step is every method's; CRD's batches carry indices.
        scores = distiller.evaluate(x, labels, batch_size=8, verbose=0, return_dict=True)
        saved.update({f"{method}/evaluate/{name}": np.float32(value) for name, value in scores.items()})
    if getattr(distiller, "d_optimizer", None) is not None:
        saved.update({f"{method}/d_optimizer/{i}": np.asarray(v) for i, v in enumerate(distiller.d_optimizer.variables)})
    if "student_dir" in args:
        distiller.student.save(os.path.join(args["student_dir"], f"{method}.keras"))
        saved[f"{method}/predictions"] = np.asarray(distiller.student.predict(images, verbose=0))
    if keras.backend.backend() == "jax":
        # The devices that hold the student's weights after training.
        saved[f"{method}/devices"] = len(distiller.student.weights[0].value.sharding.device_set)
    print(method, "done", flush=True)
np.savez(output_path, **saved)
