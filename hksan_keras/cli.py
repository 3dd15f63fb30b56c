"""The hksan-keras command line (absl).

    hksan-keras train-teacher --config=configs/X.json [--set=key.path=value ...]
    hksan-keras train-student --config=...   (the student alone, labels only)
    hksan-keras distill       --config=... [--method=kd]   (default: the config's, HKSAN)
    hksan-keras evaluate      --config=... [--model=path.keras]
    hksan-keras export        --config=... [--model=path.keras] [--format=tflite]
    hksan-keras report        --config=... [--model=path.keras]   (compression report)
    hksan-keras visualize     --config=... [--model=distiller.keras]   (attention and curves PNGs)
    hksan-keras experiment    --config=...   (teacher, student, distill, evaluate)

Every command takes --set=key.path=value overrides, --mixed_precision=
float32|mixed_float16|mixed_bfloat16, --jit_compile and
--strategy=default|mirrored|multi_worker.
"""

import functools
import sys

from absl import app, flags, logging

from hksan_keras import experiment, export, report, visualize
from hksan_keras.callbacks import DivergenceError
from hksan_keras.config import ConfigError, resolve_config
from hksan_keras.data import MissingDependencyError
from hksan_keras.distillers import METHODS

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Experiment config, a JSON file (see configs/).")
flags.DEFINE_multi_string(
    "set", [], "Override a config field, e.g. --set=distill.epochs=2 (repeatable)."
)
flags.DEFINE_string("run_dir", None, "Run directory (default: the config's, else runs/<name>).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: data.data_dir, else $TFDS_DATA_DIR).")
flags.DEFINE_string("method", None, f"distill/experiment/export: the method ({', '.join(METHODS)}); overrides distill.method (each method's options: docs/options.md).")
flags.DEFINE_string("model", None, "evaluate/export/report/visualize: a .keras model instead of the run's own.")
flags.DEFINE_enum("format", "tf_saved_model", ["tf_saved_model", "tflite"], "export: the format.")
flags.DEFINE_enum("quantization", "float32", ["float32", "float16", "dynamic", "int8"], "export --format=tflite: float32, float16 weights, dynamic-range int8 weights, or full-integer int8 (calibrated on training images).")
flags.DEFINE_enum("mixed_precision", None, ["float32", "mixed_float16", "mixed_bfloat16"], "Keras dtype policy of the models; overrides the config's mixed_precision.")
flags.DEFINE_boolean("jit_compile", None, "Compile the train step with XLA; overrides the config's jit_compile.")
flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker"], "Distribution: one device, MirroredStrategy, or MultiWorkerMirroredStrategy (workers from TF_CONFIG); overrides the config's strategy.")
flags.DEFINE_integer("verbose", 1, "Keras verbosity: 0 none (the one-line epoch summary stays), 1 progress bar, 2 Keras line per epoch.", lower_bound=0, upper_bound=2)


def _experiment(config):
    results = experiment.run_experiment(config, FLAGS.verbose)
    print("\nTest accuracy")
    for name, scores in results.items():
        print(f"  {name:<18} {scores['accuracy']:.4f}")


# Each command: its name -> what it does with the resolved config.
COMMANDS = {
    "train-teacher": lambda config: experiment.train_on_labels(config, "teacher", FLAGS.verbose),
    "train-student": lambda config: experiment.train_on_labels(config, "student", FLAGS.verbose),
    "distill": lambda config: experiment.distill(config, FLAGS.verbose),
    "evaluate": lambda config: experiment.evaluate(config, FLAGS.model),
    "export": lambda config: export.export_step(config, FLAGS.model, FLAGS.format, FLAGS.quantization),
    "report": lambda config: report.report_step(config, FLAGS.model),
    "visualize": lambda config: visualize.visualize_step(config, FLAGS.model),
    "experiment": _experiment,
}


def _overrides():
    """The --set overrides, then those of the flags that override a config field."""
    overrides = list(FLAGS.set) + ([f"distill.method={FLAGS.method}"] if FLAGS.method else [])
    if FLAGS.mixed_precision:
        overrides.append(f"mixed_precision={FLAGS.mixed_precision}")
    if FLAGS.strategy:
        overrides.append(f"strategy={FLAGS.strategy}")
    if FLAGS.jit_compile is not None:
        overrides.append(f"jit_compile={str(FLAGS.jit_compile).lower()}")
    return overrides


def _main(command, argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.config:
        raise app.UsageError("--config is required, e.g. --config=configs/cifar10_resnet56_resnet20_quick.json")
    # TFDS and TensorFlow log every dataset read at INFO through absl.
    logging.set_verbosity(logging.WARNING)
    try:
        config = resolve_config(FLAGS.config, _overrides(), FLAGS.run_dir, FLAGS.data_dir)
        COMMANDS[command](config)
    except (ConfigError, FileNotFoundError, FileExistsError, MissingDependencyError) as error:
        print(f"hksan-keras {command}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except DivergenceError as error:
        print(f"hksan-keras {command}: stopped: {error}", file=sys.stderr)
        sys.exit(3)


def run():
    """Entry point of the `hksan-keras` console script."""
    argv = list(sys.argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        given = argv[1] if len(argv) > 1 else "nothing"
        print(f"hksan-keras: error: expected a command ({', '.join(COMMANDS)}), got {given}.", file=sys.stderr)
        sys.exit(2)
    command = argv.pop(1)
    app.run(functools.partial(_main, command), argv=argv)


if __name__ == "__main__":
    run()
