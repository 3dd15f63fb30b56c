import pytest

import hksan_keras

# Parameter counts of the reference implementations (millions), with this
# zoo's 1x1-convolution shortcuts adding a little to the basic-block ResNets.
REFERENCE_PARAMS = {
    "resnet20": 0.27, "resnet32": 0.46, "resnet56": 0.85, "resnet110": 1.73,
    "resnet164": 1.70, "resnet8x4": 1.23, "resnet32x4": 7.43, "wrn_16_2": 0.70, "wrn_40_2": 2.24,
    "resnet18_imagenet": 11.69, "resnet34_imagenet": 21.80,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_zoo_models_have_named_stages_logits_and_reference_size(name):
    model = hksan_keras.models.get(name, num_classes=100)
    assert model.output.shape == (None, 100)
    assert model.get_layer("logits").activation.__name__ == "linear"
    sizes = [(56, 56), (28, 28), (14, 14), (7, 7)] if name.endswith("_imagenet") else [(32, 32), (16, 16), (8, 8)]
    assert [model.get_layer(f"stage{i}").output.shape[1:3] for i in range(1, len(sizes) + 1)] == sizes
    millions = model.count_params() / 1e6
    assert millions == pytest.approx(REFERENCE_PARAMS[name], rel=0.05)


def test_stage_widths_of_the_paper_pair():
    teacher = hksan_keras.models.get("resnet164", num_classes=10)
    student = hksan_keras.models.get("resnet20", num_classes=10)
    assert [teacher.get_layer(f"stage{i}").output.shape[-1] for i in (1, 2, 3)] == [64, 128, 256]
    assert [student.get_layer(f"stage{i}").output.shape[-1] for i in (1, 2, 3)] == [16, 32, 64]


def test_bad_depth_and_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="depth 6n\\+2"):
        hksan_keras.models.cifar_resnet(21)
    with pytest.raises(ValueError, match="Unknown model 'resnet19'"):
        hksan_keras.models.get("resnet19", num_classes=10)
