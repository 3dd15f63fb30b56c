"""hksan-keras: compress image classifiers by knowledge distillation in Keras.

Public API:
    HKSANDistiller  the distiller (keras.Model; compile + fit)
    distillers      every method: KD, DKD (each also with logit standardisation),
                    DIST, FitNets, FSP, AT, NST, VID, ReviewKD, CRD,
                    ANC, Xu et al., the student alone, HKSAN; `distillers.METHODS` by name
    Distiller       the base that every distiller shares (the train_step)
    TaskDrivenAttention, HierarchicalSqueeze, LogitDiscriminator
    losses          every method's loss terms, usable on their own
    keras_losses    KD, AT, NST as keras.distillation.DistillationLoss
    models          CIFAR ResNets, Wide ResNets, ImageNet ResNets with named stages
    taps            stage outputs of any functional or Sequential model, nested
                    models included (layers named by path: "backbone/conv4_out")
    logits_model    the logits of a classifier that ends in a softmax
    data            tf.data pipelines (TFDS, numpy arrays, image folders)
    callbacks       per-epoch metrics, summaries, best-student checkpoint
    export          SavedModel and TFLite export
    experiment      config-driven steps behind the hksan-keras command (configs
                    resolved by `config.resolve_config`, run directories in `runs`)
"""

from hksan_keras import callbacks, data, export, keras_losses, logits, losses, models, taps
from hksan_keras.logits import logits_model
from hksan_keras.attention import HierarchicalSqueeze, TaskDrivenAttention
from hksan_keras.discriminators import LogitDiscriminator
from hksan_keras import distillers
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
    "distillers",
    "data",
    "experiment",
    "export",
    "keras_losses",
    "logits",
    "logits_model",
    "losses",
    "models",
    "taps",
]
