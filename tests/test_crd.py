"""CRD (Tian et al., ICLR 2020): the NCE loss by hand, the memory bank, negatives, indices."""

import keras
import numpy as np
import pytest

from hksan_keras import data, distillers, losses


def test_the_nce_loss_is_repdistillers_contrast_loss_by_hand():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.01, 2.0, size=(3, 5)).astype("float32")
    n = 100.0
    noise = 4 / n  # K = 4 negatives, uniform noise over N examples
    expected = -np.mean(np.log(scores[:, 0] / (scores[:, 0] + noise + 1e-7))
                        + np.sum(np.log(noise / (scores[:, 1:] + noise + 1e-7)), axis=1))
    assert float(losses.contrastive_nce_loss(scores, 100)) == pytest.approx(expected, rel=1e-5)
    # A higher positive and lower negatives lower the loss.
    better = scores.copy()
    better[:, 0] *= 10
    better[:, 1:] /= 10
    assert float(losses.contrastive_nce_loss(better, 100)) < float(losses.contrastive_nce_loss(scores, 100))


@pytest.mark.parametrize("num_examples, num_contrast", [(6, 3), (40, 2)])
def test_contrast_scores_and_their_gradient_by_hand(num_examples, num_contrast):
    # (6, 3): the memory's product with every embedding (6 <= 4 x 3);
    # (40, 2): the contrast rows gathered (40 > 4 x 2). Both by hand.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    memory = rng.normal(size=(num_examples, 4)).astype("float32")
    vectors = rng.normal(size=(3, 4)).astype("float32")
    contrast = rng.integers(0, num_examples, size=(3, num_contrast)).astype("int32")
    expected = np.array([[np.exp(memory[j] @ vectors[b] / 0.5) for j in contrast[b]] for b in range(3)])
    variable = tf.Variable(vectors)
    with tf.GradientTape() as tape:
        got = losses.contrast_scores(memory, variable, contrast, 0.5)
        total = tf.reduce_sum(got)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5)
    # d/dv_b of sum_k exp(m_k . v_b / tau) = sum_k exp(...) m_k / tau.
    gradient = np.array([sum(expected[b, i] * memory[j] / 0.5 for i, j in enumerate(contrast[b]))
                         for b in range(3)])
    np.testing.assert_allclose(tape.gradient(total, variable).numpy(), gradient, rtol=1e-4)


def _indexed(batch):
    images, labels = batch
    return {"images": images, "index": np.arange(len(images))}, labels


