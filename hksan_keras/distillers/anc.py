"""ANC: Belagiannis, Farshad and Galasso, "Adversarial Network Compression" (ECCV-W 2018)."""

import keras

from hksan_keras.distillers.adversarial import AdversarialDistiller


@keras.saving.register_keras_serializable(package="hksan_keras")
class ANCDistiller(AdversarialDistiller):
    """Adversarial distillation on the logits, with logit regression.

        L_S = label_weight * CE(y, l_S) + logit_weight * mean((l_S - l_T)^2) / var(l_T)
            + adversarial_weight * BCE(D(l_S), real)
        L_D = BCE(D(l_T), real) + BCE(D(l_S), fake)
            + fake_as_real_weight * BCE(D(dropout(l_S)), real) + mu * |W_D|

    var(l_T) is the batch mean of the teacher's per-example logit variance,
    at least `losses.RELATIVE_SCALE_FLOOR`
    (`logit_distance="relative"`, the default of HKSAN and ANC, so that no
    teacher's logit scale makes training diverge; weight 10 as HKSAN's);
    `logit_distance="squared", logit_weight=1` gives ANC's raw L2. D has a
    source output only (no class head: that is HKSAN's and KSANC's
    addition); the dropout-perturbed student samples shown as real are ANC's
    regulariser. The discriminator, its optimizer and the weights shared with
    HKSAN have HKSAN's defaults, so the two differ exactly by the squeezed
    knowledge and the class head. See docs/methods.md for what is read from
    the paper and what is ours.

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        **kwargs: `AdversarialDistiller` arguments (`logit_weight` of the
            L2 term, `adversarial_weight`, `discriminator_steps`, ...),
            `label_weight` and `name`.

    Example:

    >>> distiller = ANCDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
    ...                   d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))
    >>> distiller.fit(train_ds, epochs=10)
    """

    CLASS_HEAD = False

    def __init__(self, teacher, student, **kwargs):
        kwargs.setdefault("name", "anc_distiller")
        super().__init__(teacher, student, **kwargs)
