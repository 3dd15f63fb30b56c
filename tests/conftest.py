import os
import pathlib

import keras
import numpy as np
import pytest

import hksan_keras

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "tensorflow_datasets"


def fast_tier_keeps(values, *kept):
    """Parameter values for `parametrize`: those not in `kept` run in the full tier only."""
    return [value if value in kept else pytest.param(value, marks=pytest.mark.full) for value in values]


def tiny_resnet(widths, num_classes=10, name=None):
    """A ResNet-8 with the given stage widths: cheap enough for unit tests."""
    return hksan_keras.models.cifar_resnet(
        8,
        num_classes=num_classes,
        stem_width=widths[0],
        stage_widths=widths,
        input_shape=(16, 16, 3),
        name=name,
    )


def student_for(method, student):
    """The student a generic test gives `method`: FSP compares flow matrices
    entry by entry, so its student has the teacher fixture's widths."""
    if method == "fsp":
        keras.utils.set_random_seed(2)
        return tiny_resnet((8, 16, 24), name="student")
    return student


def method_kwargs(method):
    """Arguments a method cannot do without: FSP's init_steps (1 step of FSP,
    then the labels); CRD's memory size (the `batch` fixture's 32 images)."""
    return {"fsp": {"init_steps": 1}, "crd": {"num_examples": 32, "num_negatives": 16}}.get(method, {})


def fit_inputs(method, batch):
    """`(x, y)` for `fit`: CRD's batches carry each example's index."""
    images, labels = batch
    if method == "crd":
        return {"images": images, "index": np.arange(len(images))}, labels
    return images, labels


@pytest.fixture
def policy(request):
    """A Keras dtype policy for the test (parametrized indirectly), float32 after it."""
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def teacher():
    keras.utils.set_random_seed(1)
    return tiny_resnet((8, 16, 24), name="teacher")


@pytest.fixture
def student():
    keras.utils.set_random_seed(2)
    return tiny_resnet((4, 8, 12), name="student")


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 16, 16, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(32,))
    return images, labels


@pytest.fixture(scope="session")
def cifar_data_dir():
    data_dir = os.environ.get("TFDS_DATA_DIR") or str(DEFAULT_DATA_DIR)
    if not (pathlib.Path(data_dir) / "cifar10").is_dir():
        pytest.skip(
            f"real CIFAR-10 not found in {data_dir}; set TFDS_DATA_DIR to a "
            "directory prepared by tensorflow-datasets"
        )
    return data_dir
