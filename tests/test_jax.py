"""The distillers on the JAX backend: the same steps as on TensorFlow, and data parallel.

Each backend runs in its own process (Keras picks its backend at import):
tests/helpers/backend_steps.py trains every distiller 8 steps from the
same weights on the same batches (the random parts fixed, see there).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

pytest.importorskip("jax")
pytestmark = pytest.mark.full

HELPER = REPO_ROOT / "tests" / "helpers" / "backend_steps.py"


def run_steps(backend, output, *flags):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           # XLA's optimisation passes take most of the compile time of these
           # tiny steps and change only the order of float operations.
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    done = subprocess.run([sys.executable, str(HELPER), str(output), *flags], cwd=HELPER.parent, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(output)


def assert_same_steps(reference, other, methods, tolerance):
    """Each weight of `other` equals `reference`: the L2 norm of their difference
    is within atol * sqrt(size) + rtol * the L2 norm of the weight's update.

    The same for the discriminator optimizer's variables (rtol times their
    own norm), and the last epoch's loss and `evaluate`'s within 1e-4.
    """
    atol, rtol = tolerance

    def close(got, expected, scale, what):
        difference = np.linalg.norm(got - expected)
        assert difference <= atol * np.sqrt(expected.size) + rtol * scale, (
            f"{what}: |difference| {difference:.3g}, scale {scale:.3g}")

    for method in methods:
        for key in [k for k in reference.files if k.startswith(f"{method}/d_optimizer/")]:
            expected = reference[key].astype("float64")
            close(other[key].astype("float64"), expected, np.linalg.norm(expected), key)
        count = len([k for k in reference.files if k.startswith(f"{method}/final/")])
        moved = 0
        for i in range(count):
            start = reference[f"{method}/init/{i}"].astype("float64")
            expected = reference[f"{method}/final/{i}"].astype("float64")
            update = np.linalg.norm(expected - start)
            moved += update > 0
            close(other[f"{method}/final/{i}"].astype("float64"), expected, update,
                  f"{method}: weight {i} of shape {expected.shape}")
        assert moved > 0, method
        for key in (f"{method}/logs/loss", f"{method}/evaluate/loss"):
            if key in reference:
                np.testing.assert_allclose(other[key], reference[key], rtol=1e-4, err_msg=key)


@pytest.fixture(scope="module")
def tensorflow_steps(tmp_path_factory):
    """(path, contents) of every distiller's 8 steps on TensorFlow, and their initial weights."""
    path = tmp_path_factory.mktemp("tensorflow") / "steps.npz"
    return path, run_steps("tensorflow", path)


def test_every_distiller_takes_the_same_steps_on_jax_as_on_tensorflow(tensorflow_steps, tmp_path):
    from hksan_keras.distillers import METHODS

    init, tensorflow_steps = tensorflow_steps
    jax_steps = run_steps("jax", tmp_path / "jax.npz", f"--init={init}", f"--student_dir={tmp_path}")
    methods = sorted({k.split("/")[0] for k in jax_steps.files})
    assert methods == sorted([*METHODS, "kd_clipped", "hksan_perturbed"])
    # HKSAN's perturbation masks are each backend's own random numbers:
    # it trains, without a reference.
    methods.remove("hksan_perturbed")
    assert np.isfinite(jax_steps["hksan_perturbed/logs/loss"])
    assert jax_steps["hksan_perturbed/logs/gradient_norm"] > 0
    # Measured (2026-12-01, the helper's learning rate 0.01): every weight
    # that moved by more than 1e-4 within 0.04 % of its own 8-step update
    # (VID comes closest; L2 norms), so the 1 % leaves a 25-fold margin for
    # other CPUs' rounding. A weight whose gradient is 0 in exact arithmetic
    # (a bias in front of a batch normalisation) moves by float noise only,
    # within the 1e-5 (root mean square over its entries).
    assert_same_steps(tensorflow_steps, jax_steps, methods, (1e-5, 1e-2))
    # The clipped KD's gradient norm, its mean over the last epoch's steps
    # (3.35 measured), is far above its clip norm (0.05) on both backends:
    # the steps compared are clipped ones.
    for steps in (tensorflow_steps, jax_steps):
        assert steps["kd_clipped/logs/gradient_norm"] > 1.0

    # A student trained on JAX loads on TensorFlow (this process) and
    # predicts the same; from there it exports.
    import keras

    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 16, 16, 3)).astype("float32")
    for method in ("hksan", "crd"):
        student = keras.saving.load_model(tmp_path / f"{method}.keras")
        np.testing.assert_allclose(student.predict(images, verbose=0), jax_steps[f"{method}/predictions"],
                                   atol=1e-5)


def test_data_parallel_on_two_devices_takes_the_same_steps_as_one(tensorflow_steps, tmp_path):
    # keras.distribution.DataParallel over 2 host devices: the global batch
    # of 8 split 4 + 4; BatchNorm's statistics are those of the global
    # batch under jit, as on one device.
    init, tensorflow_steps = tensorflow_steps
    methods = ["hksan"]
    parallel = run_steps("jax", tmp_path / "parallel.npz", f"--init={init}", "--devices=2",
                         f"--methods={','.join(methods)}")
    for method in methods:
        assert parallel[f"{method}/devices"] == 2
    assert_same_steps(tensorflow_steps, parallel, methods, (1e-5, 1e-2))


