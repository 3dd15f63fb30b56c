"""ANC: Belagiannis, Farshad and Galasso, "Adversarial Network Compression" (ECCV-W 2018)."""

import keras

from hksan_keras.distillers.adversarial import AdversarialDistiller, discriminator_option


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
        logit_weight: Weight of the logit term.
        logit_distance: "relative" (the L2 over var(l_T)), "squared" (ANC's
            raw L2) or "l1".
        adversarial_weight: Weight of the student's adversarial term.
        label_weight: Weight of the student's label cross-entropy.
        discriminator: The discriminator's spec: ANC's by default (no class
            head, otherwise `LogitDiscriminator`'s defaults: units (256,
            256), regularization 1e-5, fake_as_real_weight 0.1,
            perturbation_rate 0.5), a `LogitDiscriminator` not built yet, or
            a dict of its arguments over ANC's (see `AdversarialDistiller`).
        discriminator_steps: k_D, discriminator updates per student update.
        global_clipnorm: The largest global L2 norm of the student's
            gradient in one update (see `Distiller`); `None`: no clipping.
        seed: Seed of the perturbation dropout.
        **kwargs: Standard `keras.Model` arguments (e.g. `name`).

    Raises:
        ValueError: If a weight is negative or an option (or a setting of
            `discriminator`) is outside its values.

    Example:

    >>> distiller = ANCDistiller(teacher, student)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
    ...                   d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))
    >>> distiller.fit(train_ds, epochs=10)
    """

    # D has a source output only: the class head is HKSAN's addition.
    OPTIONS = AdversarialDistiller.OPTIONS.extend(discriminator_option(class_head=False))

    def __init__(self, teacher, student, logit_weight=OPTIONS.logit_weight, logit_distance=OPTIONS.logit_distance,
                 adversarial_weight=OPTIONS.adversarial_weight, label_weight=OPTIONS.label_weight,
                 discriminator=OPTIONS.discriminator, discriminator_steps=OPTIONS.discriminator_steps,
                 global_clipnorm=OPTIONS.global_clipnorm, seed=OPTIONS.seed, **kwargs):
        kwargs.setdefault("name", "anc_distiller")
        super().__init__(
            teacher, student, logit_weight=logit_weight, logit_distance=logit_distance,
            adversarial_weight=adversarial_weight, label_weight=label_weight,
            discriminator=discriminator, discriminator_steps=discriminator_steps,
            global_clipnorm=global_clipnorm, seed=seed, **kwargs)
