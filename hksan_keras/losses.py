"""The loss terms of HKSAN and of the baselines, each usable on its own.

Every function returns the mean over the (local) batch, written with
`keras.ops` so it runs on any Keras backend. HKSAN's squared distances are
averaged over their components rather than summed, so that one weight serves
10 and 100 classes, or stage widths of 16 and 256. The baselines' terms
follow their reference implementations (RepDistiller, mdistiller) so that
their published weights apply.
"""

from keras import ops


def prepare_labels(labels):
    """Labels as the distillers use them: class indices, or soft rows.

    Args:
        labels: Class indices of shape (batch,) or (batch, 1), or rows of
            shape (batch, num_classes) that are probability distributions
            (one-hot, label smoothing, mixup / CutMix mixtures, a previous
            model's probabilities).

    Returns:
        An int32 tensor of shape (batch,) for class indices, or a float32
        tensor of shape (batch, num_classes) for rows (kept as they are:
        never reduced to their argmax).
    """
    if len(labels.shape) == 2 and labels.shape[-1] != 1:
        return ops.cast(labels, "float32")
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def class_indices(labels):
    """The class of each example: the index, or the argmax of a soft row.

    Args:
        labels: As returned by `prepare_labels`.

    Returns:
        An int32 tensor of shape (batch,).
    """
    if len(labels.shape) == 2 and labels.shape[-1] != 1:
        labels = ops.argmax(labels, axis=-1)
    return ops.cast(ops.reshape(labels, (-1,)), "int32")


def label_distribution(labels, num_classes, dtype="float32"):
    """Labels as rows of shape (batch, num_classes): one-hot or the soft rows."""
    if len(labels.shape) == 2 and labels.shape[-1] != 1:
        return ops.cast(labels, dtype)
    return ops.one_hot(class_indices(labels), num_classes, dtype=dtype)


def per_example_label_loss(labels, logits):
    """Cross-entropy of each example: with its class, or with its soft row.

    Args:
        labels: Class indices, shape (batch,), or distributions, shape
            (batch, num_classes) (see `prepare_labels`).
        logits: Unnormalised scores, shape (batch, num_classes).

    Returns:
        Shape (batch,): `-log softmax(logits)[label]`, or for a row `y`,
        `-sum_c y_c log softmax(logits)_c`.
    """
    if len(labels.shape) == 2 and labels.shape[-1] != 1:
        return ops.categorical_crossentropy(
            ops.cast(labels, logits.dtype), logits, from_logits=True
        )
    return ops.sparse_categorical_crossentropy(
        class_indices(labels), logits, from_logits=True
    )


def label_loss(labels, logits):
    """Mean cross-entropy between labels (indices or soft rows) and logits.

    Args:
        labels: Class indices, shape (batch,), or distributions, shape
            (batch, num_classes).
        logits: Unnormalised scores, shape (batch, num_classes).

    Returns:
        Scalar mean cross-entropy.

    Example:

    >>> label_loss(ops.array([0]), ops.array([[2.0, 0.0]]))  # ~0.127
    >>> label_loss(ops.array([[0.6, 0.4]]), ops.array([[2.0, 0.0]]))  # ~0.927
    """
    return ops.mean(per_example_label_loss(labels, logits))


LOGIT_DISTANCES = ("squared", "relative", "l1")
# The "relative" distance divides by the teacher's logit variance, but by no
# less than this: a teacher with small logits (an untrained one, or one
# trained with label smoothing) would otherwise multiply the raw L2's weight
# without bound (var 1.9 made weight 10 diverge at lr 0.1). Below it the term
# is the raw L2 at logit_weight / 10, which trains stably at the recipes'
# learning rates; a trained CIFAR teacher (var ~15) is above it.
RELATIVE_SCALE_FLOOR = 10.0


def teacher_logit_variance(teacher_logits):
    """Batch mean of the teacher's per-example logit variance (the "relative" scale)."""
    centered = teacher_logits - ops.mean(teacher_logits, axis=-1, keepdims=True)
    return ops.mean(ops.square(centered))


