"""Where HKSAN's squeeze matching comes from: the student's backbone, or its head?

    python benchmarks/studies/squeeze_diagnostic.py --distiller=RUN/distill/distiller.keras \
        --split='train[40000:42000]' --data_dir=../shared/data/tensorflow_datasets

Because the attention map M sums to one, a squeezed vector is

    k = sum(M * L) + g,        g = Dense(guide)   (squeeze_target="guided")

and the student's channel transforms and guide projections have biases: a
student can match the *mean* of the teacher's k^i over images with those
biases alone, without its backbone changing. What only the backbone can
match is how k_T^i varies from image to image. For each stage this prints,
on held-out images:

- `matched`: 1 - E||k_S - k_T||^2 / E||k_T - mean(k_T)||^2, the share of the
  teacher's per-image variation that the student reproduces (0: no better
  than a constant, which the biases can learn; 1: exact);
- `guide_share`: E||g_S||^2 / E||k_S||^2, how much of the student's squeezed
  vector is the guide shift rather than attention-pooled features (n/a with
  squeeze_target="pooled", where k has no guide shift).

Writes the numbers as JSON next to the distiller (squeeze_diagnostic.json).
"""

import argparse
import json
import os

import numpy as np


def diagnose(distiller, dataset):
    """The per-stage `matched` and `guide_share` of an `HKSANDistiller`.

    Args:
        distiller: A trained `HKSANDistiller`.
        dataset: Batches of `(images, labels)`.

    Returns:
        A list (shallow to deep) of dicts with "matched", "guide_share",
        "squared_error" and "teacher_variation".
    """
    student_k, teacher_k, guide_k = None, None, None
    estimators = distiller.student_squeeze.estimators
    for images, _ in dataset:
        out = distiller.squeeze(images)
        # g_i = Dense(guide_i): the guide shift inside the student's k_i.
        shifts = [estimator.guide_projection(guide)
                  for estimator, guide in zip(estimators, out["student"]["guides"])]
        batch = ([np.asarray(k) for k in out["student"]["squeezed"]],
                 [np.asarray(k) for k in out["teacher"]["squeezed"]],
                 [np.asarray(g) for g in shifts])
        if student_k is None:
            student_k, teacher_k, guide_k = batch
        else:
            student_k = [np.concatenate([a, b]) for a, b in zip(student_k, batch[0])]
            teacher_k = [np.concatenate([a, b]) for a, b in zip(teacher_k, batch[1])]
            guide_k = [np.concatenate([a, b]) for a, b in zip(guide_k, batch[2])]
    pooled = distiller.squeeze_target == "pooled"  # k carries no guide shift then
    stages = []
    for k_s, k_t, g in zip(student_k, teacher_k, guide_k):
        error = float(np.mean(np.sum((k_s - k_t) ** 2, axis=-1)))
        variation = float(np.mean(np.sum((k_t - k_t.mean(axis=0)) ** 2, axis=-1)))
        stages.append({
            "matched": 1.0 - error / variation,
            "guide_share": None if pooled else float(
                np.mean(np.sum(g**2, axis=-1)) / np.mean(np.sum(k_s**2, axis=-1))),
            "squared_error": error,
            "teacher_variation": variation,
        })
    return stages


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distiller", required=True, help="An HKSANDistiller .keras file.")
    parser.add_argument("--split", default="train[40000:42000]")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from hksan_keras import data

    distiller = keras.saving.load_model(args.distiller)
    dataset = data.tfds_dataset(args.dataset, args.split, 250, training=False, data_dir=args.data_dir)
    stages = diagnose(distiller, dataset)
    for i, stage in enumerate(stages, start=1):
        share = "n/a" if stage["guide_share"] is None else f"{stage['guide_share']:.3f}"
        print(f"stage {i}: matched {stage['matched']:.3f}  guide_share {share}  "
              f"error {stage['squared_error']:.3f}  teacher variation {stage['teacher_variation']:.3f}")
    path = os.path.join(os.path.dirname(args.distiller), "squeeze_diagnostic.json")
    with open(path, "w") as f:
        json.dump({"split": args.split, "stages": stages}, f, indent=2)


if __name__ == "__main__":
    main()
