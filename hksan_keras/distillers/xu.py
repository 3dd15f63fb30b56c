"""Xu, Hsu and Huang, "Training Shallow and Thin Networks for Acceleration via
Knowledge Distillation with Conditional Adversarial Networks" (ICLR-W 2018)."""

import keras

from hksan_keras.distillers.adversarial import AdversarialDistiller, discriminator_option
from hksan_keras.options import Option


@keras.saving.register_keras_serializable(package="hksan_keras")
class ConditionalAdversarialDistiller(AdversarialDistiller):
    """Conditional adversarial distillation: D judges logits given the label.

        L_S = label_weight * CE(y, l_S) + logit_weight * mean(|l_S - l_T|)
            + adversarial_weight * BCE(D([l_S ; onehot(y)]), real)
        L_D = BCE(D([l_T ; y]), real) + BCE(D([l_S ; y]), fake) + mu * |W_D|

    The discriminator reads the logits concatenated with the label row
    (one-hot, or the soft row; a conditional GAN) and by default has no class
    head and no perturbed-sample term; the L1 logit term
    follows the pix2pix-style objective that the paper builds on. See
    docs/methods.md for what is read from the paper and what is ours.

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        logit_weight: Weight of the logit term.
        logit_distance: "l1" (the paper's), "relative" or "squared" (see
            `AdversarialDistiller`).
        adversarial_weight: Weight of the student's adversarial term.
        label_weight: Weight of the student's label cross-entropy.
        discriminator: The discriminator's spec: Xu et al.'s by default
            (no class head and fake_as_real_weight 0,
            otherwise `LogitDiscriminator`'s defaults: units (256, 256),
            regularization 1e-5), a `LogitDiscriminator` not built yet, or a
            dict of its arguments over Xu et al.'s (see
            `AdversarialDistiller`). D reads 2 * num_classes inputs.
        discriminator_steps: k_D, discriminator updates per student update.
        global_clipnorm: The largest global L2 norm of the student's
            gradient in one update (see `Distiller`); `None`: no clipping.
        seed: Seed of the perturbation dropout (used when the spec's
            fake_as_real_weight is above 0).
        **kwargs: Standard `keras.Model` arguments (e.g. `name`).

    Raises:
        ValueError: If a weight is negative or an option (or a setting of
            `discriminator`) is outside its values.

    Example:

    >>> distiller = ConditionalAdversarialDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    CONDITIONAL = True
    # The paper's L1 logit term; D without a class head or perturbed samples.
    OPTIONS = AdversarialDistiller.OPTIONS.extend(
        Option("logit_weight", 1.0, "weight", "weight of the logit-matching term"),
        discriminator_option(class_head=False, fake_as_real_weight=0.0),
        logit_distance="l1",
    )

    def __init__(self, teacher, student, logit_weight=OPTIONS.logit_weight, logit_distance=OPTIONS.logit_distance,
                 adversarial_weight=OPTIONS.adversarial_weight, label_weight=OPTIONS.label_weight,
                 discriminator=OPTIONS.discriminator, discriminator_steps=OPTIONS.discriminator_steps,
                 global_clipnorm=OPTIONS.global_clipnorm, seed=OPTIONS.seed, **kwargs):
        kwargs.setdefault("name", "conditional_adversarial_distiller")
        super().__init__(teacher, student, logit_weight=logit_weight,
                         logit_distance=logit_distance, adversarial_weight=adversarial_weight,
                         label_weight=label_weight, discriminator=discriminator,
                         discriminator_steps=discriminator_steps,
                         global_clipnorm=global_clipnorm, seed=seed, **kwargs)
