"""The accuracy benchmark: every method against the same teacher, over seeds.

    python benchmarks/accuracy.py --protocol=cpu-small --data_dir=../shared/data/tensorflow_datasets
    python benchmarks/accuracy.py --protocol=cpu-small-validation --data_dir=...
    python benchmarks/accuracy.py --protocol=paper --data_dir=...     (a GPU)

A protocol is a file of benchmarks/protocols/: its configs, the overrides
of every run, its seeds and its variants (a method, its complete config
overrides and a note). A test protocol runs only the methods' defaults and
variants that its validation protocol chose (`check_protocols`, run before
anything trains). For each config the teacher is trained once (seed
of the config) and reused; every (variant, seed) then distils the config's
student through `hksan_keras.experiment.distill`, exactly what
`hksan-keras distill --method=...` runs, into
benchmarks/runs/<protocol root>/<config>/seed_<s>/<variant>/.
Finished runs are read back rather than trained again, and an interrupted one
resumes, so the command can be rerun after a stop. A validation protocol
trains on the same images as its test protocol and reuses its teacher.

A campaign can outlive its run directory (a new checkout, another machine):
each trained teacher's weights and record are kept in
benchmarks/teachers/<protocol root>/<config>.weights.h5 (and .json), and a
later invocation loads them instead of training again (refused if the
config's teacher settings changed). Each run's row in the results file
carries one SHA-256 of its settings, seed and teacher's weights
(`_run_sha256`) and the git revisions that trained it; a later invocation
takes a row whose run is not in the run directory from the results file it
rewrites where that SHA-256 matches, instead of training it again, and keeps
the file's rows of variants and seeds it does not run. Commit both to carry
a campaign over. To train a finished run again, delete its step directory
and its row in the results file.

Writes benchmarks/results/<protocol>.json (for each variant: every run's
best-epoch and last-epoch test accuracy and per-epoch curve, their means and
sample standard deviations, wall times), <protocol>.md (the table) and
<protocol>.png (mean test accuracy per epoch, one line per variant).
"""

import argparse
import functools
import hashlib
import json
import os
import statistics
import sys
import time

PROTOCOLS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocols")


def load_protocols(directory=PROTOCOLS_DIR):
    """Every protocol of benchmarks/protocols/, by name (the file's stem).

    A protocol file lists its configs, the overrides of every run (e.g. the
    validation split), its seeds and each variant: a method, its complete
    config overrides and a note. A test protocol names its validation
    protocol; a validation protocol names the variants it `chosen` for the
    test set.
    """
    protocols = {}
    for file in sorted(os.listdir(directory)):
        if file.endswith(".json"):
            with open(os.path.join(directory, file)) as f:
                protocols[file[:-len(".json")]] = dict(json.load(f), name=file[:-len(".json")])
    return protocols


# Keys that differ between a validation run and a test run of the same
# settings, or between runs of one protocol: where the run goes, its seed,
# the teacher's file, where the data is read and which split scores it.
_RUN_KEYS = ("name", "description", "run_dir", "seed", "teacher.path", "data.data_dir", "data.test_split",
             "data.test_size")


def _settings(config_path, overrides):
    """The resolved config of a run without its `_RUN_KEYS`: what it trains, and how."""
    from hksan_keras.config import resolve_config

    config = resolve_config(config_path, overrides)
    for key in _RUN_KEYS:
        *parents, last = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node.pop(last, None)
    return config


