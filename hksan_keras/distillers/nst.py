"""NST: Huang and Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer" (2017)."""

import keras

from hksan_keras import losses
from hksan_keras.distillers.base import StageDistiller, check_weights


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
        **kwargs: `StageDistiller` arguments (stages, `label_weight`, `name`).

    Example:

    >>> distiller = NSTDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    LOSS_TERMS = ("label_loss", "nst_loss")

    def __init__(self, teacher, student, nst_weight=50.0, **kwargs):
        kwargs.setdefault("name", "nst_distiller")
        super().__init__(teacher, student, **kwargs)
        check_weights(nst_weight=nst_weight)
        self.nst_weight = float(nst_weight)

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        terms["nst_loss"] = losses.neuron_selectivity_loss(teacher["features"], student["features"])
        return terms

    def term_weights(self):
        return {**super().term_weights(), "nst_loss": self.nst_weight}

    def get_config(self):
        return {**super().get_config(), "nst_weight": self.nst_weight}
