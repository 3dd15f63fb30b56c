"""Why a strong squeeze term diverges: trace the student's squeeze while it trains.

    python benchmarks/studies/squeeze_stability.py \
        --config=configs/cifar10_resnet56_resnet20_cpu_medium.json \
        --teacher=benchmarks/runs/cifar10-resnet56-resnet20/cifar10_resnet56_resnet20_cpu_medium/teacher/last.keras \
        --set distill.hksan.squeeze_weight=0.6 --data_dir=../shared/data/tensorflow_datasets

Trains HKSAN with the config's recipe (as `hksan-keras distill` does, for at
most --steps steps, no checkpoints) and every --every steps prints, per stage
and on one fixed batch of test images: the squeeze distance, the teacher's
squared vector norm |k_T|^2, the student's squared guide norm |guide_S|^2
and the Frobenius norm of the student's guide projection kernel |W_S|. The
library's divergence guard stops a run that goes non-finite and names the
step. On the second protocol at squeeze weight 0.6, |W_S| and |guide_S|^2
grew together until the run diverged (docs/results.md).
"""

import argparse
import json
import os

import numpy as np


def trace_row(distiller, images, step):
    """One row of the trace: the per-stage quantities on `images`.

    Args:
        distiller: An `HKSANDistiller`.
        images: A fixed batch of images.
        step: The training step the row is taken at.

    Returns:
        A dict with "step" and "stages", a list (shallow to deep) of dicts
        with "distance", "teacher_norm2", "student_guide_norm2" and
        "student_projection_norm".
    """
    out = distiller.squeeze(images)
    stages = []
    for i, estimator in enumerate(distiller.student_squeeze.estimators):
        k_t = np.asarray(out["teacher"]["squeezed"][i])
        k_s = np.asarray(out["student"]["squeezed"][i])
        guide = np.asarray(out["student"]["guides"][i])
        stages.append({
            "distance": float(np.mean((k_s - k_t) ** 2)),
            "teacher_norm2": float(np.mean(np.sum(k_t**2, axis=-1))),
            "student_guide_norm2": float(np.mean(np.sum(guide**2, axis=-1))),
            "student_projection_norm": float(np.linalg.norm(np.asarray(estimator.guide_projection.kernel))),
        })
    return {"step": int(step), "stages": stages}


def format_row(row):
    """The row as one line of text."""
    parts = [f"step {row['step']:5d}"]
    for i, s in enumerate(row["stages"], start=1):
        parts.append(
            f"stage {i}: dist {s['distance']:.3g} |k_T|^2 {s['teacher_norm2']:.3g} "
            f"|guide_S|^2 {s['student_guide_norm2']:.3g} |W_S| {s['student_projection_norm']:.3g}"
        )
    return " | ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--teacher", required=True, help="A trained teacher (.keras).")
    parser.add_argument("--set", action="append", default=[], help="Config override, key.path=value.")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--output", default=None, help="Also write the trace here as JSON.")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from hksan_keras.build import build_distiller, build_models, compile_distiller
    from hksan_keras.callbacks import DivergenceError
    from hksan_keras.config import resolve_config
    from hksan_keras.data import load_data

    config = resolve_config(
        args.config, ["distill.method=hksan", *args.set], data_dir=args.data_dir
    )
    train, test, num_classes, steps_per_epoch = load_data(config)
    teacher = keras.saving.load_model(args.teacher)
    _, student = build_models(config, num_classes)
    keras.utils.set_random_seed(config["seed"])
    distiller, _ = build_distiller(config, teacher, student, steps_per_epoch)
    compile_distiller(distiller, config, steps_per_epoch)
    images = next(iter(test))[0][:128]
    trace = [trace_row(distiller, images, 0)]
    print(format_row(trace[-1]), flush=True)

    class Trace(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step % args.every == 0:
                trace.append(trace_row(self.model, images, step))
                print(format_row(trace[-1]), flush=True)
            if step >= args.steps:
                self.model.stop_training = True

    outcome = "trained"
    try:
        distiller.fit(train, epochs=args.steps // steps_per_epoch + 1, callbacks=[Trace()], verbose=0)
    except DivergenceError as error:
        outcome = f"diverged: {error}"
    print(outcome)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"overrides": args.set, "outcome": outcome, "trace": trace}, f, indent=2)


if __name__ == "__main__":
    main()
