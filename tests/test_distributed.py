"""One device or two replicas under MirroredStrategy: the same model and the same reports."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

# The full tier only (MirroredStrategy and multi-worker runs in subprocesses).
pytestmark = pytest.mark.full


HELPERS = REPO_ROOT / "tests" / "helpers"

# The cases of tests/helpers/distributed_fit.py, grouped by the processes
# that run them: TensorFlow starts once per device count and oneDNN setting
# (its start took about as long as a case's few steps). One test run alone
# (-k) still runs its whole group.
# TensorFlow's oneDNN CPU convolution fails on an empty batch ("input depth
# must be evenly divisible by filter depth"); its reference kernels (and
# GPUs) run it, so the cases where a replica gets no example run without
# oneDNN.
_EVEN = ["hksan-64", "kd-64", "kd_clipped-64", "kd_clipped-35", "kd-35", "hksan-35", "vid-35", "fsp-35",
         "kd+ls-35", "dkd+ls-35", "crd_frozen-35"]
_EMPTY = ["kd-33", "hksan-33"]
GROUPS = {
    (1, True): _EVEN,
    (2, True): _EVEN + ["crd-35", "dist-64", "reviewkd-64"],
    (1, False): _EMPTY,
    (2, False): _EMPTY + ["empty_replica-kd", "empty_replica-hksan"],
}


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """fits(num_devices, case) -> the case's arrays; runs the case's whole group once."""
    done = {}

    def get(num_devices, case):
        group = next((g for g in GROUPS if g[0] == num_devices and case in GROUPS[g]), None)
        assert group, f"add {case!r} to GROUPS for {num_devices} device(s)"
        onednn = group[1]
        if group not in done:  # once, failed or not
            output = tmp_path_factory.mktemp(f"replicas_{num_devices}_onednn_{int(onednn)}")
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **({} if onednn else {"TF_ENABLE_ONEDNN_OPTS": "0"})}
            try:
                process = subprocess.run(
                    [sys.executable, str(HELPERS / "distributed_fit.py"), str(num_devices), str(output),
                     *GROUPS[group]], capture_output=True, text=True, timeout=1200, env=env, cwd=HELPERS)
                done[group] = output, process.stderr
            except subprocess.TimeoutExpired as timeout:
                done[group] = output, f"{timeout}; its stderr: {timeout.stderr}"
        output, stderr = done[group]
        if (output / f"{case}.err").exists():
            pytest.fail(f"{case} on {num_devices} device(s) raised:\n{(output / f'{case}.err').read_text()[-3000:]}")
        assert (output / f"{case}.npz").exists(), str(stderr)[-3000:]
        return dict(np.load(output / f"{case}.npz"))

    return get


def test_two_replicas_train_the_same_model_as_one_device(fits):
    single = fits(1, "hksan-64")
    mirrored = fits(2, "hksan-64")
    assert int(single["replicas"]) == 1 and int(mirrored["replicas"]) == 2
    reported = [k for k in single if k.startswith(("history_", "evaluate_"))]
    assert "history_squeeze_loss" in reported and "evaluate_accuracy" in reported
    for key in reported:
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    weights = [k for k in single if k.startswith(("student_", "discriminator_"))]
    assert len(weights) > 4
    for key in weights:
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=1e-5, err_msg=key)


def test_kd_reports_do_not_depend_on_the_replica_count(fits):
    # keras.distillation.Distiller (Keras 3.15.1) reports its losses divided
    # by the replica count under MirroredStrategy; ours must not.
    single = fits(1, "kd-64")
    mirrored = fits(2, "kd-64")
    reported = [k for k in single if k.startswith(("history_", "evaluate_"))]
    assert "history_kd_loss" in reported and "history_loss" in reported
    for key in reported:
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in (k for k in single if k.startswith("student_")):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("num_images", [64, 35])
def test_gradient_clipping_measures_the_whole_update_under_a_strategy(fits, num_images):
    # Keras's own optimizer clips each replica's part of the gradient; the
    # distillers clip the sum, so two replicas train what one device does.
    single = fits(1, f"kd_clipped-{num_images}")
    mirrored = fits(2, f"kd_clipped-{num_images}")
    assert np.all(single["history_gradient_norm"] > 0.05)  # clipping acted
    for key in (k for k in single if k.startswith(("history_", "evaluate_"))):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in (k for k in single if k.startswith("student_")):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("method", ["kd", "hksan"])
@pytest.mark.parametrize("num_images", [33, 35])
def test_uneven_last_batches_train_the_same_model_as_one_device(fits, method, num_images):
    # 33 images in batches of 16 end with 1 image (one replica gets none);
    # 35 end with 3 (split 2 + 1): every example must weigh the same.
    single = fits(1, f"{method}-{num_images}")
    mirrored = fits(2, f"{method}-{num_images}")
    reported = [k for k in single if k.startswith(("history_", "evaluate_"))]
    for key in reported:
        assert np.all(np.isfinite(mirrored[key])), key
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in (k for k in single if k.startswith(("student_", "discriminator_"))):
        # The discriminator's entries differ by float noise of up to 2.5e-5
        # with 33 images on TensorFlow's reference CPU kernels (measured
        # 2026-12-01; an entry of 2.7e-3 is then 0.9 % off): 5e-5 for them.
        atol = 5e-5 if key.startswith("discriminator_") else 1e-5
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=atol, err_msg=key)


@pytest.mark.parametrize("method, term", [("vid", "vid_loss"), ("fsp", "fsp_loss"), ("kd+ls", "kd_loss"),
                                          ("dkd+ls", "dkd_loss")])
def test_newer_methods_train_the_same_model_on_two_replicas_as_on_one_device(fits, method, term):
    # VID's regressors and variances are replicated like the student; FSP's
    # switch from its FSP stage to the labels follows the step count; the
    # logit standardisation is per example (a 2 + 1 split changes nothing).
    single = fits(1, f"{method}-35")
    mirrored = fits(2, f"{method}-35")
    assert f"history_{term}" in single
    for key in (k for k in single if k.startswith(("history_", "evaluate_", "student_"))):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-3, atol=1e-5, err_msg=key)


def test_crd_keeps_the_copies_of_its_memory_bank_equal_on_two_replicas(fits):
    # 35 images in batches of 16: the last global batch of 3 is split 2 + 1.
    mirrored = fits(2, "crd-35")
    assert int(mirrored["memory_copies"]) == 2 and bool(mirrored["memory_copies_equal"])
    for key in (k for k in mirrored if k.startswith(("history_", "evaluate_", "student_"))):
        assert np.all(np.isfinite(mirrored[key])), key


def test_crd_fills_its_memory_banks_on_two_replicas_as_on_one_device(fits):
    # Networks held still (learning rate 0): two epochs of 35 images in
    # batches of 16, the last split 2 + 1, write every row of both banks
    # and each example's class exactly as one device does. (Z, set at the
    # first batch, averages scores of randomly drawn negatives: each
    # replica draws its own, so it is not one device's value.)
    single = fits(1, "crd_frozen-35")
    mirrored = fits(2, "crd_frozen-35")
    assert bool(mirrored["memory_copies_equal"])
    np.testing.assert_array_equal(mirrored["memory_memory_classes"], single["memory_memory_classes"])
    assert np.all(single["memory_memory_classes"] >= 0)  # every example seen
    for name in ("student_memory", "teacher_memory"):
        np.testing.assert_allclose(mirrored[f"memory_{name}"], single[f"memory_{name}"], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert np.all(mirrored["memory_normalizers"] > 0)


@pytest.mark.parametrize("method, term", [("dist", "intra_class_loss"), ("reviewkd", "review_loss")])
def test_batch_statistic_methods_train_on_two_replicas(fits, method, term):
    # DIST's intra-class term and the batch normalisation of ReviewKD's
    # fusion modules are statistics of each replica's own examples, so the
    # weights are not those of one device; the training must still run and
    # stay finite.
    mirrored = fits(2, f"{method}-64")
    assert int(mirrored["replicas"]) == 2 and f"history_{term}" in mirrored
    for key in (k for k in mirrored if k.startswith(("history_", "evaluate_", "student_"))):
        assert np.all(np.isfinite(mirrored[key])), key
    assert mirrored["history_loss"][-1] < mirrored["history_loss"][0]


@pytest.mark.parametrize("method", ["kd", "hksan"])
def test_a_replica_without_examples_leaves_batch_norm_students_finite(fits, method):
    # Batch normalisation of an empty batch has NaN statistics and NaN
    # gradients; the replica that gets no example must change nothing.
    report = fits(2, f"empty_replica-{method}")
    assert int(report["replicas"]) == 2 and int(report["copies"]) > 10
    for key in ("history_finite", "evaluate_finite", "student_copies_finite"):
        assert bool(report[key]), key


def test_each_replica_draws_its_own_perturbation_mask():
    result = subprocess.run(
        [sys.executable, str(HELPERS / "replica_masks.py")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=HELPERS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[words.index("replicas") + 1] == "2"
    assert words[words.index("differ") + 1] == "1"
    assert 0.3 < float(words[words.index("kept_fraction") + 1]) < 0.7


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_workers_train_the_same_model_as_one_process_and_only_the_chief_writes(tmp_path):
    script = str(HELPERS / "multi_worker_fit.py")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    single = subprocess.run([sys.executable, script, str(tmp_path / "single.npz"), str(tmp_path / "single_run")],
                            capture_output=True, text=True, timeout=300, env=env, cwd=HELPERS)
    assert single.returncode == 0, single.stderr[-3000:]

    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    run_dir = tmp_path / "run"
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, script, str(tmp_path / f"worker{index}.npz"), str(run_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HELPERS,
            env={**env, "TF_CONFIG": json.dumps(tf_config)}))
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]

    results = [dict(np.load(tmp_path / f"worker{i}.npz")) for i in range(2)]
    reference = dict(np.load(tmp_path / "single.npz"))
    assert [int(r["replicas"]) for r in results] == [2, 2] and int(reference["replicas"]) == 1
    assert [bool(r["chief"]) for r in results] == [True, False]
    keys = [k for k in reference if k.startswith("student_")]
    assert len(keys) > 4
    for key in keys:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)
        np.testing.assert_allclose(results[0][key], reference[key], rtol=1e-3, atol=1e-5, err_msg=key)
    # One writer: one metrics line per epoch, the chief's model, nothing else.
    lines = (run_dir / "distill" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert sorted(p.name for p in (run_dir / "distill").iterdir()) == ["last_student.keras", "metrics.jsonl"]

