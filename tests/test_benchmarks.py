"""The accuracy benchmark runs a protocol end to end (tiny budget) and summarises it."""

import json
import os
import shutil
import statistics
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# The full tier only (runs the benchmark scripts on real CIFAR-10).
pytestmark = pytest.mark.full


TINY = ["--set=data.train_size=128", "--set=data.test_size=128", "--set=teacher.epochs=1",
        "--set=distill.epochs=2", "--set=teacher.lr_milestones=[]", "--set=distill.lr_milestones=[]"]


def _bench(tmp_path, data_dir, *args, check=True):
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "accuracy.py"), "--protocol=cpu-small",
               f"--data_dir={data_dir}", f"--runs_dir={tmp_path / 'runs'}",
               f"--results_dir={tmp_path / 'results'}", f"--teachers_dir={tmp_path / 'teachers'}", *TINY, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_protocol_writes_runs_table_and_plot_and_reuses_finished_runs(cifar_data_dir, tmp_path):
    out = _bench(tmp_path, cifar_data_dir, "--variants=student,kd", "--seeds=0,1")
    assert out.stdout.count("== ") == 4
    results = json.loads((tmp_path / "results" / "cpu-small.json").read_text())
    config = results["configs"]["cifar10_resnet20_resnet8_narrow_cpu_small"]
    assert set(config["runs"]) == {"student", "kd"} and results["seeds"] == [0, 1]
    for variant, runs in config["runs"].items():
        assert [r["seed"] for r in runs] == [0, 1]
        for run in runs:
            assert len(run["accuracy_per_epoch"]) == 2
            assert run["best_epoch_accuracy"] == max(run["accuracy_per_epoch"])
            assert run["last_epoch_accuracy"] == run["accuracy_per_epoch"][-1]
        best = [100 * r["best_epoch_accuracy"] for r in runs]
        summary = config["summary"][variant]["best_epoch"]
        assert summary["mean"] == pytest.approx(statistics.mean(best))
        assert summary["std"] == pytest.approx(statistics.stdev(best))
    table = (tmp_path / "results" / "cpu-small.md").read_text()
    assert "| kd | 2 |" in table and "best epoch" in table
    assert (tmp_path / "results" / "cpu-small.png").stat().st_size > 10_000

    # A rerun trains nothing again: teacher and runs are read back.
    again = _bench(tmp_path, cifar_data_dir, "--variants=student,kd", "--seeds=0,1")
    assert "== " not in again.stdout and "teacher epoch" not in again.stdout

    # Without the run directory (a new checkout), the kept teacher is loaded
    # and every row comes back from the results file: nothing trains.
    kept = next((tmp_path / "teachers" / "cpu-small").glob("*.json"))
    record = json.loads(kept.read_text())
    assert record["weights_sha256"] == config["teacher"]["weights_sha256"]
    assert record["last_epoch_test_accuracy"] == config["teacher"]["last_epoch_accuracy"]
    shutil.rmtree(tmp_path / "runs")
    # --read_only summarises from the kept record and the results file alone.
    summary = _bench(tmp_path, cifar_data_dir, "--variants=student,kd", "--seeds=0,1", "--read_only")
    assert "| kd | 2 |" in summary.stdout and not (tmp_path / "runs").exists()
    moved = _bench(tmp_path, cifar_data_dir, "--variants=student,kd", "--seeds=0,1")
    assert "loading the kept" in moved.stdout and "== cifar10" not in moved.stdout
    results_file = tmp_path / "results" / "cpu-small.json"
    carried = json.loads(results_file.read_text())
    assert carried["configs"]["cifar10_resnet20_resnet8_narrow_cpu_small"]["runs"] == config["runs"]

    # A row of other settings (here: its SHA-256 altered) is trained again,
    # alone; the rows of variants and seeds not run stay in the file.
    carried["configs"]["cifar10_resnet20_resnet8_narrow_cpu_small"]["runs"]["kd"][1]["run_sha256"] = "0" * 64
    results_file.write_text(json.dumps(carried))
    one = _bench(tmp_path, cifar_data_dir, "--variants=kd", "--seeds=1")
    assert one.stdout.count("== cifar10") == 1 and "kd seed 1" in one.stdout
    runs = json.loads(results_file.read_text())["configs"]["cifar10_resnet20_resnet8_narrow_cpu_small"]["runs"]
    assert runs["student"] == config["runs"]["student"] and runs["kd"][0] == config["runs"]["kd"][0]
    assert runs["kd"][1]["run_sha256"] == config["runs"]["kd"][1]["run_sha256"]

    # A kept teacher that is not the run directory's is refused, by name.
    kept.write_text(json.dumps(dict(record, weights_sha256="0" * 64)))
    refused = _bench(tmp_path, cifar_data_dir, "--variants=student", "--seeds=0", check=False)
    assert refused.returncode != 0 and "is not the one kept in" in refused.stderr


