"""Every config file loads, and its teacher and student build and pair up."""

import pathlib

import keras
import pytest

import hksan_keras
from conftest import fast_tier_keeps
from hksan_keras.build import build_distiller, build_models
from hksan_keras.config import ConfigError, load_config, resolve_config

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(REPO.glob("configs/*.json"))
CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet2012": 1000}
EXPERIMENTS = [p for p in CONFIGS if p.name != "cifar_base.json"]


def test_there_is_a_config_and_a_quick_variant_for_every_experiment():
    names = {p.stem for p in EXPERIMENTS}
    benchmarks = {name for name in names if name.endswith(("_cpu_small", "_cpu_medium"))}
    # The recipes of the teachers that ship in the package.
    teachers = {name for name in names if name.endswith("_teacher")}
    # The README's quick start, from a shipped teacher (the experiment's
    # _quick variant is a smaller pipeline that trains a teacher too).
    quickstarts = {name for name in names if name.endswith("_quickstart")}
    assert quickstarts == {"cifar10_resnet56_resnet20_quickstart"}
    assert len(names - benchmarks - teachers - quickstarts) == 28 and len(benchmarks) == 2 and len(teachers) == 1
    for name in names - benchmarks - teachers - quickstarts:
        assert name.endswith("_quick") or f"{name}_quick" in names


# A quick variant builds the same models as its experiment: full tier only.
@pytest.mark.parametrize("path", fast_tier_keeps(
    EXPERIMENTS, *[p for p in EXPERIMENTS if not p.stem.endswith("_quick")]), ids=lambda p: p.stem)
def test_config_builds_its_models(path):
    config = resolve_config(str(path))
    assert config["name"] == path.stem and config["description"]
    keras.backend.clear_session()
    teacher, student = build_models(config, CLASSES[config["data"]["dataset"]])
    distiller, _ = build_distiller(config, teacher, student, steps_per_epoch=10)
    assert isinstance(distiller, hksan_keras.HKSANDistiller)
    assert len(distiller.teacher_stages) == (4 if config["data"]["dataset"] == "imagenet2012" else 3)


def test_a_bad_config_file_is_explained(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"teacher": {"epochs": "many"}}')
    with pytest.raises(ConfigError, match="'teacher.epochs' expects int"):
        load_config(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(bad))


def test_every_method_builds_from_a_config():
    config = resolve_config(str(REPO / "configs" / "cifar100_resnet56_resnet20.json"))
    for method in hksan_keras.distillers.METHODS:
        keras.backend.clear_session()
        config["distill"]["method"] = method
        teacher, student = build_models(config, 100)
        distiller, _ = build_distiller(config, teacher, student, steps_per_epoch=10, num_examples=640)
        assert type(distiller) is hksan_keras.distillers.METHODS[method]
    assert distiller.teacher_stages == ["stage1", "stage2", "stage3"]


def test_dkd_warmup_is_given_in_epochs():
    config = resolve_config(str(REPO / "configs" / "cifar100_resnet56_resnet20.json"),
                                       ["distill.method=dkd", "teacher.model=resnet8", "student.model=resnet8"])
    teacher, student = build_models(config, 100)
    distiller, _ = build_distiller(config, teacher, student, steps_per_epoch=10)
    assert distiller.warmup_steps == 20 * 10


def test_an_unknown_method_is_refused_before_training():
    with pytest.raises(ConfigError, match="choose one of"):
        resolve_config(str(REPO / "configs" / "cifar10_resnet56_resnet20_quick.json"),
                                  ["distill.method=pkt"])


@pytest.mark.parametrize("override, message", [
    ("distill.hksan.logit_distance=cosine", "distill.hksan.logit_distance must be one of"),
    ("distill.anc.logit_distance=standardized", "distill.anc.logit_distance=.standardized. was removed"),
    ("distill.hksan.squeeze_target=both", "distill.hksan.squeeze_target must be one of"),
    ("distill.hksan.hierarchy=tree", "distill.hksan.hierarchy must be one of"),
])
def test_option_names_are_checked_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(str(REPO / "configs" / "cifar10_resnet56_resnet20_quick.json"), [override])


def test_the_teacher_may_train_on_its_own_split():
    config = resolve_config(str(REPO / "configs" / "cifar10_resnet56_resnet20_cpu_medium.json"))
    assert config["teacher"]["train_split"] == "train[:40000]"
    assert config["data"]["train_split"] == "train" and config["data"]["train_size"] == 10000


@pytest.mark.parametrize("key", [
    "distill.hksan.scale_guide", "distill.hksan.stop_student_guide_gradient",
    "distill.hksan.squeeze_distance", "distill.hksan.attention_maps",
    "distill.hksan.kd_weight", "distill.anc.kd_temperature", "distill.xu.gan_loss",
    "distill.hksan.discriminator_input", "distill.anc.discriminator_temperature",
    "distill.hksan.adversarial_warmup_epochs",
])
def test_removed_options_are_unknown_config_keys(key):
    with pytest.raises(ConfigError, match=f"Unknown config key '{key}'"):
        resolve_config(str(REPO / "configs" / "cifar10_resnet56_resnet20_quick.json"), [f"{key}=0"])


@pytest.mark.parametrize("path", sorted(str(p) for p in (REPO / "configs").glob("*.json")))
def test_dkd_ls_is_nine_times_each_pairs_dkd_with_its_warmup(path):
    # Sun et al.'s code multiplies the pair's DKD alpha and beta by 9 (T 2).
    distill = load_config(path)["distill"]
    dkd, dkd_ls = distill["dkd"], distill["dkd+ls"]
    assert dkd_ls["alpha"] == pytest.approx(9 * dkd["alpha"]), path
    assert dkd_ls["beta"] == pytest.approx(9 * dkd["beta"]), path
    assert dkd_ls["warmup_epochs"] == dkd["warmup_epochs"], path
    assert dkd_ls["temperature"] == 2.0 and dkd_ls["label_weight"] == dkd["label_weight"], path


def test_the_models_initial_weights_depend_only_on_the_config():
    # The student trained alone and the distilled student of a run are built
    # in different steps (processes, even): the same seed, the same start.
    import random

    import numpy as np

    quick = str(REPO / "configs" / "cifar10_resnet56_resnet20_quick.json")
    config = resolve_config(quick, ["teacher.model=resnet8", "student.model=resnet8"])
    _, first = build_models(config, 10)
    random.random(), np.random.random(), keras.random.normal((2,))  # other draws in between
    keras.models.clone_model(first)
    _, again = build_models(config, 10)
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    _, other_teacher = build_models(resolve_config(quick, ["teacher.model=resnet20", "student.model=resnet8"]), 10)
    for a, b in zip(first.get_weights(), other_teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    _, other_seed = build_models(resolve_config(quick, ["teacher.model=resnet8", "student.model=resnet8", "seed=1"]), 10)
    assert not np.array_equal(first.get_weights()[0], other_seed.get_weights()[0])
