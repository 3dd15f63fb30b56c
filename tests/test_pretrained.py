"""Shipped weights: `models.get(name, weights=...)` and `cifar_resnet(..., weights=...)`."""

import json

import numpy as np
import pytest

from hksan_keras import models
from hksan_keras.models import pretrained


def _trained_resnet8(seed=3):
    model = models.get("resnet8", num_classes=10)
    rng = np.random.default_rng(seed)
    # Not the initial weights, and a working network (BatchNorm variances
    # stay positive).
    model.set_weights([w + 0.01 * rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A package weights folder holding one ResNet-8 on "cifar10"."""
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    model = _trained_resnet8()
    pretrained.ship(model, "resnet8", "cifar10", 0.5123, 50000, "a recipe", "a command", "0" * 40)
    return model


def test_shipped_weights_load_by_dataset_name_and_equal_the_shipped_model(shipped, tmp_path):
    loaded = models.get("resnet8", weights="cifar10")
    assert loaded.output.shape[-1] == 10
    for a, b in zip(loaded.get_weights(), shipped.get_weights()):
        np.testing.assert_array_equal(a, b)
    direct = models.cifar_resnet(8, num_classes=10, weights="cifar10")
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(direct.predict(images, verbose=0), shipped.predict(images, verbose=0), atol=1e-5)
    entry = json.loads((tmp_path / "manifest.json").read_text())["resnet8"]["cifar10"]
    assert entry["test_accuracy"] == 0.5123 and entry["train_images"] == 50000 and entry["num_classes"] == 10
    assert entry["file"] == "resnet8_cifar10.weights.h5" and len(entry["sha256"]) == 64
    assert "| resnet8 | cifar10 | 51.23 | 50000 | a recipe | `a command` | 0000000 |" in pretrained.markdown()


def test_a_weights_path_loads_like_keras_applications(tmp_path):
    model = _trained_resnet8(seed=5)
    path = tmp_path / "mine.weights.h5"
    model.save_weights(path)
    loaded = models.get("resnet8", num_classes=10, weights=str(path))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileNotFoundError, match="no such file"):
        models.get("resnet8", num_classes=10, weights=str(tmp_path / "missing.weights.h5"))


def test_missing_pairs_other_class_counts_and_damaged_files_are_refused(shipped, tmp_path):
    with pytest.raises(ValueError, match=r"No shipped weights for 'resnet20' trained on 'cifar10'; shipped: resnet8 on cifar10\. Use no weights \(weights=None; in a config teacher.weights=null\)"):
        models.get("resnet20", weights="cifar10")
    with pytest.raises(ValueError, match="No shipped weights for 'resnet8' trained on 'cifar100'"):
        models.get("resnet8", weights="cifar100")
    with pytest.raises(ValueError, match="have 10 classes, but the model was built with num_classes=100"):
        models.get("resnet8", num_classes=100, weights="cifar10")
    with pytest.raises(ValueError, match="No shipped weights for 'resnet8x4'"):
        models.resnet8x4(num_classes=10, weights="cifar10")
    # Other widths without a name are not the zoo's ResNet-8.
    with pytest.raises(ValueError, match=r"No shipped weights for a ResNet-8 with stem 8, stages \(8, 16, 32\)"):
        models.cifar_resnet(8, stem_width=8, stage_widths=(8, 16, 32), weights="cifar10")
    (tmp_path / "resnet8_cifar10.weights.h5").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(ValueError, match="missing or damaged .* Git LFS pointer"):
        models.get("resnet8", weights="cifar10")


def test_random_weights_still_need_a_class_count():
    with pytest.raises(ValueError, match="needs num_classes"):
        models.get("resnet8")



def test_docs_models_md_is_generated_from_the_manifest():
    import pathlib

    written = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert written == pretrained.markdown(), (
        "docs/models.md is out of date: run `python -m hksan_keras.models.pretrained > docs/models.md`.")


TINY = [
    "teacher.model=resnet8", "student.model=resnet8", "data.train_size=128", "data.test_size=128",
    "data.batch_size=64", "distill.epochs=1", "distill.lr_milestones=[]", "distill.method=kd",
]


@pytest.mark.full
def test_teacher_weights_in_a_config_load_instead_of_training(cifar_data_dir, tmp_path):
    from hksan_keras import experiment
    from hksan_keras.config import resolve_config

    model = _trained_resnet8(seed=7)
    path = tmp_path / "teacher.weights.h5"
    model.save_weights(path)
    config = resolve_config(str(pretrained.pathlib.Path(__file__).resolve().parents[1] / "configs" / "cifar10_resnet56_resnet20_quick.json"),
                            [*TINY, f"teacher.weights={path}"], run_dir=str(tmp_path / "run"), data_dir=cifar_data_dir)
    metrics = experiment.train_on_labels(config, "teacher", verbose=0)
    assert metrics["weights"] == str(path) and metrics["epochs"] == 0
    assert 0 <= metrics["last_epoch_test_accuracy"] == metrics["best_epoch_test_accuracy"] <= 1
    import keras

    saved = keras.saving.load_model(tmp_path / "run" / "teacher" / "last.keras")
    for a, b in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The later steps read it as the run's teacher.
    assert experiment.distill(config, verbose=0)["teacher"] == str(tmp_path / "run" / "teacher" / "last.keras")


def test_a_config_naming_weights_that_do_not_ship_is_refused_when_read(shipped):
    from hksan_keras.config import ConfigError, resolve_config

    quick = str(pretrained.pathlib.Path(__file__).resolve().parents[1] / "configs" / "cifar10_resnet56_resnet20_quick.json")
    with pytest.raises(ConfigError, match="teacher.weights: No shipped weights for 'resnet56' trained on 'cifar10'; shipped: resnet8 on cifar10"):
        resolve_config(quick, ["teacher.weights=cifar10"])
    assert resolve_config(quick, ["teacher.model=resnet8", "teacher.weights=cifar10"])["teacher"]["weights"] == "cifar10"
    with pytest.raises(ConfigError, match=r"teacher.weights is 'cifar10', weights trained on another dataset than "
                                          r"data.dataset \('cifar100'\)"):
        resolve_config(quick, ["teacher.model=resnet8", "teacher.weights=cifar10", "data.dataset=cifar100"])


@pytest.mark.full
def test_the_ship_script_refuses_a_teacher_trained_on_part_of_the_training_split(tmp_path):
    import subprocess
    import sys

    from hksan_keras.config import resolve_config, save_config

    repo = pretrained.pathlib.Path(__file__).resolve().parents[1]
    (tmp_path / "teacher").mkdir()
    config = resolve_config(str(repo / "configs" / "cifar10_resnet56_teacher.json"), ["data.train_size=1000"])
    save_config(config, str(tmp_path / "teacher" / "config.json"))  # where the teacher step writes it
    result = subprocess.run([sys.executable, str(repo / "scripts" / "ship_weights.py"), f"--run_dir={tmp_path}",
                             "--command=x"], capture_output=True, text=True, timeout=300, cwd=repo)
    assert result.returncode != 0
    assert "Shipped teachers are trained on the whole training split; this one trained on 'train' (size 1000)" in (
        result.stderr)


SHIPPED = [(name, dataset) for name, by_dataset in sorted(pretrained.manifest().items()) for dataset in by_dataset]


@pytest.mark.full
@pytest.mark.parametrize("name, dataset", SHIPPED)
def test_every_shipped_teacher_scores_its_recorded_accuracy(name, dataset, cifar_data_dir):
    from hksan_keras import data

    entry = pretrained.entry(name, dataset)
    assert entry["test_accuracy_first_1000"] is not None, "ship it again with scripts/ship_weights.py"
    model = models.get(name, weights=dataset)
    model.compile(metrics=["accuracy"])
    test = data.cifar_dataset(dataset, "test", batch_size=500, data_dir=cifar_data_dir, take=1000)
    accuracy = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    # The same 1,000 images as scripts/ship_weights.py measured; a point of
    # slack for another machine's float arithmetic (a broken file, a changed
    # preprocessing or architecture costs far more).
    assert abs(accuracy - entry["test_accuracy_first_1000"]) <= 0.01, (accuracy, entry)


@pytest.mark.full
def test_the_built_wheel_holds_every_shipped_weights_file(tmp_path):
    """The weights reach users who install the package, not only a source checkout."""
    import hashlib
    import importlib.util
    import shutil
    import subprocess
    import sys
    import zipfile

    assert ("resnet56", "cifar10") in SHIPPED, "the CIFAR-10 ResNet-56 teacher must ship"
    repo = pretrained.pathlib.Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a copy, so that the build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    shutil.copytree(repo / "hksan_keras", source / "hksan_keras", ignore=shutil.ignore_patterns("__pycache__"))
    # Without build isolation where setuptools is installed: no download.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation,
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("hksan_keras-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        folder = "hksan_keras/models/weights/"
        manifest = json.loads(archive.read(folder + pretrained.MANIFEST_NAME))
        assert manifest == pretrained.manifest()
        for name, dataset in SHIPPED:
            entry = manifest[name][dataset]
            assert hashlib.sha256(archive.read(folder + entry["file"])).hexdigest() == entry["sha256"], entry["file"]
