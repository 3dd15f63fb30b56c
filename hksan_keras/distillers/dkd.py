"""DKD: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation" (CVPR 2022)."""

import warnings

import keras
from keras import ops

from hksan_keras import losses
from hksan_keras.distillers.base import Distiller
from hksan_keras.options import Option


@keras.saving.register_keras_serializable(package="hksan_keras")
class DKDDistiller(Distiller):
    """Decoupled KD: target-class and non-target-class KD, weighted apart.

        L_S = label_weight * CE(y, l_S)
            + min(step / warmup_steps, 1) * (alpha * TCKD + beta * NCKD)

    Defaults are mdistiller's CIFAR setting (alpha 1, beta 8, T 4; it warms
    the DKD term up over the first 20 of 240 epochs: pass
    `warmup_steps=20 * steps_per_epoch` for that recipe).

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        alpha: Weight of TCKD.
        beta: Weight of NCKD.
        temperature: T.
        warmup_steps: Student steps over which the DKD weight rises linearly
            to 1; 0 for none. (Configs set `warmup_epochs` instead.)
        label_weight: Weight of the label cross-entropy.
        global_clipnorm: See `Distiller` (None: no clipping, as in the paper).
        **kwargs: Standard `keras.Model` arguments.

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md).

    Example:

    >>> distiller = DKDDistiller(teacher, student, beta=8.0, warmup_steps=1000)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    LOSS_TERMS = ("label_loss", "dkd_loss")
    # mdistiller's CIFAR setting (alpha 1, beta 8, T 4, a 20-epoch warm-up).
    OPTIONS = Distiller.OPTIONS.extend(
        Option("alpha", 1.0, "weight", "weight of TCKD, the target-class term"),
        Option("beta", 8.0, "weight", "weight of NCKD, the non-target-class term"),
        Option("temperature", 4.0, "positive", "T, the softmax temperature"),
        Option("warmup_steps", 0, "count",
               "student steps over which the DKD weight rises linearly to 1; 0: none", config=False),
        Option("warmup_epochs", 20, "count",
               "the warm-up in epochs (configs; converted to warmup_steps)", constructor=False),
    )

    def __init__(self, teacher, student, alpha=OPTIONS.alpha, beta=OPTIONS.beta,
                 temperature=OPTIONS.temperature, warmup_steps=OPTIONS.warmup_steps,
                 label_weight=OPTIONS.label_weight, global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        DKDDistiller.OPTIONS.check(locals())
        kwargs.setdefault("name", "dkd_distiller")
        super().__init__(teacher, student, label_weight=label_weight, global_clipnorm=global_clipnorm,
                         **kwargs)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.warmup_steps = int(warmup_steps)
        if self.num_classes == 2:
            warnings.warn(
                "DKDDistiller on 2 classes: its non-target term (NCKD) is "
                "identically zero (one non-target class has probability 1 "
                "among the non-targets), so only the target-class term (TCKD) "
                "and the labels train the student. KDDistiller transfers the "
                "same information on two classes.",
                stacklevel=2,
            )

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        terms["dkd_loss"] = losses.dkd_loss(
            labels, teacher["logits"], student["logits"], self.alpha, self.beta, self.temperature
        )
        return terms

    def term_weights(self):
        weight = 1.0
        if self.warmup_steps:
            step = ops.cast(self.optimizer.iterations + 1, "float32")
            weight = ops.minimum(step / self.warmup_steps, 1.0)
        return {**super().term_weights(), "dkd_loss": weight}

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": self.temperature,
            "warmup_steps": self.warmup_steps,
        }
