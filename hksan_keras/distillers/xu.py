"""Xu, Hsu and Huang, "Training Shallow and Thin Networks for Acceleration via
Knowledge Distillation with Conditional Adversarial Networks" (ICLR-W 2018)."""

import keras

from hksan_keras.distillers.adversarial import AdversarialDistiller


@keras.saving.register_keras_serializable(package="hksan_keras")
class ConditionalAdversarialDistiller(AdversarialDistiller):
    """Conditional adversarial distillation: D judges logits given the label.

        L_S = label_weight * CE(y, l_S) + logit_weight * mean(|l_S - l_T|)
            + adversarial_weight * BCE(D([l_S ; onehot(y)]), real)
        L_D = BCE(D([l_T ; y]), real) + BCE(D([l_S ; y]), fake) + mu * |W_D|

    The discriminator reads the logits concatenated with the label row (one-hot, or the soft row)
    (a conditional GAN), has no class head and no perturbed-sample term by
    default; the L1 logit term follows the pix2pix-style objective that the
    paper builds on. See docs/methods.md for what is read from the paper and
    what is ours.

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        fake_as_real_weight: As in `AdversarialDistiller`; 0 by default here.
        **kwargs: `AdversarialDistiller` arguments (`logit_weight` of the L1
            term, `adversarial_weight`, ...), `label_weight` and `name`.

    Example:

    >>> distiller = ConditionalAdversarialDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    CLASS_HEAD = False
    CONDITIONAL = True
    DEFAULT_LOGIT_DISTANCE = "l1"

    def __init__(self, teacher, student, fake_as_real_weight=0.0, logit_weight=1.0, **kwargs):
        kwargs.setdefault("name", "conditional_adversarial_distiller")
        super().__init__(teacher, student, fake_as_real_weight=fake_as_real_weight,
                         logit_weight=logit_weight, **kwargs)