def check_protocols(protocols):
    """Refuses a test-set variant that its validation protocol did not choose.

    A variant of a test protocol (one without `chosen`) must train exactly
    as one of these does, all settings compared (the resolved config but
    for `_RUN_KEYS`): a method with its declared defaults on the
    protocol's config, or a variant that the protocol's
    `validation_protocol` lists in `chosen`. So nothing reaches a test set
    without having been chosen on validation, whether it changes a
    method's option, the recipe or the models, in the variant or in the
    protocol's own overrides.

    Raises:
        ValueError: Naming the protocol, the variant and the fix.
    """
    from hksan_keras.config import ConfigError
    from hksan_keras.distillers import METHODS

    for name, protocol in protocols.items():
        if "chosen" in protocol:
            unknown = sorted(set(protocol["chosen"]) - set(protocol["variants"]))
            if unknown:
                raise ValueError(f"Protocol {name} chooses {unknown}, which it does not define.")
            continue
        validation_name = protocol.get("validation_protocol")
        if validation_name is not None and "chosen" not in protocols.get(validation_name, {}):
            raise ValueError(
                f"Protocol {name} names {validation_name!r} as its validation protocol, which "
                "is not a protocol with a 'chosen' list.")
        validation = protocols.get(validation_name)
        for config_path in protocol["configs"]:
            allowed = []
            for method in METHODS:
                try:
                    allowed.append(_settings(config_path, [f"distill.method={method}"]))
                except ConfigError:
                    # A method this config cannot run (FSP's initialisation
                    # longer than a short budget): no variant may use it.
                    continue
            if validation:
                allowed += [
                    _settings(config_path, [*validation["overrides"], *validation["variants"][chosen]["overrides"],
                                            f"distill.method={validation['variants'][chosen]['method']}"])
                    for chosen in validation["chosen"]
                ]
            for variant_name, variant in protocol["variants"].items():
                settings = _settings(config_path, [*protocol["overrides"], *variant["overrides"],
                                                   f"distill.method={variant['method']}"])
                if settings not in allowed:
                    raise ValueError(
                        f"Protocol {name}'s variant {variant_name!r} is not among the variants "
                        f"that {validation_name or 'a validation protocol'} chose: run it on the "
                        "validation split and add it to that protocol's 'chosen' list first.")


def check_scored_counts(curve, examples, where):
    """Refuses a run whose test accuracies are not counts out of the split's examples.

    Each epoch's accuracy is `correct / examples` (a float32): times
    `examples` it must be a whole number, to within `examples * 2**-23 +
    1e-3` (twice float32's rounding); the check is skipped where that
    tolerance reaches 0.1 (about 830,000 examples). A curve that fails
    scored some other set of images, and its numbers never reach a table
    (docs/results.md lists such runs found in earlier results).

    Args:
        curve: The run's test accuracy per epoch, in [0, 1].
        examples: How many examples the scored split holds.
        where: The run's step directory, for the message.

    Raises:
        ValueError: Naming the run, the first accuracy that is no count and
            the fix (delete the step directory and rerun).
    """
    tolerance = examples * 2.0 ** -23 + 1e-3
    if tolerance >= 0.1:
        return
    for epoch, accuracy in enumerate(curve, 1):
        if abs(accuracy * examples - round(accuracy * examples)) > tolerance:
            raise ValueError(
                f"{where}: epoch {epoch}'s test accuracy {accuracy!r} is not a count out of the "
                f"{examples} scored examples ({accuracy!r} x {examples} = {accuracy * examples:.3f}): "
                "the run did not score the whole split. Delete that directory and rerun the "
                "protocol to train it again.")


@functools.lru_cache(maxsize=None)
def _scored_examples(dataset, split, data_dir, size):
    """The size of a run's scored split, from TFDS's metadata, read once per
    split for all the runs that score it; None, with one warning, where the
    data directory lacks it."""
    from hksan_keras.data import num_examples

    try:
        return num_examples(dataset, split, data_dir, size)
    except Exception as error:  # noqa: BLE001 - TFDS raises several kinds for unprepared data
        print(f"   warning: the size of {dataset} {split} is unknown here ({error}); "
              "the runs' accuracies are not checked as counts", flush=True)
        return None


@functools.lru_cache(maxsize=None)
def git_revision(outputs=("benchmarks/results", "benchmarks/teachers")):
    """The checkout's commit, with "+changes" where tracked files other than
    `outputs` (paths from the repository root: the benchmark's own results
    and kept teachers by default) differ from it; None outside git. Also
    what scripts/ship_weights.py records.

    Taken once per process (`main` asks first, before the library is
    imported): a long campaign runs the code it started with, whatever is
    committed while it runs."""
    import subprocess

    root = os.path.dirname(os.path.dirname(PROTOCOLS_DIR))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=root).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."] + [f":!{path}" for path in outputs],
            capture_output=True, text=True, check=True, cwd=root).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if changed else "")


