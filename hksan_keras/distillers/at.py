"""AT: Zagoruyko and Komodakis, "Paying More Attention to Attention" (ICLR 2017)."""

import keras

from hksan_keras import losses
from hksan_keras.distillers.base import StageDistiller
from hksan_keras.options import Option


@keras.saving.register_keras_serializable(package="hksan_keras")
class ATDistiller(StageDistiller):
    """Attention transfer: match the normalised spatial attention of every stage.

        L_S = label_weight * CE(y, l_S)
            + at_weight * sum_i mean((Q_S^i - Q_T^i)^2),
        Q = normalise(mean over channels of |F|^p)

    Defaults (p = 2, weight 1000) are RepDistiller's and mdistiller's.

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        at_weight: Weight of the attention term.
        p: Power of the attention maps.
        teacher_stages, student_stages, num_stages, label_weight,
            global_clipnorm: See `StageDistiller` and `Distiller`.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md).

    Example:

    >>> distiller = ATDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    LOSS_TERMS = ("label_loss", "attention_loss")
    # RepDistiller's and mdistiller's setting.
    OPTIONS = StageDistiller.OPTIONS.extend(
        Option("at_weight", 1000.0, "weight", "weight of the attention term"),
        Option("p", 2.0, "positive", "power of the attention maps, mean over channels of |F|^p"),
    )

    def __init__(self, teacher, student, at_weight=OPTIONS.at_weight, p=OPTIONS.p,
                 teacher_stages=OPTIONS.teacher_stages,
                 student_stages=OPTIONS.student_stages, num_stages=OPTIONS.num_stages,
                 label_weight=OPTIONS.label_weight, global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        ATDistiller.OPTIONS.check(locals())
        kwargs.setdefault("name", "at_distiller")
        super().__init__(teacher, student, teacher_stages=teacher_stages, student_stages=student_stages,
                         num_stages=num_stages, label_weight=label_weight,
                         global_clipnorm=global_clipnorm, **kwargs)
        self.at_weight = float(at_weight)
        self.p = float(p)

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        terms["attention_loss"] = losses.attention_transfer_loss(
            teacher["features"], student["features"], self.p
        )
        return terms

    def term_weights(self):
        return {**super().term_weights(), "attention_loss": self.at_weight}

    def get_config(self):
        return {**super().get_config(), "at_weight": self.at_weight, "p": self.p}
