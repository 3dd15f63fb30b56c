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


def _squeeze_by_building_every_map(squeeze, features):
    """HierarchicalSqueeze written out map by map, as the method states it."""
    ops = keras.ops
    maps = list(features)
    if squeeze.normalize_features:
        maps = [m * ops.rsqrt(ops.mean(ops.square(m), axis=(1, 2, 3), keepdims=True) + 1e-6) for m in maps]
    descriptor = ops.mean(squeeze.descriptor(maps[-1]), axis=(1, 2))
    if squeeze.channel_transform:
        maps = [transform(m) for transform, m in zip(squeeze.channel_transforms, maps)]
    squeezed, attention = [None] * len(maps), [None] * len(maps)
    for i in reversed(range(len(maps))):
        guide = descriptor
        if squeeze.hierarchy == "hierarchical" and i < len(maps) - 1:
            above = squeezed[i + 1]
            if squeeze.normalize_guide:
                above = above * ops.rsqrt(ops.mean(ops.square(above), axis=-1, keepdims=True) + 1e-6)
            guide = ops.concatenate([descriptor, above], axis=-1)
        estimator = squeeze.estimators[i]
        guided = maps[i] + estimator.guide_projection(guide)[:, None, None, :]
        scores = estimator.attention_score(guided)[..., 0]
        batch, height, width = scores.shape
        weights = ops.reshape(ops.softmax(ops.reshape(scores, (batch, -1)), axis=-1), (batch, height, width))
        pooled = guided if estimator.include_guide else maps[i]
        squeezed[i] = ops.sum(weights[..., None] * pooled, axis=(1, 2))
        attention[i] = weights
    return squeezed, attention


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(normalize_features=True, channel_transform=True, normalize_guide=True),
        dict(normalize_features=True, squeeze_target="pooled", channel_transform=True),
        dict(hierarchy="flat", channel_transform=True),
    ],
)
def test_squeeze_without_building_maps_equals_building_them(options):
    # The layer folds normalisation, channel transform and guide into the
    # estimators (nothing map-sized built); values must be those of the maps.
    # Channel transforms take any width; without them the stages have the target widths.
    widths = (3, 5) if options.get("channel_transform") else (4, 6)
    features = [
        3.0 * keras.random.normal((2, 8, 8, widths[0]), seed=5),
        keras.random.normal((2, 4, 4, widths[1]), seed=6) + 2.0,
    ]
    squeeze = HierarchicalSqueeze([4, 6], num_classes=3, descriptor_units=5, **options)
    squeeze.build([tuple(f.shape) for f in features])
    # Non-zero biases, so that the folded shifts are exercised.
    for layer in [squeeze.descriptor, *squeeze.channel_transforms, *[e.attention_score for e in squeeze.estimators]]:
        layer.bias.assign(keras.random.normal(layer.bias.shape, seed=7))
    outputs = squeeze(features)
    expected_squeezed, expected_attention = _squeeze_by_building_every_map(squeeze, features)
    for got, expected in zip(outputs["squeezed"] + outputs["attention"], expected_squeezed + expected_attention):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected), rtol=1e-4, atol=1e-5
        )


def test_squeeze_from_an_older_config_names_the_removed_option():
    squeeze = HierarchicalSqueeze([4, 6], num_classes=3, descriptor_units=5)
    assert HierarchicalSqueeze.from_config(squeeze.get_config()).get_config() == squeeze.get_config()
    for removed in ("scale_guide", "stop_guide_gradient"):
        older = {**squeeze.get_config(), removed: False}
        assert HierarchicalSqueeze.from_config(older).get_config() == squeeze.get_config()
        with pytest.raises(ValueError, match=f"{removed}=True, an option removed since"):
            HierarchicalSqueeze.from_config({**squeeze.get_config(), removed: True})
