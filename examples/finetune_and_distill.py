"""The commonest real use: fine-tune a keras.applications backbone on your
image folder as the teacher, distil it into a small student, export it.

    python examples/finetune_and_distill.py --folder=path/to/images

`path/to/images` holds one subfolder of images per class (the layout
`keras.utils.image_dataset_from_directory` reads). The teacher is the usual
transfer-learning model, `keras.Sequential([Input, backbone, pooling,
Dense])`, with the backbone's ImageNet weights (downloaded by Keras on first
use; `--weights=none` trains from scratch, offline); HKSAN taps its stages
inside the nested backbone ("MobileNetV3Small/..."). Both models take raw
0..255 pixels (keras.applications backbones normalise inside the model; the
student starts with a Rescaling layer), so the export's preprocessing is the
identity.
"""

import argparse
import os

import keras

import hksan_keras


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--image_size", type=int, default=96)
    parser.add_argument("--weights", default="imagenet", help="'imagenet' or 'none'")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--output_dir", default="runs/finetune_and_distill")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    size = (args.image_size, args.image_size)
    train, validation = keras.utils.image_dataset_from_directory(
        args.folder, validation_split=0.2, subset="both", seed=0, image_size=size,
        batch_size=args.batch_size, crop_to_aspect_ratio=True)
    num_classes = len(train.class_names)
    shape = size + (3,)

    weights = None if args.weights.lower() == "none" else args.weights
    backbone = keras.applications.MobileNetV3Small(
        include_top=False, weights=weights, input_shape=shape)
    teacher = keras.Sequential([
        keras.Input(shape), backbone, keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.2), keras.layers.Dense(num_classes),  # logits, no softmax
    ], name="teacher")
    if weights is not None:
        # Transfer learning: train the new head on the frozen backbone first.
        backbone.trainable = False
        teacher.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)
        backbone.trainable = True
    teacher.compile(optimizer=keras.optimizers.Adam(1e-4 if weights else 1e-3), metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)
    _, teacher_accuracy = teacher.evaluate(validation, verbose=0)

    student = keras.Sequential([
        keras.Input(shape), keras.layers.Rescaling(1 / 127.5, offset=-1),
        hksan_keras.models.cifar_resnet(14, num_classes=num_classes, input_shape=shape),
    ], name="student")
    distiller = hksan_keras.HKSANDistiller(teacher, student, num_stages=3)
    print("teacher stages:", distiller.teacher_stages)
    print("student stages:", distiller.student_stages)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      d_optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))
    distiller.fit(train, validation_data=validation, epochs=args.epochs, verbose=2)
    student_accuracy = distiller.evaluate(validation, verbose=0, return_dict=True)["accuracy"]

    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "student_savedmodel")
    # image_dataset_from_directory gives raw pixels, center-cropped to a
    # square and resized: the served model does the same to any image.
    preprocessing = hksan_keras.data.preprocessing_spec(
        ([0, 0, 0], [1, 1, 1]), args.image_size, resize="center_square_then_resize")
    if os.path.exists(path):
        print(f"{path} exists; not overwritten")
    else:
        distiller.export_student(path, preprocessing=preprocessing)
        print("exported to", path)
    print(f"teacher validation accuracy: {teacher_accuracy:.4f}")
    print(f"distilled student validation accuracy: {student_accuracy:.4f}")


if __name__ == "__main__":
    main()
