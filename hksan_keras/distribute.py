"""Distribution strategies for the config-driven steps, and who writes files.

Under `tf.distribute.MultiWorkerMirroredStrategy` every worker runs the same
program; only the chief may write the run directory (checkpoints, logs,
metric files, models). The other workers write to a temporary directory of
their own, removed when their step ends, as TensorFlow's multi-worker guide
recommends.
"""

import json
import os
import shutil
import tempfile

from hksan_keras.checks import require

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name="default"):
    """The `tf.distribute` strategy of a config's `strategy` key.

    Args:
        name: "default" (no distribution: one device), "mirrored" (every
            local GPU, `MirroredStrategy`) or "multi_worker"
            (`MultiWorkerMirroredStrategy`, workers from TF_CONFIG).

    Returns:
        The strategy; build and compile models under its `scope()`.

    Raises:
        ValueError: An unknown name, or "multi_worker" without TF_CONFIG.

    Example:

    >>> strategy = make_strategy("mirrored")
    >>> with strategy.scope():
    ...     distiller = HKSANDistiller(teacher, student); distiller.compile(...)
    """
    tf = require("tensorflow", "tf.distribute strategies (hksan_keras.distribute)")

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable "
                "(the cluster's workers and this worker's task), e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")


def _task():
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    has_chief = "chief" in (config.get("cluster") or {})
    return task.get("type"), int(task.get("index") or 0), has_chief


def is_chief():
    """Whether this process writes the run directory (True without TF_CONFIG).

    The chief is the task of type "chief", or worker 0 in a cluster without
    one.
    """
    task_type, index, has_chief = _task()
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and not has_chief


def worker_directory(directory):
    """`directory` on the chief; a fresh temporary directory on other workers.

    Args:
        directory: Where the chief writes.

    Returns:
        The path this process should write to.
    """
    if is_chief():
        return directory
    task_type, index, _ = _task()
    return tempfile.mkdtemp(prefix=f"hksan_{task_type}{index}_")


def release_worker_directory(directory, chief_directory):
    """Removes a non-chief worker's temporary directory (no-op on the chief)."""
    if directory != chief_directory:
        shutil.rmtree(directory, ignore_errors=True)
