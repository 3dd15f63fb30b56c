"""The adversarial distillers take their discriminator as one spec; old files with flat settings load."""

import inspect
import json
import pathlib
import zipfile

import keras
import numpy as np
import pytest

import hksan_keras
from hksan_keras.build import build_distiller, compile_distiller
from hksan_keras.config import ConfigError, resolve_config
from conftest import tiny_resnet

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "cifar10_resnet56_resnet20_quick.json")
ADVERSARIAL = ("hksan", "anc", "xu")
# Each method's default D, as it was before the spec (flat options).
DEFAULT_D = {
    "hksan": {"units": [256, 256], "regularization": 1e-5, "class_head": True,
              "fake_as_real_weight": 0.1, "perturbation_rate": 0.5, "batch_norm_momentum": 0.9},
    "anc": {"units": [256, 256], "regularization": 1e-5, "class_head": False,
            "fake_as_real_weight": 0.1, "perturbation_rate": 0.5, "batch_norm_momentum": 0.9},
    "xu": {"units": [256, 256], "regularization": 1e-5, "class_head": False,
           "fake_as_real_weight": 0.0, "perturbation_rate": 0.5, "batch_norm_momentum": 0.9},
}
# The distiller's own options in its config, besides keras.Model's.
KERAS_KEYS = {"name", "trainable", "dtype", "teacher", "student"}


@pytest.mark.parametrize("method", ADVERSARIAL)
def test_every_option_is_named_and_the_default_d_is_unchanged(teacher, student, method):
    cls = hksan_keras.distillers.get(method)
    parameters = inspect.signature(cls.__init__).parameters
    options = [name for name, p in parameters.items()
               if name not in ("self", "teacher", "student") and p.kind is not p.VAR_KEYWORD]
    assert len(options) <= 20
    distiller = cls(teacher, student)
    assert set(distiller.get_config()) - KERAS_KEYS <= set(options)
    assert distiller.get_config()["discriminator"] == DEFAULT_D[method]
    d = distiller.discriminator
    assert [dense.units for dense in d.hidden_dense] == [256, 256]
    assert d.output_layer.units == (11 if method == "hksan" else 1)
    for layer in (*d.hidden_dense, d.output_layer):
        assert keras.regularizers.serialize(layer.kernel_regularizer)["config"] == {"l1": 1e-5, "l2": 1e-5}
    assert d.dtype_policy.name == "float32" and d.name == "discriminator"


def test_a_spec_as_layer_or_dict_gives_the_same_discriminator_and_training(batch):
    settings = {"units": [32, 16], "regularization": 1e-4, "class_head": False,
                "fake_as_real_weight": 0.2, "perturbation_rate": 0.25}
    results = []
    for as_layer in (True, False):
        keras.utils.set_random_seed(1)
        teacher, student = tiny_resnet((8, 16, 24), name="teacher"), tiny_resnet((4, 8, 12), name="student")
        spec = hksan_keras.LogitDiscriminator(**settings) if as_layer else settings
        distiller = hksan_keras.distillers.ANCDistiller(teacher, student, discriminator=spec, seed=1)
        distiller.compile(optimizer=keras.optimizers.SGD(0.05))
        distiller.fit(*batch, batch_size=16, epochs=1, verbose=0, shuffle=False)
        results.append((distiller.get_config()["discriminator"], distiller.discriminator.get_config(),
                        [v.numpy() for v in distiller.weights]))
    (spec_a, config_a, weights_a), (spec_b, config_b, weights_b) = results
    assert spec_a == spec_b == {**DEFAULT_D["anc"], **settings}
    assert config_a == config_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)


def test_a_dict_spec_overrides_the_methods_defaults_key_by_key(teacher, student):
    anc = hksan_keras.distillers.ANCDistiller(teacher, student, discriminator={"units": [16]})
    assert anc.get_config()["discriminator"] == {**DEFAULT_D["anc"], "units": [16]}
    assert anc.discriminator.output_layer.units == 1


@pytest.mark.parametrize("method", ["anc", "xu"])
def test_a_layer_spec_keeps_the_methods_defaults_where_it_does_not_change_them(teacher, student, method):
    cls = hksan_keras.distillers.get(method)
    distiller = cls(teacher, student, discriminator=hksan_keras.LogitDiscriminator(units=(32,)))
    settings = distiller.discriminator.settings()
    assert settings["units"] == [32]
    # ANC's and Xu's source-only D (and Xu's nu = 0) are kept, as with a dict.
    assert settings == cls(teacher, student, discriminator={"units": [32]}).discriminator.settings()
    assert settings["class_head"] is False


def test_a_file_saved_before_clipping_existed_loads_without_it(teacher, student):
    config = hksan_keras.HKSANDistiller(teacher, student).get_config()
    assert config["global_clipnorm"] == 5.0
    older = {key: value for key, value in config.items() if key != "global_clipnorm"}
    assert hksan_keras.HKSANDistiller.from_config(older).global_clipnorm is None


