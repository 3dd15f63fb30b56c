import keras
import numpy as np
import pytest

from hksan_keras import HierarchicalSqueeze, TaskDrivenAttention


def test_attention_maps_are_distributions_and_squeezed_vector_is_their_average():
    feature_map = keras.random.normal((3, 5, 7, 6), seed=1)
    guide = keras.random.normal((3, 4), seed=2)
    layer = TaskDrivenAttention(6)
    squeezed, attention = layer([feature_map, guide])
    attention = keras.ops.convert_to_numpy(attention)
    assert attention.shape == (3, 5, 7)
    assert (attention >= 0).all()
    np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    # k = sum_p M_p * (L_p + Dense(guide)), recomputed by hand.
    projected = keras.ops.convert_to_numpy(layer.guide_projection(guide))
    guided = keras.ops.convert_to_numpy(feature_map) + projected[:, None, None, :]
    expected = (attention[..., None] * guided).sum(axis=(1, 2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(squeezed), expected, rtol=1e-4, atol=1e-5)


def test_attention_rejects_a_feature_map_of_the_wrong_width():
    with pytest.raises(ValueError, match="expected a feature map with 8 channels"):
        TaskDrivenAttention(8)([keras.ops.ones((1, 4, 4, 6)), keras.ops.ones((1, 3))])


@pytest.mark.parametrize("hierarchy, deep_guide_width", [("hierarchical", 16 + 32), ("flat", 16)])
def test_hierarchical_guides_carry_the_deeper_stage(hierarchy, deep_guide_width):
    squeeze = HierarchicalSqueeze(
        [8, 32], num_classes=5, descriptor_units=16, hierarchy=hierarchy,
        channel_transform=True,
    )
    outputs = squeeze([keras.ops.ones((2, 8, 8, 3)), keras.ops.ones((2, 4, 4, 7))])
    assert [tuple(k.shape) for k in outputs["squeezed"]] == [(2, 8), (2, 32)]
    assert [tuple(m.shape) for m in outputs["attention"]] == [(2, 8, 8), (2, 4, 4)]
    assert [tuple(t.shape) for t in outputs["task_logits"]] == [(2, 5), (2, 5)]
    # The shallow stage's guide projection reads [g ; k^2] or g alone.
    assert squeeze.estimators[0].guide_projection.kernel.shape == (deep_guide_width, 8)
    assert squeeze.estimators[1].guide_projection.kernel.shape == (16, 32)


def test_hierarchy_changes_the_shallow_squeeze_only_when_hierarchical():
    inputs = [keras.random.normal((2, 8, 8, 4), seed=3), keras.random.normal((2, 4, 4, 4), seed=4)]
    squeeze = HierarchicalSqueeze([4, 4], num_classes=3, descriptor_units=4)
    squeeze(inputs)
    deep_before = keras.ops.convert_to_numpy(squeeze(inputs)["squeezed"][0])
    # Changing the deep estimator changes the shallow stage's squeeze through the guide.
    score = squeeze.estimators[1].attention_score
    score.kernel.assign(score.kernel + 1.0)
    shallow_after = keras.ops.convert_to_numpy(squeeze(inputs)["squeezed"][0])
    assert not np.allclose(deep_before, shallow_after)


def test_unknown_hierarchy_is_rejected():
    with pytest.raises(ValueError, match="hierarchy must be one of"):
        HierarchicalSqueeze([4], num_classes=2, hierarchy="bottom-up")


def test_layers_round_trip_through_config():
    squeeze = HierarchicalSqueeze([4, 8], num_classes=3, descriptor_units=6, hierarchy="flat", channel_transform=True)
    clone = HierarchicalSqueeze.from_config(squeeze.get_config())
    assert clone.get_config() == squeeze.get_config()
    layer = TaskDrivenAttention(5, name="a")
    assert TaskDrivenAttention.from_config(layer.get_config()).units == 5


@pytest.mark.parametrize("normalize_guide", [False, True])
def test_normalized_guide_is_a_constant_for_the_shallower_stage(normalize_guide):
    import tensorflow as tf

    squeeze = HierarchicalSqueeze([4, 6], num_classes=3, descriptor_units=5, normalize_guide=normalize_guide)
    features = [tf.random.normal((2, 8, 8, 4)), tf.random.normal((2, 4, 4, 6))]
    squeeze.build([f.shape for f in features])
    deep_score = squeeze.estimators[1].attention_score.kernel
    with tf.GradientTape() as tape:
        shallow = squeeze(features)["squeezed"][0]
    gradient = tape.gradient(shallow, deep_score)
    if normalize_guide:
        assert gradient is None or float(tf.reduce_max(tf.abs(gradient))) == 0.0
    else:
        assert float(tf.reduce_max(tf.abs(gradient))) > 0.0
    restored = HierarchicalSqueeze.from_config(squeeze.get_config())
    assert restored.normalize_guide is normalize_guide
