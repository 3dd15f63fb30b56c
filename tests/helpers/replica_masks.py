"""Prints whether the perturbation masks of two replicas differ.

Run by test_distributed.py in a fresh process (devices must be configured
before TensorFlow starts):  python replica_masks.py
"""

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import hksan_keras  # noqa: E402
from distributed_fit_models import plain_cnn  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    distiller = hksan_keras.distillers.ANCDistiller(
        plain_cnn((8, 16), "teacher"), plain_cnn((4, 8), "student"), discriminator={"perturbation_rate": 0.5}, seed=1)


@tf.function
def masks():
    return strategy.run(lambda: distiller.perturb(tf.ones((16, 5))))


per_replica = [np.asarray(t) for t in strategy.experimental_local_results(masks())]
kept = [(m != 0).astype(int) for m in per_replica]
print("replicas", len(kept), "differ", int(not np.array_equal(kept[0], kept[1])),
      "kept_fraction", float(np.mean(kept)))