def logit_matching_loss(teacher_logits, student_logits, distance="squared", scale=None):
    """Distance between teacher and student logits, averaged over classes and batch.

    Args:
        teacher_logits: Shape (batch, num_classes).
        student_logits: Shape (batch, num_classes).
        distance: "squared": `mean((l_S - l_T)^2)` (KSANC's L2; grows with
            the square of the teacher's logit scale); "relative": the squared distance divided by the batch mean of
            the teacher's per-example logit variance, or by
            `RELATIVE_SCALE_FLOOR` (10) when that is smaller (a constant:
            the student still matches the teacher's logits, scale included,
            but the term's size no longer grows with that scale, and a
            teacher with small logits cannot inflate it); "l1":
            `mean(|l_S - l_T|)` (Xu et al.).
        scale: For "relative", the teacher's logit variance to divide by
            (default: `teacher_logit_variance` of this batch; a distiller
            passes it averaged over replicas, so that the term does not
            depend on how the global batch is split).

    Returns:
        Scalar loss.

    Example:

    >>> logit_matching_loss(ops.array([[2.0, 0.0]]), ops.array([[4.0, 0.0]]),
    ...                     "squared")  # 2.0
    """
    if distance == "squared":
        return ops.mean(ops.square(student_logits - teacher_logits))
    if distance == "relative":
        if scale is None:
            scale = teacher_logit_variance(teacher_logits)
        scale = ops.maximum(ops.stop_gradient(scale), RELATIVE_SCALE_FLOOR)
        return ops.mean(ops.square(student_logits - teacher_logits)) / scale
    if distance == "l1":
        return logit_l1_loss(teacher_logits, student_logits)
    raise ValueError(f"distance must be one of {LOGIT_DISTANCES}, got {distance!r}.")


def l2_normalize(x, axis=-1):
    """x / |x| along `axis`, with a finite gradient even where x is all zeros.

    (`x / maximum(norm(x), eps)` is not: the gradient of the norm at zero is
    0/0, and a ReLU stage can be all zeros for one image.)
    """
    squared_norm = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared_norm, 1e-24))


def _check_stage_counts(teacher_items, student_items, what):
    if len(teacher_items) != len(student_items):
        raise ValueError(
            f"Got {len(teacher_items)} teacher and {len(student_items)} "
            f"student {what}; they must match."
        )


def squeezed_knowledge_loss(teacher_squeezed, student_squeezed):
    """Matching of squeezed knowledge: squared distance, summed over stages.

    Sum over stages of `mean((k_S^i - k_T^i)^2)`, the mean over the batch
    and the components (so one weight serves any stage width).

    Args:
        teacher_squeezed: List of (batch, F_i) tensors, one per stage.
        student_squeezed: List of (batch, F_i) tensors, same widths.

    Returns:
        Scalar sum over stages of the batch mean squared distance.

    Raises:
        ValueError: If the lists differ in length.

    Example:

    >>> squeezed_knowledge_loss([ops.ones((2, 4))], [ops.zeros((2, 4))])  # 1.0
    """
    _check_stage_counts(teacher_squeezed, student_squeezed, "stages")
    total = 0.0
    for k_teacher, k_student in zip(teacher_squeezed, student_squeezed):
        total = total + ops.mean(ops.square(k_student - k_teacher))
    return total


def task_loss(labels, stage_logits):
    """Cross-entropy of the per-stage task heads, averaged over stages.

    Args:
        labels: Class indices, shape (batch,), or soft rows, shape
            (batch, num_classes) (see `prepare_labels`).
        stage_logits: List of (batch, num_classes) logits, one per stage.

    Returns:
        Scalar mean over stages of each head's mean cross-entropy.
    """
    return sum(label_loss(labels, logits) for logits in stage_logits) / len(
        stage_logits
    )


