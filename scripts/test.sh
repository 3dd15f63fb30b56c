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
# Two workers (pytest-xdist), each test file in one of them: the tests
# spend much of their time in single-threaded Python (tracing, building
# models), so two processes keep the two cores busier than one (the full
# tier, 730 tests, took 15.5 min with two workers on 2 idle cores in a fresh
# clone's .ci/run on 2026-12-02 at 15:24, 12.6 at 12:13, 14.8 at 08:10 and
# 22.7 at 06:32 on the same idle cores).
# HKSAN_TEST_WORKERS changes the count (0: one process).
workers="${HKSAN_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then
  parallel=(-n "$workers" --dist loadfile)
fi
python -m pytest -q --durations=15 ${parallel[@]+"${parallel[@]}"} ${tier[@]+"${tier[@]}"} "$@"
