import numpy as np
import pytest
import tensorflow_datasets as tfds

from hksan_keras import data


def _first_batches(dataset, count=2):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_cifar_batches_have_the_right_shapes_dtypes_and_labels(cifar_data_dir):
    train = data.cifar_dataset("cifar10", "train", 32, training=True, data_dir=cifar_data_dir, take=256, seed=0)
    images, labels = next(iter(train))
    assert images.shape == (32, 32, 32, 3) and images.dtype.name == "float32"
    assert labels.shape == (32,) and labels.dtype.name == "int64"
    assert 0 <= labels.numpy().min() and labels.numpy().max() < 10
    # Normalised: roughly zero mean and unit spread on real images.
    assert abs(float(images.numpy().mean())) < 0.5 and 0.5 < float(images.numpy().std()) < 1.5


def test_evaluation_images_are_the_normalised_originals(cifar_data_dir):
    test = data.cifar_dataset("cifar10", "test", 16, data_dir=cifar_data_dir, take=16)
    raw = tfds.load("cifar10", split="test", as_supervised=True, data_dir=cifar_data_dir).take(16).batch(16)
    (images, labels), = _first_batches(test, 1)
    raw_images, raw_labels = next(iter(raw))
    mean, std = (np.array(v, "float32") for v in data.CIFAR_STATS["cifar10"])
    np.testing.assert_allclose(images, (raw_images.numpy().astype("float32") - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, raw_labels.numpy())
    # And they are the same every time through.
    np.testing.assert_array_equal(_first_batches(test, 1)[0][0], images)


def test_augmentation_changes_training_images(cifar_data_dir):
    raw = tfds.load("cifar10", split="train", as_supervised=True, data_dir=cifar_data_dir).take(64)
    plain = data.make_pipeline(raw, 64, training=False, stats=data.CIFAR_STATS["cifar10"])
    augmented = data.make_pipeline(raw, 64, training=False, stats=data.CIFAR_STATS["cifar10"],
                                   augment=data._cifar_augment)
    # training=False never augments, even with an augmentation given.
    np.testing.assert_array_equal(_first_batches(plain, 1)[0][0], _first_batches(augmented, 1)[0][0])
    train = data.cifar_dataset("cifar10", "train", 64, training=True, data_dir=cifar_data_dir, take=64, seed=0)
    (train_images, train_labels), = _first_batches(train, 1)
    (plain_images, plain_labels), = _first_batches(plain, 1)
    # Same examples (shuffled), different pixels.
    assert sorted(train_labels.tolist()) == sorted(plain_labels.tolist())
    order = [np.argmin([np.abs(t - p).sum() for p in plain_images]) for t in train_images]
    changed = [not np.array_equal(t, plain_images[i]) for t, i in zip(train_images, order)]
    assert np.mean(changed) > 0.5


def test_same_seed_same_batches_new_epoch_new_draws(cifar_data_dir):
    def pipeline(seed):
        return data.cifar_dataset("cifar10", "train", 32, training=True, data_dir=cifar_data_dir, take=128, seed=seed)

    first, second, other = pipeline(7), pipeline(7), pipeline(8)
    a, b, c = _first_batches(first), _first_batches(second), _first_batches(other)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    assert not np.array_equal(a[0][0], _first_batches(first)[0][0])  # second epoch


def test_missing_dataset_names_the_directory_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared in .*downloading is off.*Pass data_dir"):
        data.tfds_dataset("cifar100", "train", data_dir=str(tmp_path), download=False)


def test_a_missing_dataset_is_downloaded_and_prepared_as_tfds_load_does(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    calls = []

    def offline(self, download_config=None, **kwargs):
        calls.append(self.data_dir)
        raise ConnectionError("Failed to establish a new connection: network unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(FileNotFoundError) as caught:
        data.tfds_dataset("cifar100", "train", data_dir=str(tmp_path))
    message = str(caught.value)
    assert calls and calls[0].startswith(str(tmp_path))
    assert "'cifar100'" in message and str(tmp_path) in message and "\n" not in message
    assert "could not be downloaded" in message and "ConnectionError" in message


def test_a_module_missing_on_the_prepare_path_is_named_with_its_pip_command(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def missing(self, download_config=None, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", missing)
    with pytest.raises(data.MissingDependencyError, match="pip install importlib_resources") as caught:
        data.tfds_dataset("cifar100", "train", data_dir=str(tmp_path))
    assert "internet" not in str(caught.value)

    def reraised(self, download_config=None, **kwargs):
        # As TFDS's lazy imports re-raise: a new error without the name.
        try:
            raise ModuleNotFoundError("No module named 'pydub'", name="pydub")
        except ModuleNotFoundError as cause:
            raise ModuleNotFoundError("Failed importing pydub. Install it.") from cause

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", reraised)
    with pytest.raises(data.MissingDependencyError, match="'pydub', which is not installed: pip install pydub"):
        data.tfds_dataset("cifar100", "train", data_dir=str(tmp_path))


def _cifar10_binary_archive(directory, images_per_file=2):
    """A tar.gz laid out as CIFAR-10's binary release: records of 1 label byte + 3072 pixel bytes."""
    import tarfile

    rng = np.random.default_rng(0)
    root = directory / "cifar-10-batches-bin"
    root.mkdir()
    (root / "batches.meta.txt").write_text("\n".join(f"class_{i}" for i in range(10)) + "\n")
    labels = {}
    for file_name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, size=(images_per_file, 1 + 32 * 32 * 3), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, size=images_per_file)
        labels[file_name] = records[:, 0].tolist()
        (root / file_name).write_bytes(records.tobytes())
    archive = directory / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-bin")
    return archive, labels


def test_a_missing_dataset_is_downloaded_from_its_url_and_prepared_by_tfds(tmp_path, monkeypatch):
    # TFDS's real download-and-prepare path (download manager, extraction,
    # the CIFAR-10 builder's parser) against a server on 127.0.0.1 standing
    # in for www.cs.toronto.edu: only the builder's URL is changed.
    import functools
    import http.server
    import threading

    from tensorflow_datasets.image_classification import cifar

    served = tmp_path / "served"
    served.mkdir()
    archive, labels = _cifar10_binary_archive(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
    real_info = cifar.Cifar10._cifar_info.fget
    monkeypatch.setattr(cifar.Cifar10, "_cifar_info", property(lambda self: real_info(self)._replace(url=url)))
    # TFDS downloads with requests, which would send 127.0.0.1 through a proxy.
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        dataset = data.tfds_dataset("cifar10", "train", batch_size=100, data_dir=str(tmp_path / "tfds"))
        images, got = next(iter(dataset))
    finally:
        server.shutdown()
        server.server_close()
    assert images.shape == (10, 32, 32, 3)
    expected = [label for name in sorted(labels) if name.startswith("data_batch") for label in labels[name]]
    assert sorted(got.numpy().tolist()) == sorted(expected)


def test_arrays_and_image_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 24, 24, 3), dtype=np.uint8)
    labels = np.arange(20) % 2
    train = data.array_dataset(images, labels, batch_size=8, training=True, seed=0)
    x, y = next(iter(train))
    assert x.shape == (8, 24, 24, 3) and set(y.numpy()) <= {0, 1}
    with pytest.raises(ValueError, match=r"20 images and labels of shape \(3,\): give one label per image"):
        data.array_dataset(images, labels[:3])

    for index, image in enumerate(images):
        folder = tmp_path / f"class_{labels[index]}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{index}.png")
    folder_ds = data.folder_dataset(str(tmp_path), batch_size=4, training=True, image_size=16, seed=0)
    x, y = next(iter(folder_ds))
    assert x.shape == (4, 16, 16, 3) and x.dtype.name == "float32"
    evaluation = data.folder_dataset(str(tmp_path), batch_size=20, image_size=16)
    assert sorted(next(iter(evaluation))[1].numpy().tolist()) == sorted(labels.tolist())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.folder_dataset(str(tmp_path / "missing"))

    # A validation split holds the same files whatever seed a run uses, and
    # none of them is in the training subset (each image is told by its
    # unique pixels: the top-left one and the mean).
    def images_of(**kwargs):
        dataset = data.folder_dataset(str(tmp_path), batch_size=20, image_size=16, validation_split=0.25, **kwargs)
        return {tuple(np.round(image.numpy().mean(axis=(0, 1)), 3)) for batch, _ in dataset for image in batch}

    held_out = images_of(subset="validation")
    assert len(held_out) == 5
    assert images_of(subset="validation", seed=7) == held_out
    training = images_of(subset="training", seed=1, training=False)
    assert len(training) == 15 and not training & held_out


def test_array_labels_keep_their_form_soft_rows_unrounded():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    ids = np.array([0, 2, 1, 2, 0, 1])
    soft = np.full((6, 3), 0.1, "float32") + 0.7 * np.eye(3, dtype="float32")[ids]  # mixup-like rows
    for given, dtype in [(ids, "int64"), (ids[:, None], "int64"), (np.eye(3)[ids], "float32"),
                         (np.eye(3, dtype="uint8")[ids], "int64"), (soft, "float32")]:
        _, y = next(iter(data.array_dataset(images, given, batch_size=6, training=True, seed=0)))
        assert y.dtype.name == dtype
        # Shuffled: compare as a multiset of rows.
        expected = given.reshape(len(ids), -1)
        got = y.numpy().reshape(len(ids), -1)
        np.testing.assert_allclose(sorted(map(tuple, got)), sorted(map(tuple, expected)), rtol=1e-6)
    with pytest.raises(ValueError, match=r"labels of shape \(6, 3, 1\)"):
        data.array_dataset(images, soft[..., None])
    # A column of float class indices given to make_pipeline stays indices.
    import tensorflow as tf

    column = tf.data.Dataset.from_tensor_slices((images, ids[:, None].astype("float32")))
    _, y = next(iter(data.make_pipeline(column, 6, False, ((0.0,) * 3, (1.0,) * 3))))
    assert y.dtype.name == "int64" and y.numpy().reshape(-1).tolist() == ids.tolist()


def test_held_out_arrays_are_normalised_with_the_training_statistics():
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 128, size=(8, 8, 8, 3), dtype=np.uint8)
    test_images = rng.integers(128, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    train = data.array_dataset(train_images, np.zeros(8, int), batch_size=8, training=True, seed=0)
    test = data.array_dataset(test_images, np.zeros(4, int), batch_size=4, stats=train.preprocessing)
    assert test.preprocessing == train.preprocessing
    mean, std = np.array(train.preprocessing["mean"]), np.array(train.preprocessing["std"])
    np.testing.assert_allclose(next(iter(test))[0].numpy(), (test_images - mean) / std, rtol=1e-5)
    with pytest.warns(UserWarning, match="Pass stats=train.preprocessing"):
        data.array_dataset(test_images, np.zeros(4, int))


def test_uint8_and_float_images_give_the_same_training_batches():
    # The cache holds images as they come (uint8) and casts afterwards: the
    # batches must be those of float32 input, shuffle and augmentation included.
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 10
    stats = ((120.0, 115.0, 100.0), (60.0, 60.0, 60.0))
    as_uint8 = data.array_dataset(images, labels, batch_size=16, training=True, seed=3, stats=stats)
    as_float = data.array_dataset(images.astype("float32"), labels, batch_size=16, training=True,
                                  seed=3, stats=stats)
    for (x8, y8), (xf, yf) in zip(_first_batches(as_uint8, 3), _first_batches(as_float, 3)):
        np.testing.assert_array_equal(y8, yf)
        np.testing.assert_allclose(x8, xf, rtol=0, atol=1e-6)


def test_jpeg_crop_while_decoding_matches_decode_then_crop():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    smooth = np.kron(rng.integers(0, 256, size=(12, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    encoded = tf.io.encode_jpeg(smooth, quality=95)
    decoded = tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
    seed = tf.constant([5, 7], tf.int64)
    from_jpeg, _ = data._resized_crop_augment(32, encoded=True)(encoded, 0, seed)
    from_pixels, _ = data._resized_crop_augment(32)(decoded, 0, seed)
    assert from_jpeg.shape == (32, 32, 3) and from_jpeg.dtype == tf.float32
    # Same window, same flip; libjpeg may round a few pixels differently.
    assert float(tf.reduce_mean(tf.abs(from_jpeg - from_pixels))) < 2.0
    evaluated, _ = data._center_crop(32, encoded=True)(encoded, 0)
    np.testing.assert_allclose(evaluated, data.center_crop(decoded, 32), atol=1e-4)
