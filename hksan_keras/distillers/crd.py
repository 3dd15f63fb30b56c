"""CRD: Tian, Krishnan, Isola, "Contrastive Representation Distillation" (ICLR 2020)."""

import functools
import math
import types

import keras
import numpy as np
from keras import ops

from hksan_keras import losses
from hksan_keras.distillers.base import (
    Distiller, StageDistiller, after, all_replicas, cross_replica_mean, uniform_per_replica,
)
from hksan_keras.options import Option


@keras.saving.register_keras_serializable(package="hksan_keras")
class CRDDistiller(StageDistiller):
    """Contrastive representation distillation with a memory bank of negatives.

        L_S = label_weight * CE(y, l_S) + crd_weight * (NCE(s -> T memory) + NCE(t -> S memory))

    The student's and the teacher's penultimate features (the global
    average of their deepest stage) are embedded by a linear layer each and
    L2-normalised (`feature_dim`). Two memory banks hold one embedding per
    training example, of the student and of the teacher. For each example,
    its own entry (the positive) and `num_negatives` entries of examples of
    other classes (drawn uniformly with replacement) are scored against the
    other network's current embedding, `exp(v . m / temperature) / Z` (Z
    fixed at the first batch as the mean score times the number of
    examples), and `losses.contrastive_nce_loss` separates the positive
    from the negatives, in both directions. After each step the batch's
    entries move to the new embeddings with `momentum` (then renormalised).
    The banks and each example's class are non-trainable variables of the
    distiller: they are saved and restored with it, and under a
    distribution strategy every replica applies every replica's updates, so
    the copies stay equal.

    Training batches must carry each example's index in the training set:
    `({"images": images, "index": indices}, labels)`, which
    `hksan_keras.data`'s pipelines give with `with_index=True` (the index
    of an example must not change between epochs). Evaluation takes plain
    `(images, labels)` too. Negatives are drawn uniformly, with
    replacement, among the examples not known to share the anchor's class
    (RepDistiller's CIFAR sampling once every class is known), a different
    draw on each replica: until an example has been seen its class is
    unknown, so in the first epoch some negatives may share the anchor's
    class.

    Defaults are the paper's and RepDistiller's CIFAR setting (feature
    dimension 128, 16384 negatives, temperature 0.07, momentum 0.5, weight
    0.8 with the labels at 1, `-a 0 -b 0.8`).

    Args:
        teacher: Trained `keras.Model` giving logits.
        student: `keras.Model` giving logits for the same classes.
        num_examples: N, the number of training examples (the memory's
            size; indices run from 0 to N - 1). Required from Python;
            configs give it from the data.
        crd_weight: Weight of the contrastive term.
        feature_dim: Width of the embeddings.
        num_negatives: K, negatives per example.
        temperature: tau of the scores.
        momentum: Weight of a memory entry's old value in its update.
        teacher_stages, student_stages, num_stages, label_weight,
            global_clipnorm: See `StageDistiller` and `Distiller`; only the
            deepest stage is used.
        **kwargs: Standard `keras.Model` arguments (`name`).

    Raises:
        TypeError, ValueError: An option outside its values (docs/options.md)
            or no `num_examples`; at training time, batches without indices.

    Example:

    >>> train = hksan_keras.data.array_dataset(x, y, training=True, with_index=True)
    >>> distiller = CRDDistiller(teacher, student, num_examples=len(x))
    >>> distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    >>> distiller.fit(train, epochs=240)
    """

    LOSS_TERMS = ("label_loss", "crd_loss")
    # Its training batches carry example indices (experiment.distill asks
    # the pipelines for them).
    NEEDS_EXAMPLE_INDEX = True
    OPTIONS = StageDistiller.OPTIONS.extend(
        Option("num_examples", None, "steps", "N, the training examples (memory size; configs: from the data)",
               nullable=True, config=False),
        Option("crd_weight", 0.8, "weight", "weight of the contrastive term (RepDistiller's -b 0.8)"),
        Option("feature_dim", 128, "steps", "width of the embeddings"),
        Option("num_negatives", 16384, "steps", "K, negatives per example"),
        Option("temperature", 0.07, "positive", "tau of the contrastive scores"),
        Option("momentum", 0.5, "probability", "weight of a memory entry's old value in its update"),
    )

    def __init__(self, teacher, student, num_examples=OPTIONS.num_examples, crd_weight=OPTIONS.crd_weight,
                 feature_dim=OPTIONS.feature_dim, num_negatives=OPTIONS.num_negatives,
                 temperature=OPTIONS.temperature, momentum=OPTIONS.momentum,
                 teacher_stages=OPTIONS.teacher_stages, student_stages=OPTIONS.student_stages,
                 num_stages=OPTIONS.num_stages, label_weight=OPTIONS.label_weight,
                 global_clipnorm=OPTIONS.global_clipnorm, **kwargs):
        CRDDistiller.OPTIONS.check(locals())
        if not num_examples:
            raise ValueError(
                "CRDDistiller keeps one memory entry per training example and needs num_examples, the size "
                "of the training set (its batches carry indices 0 .. num_examples - 1).")
        kwargs.setdefault("name", "crd_distiller")
        super().__init__(teacher, student, teacher_stages=teacher_stages, student_stages=student_stages,
                         num_stages=num_stages, label_weight=label_weight,
                         global_clipnorm=global_clipnorm, **kwargs)
        self.num_examples = int(num_examples)
        self.crd_weight = float(crd_weight)
        self.feature_dim = int(feature_dim)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.student_embedding = keras.layers.Dense(self.feature_dim, name="student_embedding", dtype="float32")
        self.student_embedding.build((None, self.student_shapes[-1][-1]))
        self.teacher_embedding = keras.layers.Dense(self.feature_dim, name="teacher_embedding", dtype="float32")
        self.teacher_embedding.build((None, self.teacher_shapes[-1][-1]))
        # RepDistiller's initialisation of the banks: uniform in +-1/sqrt(d/3).
        bound = 1.0 / math.sqrt(self.feature_dim / 3.0)
        memory = dict(shape=(self.num_examples, self.feature_dim), trainable=False, autocast=False,
                      initializer=keras.initializers.RandomUniform(-bound, bound), aggregation="mean")
        self.student_memory = self.add_weight(name="student_memory", **memory)
        self.teacher_memory = self.add_weight(name="teacher_memory", **memory)
        # Each example's class, -1 until it is seen; the normalising
        # constants Z, -1 until the first batch sets them.
        self.memory_classes = self.add_weight(
            name="memory_classes", shape=(self.num_examples,), trainable=False, autocast=False,
            initializer=keras.initializers.Constant(-1.0), aggregation="mean")
        self.normalizers = self.add_weight(
            name="normalizers", shape=(2,), trainable=False, autocast=False,
            initializer=keras.initializers.Constant(-1.0), aggregation="mean")
        self.sampler = keras.random.SeedGenerator(0, name="negative_sampler")
        self._batch_index = None

    def unpack_batch(self, data):
        x, labels = Distiller.unpack_batch(data)
        if isinstance(x, dict):
            if set(x) != {"images", "index"}:
                raise ValueError(f"CRD's batches are ({{'images': ..., 'index': ...}}, labels); got keys {sorted(x)}.")
            # Read by loss_terms of the same step.
            object.__setattr__(self, "_batch_index", ops.cast(ops.reshape(x["index"], (-1,)), "int32"))
            return x["images"], labels
        object.__setattr__(self, "_batch_index", None)
        return x, labels

    def fit(self, x=None, y=None, **kwargs):
        """`Distiller.fit`, with each example index checked against `num_examples`.

        An index outside the memory bank would be gathered as another entry
        (or zeros) and its update dropped, without an error on a GPU or
        under XLA. Index arrays are checked before training; the batches of
        a `tf.data.Dataset` as the pipeline yields them (inside `tf.data`,
        so whatever the device, compilation or strategy); those of a
        `keras.utils.PyDataset` or a Python generator as they are read
        (in Python, before any backend sees them: also on JAX).

        Raises:
            ValueError: An index of the given arrays, or of a PyDataset's or
                generator's batch (raised when training reaches it), lies
                outside [0, num_examples).
            tf.errors.InvalidArgumentError: A `tf.data.Dataset`'s batch
                holds such an index (raised when training reaches it).
        """
        if isinstance(x, dict) and "index" in x and hasattr(x["index"], "__len__"):
            _check_index(x["index"], self.num_examples)
        x = self._checked_indices(x)
        return super().fit(x, y, **kwargs)

    def _checked_indices(self, x):
        # The check holds only num_examples (not the distiller), so that a
        # PyDataset's worker processes can take it.
        check = functools.partial(_check_batch, num_examples=self.num_examples)
        if isinstance(x, keras.utils.PyDataset):
            return _IndexCheckedPyDataset(x, check)
        if isinstance(x, types.GeneratorType):
            return (check(batch) for batch in x)
        try:
            import tensorflow as tf
        except ImportError:
            return x
        if not isinstance(x, tf.data.Dataset):
            return x
        message, num_examples = _index_message(self.num_examples), self.num_examples

        def checked(inputs, *rest):
            if isinstance(inputs, dict) and "index" in inputs:
                index = inputs["index"]
                with tf.control_dependencies([
                    tf.debugging.assert_non_negative(index, message=message),
                    tf.debugging.assert_less(index, tf.cast(num_examples, index.dtype), message=message),
                ]):
                    inputs = dict(inputs, index=tf.identity(index))
            return (inputs, *rest)

        checked_x = x.map(checked)
        # What Distiller.fit keeps for export_student.
        checked_x.preprocessing = getattr(x, "preprocessing", None)
        return checked_x

    def call(self, inputs, training=False):
        images = inputs["images"] if isinstance(inputs, dict) else inputs
        return super().call(images, training=training)

    def extra_trainable_variables(self):
        return self.student_embedding.trainable_variables + self.teacher_embedding.trainable_variables

    def _negatives(self, index, classes):
        """(batch, K) indices drawn uniformly, with replacement, among the
        examples not known to be of each anchor's class."""
        # The examples ordered by class (unseen ones, class -1, first): the
        # anchor's class is one block [start, start + block) of the order,
        # and a uniform position among the N - block others, stepped over
        # the block, is a uniform negative.
        order = ops.argsort(self.memory_classes)
        sorted_classes = ops.take(self.memory_classes, order)
        anchor = ops.cast(classes, "float32")
        start = ops.cast(ops.searchsorted(sorted_classes, anchor, side="left"), "int32")
        block = ops.cast(ops.searchsorted(sorted_classes, anchor, side="right"), "int32") - start
        # Where every example is of the anchor's class, draw among all.
        alone = block == self.num_examples
        start, block = ops.where(alone, 0, start)[:, None], ops.where(alone, 0, block)[:, None]
        # Integers modulo the count of others: uniform within N / 2^31
        # (float draws hold 23 random bits, too few for millions of examples).
        draws = uniform_per_replica((ops.shape(index)[0], self.num_negatives), self.sampler,
                                    maxval=2**31 - 1, dtype="int32")
        position = draws % (self.num_examples - block)
        return ops.take(order, ops.where(position < start, position, position + block), axis=0)

    def loss_terms(self, labels, teacher, student):
        terms = super().loss_terms(labels, teacher, student)
        index = self._batch_index
        if index is None:
            raise ValueError(
                "CRD needs each training example's index: pass batches of ({'images': images, 'index': "
                "indices}, labels), e.g. hksan_keras.data pipelines with with_index=True.")
        classes = losses.class_indices(labels)
        student_vector = losses.l2_normalize(self.student_embedding(
            ops.mean(ops.cast(student["features"][-1], "float32"), axis=(1, 2))))
        teacher_vector = losses.l2_normalize(self.teacher_embedding(
            ops.mean(ops.cast(teacher["features"][-1], "float32"), axis=(1, 2))))
        contrast = ops.concatenate([index[:, None], self._negatives(index, classes)], axis=1)
        # The teacher's embedding against the student's memory and the
        # student's against the teacher's (each direction's positive is
        # the example's own entry).
        teacher_scores = losses.contrast_scores(self.student_memory, teacher_vector, contrast, self.temperature)
        student_scores = losses.contrast_scores(self.teacher_memory, student_vector, contrast, self.temperature)
        batch_size = ops.cast(ops.shape(index)[0], "float32")
        # Z is set once, from the first batch of the whole global batch.
        first = ops.stop_gradient(ops.stack([
            cross_replica_mean(ops.mean(student_scores), batch_size),
            cross_replica_mean(ops.mean(teacher_scores), batch_size),
        ]) * self.num_examples)
        normalizers = ops.where(self.normalizers.value < 0, first, self.normalizers.value)
        terms["crd_loss"] = (losses.contrastive_nce_loss(student_scores / normalizers[0], self.num_examples)
                             + losses.contrastive_nce_loss(teacher_scores / normalizers[1], self.num_examples))
        # The banks move after the scores are taken, with every replica's
        # examples on every replica.
        loss = terms["crd_loss"]
        all_index = all_replicas(index)[:, None]
        updates = []
        for memory, vector in ((self.student_memory, student_vector), (self.teacher_memory, teacher_vector)):
            vectors = all_replicas(ops.stop_gradient(vector))
            moved = losses.l2_normalize(self.momentum * ops.take(memory, all_index[:, 0], axis=0)
                                        + (1.0 - self.momentum) * vectors)
            updates.append(memory.assign(ops.scatter_update(after(memory.value, [loss]), all_index, moved)))
        updates.append(self.memory_classes.assign(ops.scatter_update(
            after(self.memory_classes.value, [loss]), all_index, ops.cast(all_replicas(classes), "float32"))))
        updates.append(self.normalizers.assign(after(normalizers, [loss])))
        terms["crd_loss"] = after(loss, updates)
        return terms

    def term_weights(self):
        return {**super().term_weights(), "crd_loss": self.crd_weight}

    def get_config(self):
        return {**super().get_config(), "num_examples": self.num_examples, "crd_weight": self.crd_weight,
                "feature_dim": self.feature_dim, "num_negatives": self.num_negatives,
                "temperature": self.temperature, "momentum": self.momentum}


