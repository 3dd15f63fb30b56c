"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016), with named stages."""

import keras
from keras import layers

from hksan_keras.models.cifar_resnet import conv, logits_head


def _bn_relu(x, name, momentum):
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=name)(x)


def wide_resnet(
    depth,
    width,
    num_classes=100,
    dropout=0.0,
    weight_decay=5e-4,
    batch_norm_momentum=0.9,
    input_shape=(32, 32, 3),
    name=None,
):
    """A pre-activation Wide ResNet WRN-depth-width.

    Each stage ends with batch normalisation and ReLU in a layer named
    "stage1", "stage2" or "stage3"; that activated map feeds both branches of
    the next stage's first block, as in the original WRN. The last layer,
    "logits", has no activation.

    Args:
        depth: 6n+4 (16, 28, 40, ...).
        width: Widening factor k; stages are 16k, 32k and 64k channels wide.
        num_classes: Number of output logits.
        dropout: Dropout rate between the two convolutions of a block.
        weight_decay: PyTorch-style weight decay on the kernels (0 for none).
        batch_norm_momentum: Keras BatchNormalization momentum.
        input_shape: Shape of one input image.
        name: Model name; defaults to "wrn_{depth}_{width}".

    Returns:
        A functional `keras.Model` from images to logits.

    Example:

    >>> model = wide_resnet(16, 2, num_classes=100)
    >>> model.get_layer("stage3").output.shape
    (None, 8, 8, 128)
    """
    if (depth - 4) % 6:
        raise ValueError(f"A Wide ResNet needs depth 6n+4, got {depth}.")
    blocks_per_stage = (depth - 4) // 6
    momentum = batch_norm_momentum
    inputs = keras.Input(shape=input_shape, name="images")
    x = conv(inputs, 16, 3, 1, "stem_conv", weight_decay)
    activated = False  # whether x is already batch-normalised and ReLU'd
    for stage, filters in enumerate((16 * width, 32 * width, 64 * width), start=1):
        for index in range(blocks_per_stage):
            prefix = f"stage{stage}_block{index + 1}"
            strides = 2 if (index == 0 and stage > 1) else 1
            pre = x if activated else _bn_relu(x, f"{prefix}_preact", momentum)
            if strides != 1 or x.shape[-1] != filters:
                shortcut = conv(pre, filters, 1, strides, f"{prefix}_shortcut_conv", weight_decay)
            else:
                shortcut = x
            y = conv(pre, filters, 3, strides, f"{prefix}_1_conv", weight_decay)
            y = _bn_relu(y, f"{prefix}_1_relu", momentum)
            if dropout:
                y = layers.Dropout(dropout, name=f"{prefix}_dropout")(y)
            y = conv(y, filters, 3, 1, f"{prefix}_2_conv", weight_decay)
            x = layers.Add(name=f"{prefix}_add")([shortcut, y])
            activated = False
        x = _bn_relu(x, f"stage{stage}", momentum)
        activated = True
    return keras.Model(inputs, logits_head(x, num_classes, weight_decay), name=name or f"wrn_{depth}_{width}")
