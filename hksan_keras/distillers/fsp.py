"""FSP: Yim, Joo, Bae, Kim, "A Gift from Knowledge Distillation: Fast Optimization,
Network Minimization and Transfer Learning" (CVPR 2017)."""

import keras
from keras import ops

from hksan_keras import losses
from hksan_keras.distillers.base import StageDistiller
from hksan_keras.options import Option
from hksan_keras.taps import resolve_stages

# The zoo's stem outputs, the input of the first residual section: the
# ResNets' ReLU after the stem, the (pre-activation) Wide ResNets' stem
# convolution. The first one a model has is its stem.
STEMS = ("stem_relu", "stem_conv")


def flow_maps(teacher, student, num_stages=None):
    """The detected maps of both models whose consecutive pairs are FSP's matrices.

    One matrix per residual section, from its input to its output (Yim et
    al., section 3.2): the detected stages, preceded by the stem where both
    models have one of `STEMS` that detection did not already return; with
    `num_stages=K`, the deepest K sections (their K + 1 maps, the first
    being the output of the section before, or the stem).

    Args:
        teacher, student: Functional or Sequential `keras.Model`s.
        num_stages: Sections to keep, the deepest; `None` keeps all.

    Returns:
        `(teacher_maps, student_maps)`, lists of layer paths, shallow to deep.

    Raises:
        ValueError: A model has fewer than `num_stages + 1` maps, or the two
            models have different numbers of maps; the message lists them.
    """
    found = []
    for model, role in ((teacher, "teacher"), (student, "student")):
        names = {layer.name for layer in model.layers}
        found.append((resolve_stages(model, role=role), next((s for s in STEMS if s in names), None)))
    with_stem = all(stem is not None for _, stem in found)
    maps = [[stem, *stages] if with_stem and stem not in stages else stages for stages, stem in found]
    if num_stages is not None:
        for role, model_maps in zip(("teacher", "student"), maps):
            if len(model_maps) < num_stages + 1:
                raise ValueError(
                    f"FSP's num_stages={num_stages} asks for {num_stages} sections, {num_stages + 1} maps, and "
                    f"the {role} has {len(model_maps)}: {model_maps}. Choose num_stages <= "
                    f"{len(model_maps) - 1}, or name the maps (teacher_stages=[...], student_stages=[...]).")
        maps = [model_maps[-(num_stages + 1):] for model_maps in maps]
    if len(maps[0]) != len(maps[1]):
        raise ValueError(
            f"FSP pairs the teacher's maps {maps[0]} with the student's {maps[1]}: they must be as many. "
            f"Pass num_stages=K for the deepest K sections of both (K <= {min(map(len, maps)) - 1}), or "
            "name the maps (teacher_stages=[...], student_stages=[...]).")
    return tuple(maps)


