"""DKD: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation" (CVPR 2022)."""

import warnings

import keras
from keras import ops

from hksan_keras import losses
from hksan_keras.checks import check_logit_standardization, user_stacklevel
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
        logit_standardization: Z-score each example's logits before the
            softmax (`losses.standardize_logits`; Sun et al. 2024).
            `DKDLSDistiller` sets it with the paper's weights.
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
        Option("logit_standardization", False, "flag",
               "z-score each example's logits before the softmax (Sun et al. 2024)"),
    )

    def __init__(self, teacher, student, alpha=OPTIONS.alpha, beta=OPTIONS.beta,
                 temperature=OPTIONS.temperature, warmup_steps=OPTIONS.warmup_steps,
                 label_weight=OPTIONS.label_weight, logit_standardization=OPTIONS.logit_standardization,
                 global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        type(self).OPTIONS.check(locals())
        kwargs.setdefault("name", "dkd_distiller")
        super().__init__(teacher, student, label_weight=label_weight, global_clipnorm=global_clipnorm,
                         **kwargs)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.warmup_steps = int(warmup_steps)
        self.logit_standardization = bool(logit_standardization)
        if self.logit_standardization:
            check_logit_standardization(self.num_classes, type(self).__name__)
        if self.num_classes == 2:
            warnings.warn(
                "DKDDistiller on 2 classes: its non-target term (NCKD) is "
                "identically zero (one non-target class has probability 1 "
                "among the non-targets), so only the target-class term (TCKD) "
                "and the labels train the student. KDDistiller transfers the "
                "same information on two classes.",
                stacklevel=user_stacklevel(),
            )

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        teacher_logits, student_logits = teacher["logits"], student["logits"]
        if self.logit_standardization:
            teacher_logits = losses.standardize_logits(teacher_logits)
            student_logits = losses.standardize_logits(student_logits)
        terms["dkd_loss"] = losses.dkd_loss(
            labels, teacher_logits, student_logits, self.alpha, self.beta, self.temperature
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
            "logit_standardization": self.logit_standardization,
        }


@keras.saving.register_keras_serializable(package="hksan_keras")
class DKDLSDistiller(DKDDistiller):
    """DKD with logit standardisation ("dkd+ls"): Sun et al.'s recipe.

    DKD's loss on z-scored logits (`losses.standardize_logits`), with the
    paper's CIFAR-100 setting (Sun, Ren, Li, Wang, Cao, "Logit
    Standardization in Knowledge Distillation", CVPR 2024; their code,
    tools/train.py at sunshangquan/logit-standardization-KD 6b58661,
    `--logit-stand --base-temp 2 --kd-weight 9`, multiplies the pair's
    DKD alpha and beta by 9 and sets T = 2): the defaults are mdistiller's
    DKD (alpha 1, beta 8) times 9, T = 2; the label weight and the warm-up
    are DKD's. A pair whose DKD beta differs (mdistiller's per-pair betas,
    set in configs/) takes 9 times its own: the configs set `dkd+ls` beside
    `dkd`.

    Args:
        teacher, student, alpha, beta, temperature, warmup_steps,
            label_weight, logit_standardization, global_clipnorm, **kwargs:
            As for `DKDDistiller`; only the defaults differ
            (docs/options.md).

    Example:

    >>> distiller = DKDLSDistiller(teacher, student, warmup_steps=1000)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    OPTIONS = DKDDistiller.OPTIONS.extend(alpha=9.0, beta=72.0, temperature=2.0, logit_standardization=True)

    def __init__(self, teacher, student, alpha=OPTIONS.alpha, beta=OPTIONS.beta,
                 temperature=OPTIONS.temperature, warmup_steps=OPTIONS.warmup_steps,
                 label_weight=OPTIONS.label_weight, logit_standardization=OPTIONS.logit_standardization,
                 global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        kwargs.setdefault("name", "dkd_ls_distiller")
        super().__init__(teacher, student, alpha=alpha, beta=beta, temperature=temperature,
                         warmup_steps=warmup_steps, label_weight=label_weight,
                         logit_standardization=logit_standardization,
                         global_clipnorm=global_clipnorm, **kwargs)
