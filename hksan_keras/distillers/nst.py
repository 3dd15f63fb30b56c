"""NST: Huang and Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (2017)."""

import keras

from hksan_keras import losses
from hksan_keras.distillers.base import StageDistiller
from hksan_keras.options import Option


@keras.saving.register_keras_serializable(package="hksan_keras")
class NSTDistiller(StageDistiller):
    """Neuron selectivity transfer: MMD between the channels' spatial responses.

        L_S = label_weight * CE(y, l_S)
            + nst_weight * sum_i MMD^2_poly(channels of F_S^i, channels of F_T^i)

    The weight 50 is RepDistiller's.

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        nst_weight: Weight of the MMD term.
        teacher_stages, student_stages, num_stages, label_weight,
            global_clipnorm: See `StageDistiller` and `Distiller`.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md).

    Example:

    >>> distiller = NSTDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    LOSS_TERMS = ("label_loss", "nst_loss")
    # RepDistiller's weight.
    OPTIONS = StageDistiller.OPTIONS.extend(
        Option("nst_weight", 50.0, "weight", "weight of the MMD term"),
    )

    def __init__(self, teacher, student, nst_weight=OPTIONS.nst_weight,
                 teacher_stages=OPTIONS.teacher_stages,
                 student_stages=OPTIONS.student_stages, num_stages=OPTIONS.num_stages,
                 label_weight=OPTIONS.label_weight, global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        NSTDistiller.OPTIONS.check(locals())
        kwargs.setdefault("name", "nst_distiller")
        super().__init__(teacher, student, teacher_stages=teacher_stages, student_stages=student_stages,
                         num_stages=num_stages, label_weight=label_weight,
                         global_clipnorm=global_clipnorm, **kwargs)
        self.nst_weight = float(nst_weight)

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        terms["nst_loss"] = losses.neuron_selectivity_loss(teacher["features"], student["features"])
        return terms

    def term_weights(self):
        return {**super().term_weights(), "nst_loss": self.nst_weight}

    def get_config(self):
        return {**super().get_config(), "nst_weight": self.nst_weight}