def test_throughput_benchmark_measures_every_method_and_writes_ratios(tmp_path):
    output = tmp_path / "throughput"
    command = [sys.executable, os.path.join("benchmarks", "throughput.py"),
               "--pairs=resnet8:resnet8_narrow", "--modes=float32",
               "--methods=student,keras_kd,kd,hksan,hksan_no_adversarial",
               "--batch_sizes=8", "--warmup_steps=1", "--steps=1", "--repeats=1",
               f"--output={output}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "throughput.json").read_text())
    rows = {row["method"]: row for row in results["rows"]}
    assert set(rows) == {"student", "keras_kd", "kd", "hksan", "hksan_no_adversarial"}
    assert rows["keras_kd"]["ratio_to_keras_kd"] == 1.0
    hksan = rows["hksan"]
    assert hksan["ratio_to_keras_kd"] == rows["keras_kd"]["window_seconds"][0] / hksan["window_seconds"][0]
    for row in rows.values():
        assert row["images_per_second"] > 0 and row["peak_memory_mib"] > 0
    assert "| resnet8 -> resnet8_narrow | 8 | float32 | hksan |" in (tmp_path / "throughput.md").read_text()
    # The tables can be made again from the stored windows, measuring nothing.
    again = tmp_path / "again"
    subprocess.run([sys.executable, os.path.join("benchmarks", "throughput.py"),
                    f"--from_json={output}.json", f"--output={again}"],
                   check=True, capture_output=True, cwd=REPO_ROOT)
    assert (tmp_path / "again.md").read_text() == (tmp_path / "throughput.md").read_text()


def test_squeeze_stability_trace_reads_each_stage(teacher, student, batch):
    sys.path.insert(0, str(REPO_ROOT / "benchmarks" / "studies"))
    try:
        import squeeze_stability
    finally:
        sys.path.pop(0)
    import hksan_keras
    import numpy as np

    distiller = hksan_keras.HKSANDistiller(teacher, student)
    images = batch[0][:8]
    row = squeeze_stability.trace_row(distiller, images, step=7)
    assert row["step"] == 7 and len(row["stages"]) == 3
    kernel = distiller.student_squeeze.estimators[0].guide_projection.kernel
    assert row["stages"][0]["student_projection_norm"] == pytest.approx(float(np.linalg.norm(np.asarray(kernel))))
    squeezed = distiller.squeeze(images)
    distance = np.mean((np.asarray(squeezed["student"]["squeezed"][2]) - np.asarray(squeezed["teacher"]["squeezed"][2])) ** 2)
    assert row["stages"][2]["distance"] == pytest.approx(float(distance), rel=1e-5)
    guide = np.asarray(squeezed["student"]["guides"][1])
    assert row["stages"][1]["student_guide_norm2"] == pytest.approx(float(np.mean(np.sum(guide**2, -1))), rel=1e-5)
    line = squeeze_stability.format_row(row)
    assert line.startswith("step     7") and line.count("stage ") == 3


def test_crd_scores_study_checks_its_faster_paths_against_the_ones_they_replace():
    # The study asserts that contrast_scores' gradient equals the per-row
    # gather's and that every negative is of another class; tiny sizes here
    # (N = 20: the dense product; N = 300: the gather).
    result = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "studies", "crd_scores.py"), "--num_examples=20,300",
         "--batch_size=4", "--num_negatives=8", "--feature_dim=4", "--repeats=1"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("N ")]
    assert [line.split(":")[1].strip() for line in lines] == ["scores, one memory", "negatives"] * 2
