"""FitNets: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015)."""

import keras

from hksan_keras import losses
from hksan_keras.distillers.base import StageDistiller
from hksan_keras.options import Option


@keras.saving.register_keras_serializable(package="hksan_keras")
class FitNetsDistiller(StageDistiller):
    """A student stage regressed onto a teacher stage (the "hint").

        L_S = label_weight * CE(y, l_S)
            + hint_weight * mean((r(F_S^h) - F_T^h)^2)

    r is a 3x3 convolution to the teacher's width, BatchNorm and ReLU,
    trained with the student (RepDistiller's ConvReg); h is the middle stage
    by default, and the weight 100 is RepDistiller's and mdistiller's.

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        hint_stage: Index of the hinted stage in the stage lists; `None` for
            the middle one.
        hint_weight: Weight of the hint term.
        teacher_stages, student_stages, num_stages, label_weight,
            global_clipnorm: See `StageDistiller` and `Distiller`.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md).

    Example:

    >>> distiller = FitNetsDistiller(teacher, student, hint_weight=100.0)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=10)
    """

    LOSS_TERMS = ("label_loss", "hint_loss")
    # The weight is RepDistiller's and mdistiller's.
    OPTIONS = StageDistiller.OPTIONS.extend(
        Option("hint_stage", None, "integer",
               "index of the hinted stage in the stage lists (negative from the deepest); None: the middle one",
               nullable=True),
        Option("hint_weight", 100.0, "weight", "weight of the hint term"),
    )

    def __init__(self, teacher, student, hint_stage=OPTIONS.hint_stage, hint_weight=OPTIONS.hint_weight,
                 teacher_stages=OPTIONS.teacher_stages,
                 student_stages=OPTIONS.student_stages, num_stages=OPTIONS.num_stages,
                 label_weight=OPTIONS.label_weight, global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        FitNetsDistiller.OPTIONS.check(locals())
        kwargs.setdefault("name", "fitnets_distiller")
        super().__init__(teacher, student, teacher_stages=teacher_stages, student_stages=student_stages,
                         num_stages=num_stages, label_weight=label_weight,
                         global_clipnorm=global_clipnorm, **kwargs)
        stages = len(self.teacher_stages)
        index = stages // 2 if hint_stage is None else int(hint_stage)
        if not -stages <= index < stages:
            raise ValueError(
                f"hint_stage {hint_stage} is out of range for {stages} stages."
            )
        self.hint_stage = hint_stage
        self.hint_index = index % stages
        self.hint_weight = float(hint_weight)
        self.regressor = keras.Sequential(
            [
                # Named, so that its variables' paths are the same in every
                # process (auto-generated names count the layers made before).
                keras.layers.Conv2D(
                    self.teacher_shapes[self.hint_index][-1], 3, padding="same", dtype="float32", name="conv"
                ),
                keras.layers.BatchNormalization(momentum=0.9, dtype="float32", name="bn"),
                keras.layers.ReLU(dtype="float32", name="relu"),
            ],
            name="hint_regressor",
        )
        self.regressor.build(self.student_shapes[self.hint_index])

    def extra_trainable_variables(self):
        return self.regressor.trainable_variables

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        regressed = self.regressor(student["features"][self.hint_index], training=True)
        terms["hint_loss"] = losses.hint_loss(teacher["features"][self.hint_index], regressed)
        return terms

    def term_weights(self):
        return {**super().term_weights(), "hint_loss": self.hint_weight}

    def get_config(self):
        return {**super().get_config(), "hint_stage": self.hint_stage, "hint_weight": self.hint_weight}
