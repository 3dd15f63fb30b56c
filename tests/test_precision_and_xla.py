"""Every distiller trains under mixed precision and under XLA (jit_compile)."""

import keras
import numpy as np
import pytest

from hksan_keras import distillers
from conftest import fit_inputs, method_kwargs, student_for, tiny_resnet


# The full tier only (every method under each precision and XLA).
pytestmark = pytest.mark.full


# Two files share the methods (this one the first half, alphabetically;
# test_precision_and_xla_more.py the rest), so that the two test workers,
# which take whole files, share the matrix.
METHODS = sorted(distillers.METHODS)
FIRST_HALF = METHODS[: len(METHODS) // 2]
POLICIES = ["mixed_float16", "mixed_bfloat16", "float32"]


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
@pytest.mark.parametrize("method", FIRST_HALF)
def test_every_method_trains_under_mixed_precision_and_xla(method, policy, batch):
    check_method_under_policy(method, policy, batch)


def check_method_under_policy(method, policy, batch):
    """A few steps of `method` under `policy`: finite, float32 weights, loss scaling where due."""
    keras.utils.set_random_seed(0)
    # Teacher and student both in the policy's compute dtype.
    teacher = tiny_resnet((8, 16, 24), name="teacher")
    student = student_for(method, tiny_resnet((4, 8, 12), name="student"))
    distiller = distillers.get(method)(teacher, student, **method_kwargs(method))
    # float32 is run with XLA; the mixed policies without it.
    distiller.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      jit_compile=policy == "float32")
    before = [np.array(v) for v in student.trainable_variables]
    # Dynamic loss scaling skips the first steps whose float16 gradients
    # overflow (AT's weight is 1000): give it a few.
    epochs = 4 if policy == "mixed_float16" else 1
    history = distiller.fit(*fit_inputs(method, batch), batch_size=16, epochs=epochs, verbose=0)
    for name, values in history.history.items():
        assert np.isfinite(values).all(), (name, values)
    assert all(v.dtype == "float32" for v in student.trainable_variables)
    assert any(not np.array_equal(b, np.array(v)) for b, v in zip(before, student.trainable_variables))
    scaled = policy == "mixed_float16"
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    if isinstance(distiller, distillers.AdversarialDistiller):
        assert isinstance(distiller.d_optimizer, keras.optimizers.LossScaleOptimizer) == scaled
        assert distiller.discriminator.compute_dtype == "float32"
