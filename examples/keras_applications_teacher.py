"""A keras.applications model as the teacher, a zoo ResNet as the student.

Stages are detected on both (num_stages=3 keeps the deepest three of the
MobileNetV2); the teacher's and the student's stages may have different
resolutions, since the squeezed vectors have no spatial dimensions.

    python examples/keras_applications_teacher.py --data_dir=../shared/data/tensorflow_datasets

With internet access you would start from ImageNet weights
(`weights="imagenet"` and a new head); this example trains the teacher from
scratch briefly so that it runs offline.
"""

import argparse

import keras

import hksan_keras
from hksan_keras.data import cifar_dataset
from hksan_keras.training import cosine_sgd, train_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--train_size", type=int, default=3000)
    parser.add_argument("--test_size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    train = cifar_dataset("cifar10", "train", 64, training=True, data_dir=args.data_dir,
                          take=args.train_size, seed=0)
    test = cifar_dataset("cifar10", "test", 256, data_dir=args.data_dir, take=args.test_size)
    steps = -(-args.train_size // 64)

    teacher = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10,
        classifier_activation=None,  # distillation needs logits
    )
    train_classifier(teacher, train, args.epochs, steps, learning_rate=0.05, verbose=2)
    student = hksan_keras.models.cifar_resnet(8, num_classes=10, stem_width=8, stage_widths=(8, 16, 32))
    distiller = hksan_keras.HKSANDistiller(teacher, student, num_stages=3)
    print("teacher stages:", distiller.teacher_stages)
    print("student stages:", distiller.student_stages)
    distiller.compile(optimizer=cosine_sgd(0.05, args.epochs * steps))
    distiller.fit(train, validation_data=test, epochs=args.epochs, verbose=2)
    print(f"distilled student test accuracy: {distiller.evaluate(test, verbose=0, return_dict=True)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
