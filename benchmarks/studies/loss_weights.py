"""Measures HKSAN's default loss weights against variants on real CIFAR-10.

A small, CPU-sized protocol used to choose the constructor defaults of
HKSANDistiller: a ResNet-20 teacher trained once on a training subset, then
a narrow ResNet-8 student trained with the same optimizer and budget under
each variant (student alone, HKSAN defaults, and one change at a time).
Writes benchmarks/results/loss_weights.json.

    python benchmarks/studies/loss_weights.py --data_dir=../shared/data/tensorflow_datasets
"""

import argparse
import json
import os
import time

import keras

import hksan_keras
from hksan_keras.data import cifar_dataset
from hksan_keras.training import cosine_sgd, train_classifier

VARIANTS = {
    "student_alone": None,
    "hksan_default": {},
    "no_adversarial": {"adversarial_weight": 0.0},
    "no_squeeze": {"squeeze_weight": 0.0},
    "squeeze_1.0": {"squeeze_weight": 1.0},
    "adversarial_1.0": {"adversarial_weight": 1.0},
    "flat": {"hierarchy": "flat"},
    "discriminator_steps_2": {"discriminator_steps": 2},
    "pretrained_teacher_attention": {"pretrain": True},
}


def student_model():
    return hksan_keras.models.cifar_resnet(
        8, num_classes=10, stem_width=8, stage_widths=(8, 16, 32), name="student"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--train_size", type=int, default=10000)
    parser.add_argument("--test_size", type=int, default=2000)
    parser.add_argument("--teacher_epochs", type=int, default=10)
    parser.add_argument("--student_epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--output", default="benchmarks/results/loss_weights.json"
    )
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    train = cifar_dataset(
        "cifar10", "train", args.batch_size, training=True,
        data_dir=args.data_dir, take=args.train_size, seed=args.seed,
    )
    test = cifar_dataset(
        "cifar10", "test", 500, data_dir=args.data_dir, take=args.test_size
    )
    steps_per_epoch = -(-args.train_size // args.batch_size)
    results = {"protocol": vars(args), "runs": {}}

    start = time.time()
    teacher = hksan_keras.models.cifar_resnet(20, num_classes=10, name="teacher")
    train_classifier(teacher, train, args.teacher_epochs, steps_per_epoch, verbose=2)
    teacher_accuracy = teacher.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    results["teacher"] = {"accuracy": teacher_accuracy, "seconds": time.time() - start}
    print(f"teacher test accuracy {teacher_accuracy:.4f}", flush=True)

    student_steps = args.student_epochs * steps_per_epoch
    for name in args.variants.split(","):
        keras.utils.set_random_seed(args.seed + 1)
        variant = VARIANTS[name]
        start = time.time()
        fit_kwargs = dict(validation_data=test, verbose=2)
        if variant is None:
            model = student_model()
            history = train_classifier(
                model, train, args.student_epochs, steps_per_epoch, 0.05, **fit_kwargs
            )
        else:
            options = dict(variant)
            pretrain = options.pop("pretrain", False)
            model = hksan_keras.HKSANDistiller(teacher, student_model(), **options)
            if pretrain:
                model.pretrain_teacher_attention(train, epochs=1, verbose=2)
            model.compile(optimizer=cosine_sgd(0.05, student_steps))
            history = model.fit(train, epochs=args.student_epochs, **fit_kwargs)
        accuracies = history.history["val_accuracy"]
        results["runs"][name] = {
            "last_epoch_accuracy": accuracies[-1],
            "best_epoch_accuracy": max(accuracies),
            "val_accuracy_per_epoch": accuracies,
            "seconds": time.time() - start,
        }
        print(name, results["runs"][name], flush=True)
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
