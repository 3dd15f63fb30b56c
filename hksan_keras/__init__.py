"""hksan-keras: compress image classifiers by knowledge distillation in Keras.

Public API:
    HKSANDistiller  the distiller (keras.Model; compile + fit)
    Distiller       the base that every distiller shares
    TaskDrivenAttention, HierarchicalSqueeze, LogitDiscriminator
    losses          HKSAN's loss terms, usable on their own
    models          CIFAR ResNets and Wide ResNets with named stages
    taps            stage outputs of any functional model
"""

from hksan_keras import losses, models, taps
from hksan_keras.attention import HierarchicalSqueeze, TaskDrivenAttention
from hksan_keras.discriminators import LogitDiscriminator
from hksan_keras.distillers import Distiller, HKSANDistiller

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "HKSANDistiller",
    "HierarchicalSqueeze",
    "LogitDiscriminator",
    "TaskDrivenAttention",
    "losses",
    "models",
    "taps",
]