@keras.saving.register_keras_serializable(package="hksan_keras")
class FSPDistiller(StageDistiller):
    """Flow-of-solution-procedure matching, then training on the labels.

    Two stages in one `fit`, as in the paper: for the first `init_steps`
    student steps the student learns only to reproduce the teacher's FSP
    matrices, then only the labels (plus `fsp_weight` times the FSP term,
    0 by default):

        step <  init_steps:  L_S = sum_i mean((G_S^i - G_T^i)^2)
        step >= init_steps:  L_S = label_weight * CE(y, l_S) + fsp_weight * (same)

    (the student's weight decay acts in both stages) with
    `G^i = losses.flow_matrix(F^i, F^{i+1})` between consecutive stage
    outputs (the larger map pooled to the smaller). The paper has one matrix
    per residual section, from its input to its output: for the first
    section that input is the stem's output. With detected stages
    (`flow_maps`), models that both have a zoo stem layer ("stem_relu" of
    the ResNets, "stem_conv" of the Wide ResNets) get it as their first map,
    so the zoo's CIFAR ResNets and Wide ResNets get three matrices, as in
    the paper and RepDistiller, and the ImageNet ResNets four;
    `num_stages=K` keeps the deepest K sections (K matrices). Other models
    get one matrix per pair of consecutive detected stages (name the layer
    that feeds the first stage among `teacher_stages` and `student_stages`
    to add the first section).
    Teacher and student stages must have equal widths (their matrices are
    compared entry by entry). The initialisation runs inside the training
    budget, so the label stage gets `init_steps` fewer steps than the other
    methods; configs set `init_epochs` (RepDistiller: 30 initialisation
    epochs beside 240 of training).

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes, with the
            teacher's stage widths.
        init_steps: Student steps of the FSP stage, >= 1 (required: it
            depends on the data; 30 epochs' steps in RepDistiller).
        fsp_weight: Weight of the FSP term after the FSP stage.
        num_stages: With detection, the deepest `num_stages` residual
            sections (`num_stages + 1` maps; `flow_maps`).
        teacher_stages, student_stages, label_weight, global_clipnorm: See
            `StageDistiller` and `Distiller`.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Raises:
        TypeError, ValueError: An option outside its values
            (docs/options.md), no `init_steps`, fewer than two stages, more
            sections asked for than a model has, or stage widths that differ
            between teacher and student.

    Example:

    >>> distiller = FSPDistiller(teacher, student, init_steps=30 * steps_per_epoch)
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train_ds, epochs=240)
    """

    LOSS_TERMS = ("label_loss", "fsp_loss")
    OPTIONS = StageDistiller.OPTIONS.extend(
        Option("init_steps", None, "steps", "student steps of the FSP stage (required from Python)",
               nullable=True, config=False),
        Option("init_epochs", 30, "steps",
               "the FSP stage in epochs (configs; converted to init_steps; RepDistiller's 30)", constructor=False),
        Option("fsp_weight", 0.0, "weight", "weight of the FSP term after the FSP stage (0: labels only)"),
        Option("num_stages", None, "steps",
               "with detection, keep only the deepest num_stages residual sections (num_stages + 1 maps)",
               nullable=True, config=False),
    )

    def __init__(self, teacher, student, init_steps=OPTIONS.init_steps, fsp_weight=OPTIONS.fsp_weight,
                 teacher_stages=OPTIONS.teacher_stages, student_stages=OPTIONS.student_stages,
                 num_stages=OPTIONS.num_stages, label_weight=OPTIONS.label_weight,
                 global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        FSPDistiller.OPTIONS.check(locals())
        if not init_steps:
            raise ValueError(
                "FSPDistiller trains in two stages and needs init_steps >= 1, the student steps of the FSP "
                "stage (RepDistiller: 30 epochs, init_steps=30 * steps_per_epoch)."
            )
        kwargs.setdefault("name", "fsp_distiller")
        if teacher_stages is None and student_stages is None:
            teacher_stages, student_stages = flow_maps(teacher, student, num_stages)
            num_stages = None
        super().__init__(teacher, student, teacher_stages=teacher_stages, student_stages=student_stages,
                         num_stages=num_stages, label_weight=label_weight,
                         global_clipnorm=global_clipnorm, **kwargs)
        if len(self.teacher_stages) < 2:
            raise ValueError(f"FSP pairs consecutive stages and needs at least two; got {self.teacher_stages}.")
        teacher_widths = [shape[-1] for shape in self.teacher_shapes]
        student_widths = [shape[-1] for shape in self.student_shapes]
        if teacher_widths != student_widths:
            raise ValueError(
                f"FSP compares flow matrices entry by entry, so teacher and student stages need equal widths; "
                f"got teacher {teacher_widths} ({self.teacher_stages}) and student {student_widths} "
                f"({self.student_stages}). Choose stages of equal widths, or a method with regressors "
                "(fitnets, vid) for students of other widths."
            )
        self.init_steps = int(init_steps)
        self.fsp_weight = float(fsp_weight)

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        terms["fsp_loss"] = losses.fsp_loss(teacher["features"], student["features"])
        return terms

    def term_weights(self):
        in_fsp_stage = ops.cast(self.optimizer.iterations < self.init_steps, "float32")
        return {
            "label_loss": (1.0 - in_fsp_stage) * self.label_weight,
            "fsp_loss": in_fsp_stage + (1.0 - in_fsp_stage) * self.fsp_weight,
        }

    def get_config(self):
        return {**super().get_config(), "init_steps": self.init_steps, "fsp_weight": self.fsp_weight}
