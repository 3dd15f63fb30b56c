"""Attention pictures: the TensorBoard callback, the PNG grid, TensorBoard's own listing."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import keras
import pytest
from PIL import Image

import hksan_keras
from hksan_keras import visualize


# The full tier only (TensorBoard and picture writing in subprocesses).
pytestmark = pytest.mark.full


@pytest.fixture
def fitted(teacher, student, batch, tmp_path):
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    log_dir = str(tmp_path / "logs")
    callback = visualize.AttentionImages(batch[0][:4], log_dir, every_n_epochs=2)
    distiller.fit(*batch, batch_size=16, epochs=4, callbacks=[callback], verbose=0)
    return distiller, log_dir


def _image_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # TF2 image summaries are tensors of [width, height, PNG] (plugin "images").
    accumulator = EventAccumulator(os.path.join(log_dir, "attention"), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator.Tags()["tensors"], accumulator


def test_callback_writes_attention_images_every_n_epochs(fitted):
    import io

    _, log_dir = fitted
    tags, accumulator = _image_events(log_dir)
    assert tags == ["attention"]
    events = accumulator.Tensors("attention")
    assert [e.step for e in events] == [2, 4]
    assert accumulator.SummaryMetadata("attention").plugin_data.plugin_name == "images"
    width, height, png = events[0].tensor_proto.string_val[:3]
    # 4 images of 16x16 drawn twice as large; 1 + 2 x 3 stages columns.
    assert (int(height), int(width)) == (4 * 16 * 2, 7 * 16 * 2)
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.size == (7 * 16 * 2, 4 * 16 * 2)


def test_attention_grid_png_and_learning_curves(fitted, batch, tmp_path):
    distiller, _ = fitted
    spec = hksan_keras.data.preprocessing_spec(((0.0,) * 3, (1.0,) * 3), 16)
    path = visualize.write_png(visualize.attention_grid(distiller, batch[0][:3], spec, scale=3),
                               str(tmp_path / "attention.png"))
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.size == (7 * 16 * 3, 3 * 16 * 3)
    run = tmp_path / "run" / "distill"
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "accuracy": 0.1 * e, "val_accuracy": 0.1 * e, "loss": 2.0 / e,
                    "squeeze_loss": 1.0 / e}) + "\n" for e in (1, 2, 3)))
    curves = visualize.plot_learning_curves(str(tmp_path / "run"), str(tmp_path / "curves.png"))
    with Image.open(curves) as picture:
        assert picture.format == "PNG" and picture.size[0] > 300
    (tmp_path / "empty_run").mkdir()
    assert visualize.plot_learning_curves(str(tmp_path / "empty_run"), str(tmp_path / "x.png")) is None


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tensorboard_lists_the_attention_image_tags(fitted):
    _, log_dir = fitted
    port = _free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={log_dir}", "--host=127.0.0.1",
         f"--port={port}", "--load_fast=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=5) as response:
                    tags = json.loads(response.read())
                if tags.get("attention"):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert "attention" in tags.get("attention", {}), tags
    finally:
        board.terminate()
        board.wait(timeout=30)
