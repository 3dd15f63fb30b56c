"""Stage taps: the outputs of a model's resolution stages, from any graph model.

A "stage" is the last feature map a backbone produces at one spatial
resolution (for a CIFAR ResNet: 32x32, 16x16 and 8x8). Stages are taken from
an unmodified functional or Sequential Keras model, and from models nested in
one at any depth (the usual fine-tuning wrapper around a keras.applications
or KerasHub backbone), either by name or found automatically where the
spatial resolution changes.

Layers are named by their **path**: a layer of the model itself by its name
(`"stage2"`), a layer inside a nested model by the nested model's name, a
slash, and the name inside it (`"resnet50v2/conv4_block6_out"`, or
`"outer/backbone/block_3"` two levels down). `layer_paths(model)` lists them.

Tapping never copies or rebuilds a layer: the tapped model calls the model's
own layers (and so uses the model's own weights) on new symbolic inputs.
"""

import keras


# Padding changes the resolution without computing a feature.
_PADDING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def _is_preprocessing(layer):
    """Whether a layer prepares the image rather than computing a feature.

    Keras's preprocessing and augmentation layers (Rescaling, Normalization,
    Resizing, CenterCrop, RandomFlip, ...) and KerasHub's image converters
    live in `...layers.preprocessing` modules; their outputs are the image
    itself, not a stage.
    """
    return ".preprocessing" in type(layer).__module__


def _output_shape(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    if isinstance(output, (list, tuple, dict)):
        return None
    return tuple(output.shape)


# Where a model's input height and width are free, detection traces it at
# this size (symbolically: no image is computed). 224 is the ImageNet input
# size: large enough that no stage of a CIFAR or ImageNet network is pooled
# to 1 x 1 (the deepest stage of an ImageNet ResNet is 7 x 7 there).
PROBE_SIZE = 224


def _traced_shapes(model):
    """{path: output shape} of every layer, traced on inputs of known size.

    A layer's `output` is that of its first call, so a backbone built with a
    free input size (KerasHub's default, `keras.applications` without
    `input_shape`) keeps unknown heights and widths there even inside a
    wrapper with a fixed input. Tracing the graph again on inputs of the
    model's own size (`PROBE_SIZE` where that is free too), nested models
    entered, gives every feature map its size. Returns {} where the trace
    fails (the static shapes are used then).
    """
    shapes = {}

    def recorder(prefix):
        def call(layer, *args, **kwargs):
            path = prefix + layer.name
            if isinstance(layer, keras.Model) and is_graph_model(layer) and len(args) == 1:
                outputs = call_graph(layer, args[0], recorder(path + "/"))
                outputs = outputs[0] if len(outputs) == 1 else outputs
            else:
                outputs = layer(*args, **kwargs)
            if hasattr(outputs, "shape"):
                shapes[path] = tuple(outputs.shape)
            return outputs

        return call

    def probe_shape(shape):
        if len(shape) == 4:
            return (shape[0],) + tuple(PROBE_SIZE if d is None else d for d in shape[1:3]) + (shape[3],)
        return tuple(shape)

    try:
        inputs = [keras.Input(batch_shape=probe_shape(x.shape), dtype=x.dtype) for x in model.inputs]
        if isinstance(model, keras.Sequential):
            call_inputs = inputs[0]
        else:
            call_inputs = keras.tree.pack_sequence_as(model.input, inputs)
        call_graph(model, call_inputs, recorder(""))
    except Exception:  # a layer that cannot be traced at that size: static shapes
        return {}
    return shapes


def _symbolic_inputs(model):
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def is_graph_model(model):
    """Whether `model` is a functional or Sequential model with symbolic inputs."""
    return isinstance(model, keras.Model) and bool(_symbolic_inputs(model))


def image_shape(model):
    """The input shape of a built model without the batch axis, or None.

    Graph models give it from their inputs; a subclassed model from the
    shape it was built with.
    """
    if is_graph_model(model):
        return tuple(model.inputs[0].shape[1:])
    build_config = model.get_build_config() or {}
    shape = build_config.get("input_shape")
    if isinstance(shape, dict):
        shape = next(iter(shape.values()), None)
    return None if shape is None else tuple(shape[1:])


def require_model(model, role):
    """Raises unless `model` is a built `keras.Model` with one output.

    Enough for methods that read only the logits: subclassed models are
    accepted.

    Args:
        model: The model to check.
        role: "teacher", "student" or "model", used in the message.

    Raises:
        TypeError: `model` is not a `keras.Model`.
        ValueError: It is not built, or has more than one output.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"The {role} must be a keras.Model, got {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"The {role} '{model.name}' is not built. Call it once on a batch "
            "of images (e.g. `model(images)`) or `model.build((None, H, W, 3))` "
            "before distilling."
        )
    if is_graph_model(model) and len(model.outputs) != 1:
        raise ValueError(
            f"The {role} '{model.name}' has {len(model.outputs)} outputs; a "
            "distiller needs a classifier with exactly one output (its logits)."
        )


def require_graph(model, role):
    """Raises a clear error unless `model` is a graph model with one output.

    Stage-based methods read intermediate layers, which only functional and
    Sequential models (and models nested in them) expose.

    Args:
        model: The model to check.
        role: "teacher", "student" or "model", used in the message.

    Raises:
        TypeError: `model` is not a `keras.Model`.
        ValueError: It has no symbolic inputs (a subclassed model, or a
            Sequential model without `keras.Input`), or more than one output.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"The {role} must be a keras.Model, got {type(model).__name__}."
        )
    if not _symbolic_inputs(model):
        raise ValueError(
            f"The {role} '{model.name}' has no symbolic inputs, so its "
            "intermediate layers cannot be tapped. Stage-based methods need a "
            "functional model, or a Sequential model that starts with "
            "`keras.Input(shape=...)`: wrap a subclassed backbone's layers in "
            "one (e.g. `x = keras.Input((32, 32, 3)); ...; "
            "keras.Model(x, logits)`), or distil it with a method that reads "
            "only the logits (KDDistiller, DKDDistiller, ANCDistiller)."
        )
    require_model(model, role)


