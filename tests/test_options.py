"""Each method's options are declared once (hksan_keras.options) and the
constructors, config defaults, config checks and docs/options.md agree with
the declaration."""

import inspect
import re
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from hksan_keras import options
from hksan_keras.config import DEFAULTS, ConfigError, resolve_config
from hksan_keras.distillers import METHODS

QUICK = str(REPO_ROOT / "configs" / "cifar10_resnet56_resnet20_quick.json")


@pytest.mark.parametrize("method", list(METHODS))
def test_the_constructor_names_every_option_with_its_declared_default(method):
    cls = METHODS[method]
    parameters = [
        p for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "teacher", "student") and p.kind is not p.VAR_KEYWORD
    ]
    declared = [option for option in cls.OPTIONS if option.constructor]
    assert sorted(p.name for p in parameters) == sorted(o.name for o in declared)
    for parameter in parameters:
        assert parameter.default == cls.OPTIONS[parameter.name].default, parameter.name


@pytest.mark.parametrize("method", list(METHODS))
def test_the_config_section_is_the_declared_config_options(method):
    assert DEFAULTS["distill"][method] == METHODS[method].OPTIONS.config_defaults()


def test_hksan_has_at_most_twenty_named_options():
    cls = METHODS["hksan"]
    assert len([option for option in cls.OPTIONS if option.constructor]) <= 20


def test_docs_options_md_is_generated_from_the_declarations():
    written = (REPO_ROOT / "docs" / "options.md").read_text()
    assert written == options.markdown(), (
        "docs/options.md is out of date: run `python -m hksan_keras.options > docs/options.md`.")


def _bad_value(option):
    """A value outside what the option takes, of the right type where one exists."""
    return {
        "weight": -1.0, "positive": 0.0, "count": -1, "steps": 0, "integer": 1.5,
        "flag": "yes", "choice": "no_such_choice", "names": "stage_1", "probability": 1.5, "fraction": 1.5,
    }[option.kind]


_CONFIG_OPTIONS = [
    (method, option) for method, cls in METHODS.items() for option in cls.OPTIONS
    if option.config and option.kind != "spec"
]


@pytest.mark.parametrize("method, option", _CONFIG_OPTIONS,
                         ids=[f"{m}.{o.name}" for m, o in _CONFIG_OPTIONS])
def test_every_bad_config_value_is_named_before_training(method, option):
    value = _bad_value(option)
    override = f"distill.{method}.{option.name}={value}"
    with pytest.raises(ConfigError, match=re.escape(f"distill.{method}.{option.name}")):
        resolve_config(QUICK, [override])


@pytest.mark.parametrize("method, option", _CONFIG_OPTIONS,
                         ids=[f"{m}.{o.name}" for m, o in _CONFIG_OPTIONS])
def test_the_declared_default_passes_the_check(method, option):
    option.validate(option.default)


def test_a_bad_discriminator_setting_is_named_before_training():
    with pytest.raises(ConfigError, match="distill.anc.discriminator: perturbation_rate"):
        resolve_config(QUICK, ["distill.anc.discriminator.perturbation_rate=1.5"])


def test_the_message_says_what_the_option_takes():
    with pytest.raises(ConfigError, match=r"distill.hksan.squeeze_weight must be >= 0, got -1"):
        resolve_config(QUICK, ["distill.hksan.squeeze_weight=-1"])
    with pytest.raises(ConfigError, match=r"distill.dkd.warmup_epochs' expects int, got 2.5"):
        resolve_config(QUICK, ["distill.dkd.warmup_epochs=2.5"])
    with pytest.raises(ConfigError, match=r"must be one of 'hierarchical', 'flat'; got 'tree'"):
        resolve_config(QUICK, ["distill.hksan.hierarchy=tree"])


def test_a_changed_default_of_a_subclass_leaves_the_parent_unchanged():
    assert METHODS["kd"].OPTIONS.label_weight == 0.1
    assert METHODS["student"].OPTIONS.label_weight == 1.0
    assert METHODS["hksan"].OPTIONS.global_clipnorm == 5.0
    assert METHODS["anc"].OPTIONS.global_clipnorm is None
    assert METHODS["xu"].OPTIONS.discriminator["fake_as_real_weight"] == 0.0
    assert METHODS["anc"].OPTIONS.discriminator["fake_as_real_weight"] == 0.1


@pytest.mark.full  # a subprocess
def test_the_command_line_refuses_a_bad_value_in_one_line_before_the_teacher_trains(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "hksan_keras.cli", "experiment", f"--config={QUICK}",
         f"--run_dir={run}", "--set=distill.kd.temperature=0"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("hksan-keras")]
    assert errors == ["hksan-keras experiment: error: distill.kd.temperature must be > 0, got 0.0."]
    assert "Traceback" not in result.stderr
    assert not run.exists()


def test_a_subclass_that_changes_a_default_must_redeclare_init():
    from hksan_keras.distillers import ANCDistiller, KDDistiller

    with pytest.raises(TypeError, match=r"temperature \(OPTIONS 2.0, __init__ 4.0\)"):
        type("MyKD", (KDDistiller,), {"OPTIONS": KDDistiller.OPTIONS.extend(temperature=2.0)})
    with pytest.raises(TypeError, match="DISCRIMINATOR is no longer read"):
        type("MyANC", (ANCDistiller,), {"DISCRIMINATOR": {"units": [32]}})


def test_the_declared_discriminator_spec_is_never_changed_by_a_distiller(teacher, student):
    from hksan_keras.distillers import ANCDistiller

    settings = ANCDistiller(teacher, student).discriminator_settings(None)
    settings["units"].append(3)
    assert ANCDistiller.OPTIONS.discriminator["units"] == [256, 256]
    assert ANCDistiller(teacher, student).discriminator.units == [256, 256]


def test_integer_valued_numbers_are_taken_where_integers_are(teacher, student):
    import numpy as np

    from hksan_keras import LogitDiscriminator
    from hksan_keras.distillers import ATDistiller

    assert LogitDiscriminator(10, units=np.array([64, 32])).units == [64, 32]
    assert LogitDiscriminator(10, units=[64.0]).units == [64]
    assert LogitDiscriminator(10, batch_norm_momentum=1.0).batch_norm_momentum == 1.0
    with pytest.raises(ValueError, match="units must be a list of integers >= 1"):
        LogitDiscriminator(10, units=[64.5])
    distiller = ATDistiller(teacher, student, num_stages=2.0)
    assert distiller.num_stages == 2 and len(distiller.teacher_stages) == 2


def test_the_adversarial_baselines_keep_their_positional_order(teacher, student):
    from hksan_keras.distillers import ANCDistiller

    distiller = ANCDistiller(teacher, student, 5.0, "squared", 0.2, 0.5)
    assert (distiller.logit_weight, distiller.logit_distance, distiller.adversarial_weight,
            distiller.label_weight) == (5.0, "squared", 0.2, 0.5)
