"""Puts a trained teacher's weights into the package (maintainers).

    python scripts/ship_weights.py --run_dir=runs/cifar10_resnet56_teacher \
        --command="hksan-keras train-teacher --config=configs/cifar10_resnet56_teacher.json ..."

Reads RUN_DIR/teacher/last.keras (the last epoch's model) and the step's
RUN_DIR/teacher/config.json (train and ship from the same checkout: the revision recorded is
the one checked out when shipping), writes
hksan_keras/models/weights/<model>_<dataset>.weights.h5,
loads that file into a freshly built zoo model, measures its accuracy on the
dataset's whole test split (and on its first 1,000 images, the figure the
tests check the installed file against), and records the accuracy, the number of training
images, the recipe (from the config's teacher section), the command and the git
revision in hksan_keras/models/weights/manifest.json
(`hksan_keras.models.pretrained.ship`). Then regenerate docs/models.md's
table with `python -m hksan_keras.models.pretrained`.
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from accuracy import git_revision  # noqa: E402  (one helper for both maintainers' scripts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="A run of `hksan-keras train-teacher`.")
    parser.add_argument("--command", required=True, help="The exact command that trained it.")
    parser.add_argument("--data_dir", default=None, help="TFDS data directory (else the run's, else $TFDS_DATA_DIR).")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from hksan_keras import data, models
    from hksan_keras.models import pretrained

    with open(os.path.join(args.run_dir, "teacher", "config.json")) as f:
        config = json.load(f)
    name, dataset = config["teacher"]["model"], config["data"]["dataset"]
    if dataset not in data.CIFAR_STATS:
        sys.exit(f"Only CIFAR teachers ship with the package; this run trained on {dataset!r}.")
    spec = data.data_spec(config, "teacher")
    if spec["train_split"] != "train" or spec["train_size"] is not None:
        sys.exit(f"Shipped teachers are trained on the whole training split; this one trained on "
                 f"{spec['train_split']!r} (size {spec['train_size']}).")
    data_dir = data.resolve_data_dir(args.data_dir or config["data"]["data_dir"])
    trained = keras.models.load_model(os.path.join(args.run_dir, "teacher", "last.keras"))
    # Taken before anything is written: the weights file and manifest this
    # writes are the only changes a clean checkout gets.
    revision = git_revision(outputs=())

    # Measured on the file as users load it, not on the model in memory.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trained.weights.h5")
        trained.save_weights(path)
        model = models.get(name, num_classes=trained.output.shape[-1], weights=path)
    model.compile(metrics=["accuracy"])

    def accuracy_on(take):
        test = data.cifar_dataset(dataset, "test", batch_size=500, data_dir=data_dir, take=take)
        return model.evaluate(test, verbose=0, return_dict=True)["accuracy"]

    accuracy, accuracy_first_1000 = accuracy_on(None), accuracy_on(1000)
    train_images = data.num_examples(dataset, "train", data_dir)
    teacher = config["teacher"]
    recipe = (
        f"SGD lr {teacher['learning_rate']} momentum {teacher['momentum']}, /{1 / teacher['lr_decay']:g} at epochs "
        f"{teacher['lr_milestones']}, {teacher['epochs']} epochs, batch {config['data']['batch_size']}, weight decay "
        f"{teacher['weight_decay']}; pad-4 crop + flip"
    )
    written = pretrained.ship(model, name, dataset, accuracy, train_images, recipe, args.command, revision,
                              test_accuracy_first_1000=accuracy_first_1000)
    if revision is None or revision.endswith("+changes"):
        print(f"Note: the recorded revision ({revision}) does not describe the checkout: it is not git, or it "
              f"has uncommitted changes.")
    print(f"{written}: {name} on {dataset}, test accuracy {100 * accuracy:.2f}% over the whole test split "
          f"({100 * accuracy_first_1000:.2f}% on its first 1,000 images).")


if __name__ == "__main__":
    main()
