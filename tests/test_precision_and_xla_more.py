"""The second half of the methods under mixed precision and XLA (see test_precision_and_xla.py)."""

import pytest

from test_precision_and_xla import FIRST_HALF, METHODS, POLICIES, check_method_under_policy

pytestmark = pytest.mark.full


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
@pytest.mark.parametrize("method", [m for m in METHODS if m not in FIRST_HALF])
def test_every_method_trains_under_mixed_precision_and_xla(method, policy, batch):
    check_method_under_policy(method, policy, batch)
