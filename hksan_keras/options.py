"""Each method's options, declared once.

A distiller class lists its options in `OPTIONS`: name, default, the values
it takes, and one line of meaning. Everything else derives from that
declaration:

- the constructor's defaults (`temperature=OPTIONS.temperature` in the
  signature reads the declared default, so `help()` shows the value);
- the constructor's checks (`OPTIONS.check(locals())`);
- the config's `distill.<method>` section and its defaults
  (`hksan_keras.config.DEFAULTS`), and its check before any step trains;
- the options reference, docs/options.md (`python -m hksan_keras.options`
  writes it; a test keeps it equal to the code).

Adding a method therefore touches its own file and one line of
`hksan_keras.distillers.METHODS`. A subclass that changes a default
redeclares `__init__` with that argument's default read from its own
`OPTIONS` (a signature's defaults are bound when its `def` runs;
`Distiller.__init_subclass__` refuses a class whose two disagree).
"""

import dataclasses
import math
import sys

import numpy as np

# Each kind of option: (what it takes, as the error messages and the docs
# say it; the Python type of its value in a config file).
KINDS = {
    "weight": ("a finite number >= 0", float),
    "positive": ("a finite number > 0", float),
    "count": ("an integer >= 0", int),
    "steps": ("an integer >= 1", int),
    "flag": ("true or false", bool),
    "choice": ("one of", str),
    "names": ("a list of layer names", list),
    "widths": ("a list of integers >= 1", list),
    "fraction": ("a number in [0, 1)", float),
    "probability": ("a number in [0, 1]", float),
    "integer": ("an integer", int),
    "spec": ("a spec", dict),
}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a method: its name, default, values and meaning.

    Args:
        name: The constructor argument and config key.
        default: The default value.
        kind: One of `KINDS`: "weight" (finite number >= 0), "positive"
            (finite number > 0), "count" (integer >= 0), "steps" (integer
            >= 1), "fraction" (number in [0, 1)), "probability" (number in
            [0, 1]), "flag" (bool), "choice"
            (one of `choices`), "names" (a list of layer names), "widths" (a
            list of integers >= 1), "integer" (any integer) or "spec" (a
            value that `check` validates).
        doc: One line: what the option does (and the source of its default).
        choices: The allowed values of a "choice" option, default first.
        nullable: Whether `None` is allowed besides the kind's values.
        config: Whether the option is a key of the config's
            `distill.<method>` section. False for options that the config
            sets elsewhere (the stages, the seed) or in other units.
        constructor: Whether the option is a constructor argument. False for
            config-only options (set in epochs, translated by
            `hksan_keras.build`).
        check: For a "spec" option, a callable that raises `ValueError` or
            `TypeError` on a bad value.
        values: For a "spec" option, the values it takes, in words.
        removed: `((value, why), ...)`: values that older versions took,
            refused with `why` (where the measurement is, what to use).

    Example:

    >>> Option("temperature", 4.0, "positive", "T, the softmax temperature")
    """

    name: str
    default: object
    kind: str
    doc: str
    choices: tuple = ()
    nullable: bool = False
    config: bool = True
    constructor: bool = True
    check: object = None
    values: str = ""
    removed: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Option {self.name}: kind must be one of {sorted(KINDS)}, got {self.kind!r}.")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"Option {self.name}: default {self.default!r} is not among {self.choices}.")

    def describe(self):
        """The values the option takes, in words (for messages and docs)."""
        if self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind == "spec":
            return self.values or KINDS["spec"][0]
        else:
            text = KINDS[self.kind][0]
        return text + (" or None" if self.nullable else "")

    def validate(self, value, where=""):
        """Raises if `value` is not one the option takes.

        Args:
            value: The value given.
            where: Prefix of the name in the message (e.g. "distill.kd.").

        Raises:
            TypeError: A value of the wrong type (e.g. the string "0.1" for
                a weight).
            ValueError: A value of the right type outside the range or the
                choices.
        """
        name = where + self.name
        if value is None and self.nullable:
            return
        kind = self.kind
        if kind == "spec":
            try:
                self.check(value)
            except (TypeError, ValueError) as error:
                raise type(error)(f"{name}: {error}") from None
            return
        if kind == "choice":
            why = dict(self.removed).get(value) if isinstance(value, str) else None
            if why:
                raise ValueError(f"{name}={value!r} was removed: {why}.")
            if value not in self.choices:
                raise ValueError(f"{name} must be {self.describe()}; got {value!r}.")
            return
        if kind == "flag":
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be true or false, got {value!r}.")
            return
        if kind == "widths":
            # Integer-valued numbers in a list, tuple or array (as the
            # layers' int() conversion takes them).
            if not isinstance(value, (list, tuple, np.ndarray)) or not all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                and float(v).is_integer() and v >= 1
                for v in np.ravel(np.asarray(value, dtype=object))
            ):
                raise ValueError(f"{name} must be {self.describe()}, got {value!r}.")
            return
        if kind == "names":
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(
                isinstance(v, str) for v in value
            ):
                raise TypeError(f"{name} must be {self.describe()}, got {value!r}.")
            return
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise TypeError(
                f"{name} must be a number, got {value!r} of type "
                f"{type(value).__name__}; pass e.g. {self.name}={self.default!r}."
            )
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
        if kind in ("count", "steps", "integer") and not float(value).is_integer():
            raise TypeError(f"{name} must be an integer, got {value!r}.")
        if kind == "fraction" and not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
        if kind == "probability" and not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
        bound = _LOWER_BOUNDS.get(kind)
        if bound is not None and (value < bound[0] or (value == bound[0] and not bound[1])):
            raise ValueError(f"{name} must be {'>=' if bound[1] else '>'} {bound[0]}, got {value!r}.")


# The lowest value of each numeric kind: (bound, whether the bound is allowed).
_LOWER_BOUNDS = {"weight": (0, True), "positive": (0, False), "count": (0, True), "steps": (1, True)}


class Options(tuple):
    """A method's declared options, in signature order.

    Attribute access gives an option's default (`OPTIONS.temperature`), so
    that a constructor's signature reads its defaults from the declaration.

    Example:

    >>> OPTIONS = Options([Option("temperature", 4.0, "positive", "T")])
    >>> OPTIONS.temperature
    4.0
    >>> OPTIONS.check({"temperature": -1.0})
    Traceback (most recent call last):
    ValueError: temperature must be > 0, got -1.0.
    """

    def __new__(cls, options):
        options = tuple(options)
        names = [option.name for option in options]
        # Attribute access gives defaults: a name that tuple already has
        # would read the tuple's method instead.
        shadowed = sorted(set(names) & set(dir(tuple)))
        if shadowed:
            raise ValueError(f"Option names {shadowed} are taken by tuple's attributes; rename them.")
        if len(set(names)) != len(names):
            raise ValueError(f"Options declared twice: {sorted({n for n in names if names.count(n) > 1})}.")
        return super().__new__(cls, options)

    def __getattr__(self, name):
        for option in self:
            if option.name == name:
                return _copy(option.default)
        raise AttributeError(f"No option {name!r}; the options are {self.names()}.")

    def __getitem__(self, key):
        if isinstance(key, str):
            for option in self:
                if option.name == key:
                    return option
            raise KeyError(key)
        return super().__getitem__(key)

    def names(self):
        """The option names, in order."""
        return [option.name for option in self]

    def extend(self, *options, **defaults):
        """These options with more appended (a name given again replaces its
        declaration in place) and some defaults changed.

        Args:
            *options: `Option`s to add or replace.
            **defaults: name=new default, for options kept.

        Returns:
            A new `Options`.
        """
        new = {option.name: option for option in options}
        merged = [new.pop(option.name, option) for option in self] + list(new.values())
        unknown = sorted(set(defaults) - {option.name for option in merged})
        if unknown:
            raise ValueError(f"Cannot change the defaults of undeclared options {unknown}.")
        return Options(
            dataclasses.replace(option, default=defaults[option.name]) if option.name in defaults else option
            for option in merged
        )

    def check(self, values, where=""):
        """Raises if a value of a declared option is not one it takes.

        Args:
            values: A mapping; keys that are not declared options (such as
                `self` when passed `locals()`) are ignored.
            where: Prefix of the names in the messages.

        Raises:
            TypeError, ValueError: See `Option.validate`.
        """
        for option in self:
            if option.name in values:
                option.validate(values[option.name], where)

    def config_defaults(self):
        """The config section of the method: `{key: default}` of the config options."""
        return {option.name: _copy(option.default) for option in self if option.config}


def _copy(value):
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(item) for item in value]
    return value


def _format(value):
    if value is None:
        return "None"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_format(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format(item) for item in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _table(declared):
    lines = ["| option | default | values | where | meaning |", "|---|---|---|---|---|"]
    for option in declared:
        where = "both" if option.config and option.constructor else (
            "config" if option.config else "constructor")
        lines.append(
            f"| `{option.name}` | `{_format(option.default)}` | {option.describe()} | "
            f"{where} | {option.doc} |"
        )
    return lines


def markdown():
    """The options reference, docs/options.md: every method's options and the discriminator's.

    Returns:
        Markdown text: one table per method (`distillers.METHODS`) and one
        for `LogitDiscriminator`'s settings, every option with its default,
        values, where it is set (constructor, config or both) and meaning.
    """
    from hksan_keras.discriminators import LogitDiscriminator
    from hksan_keras.distillers import METHODS

    lines = [
        "# Options of every method",
        "",
        "Written by `python -m hksan_keras.options > docs/options.md` from each",
        "distiller's `OPTIONS` declaration (hksan_keras/options.py); a test keeps",
        "this file equal to the code. \"where\": the constructor argument, the",
        "key of the config's `distill.<method>` section, or both. Options that",
        "the config sets elsewhere: the stages (`distill.num_stages`,",
        "`distill.teacher_stages`, `distill.student_stages`) and the seed",
        "(`seed`).",
        "",
    ]
    for method, cls in METHODS.items():
        lines += [f"## `{method}`: `{cls.__name__}`", "", *_table(cls.OPTIONS), ""]
    lines += [
        "## The `discriminator` spec: `LogitDiscriminator`", "",
        "The settings of the adversarial methods' `discriminator` option (a dict of them in",
        "configs, e.g. `--set=distill.hksan.discriminator.units=[512,512]`). Each method's",
        "default spec is the default of its `discriminator` option above.", "",
        *_table(LogitDiscriminator.OPTIONS), "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown())
