"""FSP (Yim et al., CVPR 2017): flow matrices by hand, the loss's minimum, the two stages."""

import keras
import numpy as np
import pytest

from conftest import tiny_resnet
from hksan_keras import distillers, losses, models


def test_the_flow_matrix_is_the_papers_inner_product_over_positions():
    rng = np.random.default_rng(0)
    first = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    second = rng.normal(size=(2, 2, 2, 5)).astype("float32")
    # The larger map is average-pooled to 2x2; G[a, b] = sum_hw F1 F2 / (h w).
    pooled = first.reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4))
    expected = np.einsum("nhwa,nhwb->nab", pooled, second) / 4.0
    np.testing.assert_allclose(np.asarray(losses.flow_matrix(first, second)), expected, rtol=1e-5, atol=1e-6)


def test_the_loss_sums_the_mean_squared_difference_of_consecutive_pairs_and_is_zero_at_the_teacher():
    rng = np.random.default_rng(1)
    shapes = [(2, 8, 8, 4), (2, 4, 4, 6), (2, 2, 2, 8)]
    teacher = [rng.normal(size=s).astype("float32") for s in shapes]
    student = [rng.normal(size=s).astype("float32") for s in shapes]
    flow = lambda maps, i: np.asarray(losses.flow_matrix(maps[i], maps[i + 1]))  # noqa: E731
    expected = sum(np.mean((flow(student, i) - flow(teacher, i)) ** 2) for i in range(2))
    assert float(losses.fsp_loss(teacher, student)) == pytest.approx(expected, rel=1e-5)
    assert float(losses.fsp_loss(teacher, teacher)) == 0.0
    with pytest.raises(ValueError, match="FSP needs stages of equal widths"):
        losses.fsp_loss(teacher, [student[0], student[1][..., :3], student[2]])


def test_the_distiller_needs_equal_widths_and_init_steps(teacher, student):
    with pytest.raises(ValueError, match=r"equal widths; got teacher \[8, 8, 16, 24\] .* student \[4, 4, 8, 12\]"):
        distillers.FSPDistiller(teacher, student, init_steps=10)
    same_widths = tiny_resnet((8, 16, 24), name="student")
    with pytest.raises(ValueError, match="needs init_steps >= 1"):
        distillers.FSPDistiller(teacher, same_widths)
    distiller = distillers.FSPDistiller(teacher, same_widths, init_steps=10)
    # The zoo's stem feeds the first section: three matrices, as in the paper.
    assert distiller.teacher_stages == ["stem_relu", "stage1", "stage2", "stage3"]
    named = distillers.FSPDistiller(teacher, same_widths, init_steps=10, teacher_stages=["stage2", "stage3"],
                                    student_stages=["stage2", "stage3"])
    assert named.teacher_stages == ["stage2", "stage3"]
    restored = distillers.FSPDistiller.from_config(distiller.get_config())
    assert (restored.init_steps, restored.fsp_weight) == (10, 0.0)


def test_the_zoo_pairs_of_equal_widths_are_found_and_others_refused():
    resnet56 = models.get("resnet56", 10, input_shape=(16, 16, 3))
    resnet20 = models.get("resnet20", 10, input_shape=(16, 16, 3))
    assert distillers.FSPDistiller(resnet56, resnet20, init_steps=1).student_stages == [
        "stem_relu", "stage1", "stage2", "stage3"]
    with pytest.raises(ValueError, match="equal widths"):
        distillers.FSPDistiller(resnet20, models.get("resnet8_narrow", 10, input_shape=(16, 16, 3)), init_steps=1)
    # num_stages=K: the deepest K sections, each from its input.
    assert distillers.FSPDistiller(resnet56, resnet20, init_steps=1, num_stages=2).teacher_stages == [
        "stage1", "stage2", "stage3"]
    with pytest.raises(ValueError, match=r"num_stages=4 asks for 4 sections, 5 maps, and the teacher has 4"):
        distillers.FSPDistiller(resnet56, resnet20, init_steps=1, num_stages=4)


@pytest.mark.parametrize("teacher, student, shape, maps", [
    # The Wide ResNets' first section starts at the stem convolution
    # (pre-activation): three matrices, as in the paper.
    ("wrn_40_2", "wrn_16_2", (16, 16, 3), ["stem_conv", "stage1", "stage2", "stage3"]),
    # The ImageNet ResNets: detection already finds the stem (its own
    # resolution); four sections, the stem never twice.
    ("resnet34_imagenet", "resnet18_imagenet", (64, 64, 3),
     ["stem_relu", "stage1", "stage2", "stage3", "stage4"]),
])
def test_every_zoo_pair_gets_one_flow_matrix_per_residual_section(teacher, student, shape, maps):
    teacher = models.get(teacher, 10, input_shape=shape)
    student = models.get(student, 10, input_shape=shape)
    distiller = distillers.FSPDistiller(teacher, student, init_steps=1)
    assert distiller.teacher_stages == maps and distiller.student_stages == maps
    # The ImageNet config's num_stages=4 keeps the four sections, stem included.
    assert distillers.FSPDistiller(teacher, student, init_steps=1, num_stages=len(maps) - 1).teacher_stages == maps
    images = np.zeros((2, *shape), "float32")
    features = distiller.student_outputs(images, training=False)["features"]
    assert len(features) == len(maps)


def test_the_fsp_stage_trains_only_on_flow_matrices_then_only_on_labels(teacher, batch):
    student = tiny_resnet((8, 16, 24), name="student")
    distiller = distillers.FSPDistiller(teacher, student, init_steps=2)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    weights = distiller.term_weights()
    assert (float(weights["label_loss"]), float(weights["fsp_loss"])) == (0.0, 1.0)
    head = [np.array(v) for v in student.get_layer("logits").weights]
    teacher_before = [np.array(v) for v in teacher.weights]
    # Two steps of 16 images: the FSP stage, which does not reach the head;
    # only weight decay (5e-4, on kernels) shrinks its kernel, twice.
    distiller.fit(*batch, batch_size=16, epochs=1, verbose=0)
    kernel, bias = (np.array(v) for v in student.get_layer("logits").weights)
    np.testing.assert_allclose(kernel, head[0] * (1 - 0.05 * 5e-4) ** 2, rtol=1e-6)
    np.testing.assert_array_equal(bias, head[1])
    weights = distiller.term_weights()
    assert (float(weights["label_loss"]), float(weights["fsp_loss"])) == (1.0, 0.0)
    distiller.fit(*batch, batch_size=16, epochs=1, verbose=0)
    assert any(not np.array_equal(b, np.array(v)) for b, v in zip(head, student.get_layer("logits").weights))
    assert all(np.array_equal(b, np.array(v)) for b, v in zip(teacher_before, teacher.weights))


def test_configs_give_the_fsp_stage_in_epochs_and_refuse_one_that_takes_every_epoch():
    import pathlib

    from hksan_keras.build import build_distiller, build_models
    from hksan_keras.config import ConfigError, resolve_config

    config_path = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "cifar10_resnet56_resnet20_cpu_medium.json")
    config = resolve_config(config_path, ["distill.method=fsp", "teacher.model=resnet8", "student.model=resnet8"])
    teacher, student = build_models(config, 10)
    distiller, _ = build_distiller(config, teacher, student, steps_per_epoch=50)
    assert distiller.init_steps == 2 * 50
    with pytest.raises(ConfigError, match=r"distill.fsp.init_epochs \(15\) must be smaller than distill.epochs \(15\)"):
        resolve_config(config_path, ["distill.method=fsp", "distill.fsp.init_epochs=15"])
