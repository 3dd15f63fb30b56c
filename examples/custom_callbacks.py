"""Your own Keras callbacks in a distillation: early stopping, checkpoints, logging.

    python examples/custom_callbacks.py --data_dir=../shared/data/tensorflow_datasets --output_dir=runs/callbacks

Shows: `ReduceLROnPlateau` on the student's validation loss, `EarlyStopping`
on its validation accuracy, `BestStudentCheckpoint` (the student alone, as a
plain .keras), `CSVLogger`, `TensorBoard` (every loss term as a scalar), and a
`LambdaCallback` that prints the discriminator's loss.
"""

import argparse
import os

import keras

import hksan_keras
from hksan_keras.callbacks import BestStudentCheckpoint
from hksan_keras.data import cifar_dataset
from hksan_keras.training import train_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output_dir", default="runs/custom_callbacks")
    parser.add_argument("--train_size", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    if os.path.exists(args.output_dir):
        raise SystemExit(f"{args.output_dir} exists; pass a new --output_dir.")
    os.makedirs(args.output_dir)
    keras.utils.set_random_seed(0)
    train = cifar_dataset("cifar10", "train", 64, training=True, data_dir=args.data_dir,
                          take=args.train_size, seed=0)
    test = cifar_dataset("cifar10", "test", 256, data_dir=args.data_dir, take=1000)
    steps = -(-args.train_size // 64)

    teacher = hksan_keras.models.cifar_resnet(8, num_classes=10, stage_widths=(16, 32, 64))
    train_classifier(teacher, train, args.epochs, steps, verbose=2)
    student = hksan_keras.models.cifar_resnet(8, num_classes=10, stem_width=8, stage_widths=(8, 16, 32))
    distiller = hksan_keras.HKSANDistiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=3, mode="max"),
        BestStudentCheckpoint(os.path.join(args.output_dir, "best_student.keras")),
        keras.callbacks.CSVLogger(os.path.join(args.output_dir, "history.csv")),
        keras.callbacks.TensorBoard(os.path.join(args.output_dir, "logs")),
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: print(
                f"epoch {epoch + 1}: discriminator loss {logs['discriminator_loss']:.3f}"
            )
        ),
    ]
    distiller.fit(train, validation_data=test, epochs=args.epochs, callbacks=callbacks, verbose=2)
    best = keras.saving.load_model(os.path.join(args.output_dir, "best_student.keras"))
    best.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    print(f"best student test accuracy: {best.evaluate(test, verbose=0, return_dict=True)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