def _index_message(num_examples):
    return (f"CRD's example indices must lie in [0, num_examples) = [0, {num_examples}), one memory-bank "
            "entry per training example; an index is outside. Build CRDDistiller with num_examples = the "
            "number of training examples, and index them 0 to num_examples - 1 (hksan_keras.data pipelines "
            "with with_index=True do).")


def _check_index(index, num_examples):
    index = np.asarray(index)
    if index.size and (index.min() < 0 or index.max() >= num_examples):
        raise ValueError(_index_message(num_examples) + f" Got indices from {index.min()} to {index.max()}.")


def _check_batch(batch, num_examples):
    """`batch`, after checking its example indices (if it has any) against `num_examples`."""
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(inputs, dict) and "index" in inputs:
        _check_index(inputs["index"], num_examples)
    return batch


class _IndexCheckedPyDataset(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` whose batches pass `check` as they are read."""

    def __init__(self, dataset, check):
        super().__init__(workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        self.dataset, self.check = dataset, check
        # What Distiller.fit keeps for export_student.
        self.preprocessing = getattr(dataset, "preprocessing", None)

    def __getitem__(self, index):
        return self.check(self.dataset[index])

    def __len__(self):
        return len(self.dataset)

    @property
    def num_batches(self):
        return self.dataset.num_batches

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()
