"""ResNets for CIFAR (He et al. 2016), as functional models with named stages."""

import keras
from keras import layers


def _regularizer(weight_decay):
    # PyTorch-style coupled weight decay adds `weight_decay * w` to the
    # gradient; L2(l2) adds `2 * l2 * w`, hence the halving.
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def conv(x, filters, kernel_size, strides, name, weight_decay):
    """A same-padded convolution without bias, He-initialised, weight-decayed."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=_regularizer(weight_decay),
        name=name,
    )(x)


def conv_bn(x, filters, kernel_size, strides, name, weight_decay, momentum, zero_gamma=False):
    """3x3 or 1x1 convolution (no bias) followed by batch normalisation.

    `zero_gamma` starts the normalisation's scale at zero: on the last layer
    of a residual branch it makes the block start as the identity (Goyal et
    al. 2017).
    """
    x = conv(x, filters, kernel_size, strides, f"{name}_conv", weight_decay)
    return layers.BatchNormalization(
        momentum=momentum,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=f"{name}_bn",
    )(x)


def _basic_block(x, filters, strides, name, output_name, wd, momentum, zero_gamma=False):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides, f"{name}_shortcut", wd, momentum)
    y = conv_bn(x, filters, 3, strides, f"{name}_1", wd, momentum)
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = conv_bn(y, filters, 3, 1, f"{name}_2", wd, momentum, zero_gamma=zero_gamma)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=output_name)(y)


def _bottleneck_block(x, filters, strides, name, output_name, wd, momentum, zero_gamma=False):
    inner = filters // 4
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides, f"{name}_shortcut", wd, momentum)
    y = conv_bn(x, inner, 1, 1, f"{name}_1", wd, momentum)
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = conv_bn(y, inner, 3, strides, f"{name}_2", wd, momentum)
    y = layers.ReLU(name=f"{name}_2_relu")(y)
    y = conv_bn(y, filters, 1, 1, f"{name}_3", wd, momentum, zero_gamma=zero_gamma)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=output_name)(y)


def residual_stages(x, stage_widths, blocks, block_fn, weight_decay, momentum, zero_init_residual=False):
    """Stacks residual stages; the last block of stage s is the layer "stage{s}".

    Every stage but the first starts by halving the resolution.
    """
    for stage, (filters, count) in enumerate(zip(stage_widths, blocks), start=1):
        for index in range(count):
            x = block_fn(
                x,
                filters,
                strides=2 if (index == 0 and stage > 1) else 1,
                name=f"stage{stage}_block{index + 1}",
                output_name=f"stage{stage}" if index == count - 1 else f"stage{stage}_block{index + 1}_out",
                wd=weight_decay,
                momentum=momentum,
                zero_gamma=zero_init_residual,
            )
    return x


def logits_head(x, num_classes, weight_decay):
    """Global average pooling and the linear "logits" layer."""
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(num_classes, kernel_regularizer=_regularizer(weight_decay), name="logits")(x)


def cifar_resnet(
    depth,
    num_classes=10,
    block="basic",
    stem_width=16,
    stage_widths=None,
    weight_decay=5e-4,
    batch_norm_momentum=0.9,
    zero_init_residual=False,
    input_shape=(32, 32, 3),
    name=None,
    weights=None,
):
    """A CIFAR ResNet: a 3x3 stem, three stages, global pooling, logits.

    Stage outputs are the layers named "stage1", "stage2", "stage3"
    (32x32, 16x16 and 8x8 for 32x32 inputs); the last layer, "logits", has no
    activation.

    Args:
        depth: Number of weighted layers: 6n+2 with basic blocks (20, 32, 56,
            110, 8), 9n+2 with bottleneck blocks (164).
        num_classes: Number of output logits.
        block: "basic" (two 3x3 convolutions) or "bottleneck" (1x1-3x3-1x1,
            expansion 4).
        stem_width: Channels of the stem convolution.
        stage_widths: Output channels of the three stages; defaults to
            (16, 32, 64) for basic and (64, 128, 256) for bottleneck blocks.
        weight_decay: PyTorch-style weight decay on the kernels (0 for none).
        batch_norm_momentum: Keras BatchNormalization momentum (0.9 is
            PyTorch's default 0.1).
        zero_init_residual: Start the last batch normalisation of every
            residual branch at zero, so each block starts as the identity.
            Deep networks need it at the usual learning rates (ResNet-164
            diverged at lr 0.05 without it); on small networks and short
            schedules it costs accuracy (a narrow ResNet-8 trained alone for
            8 epochs in benchmarks/loss_weights.py: 38.9% with it, 51.3 to
            53.0% without), hence off by default.
        input_shape: Shape of one input image.
        name: Model name; defaults to "resnet{depth}".
        weights: None (random initial weights), a dataset whose trained
            weights ship with the package for this depth at the standard
            widths ("cifar10": see `hksan_keras.models.pretrained`), or the
            path of a `.weights.h5` file of the same architecture.

    Returns:
        A functional `keras.Model` from images to logits.

    Raises:
        ValueError: a depth that does not fit the block; or shipped weights
            asked for a model that has none (see `pretrained.load_weights`).

    Example:

    >>> model = cifar_resnet(20, num_classes=100)
    >>> model.output.shape
    (None, 100)
    >>> teacher = cifar_resnet(56, num_classes=10, weights="cifar10")  # trained
    """
    if block == "basic":
        if (depth - 2) % 6:
            raise ValueError(f"A basic-block CIFAR ResNet needs depth 6n+2, got {depth}.")
        blocks_per_stage = (depth - 2) // 6
        block_fn = _basic_block
        stage_widths = stage_widths or (16, 32, 64)
    elif block == "bottleneck":
        if (depth - 2) % 9:
            raise ValueError(f"A bottleneck CIFAR ResNet needs depth 9n+2, got {depth}.")
        blocks_per_stage = (depth - 2) // 9
        block_fn = _bottleneck_block
        stage_widths = stage_widths or (64, 128, 256)
    else:
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}.")

    inputs = keras.Input(shape=input_shape, name="images")
    x = conv_bn(inputs, stem_width, 3, 1, "stem", weight_decay, batch_norm_momentum)
    x = layers.ReLU(name="stem_relu")(x)
    x = residual_stages(
        x, stage_widths, [blocks_per_stage] * len(stage_widths), block_fn,
        weight_decay, batch_norm_momentum, zero_init_residual,
    )
    model = keras.Model(inputs, logits_head(x, num_classes, weight_decay), name=name or f"resnet{depth}")
    if weights is None:
        return model
    from hksan_keras.models import pretrained

    standard = stem_width == 16 and tuple(stage_widths) == (
        (16, 32, 64) if block == "basic" else (64, 128, 256)
    ) and block == ("bottleneck" if depth == 164 else "basic")
    # Shipped weights are listed by zoo name: "resnet{depth}" for the zoo's
    # widths and block (hksan_keras.models.MODELS), else the name the caller
    # gave ("resnet8x4").
    if not standard and name is None:
        raise ValueError(
            f"No shipped weights for a ResNet-{depth} with stem {stem_width}, stages {tuple(stage_widths)} and "
            f"{block} blocks; shipped weights are for zoo models (hksan_keras.models.get(name, weights=...)).")
    zoo_name = f"resnet{depth}" if standard else name
    return pretrained.load_weights(model, zoo_name, weights)


def resnet8x4(num_classes=100, **kwargs):
    """ResNet-8x4 (RepDistiller's): basic blocks, stem 32, stages 64/128/256."""
    return cifar_resnet(8, num_classes, stem_width=32, stage_widths=(64, 128, 256), name="resnet8x4", **kwargs)


def resnet32x4(num_classes=100, **kwargs):
    """ResNet-32x4 (RepDistiller's): basic blocks, stem 32, stages 64/128/256."""
    return cifar_resnet(32, num_classes, stem_width=32, stage_widths=(64, 128, 256), name="resnet32x4", **kwargs)
