"""ResNet-18/34 for ImageNet (He et al. 2016), with named stages."""

import keras
from keras import layers

from hksan_keras.models.cifar_resnet import _basic_block, conv_bn, logits_head, residual_stages

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def imagenet_resnet(
    depth,
    num_classes=1000,
    weight_decay=1e-4,
    batch_norm_momentum=0.9,
    input_shape=(224, 224, 3),
    name=None,
):
    """ResNet-18 or ResNet-34: 7x7 stem, max pooling, four basic-block stages.

    Stage outputs are the layers "stage1".."stage4" (56, 28, 14 and 7 pixels
    for 224x224 inputs, 64/128/256/512 channels); "logits" has no activation.
    Shortcuts that change shape are 1x1 convolutions (option B).

    Args:
        depth: 18 or 34.
        num_classes: Number of output logits.
        weight_decay: PyTorch-style weight decay on the kernels.
        batch_norm_momentum: Keras BatchNormalization momentum.
        input_shape: Shape of one input image.
        name: Model name; defaults to "resnet{depth}_imagenet".

    Returns:
        A functional `keras.Model` from images to logits.

    Example:

    >>> model = imagenet_resnet(18)
    >>> model.get_layer("stage4").output.shape
    (None, 7, 7, 512)
    """
    if depth not in BLOCKS:
        raise ValueError(f"depth must be one of {sorted(BLOCKS)}, got {depth}.")
    inputs = keras.Input(shape=input_shape, name="images")
    x = conv_bn(inputs, 64, 7, 2, "stem", weight_decay, batch_norm_momentum)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = residual_stages(x, (64, 128, 256, 512), BLOCKS[depth], _basic_block,
                        weight_decay, batch_norm_momentum)
    return keras.Model(inputs, logits_head(x, num_classes, weight_decay), name=name or f"resnet{depth}_imagenet")
