"""Model zoo: CIFAR ResNets, Wide ResNets and ImageNet ResNets with named stages."""

import functools

from hksan_keras.models.cifar_resnet import cifar_resnet, resnet8x4, resnet32x4
from hksan_keras.models.imagenet_resnet import imagenet_resnet
from hksan_keras.models.wide_resnet import wide_resnet

MODELS = {
    "resnet8": functools.partial(cifar_resnet, 8),
    # Half-width ResNet-8 (8/16/32 channels, ~20k weights): the student of
    # the CPU benchmark, small enough that distillation has room to help.
    "resnet8_narrow": functools.partial(cifar_resnet, 8, stem_width=8, stage_widths=(8, 16, 32)),
    "resnet20": functools.partial(cifar_resnet, 20),
    "resnet32": functools.partial(cifar_resnet, 32),
    # The deep ones start their residual branches at zero (see cifar_resnet's
    # zero_init_residual): ResNet-164 diverged at lr 0.05 without it, and a
    # ResNet-56 reached 38.2% without and 49.6% with it in the quick start.
    "resnet56": functools.partial(cifar_resnet, 56, zero_init_residual=True),
    "resnet110": functools.partial(cifar_resnet, 110, zero_init_residual=True),
    "resnet164": functools.partial(cifar_resnet, 164, block="bottleneck", zero_init_residual=True),
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
    "wrn_16_2": functools.partial(wide_resnet, 16, 2),
    "wrn_40_2": functools.partial(wide_resnet, 40, 2),
    "resnet18_imagenet": functools.partial(imagenet_resnet, 18),
    "resnet34_imagenet": functools.partial(imagenet_resnet, 34),
}


def get(name, num_classes, **kwargs):
    """Builds a zoo model by name.

    Args:
        name: One of `hksan_keras.models.MODELS` ("resnet20", "resnet164",
            "resnet8x4", "wrn_40_2", ...).
        num_classes: Number of output logits.
        **kwargs: Passed to the model's constructor (weight_decay, ...).

    Returns:
        A functional `keras.Model` with stages named "stage1", "stage2", ...

    Example:

    >>> teacher = hksan_keras.models.get("resnet164", num_classes=10)
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    return MODELS[name](num_classes=num_classes, **kwargs)


__all__ = ["MODELS", "cifar_resnet", "get", "imagenet_resnet", "resnet8x4", "resnet32x4", "wide_resnet"]
