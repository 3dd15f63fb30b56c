"""CRD's per-step extra work: its contrast scores and its negative sampling.

Times, in one process of TensorFlow on whatever device it uses, forward and backward
(with respect to the embeddings) of `hksan_keras.losses.contrast_scores`
against the per-row gather it replaces where the memory is small (RepDistiller's
`index_select` then `bmm`: (batch, 1 + K, d) rows a step), and
`CRDDistiller._negatives` against sorting 2K random keys a row (`top_k`), for
memories of CIFAR-10's sizes. Each is compiled once, then timed over
`--repeats` calls; the median is printed in milliseconds, with the ratio.

Usage:
    python benchmarks/studies/crd_scores.py
    python benchmarks/studies/crd_scores.py --num_examples=10000,50000 --batch_size=128 --repeats=10
"""

import argparse
import statistics
import time


def _time(function, repeats):
    function()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_examples", default="10000,50000")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_negatives", type=int, default=16384)
    parser.add_argument("--feature_dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from hksan_keras import distillers, losses, models

    batch, k, d = args.batch_size, args.num_negatives, args.feature_dim
    rng = np.random.default_rng(0)
    print(f"batch {batch}, K {k}, d {d}; median of {args.repeats} calls, ms")
    for n in (int(v) for v in args.num_examples.split(",")):
        memory = tf.constant(losses.l2_normalize(rng.normal(size=(n, d)).astype("float32")))
        vectors = tf.Variable(np.asarray(losses.l2_normalize(rng.normal(size=(batch, d)).astype("float32"))))
        contrast = tf.constant(rng.integers(0, n, size=(batch, k + 1)).astype("int32"))

        def gradient_of(scores_fn):
            @tf.function
            def step():
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.math.log(scores_fn()))
                return tape.gradient(loss, vectors)
            return step

        ours = gradient_of(lambda: losses.contrast_scores(memory, vectors, contrast, 0.07))
        gathered = gradient_of(lambda: tf.exp(tf.einsum("bkd,bd->bk", tf.gather(memory, contrast), vectors) / 0.07))
        np.testing.assert_allclose(ours().numpy(), gathered().numpy(), rtol=1e-3, atol=1e-6)
        dense, rows = _time(ours, args.repeats), _time(gathered, args.repeats)
        print(f"N {n}: scores, one memory: contrast_scores {dense:.1f}, per-row gather {rows:.1f} "
              f"({rows / dense:.1f}x)")

        tiny = [models.cifar_resnet(8, num_classes=10, stem_width=4, stage_widths=(4, 8, 12), input_shape=(16, 16, 3))
                for _ in range(2)]
        distiller = distillers.CRDDistiller(*tiny, num_examples=n, num_negatives=k, feature_dim=d)
        distiller.memory_classes.assign(rng.integers(0, 10, size=n).astype("float32"))
        index = tf.constant(np.arange(batch, dtype="int32"))
        classes = tf.gather(tf.cast(distiller.memory_classes, "int32"), index)
        sampler = keras.random.SeedGenerator(0)

        @tf.function
        def by_sorting():
            candidates = keras.random.randint((batch, 2 * k), 0, n, seed=sampler, dtype="int32")
            valid = tf.cast(tf.gather(distiller.memory_classes, candidates) != tf.cast(classes, "float32")[:, None],
                            "float32")
            _, positions = tf.math.top_k(valid + keras.random.uniform(tf.shape(valid), seed=sampler), k)
            return tf.gather(candidates, positions, batch_dims=1)

        partition = tf.function(lambda: distiller._negatives(index, classes))
        negatives = partition().numpy()
        known = np.asarray(distiller.memory_classes)
        assert np.all(known[negatives] != known[:batch, None])
        ranked, sorted_ = _time(partition, args.repeats), _time(by_sorting, args.repeats)
        print(f"N {n}: negatives: _negatives {ranked:.1f}, sorting {sorted_:.1f} ({sorted_ / ranked:.1f}x)")


if __name__ == "__main__":
    main()