def _nested_graph_models(model):
    return {
        layer.name: layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and is_graph_model(layer)
    }


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


def _calls(model):
    """How many times each layer of `model` is called in its own graph, by id.

    A layer called more than once (a shared layer, a nested model applied
    twice) has no single output to tap. Only the model's own graph counts,
    not the calls of other models built on the same layers.
    """
    if isinstance(model, keras.Sequential):
        nodes = [layer for layer in model.layers]
    else:
        nodes = [
            node.operation
            for depth_nodes in model._nodes_by_depth.values()
            for node in depth_nodes
        ]
    counts = {}
    for operation in nodes:
        counts[id(operation)] = counts.get(id(operation), 0) + 1
    return counts


def _walk(model, prefix=""):
    """(path, layer, is_cut_point) for every tappable layer, in order.

    A nested graph model is replaced by its own layers; they are cut points
    of the whole only where the nested model is one in its parent. Layers
    called more than once in the graph are left out.
    """
    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    calls = _calls(model)
    for layer, cut_point in zip(layers, _cut_points(layers)):
        path = prefix + layer.name
        if calls.get(id(layer), 0) != 1:
            continue
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            for inner_path, inner, inner_cut in _walk(layer, path + "/"):
                yield inner_path, inner, inner_cut and cut_point
        else:
            yield path, layer, cut_point


def layer_paths(model):
    """The path of every layer of `model`, nested models entered.

    Args:
        model: A functional or Sequential `keras.Model`.

    Returns:
        A list of paths, in topological order (e.g. `["conv_a", ...,
        "backbone/conv2_block1_out", ...]`).
    """
    require_graph(model, "model")
    return [path for path, _, _ in _walk(model)]


def feature_map_paths(model):
    """The paths of the layers whose output is one 4-D feature map.

    These are the layers that can be passed as stages.
    """
    require_graph(model, "model")
    return [
        path
        for path, layer, _ in _walk(model)
        if len(_output_shape(layer) or ()) == 4
    ]


def get_layer(model, path):
    """The layer at `path` (see the module docstring), or None.

    Args:
        model: A functional or Sequential `keras.Model`.
        path: `"name"` or `"nested_model/.../name"`.

    Raises:
        ValueError: The layer, or a model on its path, is called more than
            once in its graph (shared), so it has no single output.
    """
    head, _, rest = path.partition("/")
    for layer in model.layers:
        if layer.name == head:
            calls = _calls(model).get(id(layer), 0)
            if calls > 1:
                raise ValueError(
                    f"Layer '{head}' of '{model.name}' is called {calls} times "
                    "in the model (a shared layer), so it has no single output "
                    "to tap. Choose a layer called once."
                )
            if not rest:
                return layer
            if isinstance(layer, keras.Model) and is_graph_model(layer):
                return get_layer(layer, rest)
            return None
    return None