def source_loss(source_logits, is_real):
    """GAN loss of the discriminator's source unit against one target.

    Binary cross-entropy on the logit: the vanilla GAN loss, and the
    non-saturating one when the student takes `is_real=True`.

    Args:
        source_logits: Shape (batch,), the discriminator's "comes from the
            teacher" output.
        is_real: Python bool, the target: True for "teacher" (real).

    Returns:
        Scalar loss.
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
        labels: Class indices, shape (batch,), or soft rows, shape
            (batch, num_classes) (see `prepare_labels`).
        source_logits: Discriminator source outputs on the student's logits.
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
        labels: Class indices, shape (batch,), or soft rows, shape
            (batch, num_classes) (see `prepare_labels`).
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
        loss = loss + fake_as_real_weight * source_loss(perturbed_student_source, True)
    return loss


# --- Baselines -------------------------------------------------------------


def kd_loss(teacher_logits, student_logits, temperature=4.0):
    """Hinton et al.'s knowledge distillation loss.

    `T^2 * KL(softmax(l_T / T) || softmax(l_S / T))`, averaged over the batch
    (the T^2 keeps gradient magnitudes independent of T).

    Args:
        teacher_logits: Shape (batch, num_classes).
        student_logits: Shape (batch, num_classes).
        temperature: T, the softening temperature.

    Returns:
        Scalar loss.

    Example:

    >>> kd_loss(ops.array([[2.0, -1.0, 0.5]]), ops.array([[0.1, 0.3, -2.0]]),
    ...         temperature=2.0)  # 0.97
    """
    teacher_log_probs = ops.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_probs = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(
        ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs),
        axis=-1,
    )
    return temperature**2 * ops.mean(kl)


# Sun et al.'s epsilon in the denominator of the z-score.
STANDARDIZATION_EPSILON = 1e-7


def standardize_logits(logits):
    """Each example's logits z-scored: `(l - mean(l)) / (std(l) + 1e-7)`.

    Logit standardisation (Sun, Ren, Li, Wang, Cao, "Logit Standardization
    in Knowledge Distillation", CVPR 2024): before the softmax of KD or DKD,
    so that the student matches the teacher's logit relations rather than
    their range. The standard deviation is over the classes with Bessel's
    correction (n - 1), as in the authors' code.

    Args:
        logits: Shape (batch, num_classes), num_classes >= 2.

    Returns:
        The standardised logits in float32 (a float16 sum of squares
        overflows), same shape: mean 0 and sample standard deviation 1
        along the last axis (for logits that are not constant).

    Example:

    >>> standardize_logits(ops.array([[1.0, 2.0, 3.0]]))  # [[-1, 0, 1]]
    """
    logits = ops.cast(logits, "float32")
    count = ops.cast(ops.shape(logits)[-1], "float32")
    centered = logits - ops.mean(logits, axis=-1, keepdims=True)
    variance = ops.sum(ops.square(centered), axis=-1, keepdims=True) / (count - 1.0)
    return centered / (ops.sqrt(variance) + STANDARDIZATION_EPSILON)


def _kl(target_probs, log_probs):
    """Sum over the last axis of p * (log p - log q), with 0 * log 0 = 0."""
    safe = ops.where(target_probs > 0, target_probs, ops.ones_like(target_probs))
    return ops.sum(target_probs * (ops.log(safe) - log_probs), axis=-1)


def dkd_loss(labels, teacher_logits, student_logits, alpha=1.0, beta=8.0, temperature=4.0):
    """Decoupled knowledge distillation (Zhao et al., CVPR 2022).

    `alpha * TCKD + beta * NCKD`: TCKD is the KL divergence between the
    binary (target class, all others) distributions of teacher and student,
    NCKD the KL divergence between their distributions over the non-target
    classes; both softened by T and scaled by T^2, as in mdistiller.

    Args:
        labels: Integer class labels, shape (batch,), or soft rows (their
            argmax is the target class).
        teacher_logits: Shape (batch, num_classes).
        student_logits: Shape (batch, num_classes).
        alpha: Weight of TCKD.
        beta: Weight of NCKD (8 on CIFAR in the paper).
        temperature: T.

    Returns:
        Scalar loss.
    """
    num_classes = ops.shape(student_logits)[-1]
    # DKD splits the classes at the target class: for soft rows, the argmax.
    target = ops.one_hot(class_indices(labels), num_classes, dtype=student_logits.dtype)
    teacher_probs = ops.softmax(teacher_logits / temperature, axis=-1)
    student_probs = ops.softmax(student_logits / temperature, axis=-1)

    def binary(probs):
        on_target = ops.sum(probs * target, axis=-1, keepdims=True)
        return ops.concatenate([on_target, 1.0 - on_target], axis=-1)

    teacher_binary = binary(teacher_probs)
    student_log_binary = ops.log(ops.clip(binary(student_probs), 1e-12, 1.0))
    tckd = ops.mean(_kl(teacher_binary, student_log_binary))
    # Masking the target logit leaves the distribution over the other classes.
    teacher_other = ops.softmax(teacher_logits / temperature - 1000.0 * target, axis=-1)
    student_log_other = ops.log_softmax(
        student_logits / temperature - 1000.0 * target, axis=-1
    )
    nckd = ops.mean(_kl(teacher_other, student_log_other))
    return temperature**2 * (alpha * tckd + beta * nckd)


def require_known_sizes(*feature_maps):
    """Refuses feature maps whose height or width is unknown when traced.

    The stage losses that pool or compare maps by size need static sizes;
    batches of a `tf.data` pipeline whose images are not resized to one
    size have none.

    Args:
        *feature_maps: Tensors of shape (batch, H, W, C).

    Raises:
        ValueError: H or W of a map is None; the message gives the fix.
    """
    for feature_map in feature_maps:
        if None in tuple(feature_map.shape[1:3]):
            raise ValueError(
                f"A stage's feature maps have shape {tuple(feature_map.shape)}: their height and width are "
                "unknown where the training step is traced, and the stage losses pool and compare maps by "
                "size. Give the input pipeline one image size (resize or crop every image to it before "
                "batching, e.g. keras.layers.Resizing), so that the batches' shape states it.")


def match_resolution(student_map, teacher_map):
    """Average-pools the larger of two feature maps to the other's size.

    Args:
        student_map: Shape (batch, H_s, W_s, C_s).
        teacher_map: Shape (batch, H_t, W_t, C_t).

    Returns:
        The pair with equal spatial sizes.

    Raises:
        ValueError: The sizes differ and one is unknown where the step is
            traced, or neither is a whole multiple of the other.
    """
    student_size = tuple(student_map.shape[1:3])
    teacher_size = tuple(teacher_map.shape[1:3])
    if student_size == teacher_size:
        # Both unknown too (batches of any size): taken as equal; maps that
        # are not fail at run time, where they are compared.
        return student_map, teacher_map
    require_known_sizes(student_map, teacher_map)
    larger, smaller = (
        (student_size, teacher_size)
        if student_size[0] > teacher_size[0]
        else (teacher_size, student_size)
    )
    if larger[0] % smaller[0] or larger[1] % smaller[1]:
        raise ValueError(
            f"Student stage of size {student_size} and teacher stage of size "
            f"{teacher_size}: one must be a whole multiple of the other. "
            "Choose stages of matching resolutions (student_stages=[...])."
        )
    pool = (larger[0] // smaller[0], larger[1] // smaller[1])
    if larger == student_size:
        student_map = ops.average_pool(student_map, pool, strides=pool)
    else:
        teacher_map = ops.average_pool(teacher_map, pool, strides=pool)
    return student_map, teacher_map


def hint_loss(teacher_map, regressed_student_map):
    """FitNets' hint loss: mean squared error between feature maps.

    Args:
        teacher_map: Teacher stage, shape (batch, H, W, C_t).
        regressed_student_map: Student stage after the regressor, with the
            teacher's channels (and any resolution; the larger is pooled).

    Returns:
        Scalar `mean((r(F_S) - F_T)^2)`.
    """
    student_map, teacher_map = match_resolution(regressed_student_map, teacher_map)
    return ops.mean(ops.square(student_map - teacher_map))


def vid_loss(teacher_map, predicted_mean, variance):
    """VID's loss: the negative log-likelihood of the teacher's features
    under a Gaussian that the student predicts.

    Ahn, Hu, Damianou, Lawrence, Dai, "Variational Information
    Distillation for Knowledge Transfer" (CVPR 2019): the variational lower
    bound on the mutual information between teacher and student features,
    with a heteroscedastic Gaussian q(t | s) = N(mu(s), sigma^2) per channel:

        mean over examples, positions and channels of
        0.5 * ((mu(s) - t)^2 / sigma^2 + log sigma^2)

    (the constant 0.5 * log(2 pi) dropped, as in the authors' and
    RepDistiller's code).

    Args:
        teacher_map: Teacher stage, shape (batch, H, W, C_t).
        predicted_mean: mu(s), the student's prediction of it, same shape.
        variance: sigma^2 per channel, shape (C_t,), > 0.

    Returns:
        Scalar loss. For a fixed variance it is smallest, 0.5 * mean(log
        sigma^2), where the prediction equals the teacher's features.
    """
    return 0.5 * ops.mean(ops.square(predicted_mean - teacher_map) / variance + ops.log(variance))


def attention_map(feature_map, p=2.0):
    """Zagoruyko & Komodakis's spatial attention: L2-normalised mean_c |F|^p.

    Args:
        feature_map: Shape (batch, H, W, C).
        p: The power.

    Returns:
        Shape (batch, H * W), each row of unit L2 norm.
    """
    pooled = ops.mean(ops.power(ops.abs(feature_map), p), axis=-1)
    return l2_normalize(ops.reshape(pooled, (ops.shape(pooled)[0], -1)))


def attention_transfer_loss(teacher_maps, student_maps, p=2.0):
    """Attention transfer: distance between normalised attention maps.

    Sum over stages of `mean((Q_S - Q_T)^2)`, as in RepDistiller and
    mdistiller (whose weight is 1000 on CIFAR).

    Args:
        teacher_maps: List of teacher stages (batch, H_i, W_i, C_t_i).
        student_maps: List of student stages (batch, H_i, W_i, C_s_i); the
            channel counts may differ.
        p: Power of the attention maps.

    Returns:
        Scalar loss.
    """
    total = 0.0
    for teacher_map, student_map in zip(teacher_maps, student_maps):
        student_map, teacher_map = match_resolution(student_map, teacher_map)
        total = total + ops.mean(
            ops.square(attention_map(student_map, p) - attention_map(teacher_map, p))
        )
    return total


def _channel_distributions(feature_map):
    """(batch, C, H * W): each channel's spatial response, L2-normalised."""
    batch = ops.shape(feature_map)[0]
    channels = feature_map.shape[-1]
    return l2_normalize(ops.transpose(ops.reshape(feature_map, (batch, -1, channels)), (0, 2, 1)))


def _polynomial_kernel_mean(a, b):
    return ops.mean(ops.square(ops.einsum("bih,bjh->bij", a, b)))


def neuron_selectivity_loss(teacher_maps, student_maps):
    """Neuron selectivity transfer: MMD between channel distributions.

    Each channel's spatial response map is one sample; the squared MMD with
    the polynomial kernel k(a, b) = (a . b)^2 between the student's and the
    teacher's samples, summed over stages (RepDistiller's weight: 50).

    Args:
        teacher_maps: List of teacher stages (batch, H_i, W_i, C_t_i).
        student_maps: List of student stages; channel counts may differ.

    Returns:
        Scalar loss.
    """
    total = 0.0
    for teacher_map, student_map in zip(teacher_maps, student_maps):
        student_map, teacher_map = match_resolution(student_map, teacher_map)
        s = _channel_distributions(student_map)
        t = _channel_distributions(teacher_map)
        total = total + (
            _polynomial_kernel_mean(t, t)
            + _polynomial_kernel_mean(s, s)
            - 2.0 * _polynomial_kernel_mean(s, t)
        )
    return total


def logit_l1_loss(teacher_logits, student_logits):
    """Mean absolute difference between logits.

    Args:
        teacher_logits: Shape (batch, num_classes).
        student_logits: Shape (batch, num_classes).

    Returns:
        Scalar `mean(|l_S - l_T|)`.
    """
    return ops.mean(ops.abs(student_logits - teacher_logits))


# Keeps a constant row's correlation at 0 instead of 0 / 0 (DIST's code's).
CORRELATION_EPSILON = 1e-8


def pearson_correlation(a, b, axis=-1):
    """Pearson correlation of `a` and `b` along `axis`.

    `sum(a' * b') / (|a'| * |b'| + 1e-8)` with `a' = a - mean(a)` and
    `b' = b - mean(b)` along `axis`: the cosine similarity of the centred
    vectors. A constant vector has correlation 0 with anything.

    Args:
        a, b: Tensors of the same shape.
        axis: The axis along which the vectors run.

    Returns:
        The correlations, `axis` removed; in [-1, 1].
    """
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    norms = ops.sqrt(ops.sum(ops.square(a), axis=axis)) * ops.sqrt(ops.sum(ops.square(b), axis=axis))
    return ops.sum(a * b, axis=axis) / (norms + CORRELATION_EPSILON)


def _softened(logits, temperature):
    # float32: the correlations' sums of small products lose precision in
    # float16.
    return ops.softmax(ops.cast(logits, "float32") / temperature, axis=-1)


def dist_inter_class_loss(teacher_logits, student_logits, temperature=4.0):
    """DIST's inter-class relation loss (Huang et al., NeurIPS 2022).

    `T^2 * (1 - mean_i rho(p_S[i, :], p_T[i, :]))`: for each example, one
    minus the Pearson correlation of the student's and the teacher's
    softened class probabilities (`p = softmax(l / T)`), averaged over the
    batch. It is zero when each of the student's rows is a positive affine
    function of the teacher's, which an exact match is, and invariant to
    such maps (the relation, not the values, is matched).

    Args:
        teacher_logits: Shape (batch, num_classes).
        student_logits: Shape (batch, num_classes).
        temperature: T.

    Returns:
        Scalar loss in [0, 2 T^2].

    Example:

    >>> dist_inter_class_loss(ops.array([[2.0, 0.0, -1.0]]), ops.array([[1.0, 0.5, -1.0]]))
    """
    teacher, student = _softened(teacher_logits, temperature), _softened(student_logits, temperature)
    return temperature**2 * (1.0 - ops.mean(pearson_correlation(student, teacher, axis=-1)))


def dist_intra_class_loss(teacher_logits, student_logits, temperature=4.0):
    """DIST's intra-class relation loss (Huang et al., NeurIPS 2022).

    `T^2 * (1 - mean_c rho(p_S[:, c], p_T[:, c]))`: for each class, one minus
    the Pearson correlation over the batch's examples of the student's and
    the teacher's softened probabilities of that class, averaged over the
    classes. A statistic of the batch: under a distribution strategy each
    replica computes it on its own examples (as DIST's distributed training
    does on each GPU), so it depends on how the batch is split.

    Args:
        teacher_logits: Shape (batch, num_classes), batch >= 2 (one example
            has no variation across the batch: its term is 1 * T^2).
        student_logits: Shape (batch, num_classes).
        temperature: T.

    Returns:
        Scalar loss in [0, 2 T^2].
    """
    teacher, student = _softened(teacher_logits, temperature), _softened(student_logits, temperature)
    return temperature**2 * (1.0 - ops.mean(pearson_correlation(student, teacher, axis=0)))


def dist_loss(teacher_logits, student_logits, temperature=4.0, beta=2.0, gamma=2.0):
    """DIST's distillation loss: `beta * inter + gamma * intra` (see above).

    Args:
        teacher_logits: Shape (batch, num_classes).
        student_logits: Shape (batch, num_classes).
        temperature: T (4 in DIST's CIFAR setting).
        beta: Weight of `dist_inter_class_loss` (2 on CIFAR).
        gamma: Weight of `dist_intra_class_loss` (2 on CIFAR).

    Returns:
        Scalar loss.
    """
    return beta * dist_inter_class_loss(teacher_logits, student_logits, temperature) + gamma * (
        dist_intra_class_loss(teacher_logits, student_logits, temperature)
    )


def flow_matrix(first_map, second_map):
    """FSP's flow of solution procedure between two feature maps (Yim et al. 2017).

    `G[a, b] = sum_{h, w} F1[h, w, a] * F2[h, w, b] / (H * W)`, after pooling
    the larger map to the other's resolution (`match_resolution`).

    Args:
        first_map: Shape (batch, H1, W1, C1).
        second_map: Shape (batch, H2, W2, C2); one resolution a whole
            multiple of the other.

    Returns:
        Shape (batch, C1, C2), float32.
    """
    require_known_sizes(first_map, second_map)
    first_size, second_size = tuple(first_map.shape[1:3]), tuple(second_map.shape[1:3])
    larger, smaller = sorted((first_size, second_size), reverse=True)
    if larger[0] % smaller[0] or larger[1] % smaller[1]:
        raise ValueError(
            f"FSP pairs consecutive stages of sizes {first_size} and {second_size}: one must be a whole "
            "multiple of the other. Choose the stages (teacher_stages=[...], student_stages=[...]).")
    first_map, second_map = match_resolution(ops.cast(first_map, "float32"), ops.cast(second_map, "float32"))
    height, width = first_map.shape[1], first_map.shape[2]
    first = ops.reshape(first_map, (-1, height * width, first_map.shape[-1]))
    second = ops.reshape(second_map, (-1, height * width, second_map.shape[-1]))
    return ops.matmul(ops.transpose(first, (0, 2, 1)), second) / float(height * width)


def fsp_loss(teacher_maps, student_maps):
    """FSP's loss: squared distance between the flow matrices of consecutive maps.

    `sum_i mean((G_S^i - G_T^i)^2)` with `G^i = flow_matrix(F^i, F^{i+1})`
    over consecutive maps of each network (Yim, Joo, Bae, Kim, "A Gift from
    Knowledge Distillation", CVPR 2017: equal weights over the pairs, the
    mean over the batch and the matrix entries as in RepDistiller's FSP).

    Args:
        teacher_maps: The teacher's feature maps, in order (at least two).
        student_maps: The student's, with the same channel counts.

    Returns:
        Scalar loss; zero when the student's maps equal the teacher's.

    Raises:
        ValueError: different numbers of maps, or flow matrices of
            different shapes (FSP needs equal widths).
    """
    _check_stage_counts(teacher_maps, student_maps, "feature maps")
    total = 0.0
    for i in range(len(teacher_maps) - 1):
        teacher_flow = flow_matrix(teacher_maps[i], teacher_maps[i + 1])
        student_flow = flow_matrix(student_maps[i], student_maps[i + 1])
        if tuple(teacher_flow.shape[1:]) != tuple(student_flow.shape[1:]):
            raise ValueError(
                f"FSP matrices of pair {i + 1} differ in shape: teacher {tuple(teacher_flow.shape[1:])}, "
                f"student {tuple(student_flow.shape[1:])}. FSP needs stages of equal widths."
            )
        total = total + ops.mean(ops.square(student_flow - teacher_flow))
    return total


def adaptive_average_pool(feature_map, size):
    """Average pooling to `size x size` outputs, bins as PyTorch's adaptive pooling.

    Output bin `i` along an axis of length `n` averages positions
    `floor(i * n / size)` to `ceil((i + 1) * n / size) - 1`, so uneven
    lengths (7 to 4) are covered with overlapping bins.

    Args:
        feature_map: Shape (batch, H, W, C), H and W known.
        size: The output height and width.

    Returns:
        Shape (batch, size, size, C).
    """
    height, width = feature_map.shape[1], feature_map.shape[2]
    if height % size == 0 and width % size == 0:
        pool = (height // size, width // size)
        return ops.average_pool(feature_map, pool, strides=pool)

    def bins(n):
        return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

    rows = []
    for top, bottom in bins(height):
        rows.append(ops.stack(
            [ops.mean(feature_map[:, top:bottom, left:right, :], axis=(1, 2)) for left, right in bins(width)],
            axis=1))
    return ops.stack(rows, axis=1)


# ReviewKD's pyramid of pooled sizes, each weighted half the previous one.
HCL_LEVELS = (4, 2, 1)


def hierarchical_context_loss(teacher_maps, student_maps):
    """ReviewKD's hierarchical context loss (Chen, Liu, Zhao, Jia, CVPR 2021).

    For each pair of maps: the mean squared error at full resolution
    (weight 1) and after adaptive average pooling to 4x4, 2x2 and 1x1
    (weights 1/2, 1/4, 1/8; only sizes smaller than the map), divided by
    the sum of the weights used; summed over the pairs.

    Args:
        teacher_maps: The teacher's maps (batch, H, W, C), shallow to deep.
        student_maps: The student's, of the same shapes.

    Returns:
        Scalar loss; zero when the maps are equal.
    """
    _check_stage_counts(teacher_maps, student_maps, "feature maps")
    total = 0.0
    for teacher_map, student_map in zip(teacher_maps, student_maps):
        require_known_sizes(teacher_map, student_map)
        teacher_map, student_map = ops.cast(teacher_map, "float32"), ops.cast(student_map, "float32")
        loss = ops.mean(ops.square(student_map - teacher_map))
        weight, weights = 1.0, 1.0
        for size in HCL_LEVELS:
            if size >= student_map.shape[1]:
                continue
            weight /= 2.0
            loss = loss + weight * ops.mean(ops.square(
                adaptive_average_pool(student_map, size) - adaptive_average_pool(teacher_map, size)))
            weights += weight
        total = total + loss / weights
    return total


def contrast_scores(memory, vectors, contrast, temperature):
    """CRD's unnormalised scores `exp(m . v / tau)` of memory entries against embeddings.

    Row b scores the memory entries `contrast[b]` against `vectors[b]`
    (Tian, Krishnan, Isola, ICLR 2020, eq. 19 before normalisation by Z).
    Two ways give the same numbers: the product of every embedding with the
    whole memory, read at the contrast indices, or the contrast entries
    gathered row by row (RepDistiller's). The product is chosen while N is
    at most 4 x (1 + K) (2 CPU cores, batch 128, d = 128, K = 16,384,
    forward and backward for one memory: 46 ms against 218 ms at N =
    10,000, 109 against 221 at N = 50,000, both about 240 at N = 100,000,
    about 6 x (1 + K); 4 leaves a margin; benchmarks/studies/crd_scores.py),
    so CIFAR's 50,000 examples take it and ImageNet's 1.28 million gather.

    Args:
        memory: Shape (N, d), one entry per training example.
        vectors: Shape (batch, d), the embeddings scored.
        contrast: Integer indices into `memory`, shape (batch, 1 + K).
        temperature: tau.

    Returns:
        Shape (batch, 1 + K), float32, > 0 (for L2-normalised inputs).
    """
    num_examples = memory.shape[0]
    vectors = ops.cast(vectors, "float32")
    if num_examples <= 4 * contrast.shape[1]:
        dots = ops.take_along_axis(ops.matmul(vectors, ops.transpose(memory)), contrast, axis=1)
    else:
        dots = ops.einsum("bkd,bd->bk", ops.take(memory, contrast, axis=0), vectors)
    return ops.exp(dots / temperature)


# The NCE estimator's epsilon (RepDistiller's ContrastLoss).
NCE_EPSILON = 1e-7


def contrastive_nce_loss(scores, num_examples):
    """CRD's noise-contrastive estimation loss (Tian, Krishnan, Isola, ICLR 2020).

    Each row holds the normalised score of the positive pair first, then of
    its K negatives (`exp(v . m / tau) / Z`). With the noise distribution
    uniform over the `N` training examples (`P_n = 1 / N`), the loss is

        -(1 / B) sum_b [ log(s_b0 / (s_b0 + K P_n + eps))
                         + sum_k log(K P_n / (s_bk + K P_n + eps)) ]

    the negative log-likelihood of telling each positive from its negatives
    (RepDistiller's ContrastLoss).

    Args:
        scores: Shape (batch, 1 + K), positive first, > 0.
        num_examples: N, the number of training examples.

    Returns:
        Scalar loss.
    """
    scores = ops.cast(scores, "float32")
    noise = ops.cast(ops.shape(scores)[1] - 1, "float32") / float(num_examples)
    positive, negatives = scores[:, 0], scores[:, 1:]
    log_positive = ops.log(positive / (positive + noise + NCE_EPSILON))
    log_negatives = ops.log(noise / (negatives + noise + NCE_EPSILON))
    return -ops.mean(log_positive + ops.sum(log_negatives, axis=-1))
