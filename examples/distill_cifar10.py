"""Distil a ResNet-20 teacher into a narrow ResNet-8 on real CIFAR-10.

A short end-to-end run: train the teacher, distil the student with
HKSANDistiller (compile + fit, with Keras callbacks), evaluate both, and save
the distiller and the student as .keras files.

    python examples/distill_cifar10.py --data_dir=../shared/data/tensorflow_datasets

The defaults take a few minutes on 2 CPU cores; raise --train_size and the
epochs for accuracy.
"""

import argparse
import os

import keras

import hksan_keras
from hksan_keras.data import cifar_dataset
from hksan_keras.training import cosine_sgd, train_classifier


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None, help="TFDS data directory (default: $TFDS_DATA_DIR)")
    parser.add_argument("--train_size", type=int, default=5000, help="training images used")
    parser.add_argument("--test_size", type=int, default=2000, help="test images used")
    parser.add_argument("--teacher_epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4, help="distillation epochs")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--output_dir", default="runs/distill_cifar10")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    if os.path.exists(args.output_dir):
        raise SystemExit(
            f"{args.output_dir} exists; pass a new --output_dir so that no "
            "earlier run is overwritten."
        )
    os.makedirs(args.output_dir)
    keras.utils.set_random_seed(args.seed)
    train = cifar_dataset("cifar10", "train", args.batch_size, training=True,
                          data_dir=args.data_dir, take=args.train_size, seed=args.seed)
    test = cifar_dataset("cifar10", "test", 500, data_dir=args.data_dir, take=args.test_size)
    steps_per_epoch = -(-args.train_size // args.batch_size)

    teacher = hksan_keras.models.cifar_resnet(20, num_classes=10, name="teacher")
    train_classifier(teacher, train, args.teacher_epochs, steps_per_epoch, verbose=2)

    student = hksan_keras.models.cifar_resnet(
        8, num_classes=10, stem_width=8, stage_widths=(8, 16, 32), name="student"
    )
    student.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    untrained_accuracy = student.evaluate(test, verbose=0, return_dict=True)["accuracy"]

    distiller = hksan_keras.HKSANDistiller(teacher, student)
    distiller.compile(
        optimizer=cosine_sgd(0.05, args.epochs * steps_per_epoch),
        d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5),
    )
    distiller.fit(
        train,
        validation_data=test,
        epochs=args.epochs,
        verbose=2,
        callbacks=[
            keras.callbacks.CSVLogger(os.path.join(args.output_dir, "history.csv")),
            keras.callbacks.TensorBoard(os.path.join(args.output_dir, "logs")),
        ],
    )

    teacher_accuracy = teacher.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    distilled = distiller.evaluate(test, verbose=0, return_dict=True)
    distiller.save(os.path.join(args.output_dir, "distiller.keras"))
    distiller.student.save(os.path.join(args.output_dir, "student.keras"))
    print(f"teacher test accuracy:           {teacher_accuracy:.4f}")
    print(f"untrained student test accuracy: {untrained_accuracy:.4f}")
    print(f"distilled student test accuracy: {distilled['accuracy']:.4f}")
    print(f"saved to {args.output_dir}/")


if __name__ == "__main__":
    main()
