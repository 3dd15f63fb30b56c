"""Training throughput: images per second and peak memory, per method and precision.

In one process, for each teacher -> student pair and each mode (float32,
mixed_bfloat16, float32 with jit_compile), trains on the same fixed batch
(random images, batch 128 by default; throughput does not depend on the
weights or the pixels):

- student: the student alone, `keras.Model.fit` with sparse cross-entropy;
- keras_kd: Keras's own `keras.distillation.Distiller` with
  `LogitsDistillation(temperature=4)`;
- kd: our `KDDistiller`;
- hksan: our `HKSANDistiller` (defaults);
- hksan_no_adversarial: the same at adversarial_weight=0, which skips the
  discriminator: the most any saving on D's side could give;

each for `--warmup_steps` untimed steps (tracing, XLA compilation), then
`--repeats` timed windows of `--steps` steps (from the end of a fit's first
step to the end of its last, so that fit's start-up is not counted; a
callback that reads every step's end, as our distillers' divergence guard
does, makes every method wait for each step), interleaved across the
methods of a pair and mode; the median window gives images/s. Peak memory
is the process's peak resident set size while a method is built and warmed
up (Linux VmHWM, reset before each method; it includes what the process
already held, the models built before it among them). Ratios are to keras_kd
in the same pair and mode: per round, keras_kd's window time over the
method's (windows seconds apart, so a slow spell of the machine cancels),
then the median over rounds, with the lowest and highest round; they hold
across machines better than the absolute numbers.

The batch comes from a `keras.utils.PyDataset` that serves the same
arrays at every step, so that the script runs on any backend and needs no
TensorFlow on JAX (Keras picks the backend from KERAS_BACKEND). On JAX
every step is jit-compiled by Keras (its default), so the jit_compile mode
is TensorFlow's only.

Writes <output>.json and <output>.md (default benchmarks/results/throughput).

Usage:
    python benchmarks/throughput.py
    python benchmarks/throughput.py --pairs=resnet20:resnet8_narrow --modes=float32 --steps=5
    KERAS_BACKEND=jax python benchmarks/throughput.py --pairs=resnet56:resnet20 \
        --modes=float32,mixed_bfloat16 --batch_sizes=128,512 --methods=student,keras_kd,kd,hksan
    python benchmarks/throughput.py --from_json=benchmarks/results/throughput.json  # tables again, no measuring
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time

METHODS = ("student", "keras_kd", "kd", "hksan", "hksan_no_adversarial")
MODES = ("float32", "mixed_bfloat16", "jit_compile")


def step_timer_class():
    import keras

    class StepTimer(keras.callbacks.Callback):
        """When each batch ends; the steps after the first are timed (no fit start-up)."""

        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    return StepTimer


def same_batch_class():
    import keras

    class SameBatch(keras.utils.PyDataset):
        """`steps` batches that are all the same arrays (no input pipeline cost)."""

        def __init__(self, images, labels, steps):
            super().__init__()
            self.images, self.labels, self.steps = images, labels, steps

        def __len__(self):
            return self.steps

        def __getitem__(self, index):
            return self.images, self.labels

    return SameBatch


def reset_peak_memory():
    """Resets Linux's peak resident set size of this process (VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build(method, teacher_name, student_name, num_classes, seed, jit_compile, learning_rate):
    import keras

    from hksan_keras import HKSANDistiller, models
    from hksan_keras.distillers.kd import KDDistiller

    keras.utils.set_random_seed(seed)
    student = models.get(student_name, num_classes)
    optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9)
    # The student alone and Keras's Distiller take the same compile.
    keras_compile = dict(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    if method == "student":
        student.compile(**keras_compile)
        return student
    teacher = models.get(teacher_name, num_classes)
    teacher.trainable = False
    if method == "keras_kd":
        model = keras.distillation.Distiller(
            teacher,
            student,
            distillation_losses=keras.distillation.LogitsDistillation(temperature=4.0),
            student_loss_weight=0.1,
        )
        model.compile(**keras_compile)
        return model
    if method == "kd":
        model = KDDistiller(teacher, student)
        model.compile(optimizer=optimizer, jit_compile=jit_compile)
        return model
    adversarial_weight = 0.0 if method == "hksan_no_adversarial" else 0.1
    model = HKSANDistiller(teacher, student, adversarial_weight=adversarial_weight, seed=seed)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model


def write_results(results, output):
    """Ratios to keras_kd from the stored windows; writes <output>.json and .md."""
    def setting(row):
        return row["teacher"], row["student"], row["mode"], row.get("batch_size", results["batch_size"])

    for row in results["rows"]:
        reference = [r for r in results["rows"] if r["method"] == "keras_kd" and setting(r) == setting(row)]
        if not reference:
            row["ratio_to_keras_kd"] = row["ratios_per_round"] = None
            continue
        # Each round's keras_kd window ran seconds from this method's: the
        # per-round ratio cancels a slow spell of the machine, which the
        # ratio of two medians does not.
        row["ratios_per_round"] = [k / m for k, m in zip(reference[0]["window_seconds"], row["window_seconds"])]
        row["ratio_to_keras_kd"] = statistics.median(row["ratios_per_round"])
    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    with open(output + ".json", "w") as f:
        json.dump(results, f, indent=2)
    backend = results.get("backend", "tensorflow")
    versions = f"{backend} {results.get('backend_version', results.get('tensorflow'))}, Keras {results['keras']}"
    lines = [f"# Training throughput ({results['hardware']}, {backend} backend)", "",
             f"images/s: median of {results['repeats']} windows of {results['steps']} steps after "
             f"{results['warmup_steps']} warm-up steps; vs keras_kd: median over the rounds of "
             f"keras_kd's window time over the method's in the same round [lowest, highest]; "
             f"{versions}.", "",
             "| teacher -> student | batch | mode | method | images/s | vs keras_kd | peak memory MiB |",
             "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        ratio = "-"
        if row["ratio_to_keras_kd"]:
            spread = row["ratios_per_round"]
            ratio = f"{row['ratio_to_keras_kd']:.2f} [{min(spread):.2f}, {max(spread):.2f}]"
        lines.append(f"| {row['teacher']} -> {row['student']} | {row.get('batch_size', results['batch_size'])} | "
                     f"{row['mode']} | {row['method']} | "
                     f"{row['images_per_second']:.1f} | {ratio} | {row['peak_memory_mib']:.0f} |")
    with open(output + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="resnet56:resnet20,resnet20:resnet8_narrow",
                        help="Comma-separated teacher:student model names (hksan_keras.models).")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch_sizes", default="128", help="Comma-separated batch sizes.")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--warmup_steps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning_rate", type=float, default=0.01,
                        help="SGD's; small, so that untrained models on one repeated batch stay finite.")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results", "throughput"))
    parser.add_argument("--hardware", default=None,
                        help="How the tables name the machine; default: its devices as the backend sees them.")
    parser.add_argument("--from_json", default=None,
                        help="Measure nothing: recompute ratios and tables from the windows stored in this JSON.")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            write_results(json.load(f), args.output)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    backend = keras.backend.backend()
    modes = args.modes.split(",")
    methods = args.methods.split(",")
    for value, allowed, flag in ((modes, MODES, "--modes"), (methods, METHODS, "--methods")):
        unknown = set(value) - set(allowed)
        if unknown:
            sys.exit(f"Unknown {flag} {sorted(unknown)}; choose from {list(allowed)}.")
    if backend == "jax" and "jit_compile" in modes:
        sys.exit("On JAX every step is jit-compiled already: leave jit_compile out of --modes.")
    if backend == "jax":
        import jax

        version, devices = jax.__version__, [str(d.device_kind) for d in jax.devices()]
    else:
        import tensorflow as tf

        version = tf.__version__
        devices = [d.device_type for d in tf.config.list_physical_devices() if d.device_type != "CPU"]
    accelerators = sorted({d for d in devices if d.lower() != "cpu"})
    hardware = args.hardware or (f"{os.cpu_count()} CPU cores"
                                 + (f", {', '.join(accelerators)}" if accelerators else ", no accelerator"))

    StepTimer = step_timer_class()  # noqa: N806 - a class
    SameBatch = same_batch_class()  # noqa: N806 - a class
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    results = {"hardware": hardware, "backend": backend, "backend_version": version,
               "batch_size": batch_sizes[0], "steps": args.steps, "repeats": args.repeats,
               "warmup_steps": args.warmup_steps, "keras": keras.__version__, "rows": []}
    resets = reset_peak_memory()
    if not resets:
        print("Cannot reset peak memory (/proc/self/clear_refs): peaks are cumulative.")
    for batch_size in batch_sizes:
        rng = np.random.default_rng(args.seed)
        images = rng.normal(size=(batch_size, 32, 32, 3)).astype("float32")
        labels = rng.integers(0, args.num_classes, size=(batch_size,)).astype("int64")
        for pair in args.pairs.split(","):
            teacher_name, student_name = pair.split(":")
            for mode in modes:
                keras.mixed_precision.set_global_policy(
                    "mixed_bfloat16" if mode == "mixed_bfloat16" else "float32"
                )
                keras.backend.clear_session()
                gc.collect()
                built, rows = {}, {}
                for method in methods:
                    reset_peak_memory()
                    model = build(method, teacher_name, student_name, args.num_classes,
                                  args.seed, jit_compile=mode == "jit_compile" or backend == "jax",
                                  learning_rate=args.learning_rate)
                    model.fit(SameBatch(images, labels, args.warmup_steps), epochs=1, verbose=0)
                    built[method] = model
                    rows[method] = {"teacher": teacher_name, "student": student_name, "mode": mode,
                                    "batch_size": batch_size, "method": method, "window_seconds": [],
                                    "peak_memory_mib": peak_memory_mib()}
                # Windows interleaved across methods, so that a slow minute of
                # the machine falls on every method alike.
                for _ in range(args.repeats):
                    for method, model in built.items():
                        timer = StepTimer()
                        model.fit(SameBatch(images, labels, args.steps + 1), epochs=1, verbose=0,
                                  callbacks=[timer])
                        rows[method]["window_seconds"].append(timer.ends[-1] - timer.ends[0])
                for method in methods:
                    row = rows[method]
                    row["images_per_second"] = (batch_size * args.steps
                                                / statistics.median(row["window_seconds"]))
                    results["rows"].append(row)
                    print(f"{pair} batch {batch_size} {mode:15s} {method:21s} "
                          f"{row['images_per_second']:8.1f} img/s peak {row['peak_memory_mib']:.0f} MiB",
                          flush=True)
                del built
    keras.mixed_precision.set_global_policy("float32")

    write_results(results, args.output)


if __name__ == "__main__":
    main()