@pytest.mark.parametrize("spec, error, message", [
    ({"unit": [16]}, ValueError, r"unknown settings \['unit'\]"),
    ({"perturbation_rate": 1.5}, ValueError, r"perturbation_rate must be in \[0, 1\)"),
    ({"num_classes": 7}, ValueError, "num_classes=7"),
    ("wide", TypeError, "must be None, a LogitDiscriminator or a dict"),
])
def test_a_bad_spec_is_refused_by_name(teacher, student, spec, error, message):
    with pytest.raises(error, match=message):
        hksan_keras.distillers.ANCDistiller(teacher, student, discriminator=spec)


def test_a_built_layer_and_a_flat_setting_are_refused_with_the_fix(teacher, student):
    built = hksan_keras.LogitDiscriminator(10)
    built.build((None, 10))
    with pytest.raises(ValueError, match="not built yet"):
        hksan_keras.HKSANDistiller(teacher, student, discriminator=built)
    with pytest.raises(TypeError, match=r"discriminator=\{'units': \(16,\)\}"):
        hksan_keras.HKSANDistiller(teacher, student, discriminator_units=(16,))


def _older_config(config):
    """A distiller config the way versions before the spec wrote it (flat settings)."""
    older = {key: value for key, value in config.items() if key != "discriminator"}
    spec = config["discriminator"]
    older.update({
        "class_head": spec["class_head"],
        "discriminator_units": spec["units"],
        "discriminator_regularization": spec["regularization"],
        "fake_as_real_weight": spec["fake_as_real_weight"],
        "perturbation_rate": spec["perturbation_rate"],
    })
    return older


def test_a_file_saved_with_flat_discriminator_settings_loads_the_same(teacher, student, batch, tmp_path):
    spec = {"units": [16, 8], "regularization": 1e-3, "class_head": False, "perturbation_rate": 0.2}
    distiller = hksan_keras.HKSANDistiller(teacher, student, discriminator=spec, seed=2)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    distiller.fit(*batch, batch_size=16, epochs=1, verbose=0)
    new_path, old_path = tmp_path / "new.keras", tmp_path / "old.keras"
    distiller.save(new_path)
    # The same file with the config of the older version.
    with zipfile.ZipFile(new_path) as source, zipfile.ZipFile(old_path, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "config.json":
                saved = json.loads(content)
                saved["config"] = _older_config(saved["config"])
                assert "discriminator" not in saved["config"]
                content = json.dumps(saved).encode()
            target.writestr(item, content)
    restored = keras.saving.load_model(old_path)
    assert restored.get_config()["discriminator"] == distiller.get_config()["discriminator"]
    assert restored.get_config()["discriminator"]["units"] == [16, 8]
    for a, b in zip(distiller.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(restored.predict(batch[0], verbose=0),
                                  distiller.predict(batch[0], verbose=0))


@pytest.mark.parametrize("method", ["anc", "xu"])
def test_an_older_config_of_anc_and_xu_loads_their_spec(teacher, student, method):
    cls = hksan_keras.distillers.get(method)
    config = cls(teacher, student).get_config()
    restored = cls.from_config(_older_config(config))
    assert restored.get_config() == {**config, "teacher": restored.get_config()["teacher"],
                                     "student": restored.get_config()["student"]}


def test_the_config_spec_trains_and_a_bad_key_or_value_is_refused_before_training(teacher, student, batch):
    config = resolve_config(QUICK, ['distill.hksan.discriminator={"units": [16], "class_head": false}',
                                               "distill.hksan.discriminator.perturbation_rate=0.25"])
    assert config["distill"]["hksan"]["discriminator"] == {
        **DEFAULT_D["hksan"], "units": [16], "class_head": False, "perturbation_rate": 0.25}
    distiller, _ = build_distiller(config, teacher, student, steps_per_epoch=2)
    assert distiller.discriminator.settings() == config["distill"]["hksan"]["discriminator"]
    compile_distiller(distiller, config, steps_per_epoch=2)
    history = distiller.fit(*batch, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["discriminator_loss"]).all()
    for override, message in [
        ("distill.hksan.discriminator.unit=[16]", "Unknown config key 'distill.hksan.discriminator.unit'"),
        ("distill.anc.discriminator.perturbation_rate=1.5",
         r"distill.anc.discriminator: perturbation_rate must be in \[0, 1\)"),
        ("distill.hksan.discriminator_units=[16]",
         "'distill.hksan.discriminator_units': it is 'distill.hksan.discriminator.units' now"),
        ("distill.xu.class_head=true", "it is 'distill.xu.discriminator.class_head' now"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_config(QUICK, [override])
