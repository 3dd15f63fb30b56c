"""HKSAN's loss terms, each usable on its own.

Every function returns the mean over the (local) batch, written with
`keras.ops` so it runs on any Keras backend. Squared distances are averaged
over their components rather than summed, so that one weight serves 10 and
100 classes, or stage widths of 16 and 256.
"""

from keras import ops


def sparse_labels(labels):
    """Integer class labels from integer or one-hot labels.

    Args:
        labels: Tensor of shape (batch,) or (batch, 1) of class indices, or
            (batch, num_classes) one-hot / soft labels.

    Returns:
        An int32 tensor of shape (batch,).
    """
    if len(labels.shape) == 2 and labels.shape[-1] != 1:
        labels = ops.argmax(labels, axis=-1)
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def label_loss(labels, logits):
    """Cross-entropy between integer labels and logits.

    Args:
        labels: Integer class labels, shape (batch,).
        logits: Unnormalised scores, shape (batch, num_classes).

    Returns:
        Scalar mean cross-entropy.

    Example:

    >>> label_loss(ops.array([0]), ops.array([[2.0, 0.0]]))  # ~0.127
    """
    return ops.mean(
        ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    )


def logit_matching_loss(teacher_logits, student_logits):
    """Squared L2 distance between logits, averaged over classes and batch.

    Args:
        teacher_logits: Shape (batch, num_classes).
        student_logits: Shape (batch, num_classes).

    Returns:
        Scalar `mean((student_logits - teacher_logits) ** 2)`.
    """
    return ops.mean(ops.square(student_logits - teacher_logits))


def squeezed_knowledge_loss(teacher_squeezed, student_squeezed):
    """Matching of squeezed knowledge, summed over stages.

    Args:
        teacher_squeezed: List of (batch, F_i) tensors, one per stage.
        student_squeezed: List of (batch, F_i) tensors, same widths.

    Returns:
        Scalar `sum_i mean((k_S^i - k_T^i) ** 2)`.
    """
    if len(teacher_squeezed) != len(student_squeezed):
        raise ValueError(
            f"Got {len(teacher_squeezed)} teacher and "
            f"{len(student_squeezed)} student stages; they must match."
        )
    return sum(
        ops.mean(ops.square(k_student - k_teacher))
        for k_teacher, k_student in zip(teacher_squeezed, student_squeezed)
    )


def task_loss(labels, stage_logits):
    """Cross-entropy of the per-stage task heads, averaged over stages.

    Args:
        labels: Integer class labels, shape (batch,).
        stage_logits: List of (batch, num_classes) logits, one per stage.

    Returns:
        Scalar mean over stages of each head's mean cross-entropy.
    """
    return sum(label_loss(labels, logits) for logits in stage_logits) / len(
        stage_logits
    )


def source_loss(source_logits, is_real):
    """Non-saturating GAN loss of the discriminator's source unit.

    Args:
        source_logits: Shape (batch,), the logit of "comes from the teacher".
        is_real: Python bool, the target: True for "teacher" (real).

    Returns:
        Scalar mean binary cross-entropy.
    """
    target = ops.ones_like(source_logits) if is_real else ops.zeros_like(
        source_logits
    )
    return ops.mean(
        ops.binary_crossentropy(target, source_logits, from_logits=True)
    )


def adversarial_student_loss(labels, source_logits, class_logits=None):
    """The student's adversarial term: look real, and be classified right.

    Args:
        labels: Integer class labels, shape (batch,).
        source_logits: Discriminator source logits on the student's logits.
        class_logits: Discriminator class logits on the student's logits, or
            None for a discriminator without a class head.

    Returns:
        Scalar `BCE(D_src(l_S), real) + CE(y, D_cls(l_S))` (the second term
        only with class logits).
    """
    loss = source_loss(source_logits, True)
    if class_logits is not None:
        loss = loss + label_loss(labels, class_logits)
    return loss


def discriminator_loss(
    labels,
    teacher_source,
    teacher_classes,
    student_source,
    student_classes,
    perturbed_student_source=None,
    fake_as_real_weight=0.0,
):
    """The discriminator's objective (without its kernel regulariser).

    Args:
        labels: Integer class labels, shape (batch,).
        teacher_source: D_src on the teacher's logits (real).
        teacher_classes: D_cls on the teacher's logits (None: no class head).
        student_source: D_src on the student's logits (fake).
        student_classes: D_cls on the student's logits (None: no class head).
        perturbed_student_source: D_src on perturbed student logits, shown as
            real (KSANC's regulariser); ignored when `fake_as_real_weight`
            is 0.
        fake_as_real_weight: nu, the weight of that regulariser.

    Returns:
        Scalar `BCE(real) + BCE(fake) + CE_T + CE_S + nu * BCE(perturbed, real)`.
    """
    loss = source_loss(teacher_source, True) + source_loss(student_source, False)
    if teacher_classes is not None:
        loss = loss + label_loss(labels, teacher_classes)
    if student_classes is not None:
        loss = loss + label_loss(labels, student_classes)
    if fake_as_real_weight and perturbed_student_source is not None:
        loss = loss + fake_as_real_weight * source_loss(
            perturbed_student_source, True
        )
    return loss
