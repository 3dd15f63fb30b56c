"""Trains HKSAN under the strategy of TF_CONFIG (MultiWorkerMirroredStrategy when
set, one device otherwise), writing its run directory the library's way.

Run by test_distributed.py:  python multi_worker_fit.py OUTPUT.npz RUN_DIR
"""

import os
import sys

from hksan_keras import distribute

output_path, run_dir = sys.argv[1], sys.argv[2]
# The strategy first: a multi-worker one must exist before any other op.
strategy = distribute.make_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "default")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import hksan_keras  # noqa: E402
from distributed_fit_models import plain_cnn  # noqa: E402

rng = np.random.default_rng(0)
images = rng.normal(size=(64, 8, 8, 3)).astype("float32")
labels = rng.integers(0, 5, size=(64,))
# The global batch is 16 whatever the number of workers; each worker reads
# its shard of every global batch.
dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
dataset = dataset.with_options(options)

with strategy.scope():
    keras.utils.set_random_seed(0)
    distiller = hksan_keras.HKSANDistiller(
        plain_cnn((8, 16), "teacher"), plain_cnn((4, 8), "student"),
        descriptor_units=8, discriminator={"units": (16,), "perturbation_rate": 0.0}, logit_weight=1.0,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), d_optimizer=keras.optimizers.SGD(0.05))

directory = distribute.worker_directory(os.path.join(run_dir, "distill"))
os.makedirs(directory, exist_ok=True)
distiller.fit(dataset, epochs=2, verbose=0, callbacks=[
    keras.callbacks.BackupAndRestore(os.path.join(directory, "checkpoints")),
    hksan_keras.callbacks.MetricsLogger(os.path.join(directory, "metrics.jsonl")),
])
distiller.student.save(os.path.join(directory, "last_student.keras"))
distribute.release_worker_directory(directory, os.path.join(run_dir, "distill"))
np.savez(output_path, replicas=strategy.num_replicas_in_sync, chief=distribute.is_chief(),
         **{f"student_{i}": np.array(w) for i, w in enumerate(distiller.student.get_weights())})
