"""The hksan-keras command line (absl): `hksan-keras COMMAND --config=FILE [flags]`.

`hksan-keras --help` lists the commands, `hksan-keras COMMAND --help` the
flags of one; docs/cli.md has the configs and run directories.
"""

import functools
import sys

from absl import app, flags, logging

from hksan_keras import experiment, export, report, visualize
from hksan_keras.callbacks import DivergenceError
from hksan_keras.config import ConfigError, resolve_config
from hksan_keras.checks import MissingDependencyError
from hksan_keras.distillers import METHODS

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Experiment config, a JSON file (see configs/).")
flags.DEFINE_multi_string(
    "set", [], "Override a config field, e.g. --set=distill.epochs=2"
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
    print("\n" + "\n".join(experiment.accuracy_table(results)))


# Each command: its name -> (what it does, in one line; the flags it reads
# besides the common ones; what it does with the resolved config).
COMMANDS = {
    "train-teacher": ("train the config's teacher on the labels, into RUN_DIR/teacher", [],
                      lambda config: experiment.train_on_labels(config, "teacher", FLAGS.verbose)),
    "train-student": ("train the student alone on the labels (the baseline), into RUN_DIR/student", [],
                      lambda config: experiment.train_on_labels(config, "student", FLAGS.verbose)),
    "distill": ("distil the student from the trained teacher (the config's method, or --method)",
                ["method"], lambda config: experiment.distill(config, FLAGS.verbose)),
    "evaluate": ("test accuracy of the teacher, student and distilled students of a run",
                 ["model"], lambda config: experiment.evaluate(config, FLAGS.model)),
    "export": ("export the distilled student as a SavedModel or a TFLite file",
               ["method", "model", "format", "quantization"],
               lambda config: export.export_step(config, FLAGS.model, FLAGS.format, FLAGS.quantization)),
    "report": ("compression report: parameters, size, speed and accuracy of teacher and student",
               ["model"], lambda config: report.report_step(config, FLAGS.model)),
    "visualize": ("pictures of a run: attention maps and training curves (PNG)",
                  ["model"], lambda config: visualize.visualize_step(config, FLAGS.model)),
    "experiment": ("the whole pipeline: teacher, student alone, distillation, evaluation",
                   ["method"], _experiment),
}
# The flags of every command.
COMMON_FLAGS = ["config", "set", "run_dir", "data_dir", "mixed_precision", "jit_compile", "strategy",
                "verbose"]


def usage():
    """The overview that `hksan-keras --help` prints: every command in one line."""
    lines = ["usage: hksan-keras COMMAND --config=FILE [--set=key.path=value ...] [flags]", "",
             "Commands:"]
    lines += [f"  {name:<14} {description}" for name, (description, _, _) in COMMANDS.items()]
    lines += ["", "Every command takes: " + " ".join(f"--{name}" for name in COMMON_FLAGS) + ".",
              "`hksan-keras COMMAND --help` describes them; configs: configs/*.json and docs/cli.md.",
              "Example: hksan-keras experiment --config=configs/cifar10_resnet56_resnet20_quickstart.json"]
    return "\n".join(lines)


def command_usage(command):
    """What `hksan-keras COMMAND --help` prints: the command and each flag it reads."""
    description, extra, _ = COMMANDS[command]
    lines = [f"usage: hksan-keras {command} --config=FILE [flags]", "", description[0].upper() + description[1:] + ".",
             "", "Flags:"]
    for name in COMMON_FLAGS + extra:
        flag = FLAGS[name]
        text = " ".join(flag.help.split())  # absl appends "; repeat this option ..." on a new line
        lines.append(f"  --{name}: {text}" + (f" (default: {flag.default})" if flag.default not in (None, []) else ""))
    return "\n".join(lines)


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
        raise app.UsageError("--config is required, e.g. --config=configs/cifar10_resnet56_resnet20_quickstart.json")
    # TFDS and TensorFlow log every dataset read at INFO through absl.
    logging.set_verbosity(logging.WARNING)
    try:
        config = resolve_config(FLAGS.config, _overrides(), FLAGS.run_dir, FLAGS.data_dir)
        COMMANDS[command][2](config)
    except (ConfigError, FileNotFoundError, FileExistsError, MissingDependencyError) as error:
        print(f"hksan-keras {command}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except DivergenceError as error:
        print(f"hksan-keras {command}: stopped: {error}", file=sys.stderr)
        sys.exit(3)


def run():
    """Entry point of the `hksan-keras` console script."""
    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] in ("--help", "-h", "help"):
        print(usage())
        sys.exit(0)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(usage(), file=sys.stderr)
        given = argv[1] if len(argv) > 1 else "nothing"
        print(f"hksan-keras: error: expected a command ({', '.join(COMMANDS)}), got {given}.", file=sys.stderr)
        sys.exit(2)
    command = argv.pop(1)
    if any(arg in ("--help", "-h", "--helpshort", "--helpfull") for arg in argv[1:]):
        print(command_usage(command))
        sys.exit(0)
    app.run(functools.partial(_main, command), argv=argv)


if __name__ == "__main__":
    run()
