#!/usr/bin/env bash
# One command from a fresh clone to the quick CIFAR-10 experiment:
# a virtual environment (.venv), the package, then the teacher that ships
# with the package (tested on the test set), a ResNet-20 trained alone, a
# ResNet-20 distilled with HKSAN, and the table of their test accuracies
# (hksan-keras experiment). Rerunning it reuses finished steps and resumes
# an interrupted one.
#
#   bash scripts/quickstart.sh [DATA_DIR] [CONFIG]
#
# DATA_DIR: a TFDS data directory (default: $TFDS_DATA_DIR, else
# ../shared/data/tensorflow_datasets where it exists, else TFDS's own default,
# ~/tensorflow_datasets). CIFAR-10 is downloaded and prepared there on first
# use if it is not there yet. CONFIG: default
# configs/cifar10_resnet56_resnet20_quickstart.json;
# configs/cifar10_resnet56_resnet20_quick.json trains the teacher as well.
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir="${1:-${TFDS_DATA_DIR:-}}"
if [ -z "$data_dir" ] && [ -d ../shared/data/tensorflow_datasets ]; then
  data_dir=../shared/data/tensorflow_datasets
fi
config="${2:-configs/cifar10_resnet56_resnet20_quickstart.json}"
if [ ! -d .venv ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q -e .
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
hksan-keras experiment --config="$config" ${data_dir:+--data_dir="$data_dir"} --verbose=0
