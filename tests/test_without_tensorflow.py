"""hksan_keras on JAX without TensorFlow: training, saving, the benchmark, and one-line errors.

tests/helpers/without_tensorflow.py blocks the imports of TensorFlow and
TFDS (an import hook, standing in for an environment where they are not
installed) and runs on the JAX backend.
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


def test_without_tensorflow_the_distillers_train_on_jax_and_the_rest_says_what_it_needs(tmp_path):
    # An import hook stands in for an environment without TensorFlow and TFDS.
    helper = REPO_ROOT / "tests" / "helpers" / "without_tensorflow.py"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    done = subprocess.run([sys.executable, str(helper), str(tmp_path)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["tensorflow_imported"] is False
    for name in ("kd_arrays", "hksan_pydataset"):
        assert all(np.isfinite(results[name]["loss"])), name
        assert 0.0 <= results[name]["evaluate"]["accuracy"] <= 1.0
        assert results[name]["reloaded_max_difference"] < 1e-3
    # HKSAN trained under mixed_float16, both optimizers loss-scaled.
    assert results["hksan_pydataset"]["loss_scaled"] == [True, True]
    # CRD's sampling and memory bank on JAX: every class stored through
    # its index, every negative of another class.
    assert all(np.isfinite(results["crd"]["loss"]))
    assert results["crd"] == {**results["crd"], "classes_stored": True, "negatives_shape": [8, 16],
                              "negatives_of_other_classes": True}
    assert results["data_error"].startswith("hksan_keras.data needs tensorflow, which cannot be imported")
    assert "pip install tensorflow" in results["data_error"]

    # The command line says so in one line.
    assert results["cli_exit"] == 2
    assert results["cli_stderr"].strip().splitlines()[-1].startswith("hksan-keras train-teacher: error: ")
    assert "needs tensorflow" in results["cli_stderr"]

    # The throughput benchmark ran there too (as on a GPU machine with JAX only).
    rows = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    assert [(row["method"], row["mode"]) for row in rows] == [("hksan", "mixed_bfloat16")]
    assert rows[0]["images_per_second"] > 0