def weights_sha256(model):
    """SHA-256 of a model's weight values in order, trainable or not: the
    teacher's identity, the same whether it was trained here or loaded from a
    kept `.weights.h5` (a `.keras` file's bytes differ between saves of the
    same weights)."""
    import numpy as np

    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def _sha256(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _teacher_sha256(config):
    """SHA-256 of what a teacher trains: its recipe, its data but for where it
    is read from, the seed and the precision."""
    return _sha256({
        "teacher": {k: v for k, v in config["teacher"].items() if k not in ("path", "weights")},
        "data": {k: v for k, v in config["data"].items() if k != "data_dir"},
        **{key: config[key] for key in ("seed", "mixed_precision", "jit_compile")},
    })


def _run_sha256(config, teacher_sha256):
    """SHA-256 of what a run trains and scores: its resolved config but for
    where it is written and read from, its logging and the option sections of
    other methods (`kd+ls` keeps `kd`'s too), and its teacher's weights."""
    method = config["distill"]["method"]
    sections = {method, *method.split("+")}
    from hksan_keras.distillers import METHODS

    settings = {key: value for key, value in config.items()
                if key not in ("name", "description", "run_dir", "backup_every_steps",
                               "attention_images_every_epochs")}
    settings["distill"] = {k: v for k, v in config["distill"].items() if k not in METHODS or k in sections}
    settings["teacher"] = {k: v for k, v in config["teacher"].items() if k != "path"}
    settings["data"] = {k: v for k, v in config["data"].items() if k != "data_dir"}
    return _sha256({"settings": settings, "teacher": teacher_sha256})


def _write_atomically(path, text):
    """Writes `path` whole or not at all, so that a stop part-way never leaves half a file."""
    with open(path + ".partial", "w") as f:
        f.write(text)
    os.replace(path + ".partial", path)


def _teacher(experiment, teacher_config, teacher_root, kept, read_only):
    """The config's teacher in `teacher_root`: trained, or loaded from the
    weights kept at `kept` + ".weights.h5" (record in `kept` + ".json")
    where they exist; kept there after training where they do not.

    Returns:
        (path of the teacher's file, its record: accuracies, training
        seconds, `weights_sha256`, `settings_sha256`).

    Raises:
        SystemExit: The kept teacher was trained under other settings than
            the config's, or the run directory's teacher is not the kept one,
            or only one of the kept files exists, or `read_only` and there
            is no teacher.
    """
    import keras

    metrics = os.path.join(teacher_root, "teacher", "metrics.json")
    path = os.path.join(teacher_root, "teacher", "last.keras")
    settings = _teacher_sha256(teacher_config)
    record = None
    if kept and (os.path.exists(kept + ".json") != os.path.exists(kept + ".weights.h5")):
        sys.exit(f"Only one of {kept}.json and {kept}.weights.h5 exists: restore the other "
                 "(git checkout) or delete both to train the teacher again.")
    if kept and os.path.exists(kept + ".json"):
        with open(kept + ".json") as f:
            record = json.load(f)
        if record["settings_sha256"] != settings:
            sys.exit(f"The teacher kept in {kept}.weights.h5 was trained under other settings than "
                     "the config's teacher, data, seed or precision now give: delete "
                     f"{kept}.weights.h5 and {kept}.json (and {teacher_root}) to train it again.")
    if not os.path.exists(metrics):
        if record is None and read_only:
            sys.exit(f"--read_only: no trained teacher at {metrics} or {kept}.json.")
        if read_only:
            return kept + ".weights.h5", record
        if record is not None:
            print(f"teacher: loading the kept {kept}.weights.h5", flush=True)
            teacher_config = dict(teacher_config, teacher=dict(teacher_config["teacher"],
                                                               weights=kept + ".weights.h5"))
        experiment.train_on_labels(dict(teacher_config, run_dir=teacher_root), "teacher", verbose=0)
        loaded = record is not None
    else:
        loaded = False
    model = keras.saving.load_model(path, compile=False)
    identity = weights_sha256(model)
    if record is None:
        with open(metrics) as f:
            record = dict(json.load(f), weights_sha256=identity, settings_sha256=settings,
                          kept_at_revision=git_revision())
        if kept and not read_only:
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            model.save_weights(kept + ".weights.h5")
            _write_atomically(kept + ".json", json.dumps(record, indent=2))
            print(f"teacher: kept in {kept}.weights.h5", flush=True)
    elif record["weights_sha256"] != identity:
        if loaded:
            sys.exit(f"{kept}.weights.h5 does not hold the weights its record {kept}.json names (SHA-256 "
                     f"{identity[:12]} against {record['weights_sha256'][:12]}): restore both from git.")
        sys.exit(f"The teacher in {teacher_root}/teacher is not the one kept in {kept}.weights.h5 (weights "
                 f"SHA-256 {identity[:12]} against {record['weights_sha256'][:12]}). Either delete "
                 f"{teacher_root} (its teacher and every run under it) to use the kept one, or delete "
                 f"{kept}.weights.h5 and {kept}.json to keep this one instead.")
    return path, record


def _previous_results(path):
    """An earlier results file, or None; refuses one it cannot read."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            sys.exit(f"{path} is not JSON ({error}): restore it from git, or delete it to write a new one.")


def _summary(values):
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def run_config(experiment, protocols, protocol, config_path, variants, seeds, data_dir, overrides, runs_dir,
               teacher_path=None, read_only=False, teachers_dir=None, earlier=None, on_run=None):
    """Teacher once, then every (seed, variant); returns the config's results,
    with {variant: [run, ...]} under "runs".

    A run that diverges (`DivergenceError`) is recorded as diverged, with its
    message, and the protocol goes on. A run missing from `runs_dir` is
    taken from `earlier` (this config's results in an earlier results file)
    where its row there has the same `_run_sha256` and did not diverge;
    `earlier`'s rows of other variants or seeds are kept as they are.
    `on_run(results)` is called before each run trains, with the rows known
    so far, so that they can be written out.

    Raises:
        SystemExit: A run directory holds a run of other settings or of
            another teacher, or the teacher cannot be used (`_teacher`).
    """
    import keras

    from hksan_keras.callbacks import DivergenceError
    from hksan_keras.config import resolve_config
    from hksan_keras.runs import distill_step_name

    extra = list(overrides)
    overrides = protocol.get("overrides", []) + extra
    base = resolve_config(config_path, overrides, data_dir=data_dir)
    # Runs under other settings never mix with (or reuse) the protocol's own.
    suffix = "-" + hashlib.sha1(json.dumps(extra).encode()).hexdigest()[:8] if extra else ""
    root = os.path.join(runs_dir, protocol["root"], base["name"]) + suffix
    if teacher_path:
        teacher = {"last_epoch_test_accuracy": None, "seconds_this_invocation": 0.0,
                   "weights_sha256": weights_sha256(keras.saving.load_model(teacher_path, compile=False))}
    else:
        # A validation protocol reuses the teacher of its test protocol.
        owner = protocols[protocol.get("teacher_protocol", protocol["name"])]
        teacher_config = resolve_config(
            config_path, owner.get("overrides", []) + extra, data_dir=data_dir)
        teacher_root = os.path.join(runs_dir, owner["root"], base["name"]) + suffix
        kept = os.path.join(teachers_dir, owner["root"], base["name"] + suffix) if teachers_dir else None
        teacher_path, teacher = _teacher(experiment, teacher_config, teacher_root, kept, read_only)

    earlier_rows = {(variant, run["seed"]): run
                    for variant, runs in (earlier or {"runs": {}})["runs"].items() for run in runs}
    rows, to_train = {}, []
    for seed in seeds:
        for name, (method, variant_overrides) in variants.items():
            config = resolve_config(
                config_path,
                overrides + variant_overrides + [
                    f"distill.method={method}", f"seed={seed}", f"teacher.path={teacher_path}",
                ],
                run_dir=os.path.join(root, f"seed_{seed}", name),
                data_dir=data_dir,
            )
            run = (seed, name, config, os.path.join(config["run_dir"], distill_step_name(method)),
                   _run_sha256(config, teacher["weights_sha256"]))
            row = _read_run(*run)
            earlier_row = earlier_rows.pop((name, seed), None)
            if row is None and earlier_row is not None:
                if earlier_row.get("run_sha256") == run[-1] and "diverged" not in earlier_row:
                    row = earlier_row
                else:
                    print(f"   {name} seed {seed}: the results file's row is of other settings, another "
                          "teacher or diverged; training it again", flush=True)
            if row is None:
                to_train.append(run)
            else:
                rows[seed, name] = row

    result = {
        "runs_dir": root,
        "teacher": {"model": base["teacher"]["model"], "path": teacher_path,
                    "last_epoch_accuracy": teacher["last_epoch_test_accuracy"],
                    "seconds": teacher["seconds_this_invocation"],
                    "weights_sha256": teacher["weights_sha256"]},
        "student_model": base["student"]["model"],
    }

    def collect():
        result["runs"] = {name: [rows[seed, name] for seed in seeds if (seed, name) in rows] for name in variants}
        # Rows of variants and seeds outside this invocation stay in the file.
        for (name, _), row in earlier_rows.items():
            result["runs"].setdefault(name, []).append(row)
        for runs in result["runs"].values():
            runs.sort(key=lambda run: run["seed"])
        return result

    if read_only:
        return collect()
    for run in to_train:
        if on_run is not None:
            on_run(collect())
        seed, name, config, step, run_sha256 = run
        print(f"== {base['name']} {name} seed {seed}", flush=True)
        os.makedirs(step, exist_ok=True)
        identity = _run_identity(step, run_sha256) or {"run_sha256": run_sha256, "revisions": []}
        identity["revisions"].append(git_revision())  # one per invocation that trained it
        _write_atomically(os.path.join(step, "run.json"), json.dumps(identity, indent=2))
        try:
            experiment.distill(config, verbose=0)
        except DivergenceError as error:
            print(f"   diverged: {error}", flush=True)
            with open(os.path.join(step, "diverged.json"), "w") as f:
                json.dump({"message": str(error)}, f, indent=2)
        rows[seed, name] = _read_run(*run)
        if rows[seed, name] is None:
            sys.exit(f"{step}: the run ended without metrics.json or diverged.json.")
    return collect()


def _run_identity(step, run_sha256):
    """The step's run.json (its `run_sha256` and the revisions that trained
    it), None where it has none; refuses one of another run."""
    path = os.path.join(step, "run.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        identity = json.load(f)
    if identity["run_sha256"] != run_sha256:
        sys.exit(f"{step} holds a run of other settings or of another teacher than this one's "
                 f"(run SHA-256 {identity['run_sha256'][:12]} against {run_sha256[:12]}): delete that "
                 "directory to train it again.")
    return identity


def _read_run(seed, name, config, step, run_sha256):
    """A finished run's row from its step directory; None where it has not
    finished. A run without run.json (trained before runs recorded their
    identity) has `run_sha256` None: it is never taken from a results file."""
    from hksan_keras import callbacks

    def read(file):
        with open(os.path.join(step, file)) as f:
            return json.load(f)

    if not os.path.exists(os.path.join(step, "metrics.json")) and not os.path.exists(
            os.path.join(step, "diverged.json")):
        return None
    identity = _run_identity(step, run_sha256) or {"run_sha256": None, "revisions": []}
    row = {"seed": seed, **identity}
    if os.path.exists(os.path.join(step, "diverged.json")):
        return dict(row, diverged=read("diverged.json")["message"])
    curve = [r["val_accuracy"] for r in callbacks.read_metrics(os.path.join(step, "metrics.jsonl"))]
    spec = config["data"]
    examples = _scored_examples(spec["dataset"], spec["test_split"], spec["data_dir"], spec["test_size"])
    if examples is not None:
        check_scored_counts(curve, examples, step)
    return dict(row, best_epoch_accuracy=max(curve), last_epoch_accuracy=curve[-1], accuracy_per_epoch=curve,
                seconds=read("metrics.json")["seconds_this_invocation"])


def summarise(results):
    for config in results["configs"].values():
        config["summary"] = {}
        for name, all_runs in config["runs"].items():
            runs = [r for r in all_runs if "diverged" not in r]
            if not all_runs:
                continue
            if not runs:
                config["summary"][name] = {"runs": 0, "diverged": len(all_runs)}
                continue
            config["summary"][name] = {
                "runs": len(runs),
                "diverged": len(all_runs) - len(runs),
                "best_epoch": _summary([100 * r["best_epoch_accuracy"] for r in runs]),
                "last_epoch": _summary([100 * r["last_epoch_accuracy"] for r in runs]),
                "seconds": _summary([r["seconds"] for r in runs]),
            }


def markdown(results):
    lines = [f"# Accuracy benchmark: {results['protocol']}", "",
             f"Hardware: {results['hardware']}. Test accuracy in %, mean ± sample std over "
             f"seeds {results['seeds']}; last epoch = at the end of training (the headline), "
             "best epoch = highest accuracy over the epochs (chosen on the scored split itself, "
             "so optimistic).", ""]
    for name, config in results["configs"].items():
        teacher = config["teacher"]
        trained = (f"{100 * teacher['last_epoch_accuracy']:.2f} (trained once, {teacher['seconds'] / 60:.1f} min)"
                   if teacher["last_epoch_accuracy"] is not None else f"given, {teacher['path']}")
        lines += [f"## {name}", "",
                  f"Teacher {teacher['model']}: {trained}. Student {config['student_model']}.", "",
                  "| variant | runs | last epoch | best epoch | minutes per run |",
                  "|---|---|---|---|---|"]
        for variant, s in config["summary"].items():
            if not s["runs"]:
                lines.append(f"| {variant} | 0 ({s['diverged']} diverged) | - | - | - |")
                continue
            count = f"{s['runs']} (+{s['diverged']} diverged)" if s["diverged"] else s["runs"]
            lines.append(
                f"| {variant} | {count} | {s['last_epoch']['mean']:.2f} ± {s['last_epoch']['std']:.2f} "
                f"| {s['best_epoch']['mean']:.2f} ± {s['best_epoch']['std']:.2f} | {s['seconds']['mean'] / 60:.1f} |")
        lines.append("")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = results["configs"]
    figure, axes = plt.subplots(1, len(configs), figsize=(7 * len(configs), 5), squeeze=False)
    for axis, (name, config) in zip(axes[0], configs.items()):
        for variant, runs in config["runs"].items():
            runs = [r for r in runs if "diverged" not in r]
            if not runs:
                continue
            length = min(len(r["accuracy_per_epoch"]) for r in runs)
            mean = [100 * statistics.mean(r["accuracy_per_epoch"][e] for r in runs) for e in range(length)]
            axis.plot(range(1, length + 1), mean, label=variant,
                      linewidth=2.5 if variant.startswith("hksan") else 1.2)
        axis.set_title(f"{name} (mean over each variant's runs)")
        axis.set_xlabel("epoch")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    protocols = load_protocols()
    parser.add_argument("--protocol", choices=sorted(protocols), required=True)
    parser.add_argument("--data_dir", default=None, help="TFDS data directory (else $TFDS_DATA_DIR).")
    parser.add_argument("--variants", default=None, help="Comma-separated subset of the protocol's variants.")
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds (default: the protocol's).")
    parser.add_argument("--set", action="append", default=[], help="Config override for every run, key.path=value.")
    parser.add_argument("--teacher", default=None,
                        help="A trained teacher (.keras) to use instead of training one.")
    parser.add_argument("--runs_dir", default=os.path.join("benchmarks", "runs"),
                        help="Where the runs go (finished ones there are reused).")
    parser.add_argument("--teachers_dir", default=os.path.join("benchmarks", "teachers"),
                        help="Where each trained teacher's weights are kept and read back from "
                             "(an empty string: nowhere).")
    parser.add_argument("--results_dir", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--output_name", default=None,
                        help="File name of the results (default: the protocol's name).")
    parser.add_argument("--read_only", action="store_true",
                        help="Train nothing: summarise the finished runs only (seeds may then differ "
                             "between variants; each row says how many runs it has).")
    parser.add_argument("--hardware", default="2 CPU cores (no GPU), TensorFlow on the CPU")
    args = parser.parse_args()
    git_revision()  # the revision of the code this process runs (see git_revision)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    from hksan_keras import experiment

    check_protocols(protocols)
    protocol = protocols[args.protocol]
    variants = {name: (v["method"], v["overrides"]) for name, v in protocol["variants"].items()}
    if args.variants:
        unknown = set(args.variants.split(",")) - set(variants)
        if unknown:
            sys.exit(f"Unknown variants {sorted(unknown)}; this protocol has {sorted(variants)}.")
        variants = {name: variants[name] for name in args.variants.split(",")}
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else protocol["seeds"]

    stem = os.path.join(args.results_dir, args.output_name or args.protocol)
    earlier = (_previous_results(stem + ".json") or {"configs": {}})["configs"]
    start = time.time()
    results = {"protocol": args.protocol, "hardware": args.hardware, "seeds": seeds,
               "overrides": args.set, "teacher": args.teacher, "configs": {}}
    names = {path: os.path.splitext(os.path.basename(path))[0] for path in protocol["configs"]}
    # Until its turn comes, a config keeps what the file held, so that a stop
    # part-way loses no earlier row from the file.
    results["configs"] = {name: earlier[name] for name in names.values() if name in earlier}

    def write(config_name, config_results):
        results["configs"][config_name] = config_results
        results["seconds_this_invocation"] = time.time() - start
        summarise(results)
        os.makedirs(args.results_dir, exist_ok=True)
        _write_atomically(stem + ".json", json.dumps(results, indent=2))
        _write_atomically(stem + ".md", markdown(results) + "\n")
        plot(results, stem + ".png")

    for config_path, name in names.items():
        write(name, run_config(
            experiment, protocols, protocol, config_path, variants, seeds, args.data_dir, args.set,
            args.runs_dir, args.teacher, args.read_only, args.teachers_dir or None, earlier.get(name),
            on_run=None if args.read_only else functools.partial(write, name)))
    print(markdown(results))


if __name__ == "__main__":
    main()
