"""hksan-keras: compress image classifiers by knowledge distillation in Keras.

Public API:
    HKSANDistiller  the distiller (keras.Model; compile + fit)
    Distiller       the base that every distiller shares
    TaskDrivenAttention, HierarchicalSqueeze, LogitDiscriminator
    losses          HKSAN's loss terms, usable on their own
    models          CIFAR ResNets, Wide ResNets, ImageNet ResNets with named stages
    taps            stage outputs of any functional model
    data            tf.data pipelines (TFDS, numpy arrays, image folders)
    callbacks       per-epoch metrics, summaries, best-student checkpoint
    export          SavedModel and TFLite export
    experiment      config-driven steps behind the hksan-keras command
"""

from hksan_keras import callbacks, data, export, losses, models, taps
from hksan_keras.attention import HierarchicalSqueeze, TaskDrivenAttention
from hksan_keras.discriminators import LogitDiscriminator
from hksan_keras.distillers import Distiller, HKSANDistiller
from hksan_keras import experiment  # noqa: E402  (uses the distillers)

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "HKSANDistiller",
    "HierarchicalSqueeze",
    "LogitDiscriminator",
    "TaskDrivenAttention",
    "callbacks",
    "data",
    "experiment",
    "export",
    "losses",
    "models",
    "taps",
]
