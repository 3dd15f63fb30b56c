"""The command line, end to end on real CIFAR-10 with a tiny budget."""

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
import types

import pytest

from conftest import REPO_ROOT
from hksan_keras import cli

# The full tier only (the command line end to end, on real CIFAR-10).
pytestmark = pytest.mark.full


QUICK = str(REPO_ROOT / "configs" / "cifar10_resnet164_resnet20_quick.json")
TINY = [
    "--set=teacher.model=resnet8", "--set=student.model=resnet8",
    "--set=data.train_size=192", "--set=data.test_size=128", "--set=data.batch_size=64",
    "--set=teacher.epochs=1", "--set=distill.epochs=1", "--set=teacher.lr_milestones=[]",
    "--set=distill.lr_milestones=[]", "--set=distill.hksan.discriminator.units=[16]",
]


class Result(types.SimpleNamespace):
    """What a command left: returncode, stdout, stderr (as subprocess.run's result)."""


def hksan(*args, data_dir=None, check=True, subprocess_=False):
    """Runs `hksan-keras ARGS`: in this process (cli.run with its own argv), or
    with `subprocess_=True` as `python -m hksan_keras.cli` in a new process.

    In process saves TensorFlow's start-up (several seconds) per command; the
    end-to-end test still runs one command in a process of its own. An
    exception that escapes the command counts as exit code 1 with its
    traceback on stderr, as in a process.
    """
    argv = [*args, *([f"--data_dir={data_dir}"] if data_dir else [])]
    if subprocess_:
        result = subprocess.run([sys.executable, "-m", "hksan_keras.cli", *argv], capture_output=True, text=True,
                                timeout=600, cwd=REPO_ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    else:
        result = _in_process(argv)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def _in_process(argv):
    import keras

    cli.FLAGS.unparse_flags()  # absl keeps a repeated flag's values across parses
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv, keras.mixed_precision.global_policy(), list(logging.getLogger().handlers)
    sys.argv = ["hksan-keras", *argv]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                cli.run()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception:  # noqa: BLE001 - a crash, reported as a process would
                traceback.print_exc()
                code = 1
    finally:
        # What a process would have taken with it: argv, the dtype policy,
        # the models, absl's log handler on the root logger, the flags.
        sys.argv = saved[0]
        keras.mixed_precision.set_global_policy(saved[1])
        keras.backend.clear_session()
        for handler in logging.getLogger().handlers:
            if handler not in saved[2]:
                logging.getLogger().removeHandler(handler)
        cli.FLAGS.unparse_flags()
    return Result(returncode=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def test_every_subcommand_end_to_end(cifar_data_dir, tmp_path):
    run = tmp_path / "run"
    common = [f"--config={QUICK}", f"--run_dir={run}", "--verbose=0", *TINY]
    for command in ("train-teacher", "train-student", "distill"):
        out = hksan(command, *common, data_dir=cifar_data_dir)
        assert f"{command.replace('train-', '')} epoch 1/1" in out.stdout
    for step, models in (("teacher", ["best.keras", "last.keras"]), ("student", ["best.keras", "last.keras"]),
                         ("distill", ["best_student.keras", "last_student.keras", "distiller.keras"])):
        directory = run / step
        for name in ["config.json", "metrics.json", "metrics.jsonl", *models]:
            assert (directory / name).is_file(), f"{step}/{name}"
        assert any((directory / "logs").rglob("*tfevents*")), step
        config = json.loads((directory / "config.json").read_text())
        assert config["teacher"]["model"] == "resnet8" and config["data"]["train_size"] == 192
        metrics = json.loads((directory / "metrics.json").read_text())
        assert metrics["epochs"] == 1 and 0 <= metrics["last_epoch_test_accuracy"] <= 1
    epoch = json.loads((run / "distill" / "metrics.jsonl").read_text().splitlines()[0])
    for term in ("squeeze_loss", "adversarial_loss", "discriminator_loss", "val_accuracy"):
        assert term in epoch

    # Another method goes to its own step directory of the same run.
    out = hksan("distill", *common, "--method=kd", data_dir=cifar_data_dir)
    assert "distill_kd epoch 1/1" in out.stdout
    epoch = json.loads((run / "distill_kd" / "metrics.jsonl").read_text().splitlines()[0])
    assert "kd_loss" in epoch and "squeeze_loss" not in epoch
    assert json.loads((run / "distill_kd" / "config.json").read_text())["distill"]["method"] == "kd"
    unknown = hksan("distill", *common, "--method=pkt", data_dir=cifar_data_dir, check=False)
    assert unknown.returncode == 2 and "choose one of" in unknown.stderr

    out = hksan("evaluate", *common, data_dir=cifar_data_dir)
    scores = json.loads((run / "evaluate.json").read_text())
    assert set(scores) == {"teacher", "student", "distilled_student", "distilled_student_kd"}
    assert "distilled_student: test accuracy" in out.stdout

    hksan("export", *common, data_dir=cifar_data_dir)
    assert (run / "export" / "saved_model" / "saved_model.pb").is_file()
    hksan("export", *common, "--format=tflite", data_dir=cifar_data_dir)
    assert (run / "export" / "student_float32.tflite").stat().st_size > 10_000
    assert json.loads((run / "preprocessing.json").read_text())["mean"][0] == pytest.approx(125.31)
    out = hksan("visualize", *common, data_dir=cifar_data_dir)
    for picture in ("attention.png", "curves.png"):
        assert (run / "visualize" / picture).stat().st_size > 1000, picture
    assert any((run / "distill" / "logs" / "attention").glob("*tfevents*"))
    out = hksan("report", *common, data_dir=cifar_data_dir)
    rows = json.loads((run / "report" / "report.json").read_text())["rows"]
    assert len(rows) == 6 and "student (TFLite, int8)" in out.stdout
    assert json.loads((run / "report" / "report.json").read_text())["test_images"] == 128
    again = hksan("export", *common, data_dir=cifar_data_dir, check=False)
    assert again.returncode == 2 and "exists" in again.stderr

    # A finished step is never overwritten; `experiment` reuses finished steps.
    refused = hksan("train-teacher", *common, data_dir=cifar_data_dir, check=False)
    assert refused.returncode == 2 and "finished teacher run" in refused.stderr
    # The command line's module in a process of its own, as a user runs it.
    out = hksan("experiment", *common, data_dir=cifar_data_dir, subprocess_=True)
    assert out.stdout.count("finished earlier") == 3
    assert "Test accuracy (last epoch)" in out.stdout
    assert "points over the student alone" in out.stdout.split("distilled_student ")[-1]


def test_an_interrupted_step_resumes_where_it_stopped(cifar_data_dir, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "hksan_keras.cli", "train-teacher", f"--config={QUICK}", f"--run_dir={run}",
            "--verbose=0", f"--data_dir={cifar_data_dir}", *TINY, "--set=teacher.epochs=3"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backup = run / "teacher" / "checkpoints" / "training_metadata.json"
    deadline = time.time() + 300
    while not backup.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert backup.exists() and not (run / "teacher" / "metrics.json").exists()
    done = json.loads(backup.read_text())["epoch"]
    assert 1 <= done < 3

    out = hksan("train-teacher", f"--config={QUICK}", f"--run_dir={run}", "--verbose=0", *TINY,
                "--set=teacher.epochs=3", data_dir=cifar_data_dir)
    assert f"resuming from epoch {done}" in out.stdout
    epochs = [json.loads(line)["epoch"] for line in (run / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert not (run / "teacher" / "checkpoints" / "training_metadata.json").exists()


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or being written
        return None


def test_a_run_killed_mid_epoch_resumes_from_its_last_step_backup(cifar_data_dir, tmp_path):
    run = tmp_path / "run"
    common = [f"--config={QUICK}", f"--run_dir={run}", "--verbose=0", f"--data_dir={cifar_data_dir}",
              *TINY, "--set=teacher.epochs=2", "--set=data.train_size=1280", "--set=backup_every_steps=2"]
    process = subprocess.Popen([sys.executable, "-m", "hksan_keras.cli", "train-teacher", *common],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    backup = run / "teacher" / "checkpoints" / "training_metadata.json"
    deadline = time.time() + 300
    metadata = None
    while process.poll() is None and time.time() < deadline:
        metadata = _read_json(backup)
        if metadata and metadata["batch"] > 0:  # a backup in the middle of an epoch
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    metadata = _read_json(backup)
    assert metadata and metadata["batch"] > 0, metadata
    assert not (run / "teacher" / "metrics.json").exists()

    out = hksan("train-teacher", *common[:-1] + ["--set=backup_every_steps=2"])
    assert f"resuming from epoch {metadata['epoch']}, with the weights of step" in out.stdout
    epochs = [json.loads(line)["epoch"] for line in (run / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert json.loads((run / "teacher" / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("args, message", [
    (["--set=distill.epoch=3"], "Unknown config key 'distill.epoch'"),
    (["--set=distill.epochs=three"], "'distill.epochs' expects int"),
    (["--set=teacher.model=resnet9"], "teacher.model is 'resnet9'"),
    (["--set=distill.hksan.discriminator.unit=[16]"], "Unknown config key 'distill.hksan.discriminator.unit'"),
    (["--set=distill.hksan.discriminator.perturbation_rate=1.5"],
     "distill.hksan.discriminator: perturbation_rate must be in [0, 1)"),
    (["--data_dir=/nonexistent/tfds", "--set=data.download=false"], "not prepared in '/nonexistent/tfds"),
    (["--verbose=loud"], "Flags parsing error: flag --verbose=loud"),
])
def test_bad_input_ends_with_one_clear_message(args, message, tmp_path):
    result = hksan("train-teacher", f"--config={QUICK}", f"--run_dir={tmp_path / 'run'}", *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_teacher_and_an_unknown_command_are_explained(cifar_data_dir, tmp_path):
    result = hksan("distill", f"--config={QUICK}", f"--run_dir={tmp_path}", data_dir=cifar_data_dir, check=False)
    assert result.returncode == 2 and "No trained teacher" in result.stderr and "Traceback" not in result.stderr
    result = hksan("frobnicate", check=False)
    assert result.returncode == 2 and "expected a command" in result.stderr
