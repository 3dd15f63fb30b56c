"""The benchmark protocols are data (benchmarks/protocols/*.json), and a test
protocol runs nothing that its validation protocol did not choose."""

import copy
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import accuracy  # noqa: E402

sys.path.pop(0)


@pytest.fixture(scope="module")
def protocols():
    return accuracy.load_protocols()


def test_every_protocol_passes_the_check(protocols):
    assert {"cpu-small", "cpu-small-validation", "cifar10-resnet56-resnet20",
            "cifar10-resnet56-resnet20-validation", "paper"} <= set(protocols)
    accuracy.check_protocols(protocols)


def test_every_variant_names_its_method_complete_overrides_and_a_note(protocols):
    from hksan_keras.distillers import METHODS

    for name, protocol in protocols.items():
        assert protocol["seeds"] and protocol["configs"], name
        for variant_name, variant in protocol["variants"].items():
            assert set(variant) == {"method", "overrides", "note"}, (name, variant_name)
            assert variant["method"] in METHODS and variant["note"], (name, variant_name)
            assert all("=" in override for override in variant["overrides"]), (name, variant_name)


def test_a_test_protocol_refuses_a_variant_its_validation_did_not_choose(protocols):
    changed = copy.deepcopy(protocols)
    changed["cpu-small"]["variants"]["hksan_no_squeeze"] = {
        "method": "hksan", "overrides": ["distill.hksan.squeeze_weight=0"], "note": "an ablation"}
    with pytest.raises(ValueError, match="'hksan_no_squeeze' is not among the variants that "
                                         "cpu-small-validation chose"):
        accuracy.check_protocols(changed)


def test_a_chosen_variant_is_allowed_under_another_name_when_its_settings_are_the_same(protocols):
    changed = copy.deepcopy(protocols)
    # The settings of the validation variant "hksan_flat", not chosen: refused ...
    flat = changed["cpu-small-validation"]["variants"]["hksan_flat"]
    changed["cpu-small"]["variants"]["flat"] = dict(flat)
    with pytest.raises(ValueError, match="'flat'"):
        accuracy.check_protocols(changed)
    # ... until the validation protocol chooses it.
    changed["cpu-small-validation"]["chosen"].append("hksan_flat")
    accuracy.check_protocols(changed)


def test_a_protocol_without_validation_runs_only_the_methods_defaults(protocols):
    changed = copy.deepcopy(protocols)
    changed["paper"]["variants"]["kd_t8"] = {
        "method": "kd", "overrides": ["distill.kd.temperature=8"], "note": "T 8"}
    with pytest.raises(ValueError, match="'kd_t8'"):
        accuracy.check_protocols(changed)


@pytest.mark.parametrize("overrides", [
    ["distill.epochs=60"], ["distill.learning_rate=0.3"], ["distill.d_learning_rate=0.01"],
    ["student.model=resnet20"], ["distill.num_stages=2"],
])
def test_a_recipe_or_model_change_on_a_test_set_is_refused_too(protocols, overrides):
    changed = copy.deepcopy(protocols)
    changed["cpu-small"]["variants"]["changed"] = {"method": "hksan", "overrides": overrides, "note": "x"}
    with pytest.raises(ValueError, match="'changed'"):
        accuracy.check_protocols(changed)


def test_protocol_wide_overrides_are_checked_and_a_bad_validation_name_is_named(protocols):
    changed = copy.deepcopy(protocols)
    changed["paper"]["overrides"] = ["distill.kd.temperature=8"]
    with pytest.raises(ValueError, match="Protocol paper's variant 'student'"):
        accuracy.check_protocols(changed)
    changed = copy.deepcopy(protocols)
    changed["cpu-small"]["validation_protocol"] = "cpu-smal-validation"
    with pytest.raises(ValueError, match="'cpu-smal-validation' as its validation protocol"):
        accuracy.check_protocols(changed)


def test_scored_counts_pass_float32_accuracies_and_refuse_other_denominators():
    import numpy as np

    # What Keras logs: float32 correct / examples, read back from JSON.
    good = [float(np.float32(k / 10_000)) for k in (2507, 6680, 7743, 10_000, 0)]
    accuracy.check_scored_counts(good, 10_000, "run")
    accuracy.check_scored_counts([float(np.float32(k / 50_000)) for k in (1, 38_211, 49_999)], 50_000, "run")
    # One of the runs found in an earlier results file: 199 / 257 in float32.
    with pytest.raises(ValueError, match=r"run: epoch 2's test accuracy .* not a count out of the 10000"):
        accuracy.check_scored_counts([good[0], float(np.float32(199 / 257))], 10_000, "run")
    with pytest.raises(ValueError, match="Delete that directory"):
        accuracy.check_scored_counts([171 / 256], 10_000, "run")
