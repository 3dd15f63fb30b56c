#!/usr/bin/env bash
# One command from a fresh clone to the quick CIFAR-10 experiment:
# a virtual environment (.venv), the package, then teacher, student alone,
# distillation and evaluation (hksan-keras experiment). Rerunning it reuses
# finished steps and resumes an interrupted one.
#
#   bash scripts/quickstart.sh [DATA_DIR] [CONFIG]
#
# DATA_DIR: a TFDS data directory holding cifar10 (default: $TFDS_DATA_DIR,
# else ../shared/data/tensorflow_datasets). CONFIG: default
# configs/cifar10_resnet56_resnet20_quick.json.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-${TFDS_DATA_DIR:-../shared/data/tensorflow_datasets}}"
config="${2:-configs/cifar10_resnet56_resnet20_quick.json}"
if [ ! -d .venv ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q -e .
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
hksan-keras experiment --config="$config" --data_dir="$data_dir" --verbose=0
