"""KD: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015)."""

import keras

from hksan_keras import losses
from hksan_keras.checks import check_logit_standardization
from hksan_keras.distillers.base import Distiller
from hksan_keras.options import Option


@keras.saving.register_keras_serializable(package="hksan_keras")
class KDDistiller(Distiller):
    """Knowledge distillation on temperature-softened logits.

        L_S = label_weight * CE(y, l_S)
            + kd_weight * T^2 * KL(softmax(l_T / T) || softmax(l_S / T))

    Defaults are RepDistiller's and mdistiller's CIFAR setting (T = 4,
    0.1 * CE + 0.9 * KD).

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        temperature: T, > 0.
        kd_weight: Weight of the KD term, >= 0.
        label_weight: Weight of the label cross-entropy, >= 0.
        logit_standardization: Z-score each example's logits (teacher's and
            student's) before the softmax (`losses.standardize_logits`; Sun
            et al. 2024). `KDLSDistiller` sets it with the paper's weights.
        global_clipnorm: See `Distiller` (None: no clipping, as in the paper).
        **kwargs: Standard `keras.Model` arguments.

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md).

    Example:

    >>> distiller = KDDistiller(teacher, student, temperature=4.0)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    LOSS_TERMS = ("label_loss", "kd_loss")
    # RepDistiller's and mdistiller's CIFAR setting.
    OPTIONS = Distiller.OPTIONS.extend(
        Option("temperature", 4.0, "positive", "T, the softmax temperature of both networks' logits"),
        Option("kd_weight", 0.9, "weight", "weight of the KD term"),
        Option("logit_standardization", False, "flag",
               "z-score each example's logits before the softmax (Sun et al. 2024)"),
        label_weight=0.1,
    )

    def __init__(self, teacher, student, temperature=OPTIONS.temperature, kd_weight=OPTIONS.kd_weight,
                 label_weight=OPTIONS.label_weight, logit_standardization=OPTIONS.logit_standardization,
                 global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        type(self).OPTIONS.check(locals())
        kwargs.setdefault("name", "kd_distiller")
        super().__init__(teacher, student, label_weight=label_weight, global_clipnorm=global_clipnorm,
                         **kwargs)
        self.temperature = float(temperature)
        self.kd_weight = float(kd_weight)
        self.logit_standardization = bool(logit_standardization)
        if self.logit_standardization:
            check_logit_standardization(self.num_classes, type(self).__name__)

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        teacher_logits, student_logits = teacher["logits"], student["logits"]
        if self.logit_standardization:
            teacher_logits = losses.standardize_logits(teacher_logits)
            student_logits = losses.standardize_logits(student_logits)
        terms["kd_loss"] = losses.kd_loss(teacher_logits, student_logits, self.temperature)
        return terms

    def term_weights(self):
        return {**super().term_weights(), "kd_loss": self.kd_weight}

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "kd_weight": self.kd_weight,
                "logit_standardization": self.logit_standardization}


@keras.saving.register_keras_serializable(package="hksan_keras")
class KDLSDistiller(KDDistiller):
    """KD with logit standardisation ("kd+ls"): Sun et al.'s recipe.

        L_S = label_weight * CE(y, l_S)
            + kd_weight * T^2 * KL(softmax(z(l_T) / T) || softmax(z(l_S) / T))

    with z the per-example z-score (`losses.standardize_logits`). The
    defaults are the paper's CIFAR-100 setting (Sun, Ren, Li, Wang, Cao,
    "Logit Standardization in Knowledge Distillation", CVPR 2024; their
    code's `--logit-stand --base-temp 2 --kd-weight 9` over mdistiller's KD,
    whose label weight is 0.1): T = 2, KD weight 9.

    Args:
        teacher, student, temperature, kd_weight, label_weight,
            logit_standardization, global_clipnorm, **kwargs: As for
            `KDDistiller`; only the defaults differ (docs/options.md).

    Example:

    >>> distiller = KDLSDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    OPTIONS = KDDistiller.OPTIONS.extend(temperature=2.0, kd_weight=9.0, logit_standardization=True)

    def __init__(self, teacher, student, temperature=OPTIONS.temperature, kd_weight=OPTIONS.kd_weight,
                 label_weight=OPTIONS.label_weight, logit_standardization=OPTIONS.logit_standardization,
                 global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        kwargs.setdefault("name", "kd_ls_distiller")
        super().__init__(teacher, student, temperature=temperature, kd_weight=kd_weight,
                         label_weight=label_weight, logit_standardization=logit_standardization,
                         global_clipnorm=global_clipnorm, **kwargs)
