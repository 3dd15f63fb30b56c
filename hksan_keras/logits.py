"""Logits, not probabilities: what a classifier outputs, checked by its values,
and a logits view of a softmax classifier that shares its weights.

Distillation reads logits (the teacher's softened by a temperature, matched,
fed to a discriminator). A classifier that ends in a softmax outputs rows
that are non-negative and sum to one; taken for logits they train the
student silently wrong. `check_logits` refuses such outputs whatever layer
made them (an activation argument, a `Softmax` layer, a wrapper around a
logits model), and `logits_model` turns such a classifier into one that
outputs the logits the softmax was applied to.
"""

import keras
import numpy as np

from hksan_keras import taps

# Activation functions that turn logits into probabilities (tf.nn.softmax is
# named "softmax_v2").
_PROBABILITY_ACTIVATIONS = ("softmax", "softmax_v2", "sigmoid")


def looks_like_probabilities(values, tolerance=None):
    """Whether every row is non-negative and sums to one (within `tolerance`).

    Args:
        values: Array of shape (batch, num_classes).
        tolerance: Allowed deviation of each row's sum from 1; default 1e-3
            for 32- and 64-bit values, 1e-2 for 16-bit ones (a softmax
            rounded to bfloat16 sums to 1 within about 2.4e-3).

    Returns:
        A bool.
    """
    if tolerance is None:
        tolerance = 1e-2 if np.dtype(getattr(values, "dtype", "float32")).itemsize <= 2 else 1e-3
    values = np.asarray(values, dtype="float64")
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[-1] < 2:
        return False
    return bool(
        np.all(values >= 0)
        and np.all(np.abs(values.sum(axis=-1) - 1.0) <= tolerance)
    )


def _fix(role):
    return (
        f"Pass `hksan_keras.logits_model({role})`, which outputs the logits "
        "the softmax was applied to and shares the model's weights (or "
        "rebuild it without the final activation, e.g. keras.applications "
        "models take `classifier_activation=None`)."
    )


def check_logits(model, images, role):
    """Raises if `model` outputs probabilities on `images`.

    Args:
        model: The teacher or student `keras.Model`.
        images: A batch of images it takes (e.g. the first training batch).
        role: "teacher" or "student", used in the message.

    Raises:
        ValueError: Every output row is non-negative and sums to one.
    """
    # The numpy array keeps a 16-bit dtype, for which the default tolerance
    # is looser.
    if looks_like_probabilities(keras.ops.convert_to_numpy(model(images, training=False))):
        raise ValueError(
            f"The {role} '{model.name}' outputs probabilities (on the first "
            "batch every row is non-negative and sums to 1), but distillation "
            "needs logits: it would treat probabilities as logits and train "
            f"the student wrong. {_fix(role)}"
        )


def check_last_activation(model, role):
    """Raises if the layer producing `model`'s output has a softmax or sigmoid.

    The cheap check made when a distiller is built; `check_logits` on the
    first batch catches every other spelling.
    """
    last = _output_layer(model) if taps.is_graph_model(model) else None
    while isinstance(last, keras.Model) and taps.is_graph_model(last):
        last = _output_layer(last)
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    if isinstance(last, keras.layers.Softmax):
        name = "softmax"
    if name == "sigmoid":
        raise ValueError(
            f"The {role} '{model.name}' ends with a sigmoid (layer "
            f"'{last.name}'): independent per-class probabilities, but "
            "distillation needs the logits of a single-label classifier. "
            "Rebuild its head without the activation (and train it with a "
            "softmax cross-entropy)."
        )
    if name in _PROBABILITY_ACTIVATIONS:
        raise ValueError(
            f"The {role} '{model.name}' ends with a {name} activation "
            f"(layer '{last.name}'), but distillation needs logits. {_fix(role)}"
        )


def _output_layer(model):
    """The layer whose output is the model's (single) output."""
    if isinstance(model, keras.Sequential):
        return model.layers[-1] if model.layers else None
    # The operation that made the output tensor (also right when that layer
    # is shared and called more than once).
    return model.outputs[0]._keras_history.operation


@keras.saving.register_keras_serializable(package="hksan_keras")
class WithoutActivation(keras.layers.Wrapper):
    """Calls a layer with its activation skipped: its pre-activation output.

    The wrapped layer (and so its weights) is the one given, not a copy.

    Args:
        layer: A layer with an `activation` attribute (e.g. `Dense` with
            `activation="softmax"`).
        **kwargs: Standard layer arguments.

    Example:

    >>> head = keras.layers.Dense(10, activation="softmax")
    >>> logits = WithoutActivation(head)(features)
    """

    def call(self, inputs, *args, **kwargs):
        activation = self.layer.activation
        self.layer.activation = keras.activations.linear
        try:
            return self.layer(inputs, *args, **kwargs)
        finally:
            self.layer.activation = activation

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        # Saved without the activation it skips: a loaded copy computes the
        # same logits, even when the activation (e.g. tf.nn.softmax) is not
        # one Keras can serialize.
        layer = dict(config["layer"])
        layer["config"] = dict(layer["config"], activation="linear")
        config["layer"] = layer
        return config


def logits_model(model, name=None):
    """The logits of a classifier that ends in a softmax, sharing its weights.

    Handles a softmax given as a layer's activation (`Dense(n,
    activation="softmax")`, `activation=tf.nn.softmax`), as a trailing
    `keras.layers.Softmax()` or `Activation("softmax")`, and inside a
    nested model (`keras.Sequential([logits_model, keras.layers.Softmax()])`
    or a wrapper around a keras.applications classifier).

    Args:
        model: A functional or Sequential `keras.Model` whose output is a
            softmax of logits.
        name: Name of the returned model (default: `<name>_logits`).

    Returns:
        A functional `keras.Model` with the same inputs, calling the same
        layers, whose output is the logits.

    Raises:
        ValueError: `model` is subclassed, or its output is not a softmax.

    Example:

    >>> classifier = keras.Sequential([base, keras.layers.Dense(10, activation="softmax")])
    >>> teacher = hksan_keras.logits_model(classifier)   # same weights
    >>> hksan_keras.HKSANDistiller(teacher, student)
    """
    taps.require_graph(model, "model")
    last = _output_layer(model)
    replaced = []

    def call(layer, *args, **kwargs):
        if layer is not last:
            return layer(*args, **kwargs)
        replaced.append(layer)
        activation = getattr(layer, "activation", None)
        if isinstance(layer, keras.layers.Softmax) or (
            isinstance(layer, keras.layers.Activation)
            and getattr(activation, "__name__", "") in ("softmax", "softmax_v2")
        ):
            return args[0]
        if getattr(activation, "__name__", "") in ("softmax", "softmax_v2"):
            return WithoutActivation(layer, name=layer.name + "_logits")(*args, **kwargs)
        if isinstance(layer, keras.Model) and taps.is_graph_model(layer):
            return logits_model(layer)(*args, **kwargs)
        raise ValueError(
            f"The output of '{model.name}' comes from layer '{layer.name}' "
            f"({type(layer).__name__}), which applies no softmax; the model "
            "may already output logits."
        )

    inputs, call_inputs = taps.new_inputs(model)
    outputs = taps.call_graph(model, call_inputs, call)
    if not replaced:
        raise ValueError(f"Could not find the output layer of '{model.name}'.")
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=name or model.name + "_logits",
    )