def _l2(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_a_step_moves_only_the_batchs_memory_entries_with_momentum(teacher, student, batch):
    distiller = distillers.CRDDistiller(teacher, student, num_examples=40, num_negatives=8, momentum=0.5)
    # A zero learning rate: the embeddings the step used are the ones recomputed here.
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    before = np.array(distiller.student_memory), np.array(distiller.teacher_memory)
    x, labels = _indexed(batch)
    distiller.fit(x, labels, batch_size=32, epochs=1, verbose=0, shuffle=False)
    student_features = distiller.student_features(batch[0], training=True)[-2]
    teacher_features = distiller.teacher_features(batch[0], training=False)[-2]
    student_vector = _l2(np.asarray(distiller.student_embedding(np.asarray(student_features).mean(axis=(1, 2)))))
    teacher_vector = _l2(np.asarray(distiller.teacher_embedding(np.asarray(teacher_features).mean(axis=(1, 2)))))
    for memory, old, vector in ((distiller.student_memory, before[0], student_vector),
                                (distiller.teacher_memory, before[1], teacher_vector)):
        memory = np.array(memory)
        np.testing.assert_allclose(memory[:32], _l2(0.5 * old[:32] + 0.5 * vector), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(memory[32:], old[32:])
    np.testing.assert_array_equal(np.array(distiller.memory_classes)[:32], labels)
    assert np.all(np.array(distiller.memory_classes)[32:] == -1)
    normalizers = np.array(distiller.normalizers)
    assert np.all(normalizers > 0)
    distiller.fit(x, labels, batch_size=32, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_array_equal(np.array(distiller.normalizers), normalizers)  # set once


def test_the_crd_term_is_both_directions_nce_with_z_from_the_first_batch_by_hand(teacher, student, monkeypatch):
    # Tian et al. eq. 18-19 as RepDistiller computes them: each network's
    # embedding of the pooled deepest features is scored against the OTHER
    # network's memory at the example's own entry and its negatives,
    # exp(v . m / tau) / Z with Z = mean score x N fixed at the first batch.
    n, k, d, tau = 6, 3, 4, 0.5
    distiller = distillers.CRDDistiller(teacher, student, num_examples=n, num_negatives=k, feature_dim=d,
                                        temperature=tau)
    rng = np.random.default_rng(3)
    student_memory = _l2(rng.normal(size=(n, d))).astype("float32")
    teacher_memory = _l2(rng.normal(size=(n, d))).astype("float32")
    distiller.student_memory.assign(student_memory)
    distiller.teacher_memory.assign(teacher_memory)
    negatives = np.array([[1, 2, 3], [0, 0, 5]], "int32")
    monkeypatch.setattr(distiller, "_negatives", lambda index, classes: keras.ops.convert_to_tensor(negatives))
    index = np.array([4, 2], "int32")
    labels = np.array([1, 7])
    student_map = rng.normal(size=(2, 2, 2, 12)).astype("float32")
    teacher_map = rng.normal(size=(2, 2, 2, 24)).astype("float32")
    logits = rng.normal(size=(2, 10)).astype("float32")
    distiller.unpack_batch(({"images": np.zeros((2, 16, 16, 3), "float32"), "index": index}, labels))
    terms = distiller.loss_terms(labels, {"logits": logits, "features": [teacher_map]},
                                 {"logits": logits, "features": [student_map]})

    def embed(layer, feature_map):
        kernel, bias = (np.array(w) for w in layer.weights)
        return _l2(feature_map.mean(axis=(1, 2)) @ kernel + bias)

    student_vector = embed(distiller.student_embedding, student_map)
    teacher_vector = embed(distiller.teacher_embedding, teacher_map)
    contrast = np.concatenate([index[:, None], negatives], axis=1)

    def nce(vectors, memory):
        scores = np.exp(np.einsum("bkd,bd->bk", memory[contrast], vectors) / tau)
        z = scores.mean() * n
        noise = k / n
        x = scores / z
        value = -np.mean(np.log(x[:, 0] / (x[:, 0] + noise + 1e-7))
                         + np.sum(np.log(noise / (x[:, 1:] + noise + 1e-7)), axis=1))
        return value, z

    student_side, z_student = nce(student_vector, teacher_memory)
    teacher_side, z_teacher = nce(teacher_vector, student_memory)
    assert float(terms["crd_loss"]) == pytest.approx(student_side + teacher_side, rel=1e-4)
    np.testing.assert_allclose(np.array(distiller.normalizers), [z_student, z_teacher], rtol=1e-4)
    # The banks moved after scoring: the batch's entries only, momentum 0.5.
    np.testing.assert_allclose(np.array(distiller.student_memory)[index],
                               _l2(0.5 * student_memory[index] + 0.5 * student_vector), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(distiller.teacher_memory)[index],
                               _l2(0.5 * teacher_memory[index] + 0.5 * teacher_vector), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(distiller.teacher_memory)[[0, 1, 3, 5]], teacher_memory[[0, 1, 3, 5]])


def test_negatives_come_from_other_classes_once_the_classes_are_known(teacher, student):
    distiller = distillers.CRDDistiller(teacher, student, num_examples=50, num_negatives=64)
    classes = np.arange(50) % 5
    distiller.memory_classes.assign(classes.astype("float32"))
    anchors = np.array([0, 1, 7], "int32")
    negatives = np.asarray(distiller._negatives(anchors, classes[anchors]))
    assert negatives.shape == (3, 64)
    for anchor, row in zip(anchors, negatives):
        assert np.all(classes[row] != classes[anchor])
    # Drawn uniformly with replacement among the other classes: over many
    # rows each of the 40 candidates of class 0's anchor comes up ~1/40.
    _assert_uniform_among(distiller, 0, classes != 0)
    # A class in the middle of the order, with examples not seen yet (class
    # -1, first in the order): those count as others, uniformly too.
    unseen = classes.astype("float32")
    unseen[[3, 4, 10]] = -1
    distiller.memory_classes.assign(unseen)
    _assert_uniform_among(distiller, 2, unseen != 2)


def _assert_uniform_among(distiller, anchor_class, others):
    """200 anchors of `anchor_class` draw only `others` (40 examples), each ~1/40 of the time."""
    many = np.asarray(distiller._negatives(np.zeros(200, "int32"), np.full(200, anchor_class, "int32")))
    counts = np.bincount(many.ravel(), minlength=len(others))
    assert np.all(counts[~others] == 0) and others.sum() == 40
    expected = many.size / 40
    assert np.all(np.abs(counts[others] - expected) < 5 * np.sqrt(expected))


def test_negatives_are_drawn_among_all_examples_only_when_all_share_the_anchors_class(teacher, student):
    # Every known class is the anchor's: no other example, so the K
    # negatives are drawn among all of them (indices in range).
    distiller = distillers.CRDDistiller(teacher, student, num_examples=20, num_negatives=16)
    distiller.memory_classes.assign(np.zeros(20, "float32"))
    negatives = np.asarray(distiller._negatives(np.array([0, 1], "int32"), np.array([0, 0], "int32")))
    assert negatives.shape == (2, 16) and negatives.min() >= 0 and negatives.max() < 20
    assert len(np.unique(negatives)) > 5


def test_missing_indices_and_sizes_are_explained(teacher, student, batch):
    with pytest.raises(ValueError, match="needs num_examples"):
        distillers.CRDDistiller(teacher, student)
    distiller = distillers.CRDDistiller(teacher, student, num_examples=32, num_negatives=8)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    with pytest.raises(ValueError, match=r"CRD needs each training example's index"):
        distiller.fit(*batch, batch_size=16, epochs=1, verbose=0)


def test_indices_outside_the_memory_bank_are_refused_with_the_fix(teacher, student, batch):
    import tensorflow as tf

    images, labels = batch[0][:16], batch[1][:16]
    distiller = distillers.CRDDistiller(teacher, student, num_examples=12, num_negatives=4)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    fix = r"indices must lie in \[0, num_examples\) = \[0, 12\).*Build CRDDistiller with num_examples"
    # Arrays: before training.
    with pytest.raises(ValueError, match=fix + r".* Got indices from 0 to 15"):
        distiller.fit({"images": images, "index": np.arange(16)}, labels, batch_size=8, epochs=1, verbose=0)
    # A dataset: in the pipeline, so also where XLA would drop an assert in
    # the step and clamp the gather (a GPU's default compilation).
    dataset = tf.data.Dataset.from_tensor_slices(({"images": images, "index": np.arange(16)}, labels)).batch(8)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=fix):
        distiller.fit(dataset, epochs=1, verbose=0)
    # Indices in range train as before, and the pipeline's preprocessing
    # still reaches the distiller (for export_student).
    in_range = dataset.take(1)
    in_range.preprocessing = {"mean": [0.0] * 3, "std": [1.0] * 3, "image_size": 16, "resize": "none"}
    distiller.fit(in_range, epochs=1, verbose=0)
    assert distiller.preprocessing == in_range.preprocessing


class _Batches(keras.utils.PyDataset):
    def __init__(self, images, labels, index, batch_size):
        super().__init__()
        self.images, self.labels, self.index, self.batch_size = images, labels, index, batch_size
        self.epochs_ended = 0

    def __len__(self):
        return len(self.images) // self.batch_size

    def __getitem__(self, i):
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return {"images": self.images[rows], "index": self.index[rows]}, self.labels[rows]

    def on_epoch_end(self):
        self.epochs_ended += 1


def test_py_dataset_and_generator_indices_outside_the_memory_bank_are_refused(teacher, student, batch):
    # Python-side inputs are checked in Python as they are read, so on any
    # backend (JAX has no tf.data map to check them in).
    images, labels = batch[0][:16], batch[1][:16]
    distiller = distillers.CRDDistiller(teacher, student, num_examples=12, num_negatives=4)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    fix = r"indices must lie in \[0, num_examples\) = \[0, 12\).*Got indices from 8 to 15"
    with pytest.raises(ValueError, match=fix):
        distiller.fit(_Batches(images, labels, np.arange(16), 8), epochs=1, verbose=0)

    def generator(index):
        for start in (0, 8):
            yield {"images": images[start:start + 8], "index": index[start:start + 8]}, labels[start:start + 8]

    with pytest.raises(ValueError, match=fix):
        distiller.fit(generator(np.arange(16)), epochs=1, verbose=0)
    # In range: both train, and the PyDataset's epoch hooks still run.
    in_range = _Batches(images, labels, np.arange(16) % 12, 8)
    distiller.fit(in_range, epochs=2, verbose=0)
    # Keras ends each epoch and, once more, the whole fit.
    assert in_range.epochs_ended == 3
    distiller.fit(generator(np.arange(16) % 12), epochs=1, verbose=0)
    # The checked dataset holds the check, not the distiller: it pickles,
    # as a PyDataset's worker processes need where they are spawned.
    import pickle

    copy = pickle.loads(pickle.dumps(distiller._checked_indices(_Batches(images, labels, np.arange(16), 8))))
    with pytest.raises(ValueError, match=fix):
        copy[1]


def test_pipelines_give_stable_indices_and_the_memory_round_trips(teacher, student, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 16, 16, 3)).astype("uint8")
    labels = np.arange(40) % 10
    train = data.array_dataset(images, labels, batch_size=16, training=True, seed=0, with_index=True)
    for epoch in range(2):
        seen = np.concatenate([np.asarray(x["index"]) for x, _ in train])
        assert sorted(seen) == list(range(40))
    x, y = next(iter(train))
    # Each index names its own example: its label is the array's.
    np.testing.assert_array_equal(np.asarray(y), labels[np.asarray(x["index"])])
    distiller = distillers.CRDDistiller(teacher, student, num_examples=40, num_negatives=16)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = distiller.fit(train, epochs=1, verbose=0).history
    assert np.isfinite(history["crd_loss"][-1])
    path = str(tmp_path / "crd.keras")
    distiller.save(path)
    restored = keras.saving.load_model(path)
    for name in ("student_memory", "teacher_memory", "memory_classes", "normalizers"):
        np.testing.assert_array_equal(np.array(getattr(restored, name)), np.array(getattr(distiller, name)))
    test = data.array_dataset(images, labels, batch_size=16, stats=train.preprocessing)
    assert restored.evaluate(test, verbose=0, return_dict=True)


@pytest.mark.full
def test_a_config_gives_the_memory_the_training_set_size(cifar_data_dir):
    import pathlib

    from hksan_keras.build import build_distiller, build_models
    from hksan_keras.config import resolve_config

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "cifar10_resnet20_resnet8_narrow_cpu_small.json"
    config = resolve_config(str(path), ["distill.method=crd", "teacher.model=resnet8"], data_dir=cifar_data_dir)
    teacher, student = build_models(config, 10)
    distiller, _ = build_distiller(config, teacher, student, steps_per_epoch=79)
    assert distiller.num_examples == 10000 and tuple(distiller.student_memory.shape) == (10000, 128)


@pytest.mark.full
def test_the_distill_step_gives_crd_indexed_batches_and_the_splits_size(cifar_data_dir, tmp_path):
    import pathlib

    from hksan_keras import experiment, models
    from hksan_keras.config import resolve_config

    # A teacher from weights (teacher.weights), so nothing but CRD trains.
    weights = tmp_path / "teacher.weights.h5"
    models.get("resnet8", 10).save_weights(weights)
    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "cifar10_resnet56_resnet20_quick.json"
    config = resolve_config(str(path), [
        "teacher.model=resnet8", "student.model=resnet8", "data.train_size=96", "data.test_size=64",
        "data.batch_size=32", "distill.epochs=1", "distill.lr_milestones=[]", "distill.method=crd",
        "distill.crd.num_negatives=16", f"teacher.weights={weights}"],
        run_dir=str(tmp_path / "run"), data_dir=cifar_data_dir)
    experiment.train_on_labels(config, "teacher", verbose=0)
    metrics = experiment.distill(config, verbose=0)
    assert metrics["epochs"] == 1
    distiller = keras.saving.load_model(tmp_path / "run" / "distill_crd" / "distiller.keras")
    assert distiller.num_examples == 96
    # Every training example's class was stored through its index.
    assert np.all(np.array(distiller.memory_classes) >= 0)
