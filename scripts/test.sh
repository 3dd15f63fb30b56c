#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: a virtual
# environment (.venv, or $HKSAN_VENV), the package with its test extras, and
# pytest. .ci/run calls this script too.
#
#   bash scripts/test.sh [--fast] [PYTEST ARGS...]
#
# Without --fast: the full tier, every test (CI's). With --fast: the fast
# tier, what to run after every change (-m "not full": no subprocesses, no
# training on real CIFAR-10, no distribution, precision matrix, TensorBoard
# or backbones). Both print the slowest tests.
#
# The tests that need real CIFAR-10 read it with tensorflow-datasets from
# $TFDS_DATA_DIR, else ../shared/data/tensorflow_datasets; where neither
# holds it they are skipped (they never download).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${HKSAN_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".[test]"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
tier=()
if [ "${1:-}" = "--fast" ]; then
  shift
  tier=(-m "not full")
fi
python -m pytest -q --durations=15 ${tier[@]+"${tier[@]}"} "$@"
