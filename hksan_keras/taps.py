"""Stage taps: the outputs of a model's resolution stages, from any functional model.

A "stage" is the last feature map a backbone produces at one spatial
resolution (for a CIFAR ResNet: 32x32, 16x16 and 8x8). Stages are taken from
an unmodified functional or Sequential Keras model, either by layer name or
found automatically where the spatial resolution changes.
"""

import keras


# Padding changes the resolution without computing a feature.
_PADDING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def _output_shape(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError):
        # Layers without a unique output (shared layers, nested models called
        # twice) cannot be tapped; they are skipped by detection.
        return None
    if isinstance(output, (list, tuple, dict)):
        return None
    return tuple(output.shape)


def require_graph(model, role):
    """Raises a clear error unless `model` is a graph model with one output.

    Args:
        model: The model to check.
        role: "teacher", "student" or "model", used in the message.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"The {role} must be a keras.Model, got {type(model).__name__}."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"The {role} '{model.name}' has no symbolic inputs, so its "
            "intermediate layers cannot be tapped. Use a functional model, or "
            "a Sequential model that starts with `keras.Input(shape=...)` "
            "(subclassed models are not supported)."
        )
    if len(model.outputs) != 1:
        raise ValueError(
            f"The {role} '{model.name}' has {len(model.outputs)} outputs; a "
            "distiller needs a classifier with exactly one output (its logits)."
        )


def _cut_points(layers):
    """Whether each layer, in topological order, is one that every path crosses.

    In a topological order, a layer is crossed by every path from the inputs
    to the outputs exactly when no edge jumps over it, from a layer before it
    to a layer after it.
    """
    position = {id(layer): i for i, layer in enumerate(layers)}
    furthest_target = [-1] * len(layers)
    for i, layer in enumerate(layers):
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in node.input_tensors:
                source = position.get(id(tensor._keras_history.operation))
                if source is not None:
                    furthest_target[source] = max(furthest_target[source], i)
    cut_points = []
    reach = -1  # furthest target of any edge leaving a layer before i
    for i in range(len(layers)):
        cut_points.append(reach <= i)
        reach = max(reach, furthest_target[i])
    return cut_points


def detect_stages(model, num_stages=None):
    """Finds the stage outputs of a convolutional classifier.

    Walks the model's layers in topological order and keeps, for every
    spatial resolution (height, width) that a 4-D feature map takes, the last
    layer that outputs it and that every path through the network crosses (a
    block's output, not a layer inside a residual branch). Resolutions of 1x1
    (global pooling with `keepdims`) and padding layers are ignored.

    Args:
        model: A functional or Sequential `keras.Model` (channels-last).
        num_stages: If given, keep only the deepest `num_stages` stages
            (e.g. 4 for an ImageNet ResNet, to drop the stem).

    Returns:
        A list of layer names, shallow to deep.

    Example:

    >>> model = hksan_keras.models.cifar_resnet(20)
    >>> hksan_keras.taps.detect_stages(model)
    ['stage1', 'stage2', 'stage3']
    """
    require_graph(model, "model")
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    is_cut_point = _cut_points(layers)
    last_layer_at_resolution = {}
    for layer, cut_point in zip(layers, is_cut_point):
        shape = _output_shape(layer)
        if shape is None or len(shape) != 4 or isinstance(layer, _PADDING):
            continue
        resolution = shape[1:3]
        if resolution == (1, 1):
            continue
        previous = last_layer_at_resolution.pop(resolution, (None, False))
        if previous[1] and not cut_point:
            # Inside a residual block, only a layer that every path goes
            # through (a cut point) is a stage output: keep the earlier one.
            last_layer_at_resolution[resolution] = previous
        else:
            last_layer_at_resolution[resolution] = (layer.name, cut_point)
    # Dict order is the order in which each resolution was last seen.
    stages = [name for name, _ in last_layer_at_resolution.values()]
    if not stages:
        raise ValueError(
            f"No 4-D (batch, height, width, channels) feature maps found in "
            f"'{model.name}'. Pass the stage layer names explicitly."
        )
    if num_stages is not None:
        if num_stages > len(stages):
            raise ValueError(
                f"Asked for {num_stages} stages but '{model.name}' has only "
                f"{len(stages)} resolutions: {stages}."
            )
        stages = stages[-num_stages:]
    return stages


def resolve_stages(model, stage_names=None, num_stages=None, role="model"):
    """Checks given stage names, or detects them when none are given.

    Args:
        model: The functional or Sequential `keras.Model` to tap.
        stage_names: Layer names, shallow to deep, or `None` to detect.
        num_stages: With detection, keep only the deepest `num_stages`.
        role: "teacher" or "student", used in error messages.

    Returns:
        A list of layer names whose outputs are 4-D feature maps.
    """
    require_graph(model, role)
    if stage_names is None:
        return detect_stages(model, num_stages=num_stages)
    stage_names = list(stage_names)
    known = [layer.name for layer in model.layers]
    for name in stage_names:
        if name not in known:
            raise ValueError(
                f"The {role} '{model.name}' has no layer named '{name}'. "
                f"Its layers are: {known}. Pass existing layer names as "
                f"{role}_stages, or leave {role}_stages=None to detect stages."
            )
        shape = _output_shape(model.get_layer(name))
        if shape is None or len(shape) != 4:
            raise ValueError(
                f"Layer '{name}' of the {role} '{model.name}' outputs shape "
                f"{shape}; a stage must output one 4-D feature map "
                "(batch, height, width, channels)."
            )
    return stage_names


def stage_model(model, stage_names, name=None):
    """A functional model that returns the stage feature maps and the logits.

    The returned model shares its layers (and so its weights) with `model`.

    Args:
        model: The functional or Sequential `keras.Model` to tap.
        stage_names: Names of the stage layers, shallow to deep.
        name: Name of the returned model.

    Returns:
        A `keras.Model` mapping the inputs of `model` to
        `[stage_1, ..., stage_K, logits]`.
    """
    outputs = [model.get_layer(n).output for n in stage_names]
    return keras.Model(model.input, outputs + list(model.outputs), name=name)
