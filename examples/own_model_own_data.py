"""Distil your own functional model on your own data: numpy arrays or an image folder.

    # numpy arrays (.npy files: images uint8 (N, H, W, 3), labels int (N,))
    python examples/own_model_own_data.py --images=x.npy --labels=y.npy
    # a folder with one subfolder of images per class
    python examples/own_model_own_data.py --folder=path/to/images --image_size=64
    # no data of your own at hand: CIFAR-10 from TFDS, as numpy arrays
    python examples/own_model_own_data.py --data_dir=../shared/data/tensorflow_datasets

The teacher and the student are plain functional models written here, not
from the zoo, and their stages are named explicitly.
"""

import argparse
import os

import keras
import numpy as np

import hksan_keras
from hksan_keras import data
from hksan_keras.training import train_classifier


def convnet(widths, num_classes, image_size, name):
    """A small functional CNN whose stage outputs are named by the user."""
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU(name=f"features_{i}")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name=name)


def load_arrays(args):
    if args.images:
        return np.load(args.images), np.load(args.labels)
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(
        tfds.load("cifar10", split=f"train[:{args.size}]", as_supervised=True,
                  batch_size=-1, data_dir=data.resolve_data_dir(args.data_dir))
    )
    return images, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help=".npy file of images")
    parser.add_argument("--labels", help=".npy file of integer labels")
    parser.add_argument("--folder", help="image folder, one subfolder per class")
    parser.add_argument("--image_size", type=int, default=64, help="with --folder")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir, when no data is given")
    parser.add_argument("--size", type=int, default=3000, help="CIFAR-10 images, when no data is given")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    if args.folder:
        train = data.folder_dataset(args.folder, 32, training=True, image_size=args.image_size,
                                    validation_split=0.2, subset="training", seed=args.seed)
        test = data.folder_dataset(args.folder, 32, image_size=args.image_size,
                                   validation_split=0.2, subset="validation", seed=args.seed)
        num_classes = sum(os.path.isdir(os.path.join(args.folder, d)) for d in os.listdir(args.folder))
        image_size = args.image_size
    else:
        images, labels = load_arrays(args)
        split = int(0.8 * len(images))
        train = data.array_dataset(images[:split], labels[:split], 64, training=True, seed=args.seed)
        # Held-out images normalised with the training images' statistics.
        test = data.array_dataset(images[split:], labels[split:], 256, stats=train.preprocessing)
        num_classes = int(labels.max()) + 1
        image_size = images.shape[1]

    steps = sum(1 for _ in train)
    teacher = convnet((32, 64, 128), num_classes, image_size, "my_teacher")
    train_classifier(teacher, train, args.epochs, steps, learning_rate=0.05, verbose=2)
    student = convnet((8, 16, 32), num_classes, image_size, "my_student")
    distiller = hksan_keras.HKSANDistiller(
        teacher, student,
        teacher_stages=["features_1", "features_2", "features_3"],
        student_stages=["features_1", "features_2", "features_3"],
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    distiller.fit(train, validation_data=test, epochs=args.epochs, verbose=2)
    print(f"distilled student test accuracy: {distiller.evaluate(test, verbose=0, return_dict=True)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
