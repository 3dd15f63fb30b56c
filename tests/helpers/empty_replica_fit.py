"""Fits zoo ResNets (batch normalisation) on 2 replicas with a last global
batch of 1 image, so that one replica gets none; prints what stayed finite.

Run by test_distributed.py in a fresh process (devices must be configured
before TensorFlow starts):  python empty_replica_fit.py METHOD
"""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import hksan_keras  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
images = rng.normal(size=(33, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 10, size=(33,))
dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)  # 16, 16, 1
with strategy.scope():
    keras.utils.set_random_seed(0)
    models = [hksan_keras.models.cifar_resnet(8, num_classes=10, stem_width=4, stage_widths=(4, 8, 12),
                                              input_shape=(16, 16, 3), name=name) for name in ("t", "s")]
    distiller = hksan_keras.distillers.get(sys.argv[1])(*models)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05), **(
        {"d_optimizer": keras.optimizers.Adam(1e-4)} if hasattr(distiller, "discriminator") else {}))
history = distiller.fit(dataset, epochs=1, verbose=0).history
evaluation = distiller.evaluate(dataset, verbose=0, return_dict=True)
# Each replica keeps its own copy of the batch-norm statistics: read them all.
copies = [np.asarray(copy) for w in models[1].weights
          for copy in strategy.experimental_local_results(w.value)]
print(json.dumps({
    "history_finite": all(np.isfinite(v[-1]) for v in history.values()),
    "evaluate_finite": all(np.isfinite(v) for v in evaluation.values()),
    "student_copies_finite": all(np.all(np.isfinite(c)) for c in copies),
    "copies": len(copies),
}))