def detect_stages(model, num_stages=None):
    """Finds the stage outputs of a convolutional classifier.

    Walks the model's layers in topological order, entering nested models
    (a backbone inside a fine-tuning wrapper), and keeps, for every spatial
    resolution (height, width) that a 4-D feature map takes, the last layer
    that outputs it and that every path through the network crosses (a
    block's output, not a layer inside a residual branch). Resolutions of
    1x1 (global pooling with `keepdims`), padding layers and preprocessing
    layers (Rescaling, Normalization, Resizing, augmentation: their output
    is the image) are ignored. Resolutions are read from the graph traced
    at the model's input size (`PROBE_SIZE` where it is free), so that a
    model built for any input size, or a backbone built so inside a fixed
    wrapper, keeps every stage.

    Args:
        model: A functional or Sequential `keras.Model` (channels-last),
            possibly with nested models.
        num_stages: If given, keep only the deepest `num_stages` stages
            (e.g. 4 for an ImageNet ResNet, to drop the stem).

    Returns:
        A list of layer paths, shallow to deep.

    Raises:
        ValueError: No 4-D feature map is reachable, fewer resolutions
            than `num_stages`, or feature maps whose height and width stay
            unknown (the graph could not be traced at a known size).

    Example:

    >>> model = hksan_keras.models.cifar_resnet(20)
    >>> hksan_keras.taps.detect_stages(model)
    ['stage1', 'stage2', 'stage3']
    >>> wrapper = keras.Sequential([keras.Input((64, 64, 3)), backbone,
    ...                             keras.layers.GlobalAveragePooling2D(),
    ...                             keras.layers.Dense(10)])
    >>> hksan_keras.taps.detect_stages(wrapper, num_stages=4)
    ['resnet50v2/conv2_block3_out', ..., 'resnet50v2/post_relu']
    """
    require_graph(model, "model")
    walked = list(_walk(model))
    traced = {}
    shapes = [_output_shape(layer) for _, layer, _ in walked]
    if any(shape is not None and len(shape) == 4 and None in shape[1:3] for shape in shapes):
        traced = _traced_shapes(model)  # only where a size is unknown: it adds a call to every layer
    last_at_resolution = {}
    for path, layer, cut_point in walked:
        shape = traced.get(path) or _output_shape(layer)
        if (
            shape is None
            or len(shape) != 4
            or isinstance(layer, _PADDING)
            or _is_preprocessing(layer)
        ):
            continue
        resolution = shape[1:3]
        if resolution == (1, 1):
            continue
        if None in resolution:
            raise ValueError(
                f"Layer '{path}' of '{model.name}' outputs feature maps of "
                f"unknown height and width ({shape}), so its stages cannot be "
                "told apart by resolution. Build the model with a fixed "
                "input size (e.g. keras.Input((224, 224, 3))), or pass the "
                "stage layer paths explicitly (teacher_stages=[...], "
                "student_stages=[...])."
            )
        previous = last_at_resolution.pop(resolution, (None, False))
        if previous[1] and not cut_point:
            # Inside a residual block, only a layer that every path goes
            # through (a cut point) is a stage output: keep the earlier one.
            last_at_resolution[resolution] = previous
        else:
            last_at_resolution[resolution] = (path, cut_point)
    # Dict order is the order in which each resolution was last seen.
    stages = [path for path, _ in last_at_resolution.values()]
    if not stages:
        raise ValueError(
            f"No 4-D (batch, height, width, channels) feature maps found in "
            f"'{model.name}', nested models included. Stage-based methods "
            "need a convolutional network; pass the stage layer paths "
            "explicitly, or use a method that reads only the logits (KD)."
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
    """Checks given stage paths, or detects them when none are given.

    Args:
        model: The functional or Sequential `keras.Model` to tap.
        stage_names: Layer paths, shallow to deep (`"stage2"`,
            `"backbone/conv4_block6_out"`), or `None` to detect.
        num_stages: With detection, keep only the deepest `num_stages`.
        role: "teacher" or "student", used in error messages.

    Returns:
        A list of layer paths whose outputs are 4-D feature maps.

    Raises:
        ValueError: A path names no layer, or a layer whose output is not
            one 4-D feature map; the message lists the paths that are.
    """
    require_graph(model, role)
    if stage_names is None:
        return detect_stages(model, num_stages=num_stages)
    stage_names = list(stage_names)
    for name in stage_names:
        layer = get_layer(model, name)
        if layer is None:
            nested = sorted(_nested_graph_models(model))
            hint = (
                f" Layers of the nested model(s) {nested} are named by their "
                f"path, e.g. '{nested[0]}/<layer name>'."
                if nested
                else ""
            )
            raise ValueError(
                f"The {role} '{model.name}' has no layer named '{name}'.{hint} "
                f"Its 4-D feature-map layers are: {feature_map_paths(model)}. "
                f"Pass some of these as {role}_stages, or leave "
                f"{role}_stages=None to detect stages."
            )
        shape = _output_shape(layer)
        if shape is None or len(shape) != 4:
            raise ValueError(
                f"Layer '{name}' of the {role} '{model.name}' outputs shape "
                f"{shape}; a stage must output one 4-D feature map "
                "(batch, height, width, channels). Its 4-D feature-map layers "
                f"are: {feature_map_paths(model)}."
            )
    return stage_names


def call_graph(model, inputs, call):
    """Runs `model`'s graph on symbolic `inputs`, each layer through `call`.

    Args:
        model: A functional or Sequential model.
        inputs: Symbolic tensors shaped like `model.input`.
        call: `call(layer, *args, **kwargs)`, returning the layer's outputs;
            `layer(*args, **kwargs)` reproduces the model with its own
            layers (no copy).

    Returns:
        The list of the model's outputs on `inputs`.
    """
    if isinstance(model, keras.Sequential):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        for layer in model.layers:
            x = call(layer, x)
        return [x]
    # What keras.models.clone_model(clone_function=identity, call_function=
    # call) does, without building (and compiling, for a compiled model) a
    # clone: the graph re-run on `inputs` with the model's own layers.
    return keras.tree.flatten(
        model._run_through_graph(inputs, operation_fn=lambda layer: layer, call_fn=call)
    )


def new_inputs(model):
    """Fresh `keras.Input`s like `model`'s: (list of them, structure for a call)."""
    inputs = [
        keras.Input(batch_shape=tuple(x.shape), dtype=x.dtype)
        for x in model.inputs
    ]
    if isinstance(model, keras.Sequential):
        return inputs, inputs[0]
    return inputs, keras.tree.pack_sequence_as(model.input, inputs)


def tapped_model(model, paths, name=None):
    """A model returning the outputs at `paths` and then the model's outputs.

    The returned model calls `model`'s own layers (nested ones included):
    it shares every weight with `model`, nothing is copied.

    Args:
        model: A functional or Sequential `keras.Model`.
        paths: Layer paths (see the module docstring).
        name: Name of the returned model.

    Returns:
        A functional `keras.Model` mapping new inputs like `model`'s to
        `[tensor at paths[0], ..., model's outputs...]`.

    Raises:
        ValueError: A path names no layer, or a layer (or a nested model on
            the path) called more than once in its graph.
    """
    require_graph(model, "model")
    paths = list(paths)
    for path in paths:
        # Raises for a shared layer (several outputs) on the path.
        if get_layer(model, path) is None:
            raise ValueError(
                f"'{model.name}' has no layer named '{path}'. Its 4-D "
                f"feature-map layers are: {feature_map_paths(model)}."
            )
    here = {p for p in paths if "/" not in p}
    below = {}
    for path in paths:
        head, _, rest = path.partition("/")
        if rest:
            below.setdefault(head, []).append(rest)
    found = {}

    def call(layer, *args, **kwargs):
        if layer.name in below:
            sub_paths = below[layer.name]
            tapped = tapped_model(layer, sub_paths, name=layer.name + "_taps")
            outputs = tapped(*args, **kwargs)
            for sub_path, tensor in zip(sub_paths, outputs):
                found[layer.name + "/" + sub_path] = tensor
            rest = outputs[len(sub_paths):]
            outputs = rest[0] if len(rest) == 1 else rest
        else:
            outputs = layer(*args, **kwargs)
        if layer.name in here:
            found[layer.name] = outputs
        return outputs

    inputs, call_inputs = new_inputs(model)
    outputs = call_graph(model, call_inputs, call)
    missing = [p for p in paths if p not in found]
    if missing:
        raise ValueError(
            f"Layers {missing} of '{model.name}' are not on the path from its "
            "inputs to its outputs, so they cannot be tapped."
        )
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        [found[p] for p in paths] + outputs,
        name=name,
    )


def stage_model(model, stage_names, name=None):
    """A functional model that returns the stage feature maps and the logits.

    The returned model shares its layers (and so its weights) with `model`,
    nested models included.

    Args:
        model: The functional or Sequential `keras.Model` to tap.
        stage_names: Paths of the stage layers, shallow to deep.
        name: Name of the returned model.

    Returns:
        A `keras.Model` mapping the inputs of `model` to
        `[stage_1, ..., stage_K, logits]`.
    """
    return tapped_model(model, stage_names, name=name)
