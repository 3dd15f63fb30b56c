"""One device or two replicas under MirroredStrategy: the same model and the same reports."""

import os
import subprocess
import sys

import numpy as np

from conftest import REPO_ROOT


def _run(num_devices, tmp_path, method="hksan"):
    output = tmp_path / f"{method}_replicas_{num_devices}.npz"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "distributed_fit.py"), str(num_devices), str(output), method],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(output))


def test_two_replicas_train_the_same_model_as_one_device(tmp_path):
    single = _run(1, tmp_path)
    mirrored = _run(2, tmp_path)
    assert int(single["replicas"]) == 1 and int(mirrored["replicas"]) == 2
    reported = [k for k in single if k.startswith(("history_", "evaluate_"))]
    assert "history_squeeze_loss" in reported and "evaluate_accuracy" in reported
    for key in reported:
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    weights = [k for k in single if k.startswith(("student_", "discriminator_"))]
    assert len(weights) > 4
    for key in weights:
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=1e-5, err_msg=key)


def test_kd_reports_do_not_depend_on_the_replica_count(tmp_path):
    # keras.distillation.Distiller (Keras 3.15.1) reports its losses divided
    # by the replica count under MirroredStrategy; ours must not.
    single = _run(1, tmp_path, "kd")
    mirrored = _run(2, tmp_path, "kd")
    reported = [k for k in single if k.startswith(("history_", "evaluate_"))]
    assert "history_kd_loss" in reported and "history_loss" in reported
    for key in reported:
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in (k for k in single if k.startswith("student_")):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=1e-5, err_msg=key)
