"""The small networks of the distributed tests (no TensorFlow device set-up here)."""

import keras


def plain_cnn(widths, name):
    # No batch normalisation in the networks: unsynchronised per-replica
    # statistics would differ from single-device ones by design.
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for i, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"stage{i}")(x)
        if i < len(widths):
            x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name=name)
