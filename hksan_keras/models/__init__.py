"""Model zoo: CIFAR ResNets, Wide ResNets and ImageNet ResNets with named stages."""

import functools

from hksan_keras.models.cifar_resnet import cifar_resnet, resnet8x4, resnet32x4
from hksan_keras.models.imagenet_resnet import imagenet_resnet
from hksan_keras.models import pretrained
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


def get(name, num_classes=None, weights=None, **kwargs):
    """Builds a zoo model by name, with random or trained weights.

    Args:
        name: One of `hksan_keras.models.MODELS` ("resnet20", "resnet164",
            "resnet8x4", "wrn_40_2", ...).
        num_classes: Number of output logits. Required with random weights;
            with shipped weights it defaults to theirs and must equal it.
        weights: None (random initial weights), the name of a dataset whose
            trained weights ship with the package ("cifar10"; the list and
            their test accuracy: `hksan_keras.models.pretrained.manifest()`
            and docs/models.md), or the path of a `.weights.h5` file saved
            from the same architecture, as in `keras.applications`.
        **kwargs: Passed to the model's constructor (weight_decay, ...).

    Returns:
        A functional `keras.Model` with stages named "stage1", "stage2", ...

    Raises:
        ValueError: an unknown model name; no num_classes with random
            weights; or (see `pretrained.load_weights`) no shipped weights for
            this model and dataset, or a different number of classes.

    Example:

    >>> teacher = hksan_keras.models.get("resnet164", num_classes=10)
    >>> teacher = hksan_keras.models.get("resnet56", weights="cifar10")  # trained
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.")
    if weights is not None and not pretrained.is_path(weights):
        shipped = pretrained.entry(name, weights)
        num_classes = shipped["num_classes"] if num_classes is None else num_classes
    if num_classes is None:
        raise ValueError(f"models.get({name!r}) needs num_classes (or weights= naming a dataset with shipped weights).")
    model = MODELS[name](num_classes=num_classes, **kwargs)
    return pretrained.load_weights(model, name, weights)


__all__ = ["MODELS", "cifar_resnet", "get", "imagenet_resnet", "pretrained", "resnet8x4", "resnet32x4", "wide_resnet"]
