"""Any functional or Sequential tf_keras model, made prunable.

`make_prunable` copies a model with its `Dense` and `Conv2D` layers (those the
user picks) turned into `MaskedDense` / `MaskedConv2D`: same configuration,
name, weights and connectivity, and a mask of ones, so the copy computes
exactly what the original does until something is pruned. Every other layer
(batch norm, dropout, adds, embeddings, custom layers) is copied as it is.
Nested functional and Sequential models are converted inside, and stay nested.

What cannot be converted is refused with one `LotteryError` naming the layer
and what to do: subclassed models (their `call` is code, not a graph of
layers), subclasses of Dense/Conv2D (their computation may differ), grouped
convolutions, and layers that cannot be copied (no `get_config`).
"""

import tf_keras as keras

from lottery_tf import errors
from lottery_tf.nn.layers import GROUPS, MaskedConv2D, MaskedDense

_MASKED = {keras.layers.Dense: MaskedDense, keras.layers.Conv2D: MaskedConv2D}


def make_prunable(model, prune="all", groups=None):
    """A copy of `model` whose chosen Dense / Conv2D layers carry pruning masks.

    Args:
      model: a built tf_keras functional or `Sequential` model; nested
        functional / Sequential models are converted too.
      prune: which Dense and Conv2D layers get a mask:
        * `"all"` (default): every one;
        * a layer name, or a list of names (any depth of nesting);
        * a Keras layer class, or a tuple of classes (e.g. `keras.layers.Conv2D`);
        * a predicate `layer -> bool`, asked about each Dense / Conv2D layer.
        A list may mix names and classes. Layers already `MaskedDense` /
        `MaskedConv2D` stay masked whatever `prune` says.
      groups: the pruning group of each masked layer, which sets its rate
        (`--conv_rate`, `--fc_rate`, `--output_rate`). By default Conv2D
        layers are "conv", Dense layers "fc", and a Dense layer whose output
        is a model output (directly or through layers without weights, such
        as an activation) is "output". Override with a dict group -> layers,
        the layers chosen as in `prune` (e.g. `{"output": ["head"]}`), or a
        callable `layer -> group or None` (None keeps the default).

    Returns:
      A new model of the same kind and name; the original is left as it is.

    Raises:
      errors.LotteryError: a subclassed model, a layer that cannot be
        converted or copied, or a name / group that does not fit the model
        (one line naming the layer and what to do).
    """
    check_graph_model(model)
    layers = _leaf_layers(model)
    chosen = _choose(model, layers, prune, "prune")
    if not chosen and not any(isinstance(layer, (MaskedDense, MaskedConv2D)) for layer in layers):
        raise errors.LotteryError(
            f"model {model.name!r}: prune={prune!r} chooses no Dense or Conv2D layer; nothing "
            "would be pruned (pass prune='all', layer names, layer types or a predicate)")
    for layer in layers:
        if id(layer) in chosen:
            _check_convertible(layer)
    group_of = _groups(model, layers, chosen, groups)
    copies = {}
    converted = _convert(model, chosen, group_of, copies)
    for old, new in copies.values():
        _copy_weights(old, new)
    _check_unique_weight_names(converted)
    return converted


# --- what the model holds ---------------------------------------------------------------


def _is_graph_model(model):
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and getattr(model, "_is_graph_network", False))


def check_graph_model(model, inside=None):
    """Refuses (one line) what is not a built functional or Sequential tf_keras model."""
    where = f" (inside {inside!r})" if inside else ""
    if not isinstance(model, keras.Model):
        hint = (" (a Keras 3 model? lottery-tf uses Keras 2: build it with "
                "`import tf_keras as keras`)" if hasattr(model, "layers") else "")
        raise errors.LotteryError(
            f"make_prunable needs a tf_keras functional or Sequential model; got "
            f"{type(model).__module__}.{type(model).__name__}{hint}")
    if not _is_graph_model(model):
        raise errors.LotteryError(
            f"model {model.name!r}{where} is a subclassed Keras model "
            f"({type(model).__name__}): its call() is Python code that make_prunable cannot "
            "rewrite; build it as a functional model (keras.Model(inputs, outputs)) or "
            "keras.Sequential, or use lottery_tf.MaskedDense / MaskedConv2D in it directly")
    if not model.built:
        raise errors.LotteryError(
            f"model {model.name!r}{where} is not built: give it a keras.Input (or call "
            "model.build(input_shape)) before make_prunable")
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            check_graph_model(layer, inside=model.name)


def _leaf_layers(model):
    """Every layer that is not a model, nested models' included, in layer order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_leaf_layers(layer))
        else:
            found.append(layer)
    return found


def _prunable_kind(layer):
    """The Keras class (Dense or Conv2D) `layer` is an instance of, or None."""
    for kind in _MASKED:
        if isinstance(layer, kind):
            return kind
    return None


# --- choosing layers ----------------------------------------------------------------------


def _choose(model, layers, spec, what):
    """ids of the Dense / Conv2D layers `spec` chooses (see `make_prunable`)."""
    candidates = [layer for layer in layers if _prunable_kind(layer)]
    if isinstance(spec, str) and spec == "all":
        return {id(layer) for layer in candidates}
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, type):
        spec = (spec,)
    if callable(spec):
        return {id(layer) for layer in candidates if spec(layer)}
    try:
        items = list(spec)
    except TypeError:
        items = None
    if items is None or not all(isinstance(i, (str, type)) for i in items):
        raise errors.LotteryError(
            f"{what}={spec!r} is not 'all', layer names, layer classes or a predicate")
    by_name = {layer.name: layer for layer in layers}
    chosen = set()
    for item in items:
        if isinstance(item, type):
            chosen |= {id(layer) for layer in candidates if isinstance(layer, item)}
            continue
        if item not in by_name:
            raise errors.LotteryError(
                f"{what}: model {model.name!r} has no layer named {item!r} (its Dense and "
                f"Conv2D layers: {', '.join(layer.name for layer in candidates) or 'none'})")
        layer = by_name[item]
        if not _prunable_kind(layer):
            raise errors.LotteryError(
                f"{what}: layer {item!r} ({type(layer).__name__}) cannot be pruned: only Dense and "
                f"Conv2D layers can; leave it out of {what}=")
        chosen.add(id(layer))
    return chosen


def _check_convertible(layer):
    kind = _prunable_kind(layer)
    if isinstance(layer, (MaskedDense, MaskedConv2D)):
        return
    exclude = f"leave it out of prune= (e.g. prune=lambda layer: layer.name != {layer.name!r})"
    if type(layer) is not kind:
        raise errors.LotteryError(
            f"layer {layer.name!r} ({type(layer).__name__}, a subclass of {kind.__name__}) "
            f"cannot be made prunable: its computation may differ from {kind.__name__}'s; "
            f"{exclude}, or give it a mask in your own code")
    if kind is keras.layers.Conv2D and layer.groups != 1:
        raise errors.LotteryError(
            f"layer {layer.name!r} (Conv2D with groups={layer.groups}) cannot be made prunable: "
            f"MaskedConv2D has no grouped convolution; {exclude}")


def _groups(model, layers, chosen, spec):
    """id of each masked layer -> its pruning group."""
    masked = [layer for layer in layers
              if id(layer) in chosen or isinstance(layer, (MaskedDense, MaskedConv2D))]
    outputs = _output_dense(model)
    group_of = {}
    for layer in masked:
        if isinstance(layer, (MaskedDense, MaskedConv2D)):
            group_of[id(layer)] = layer.pruning_group
        elif _prunable_kind(layer) is keras.layers.Conv2D:
            group_of[id(layer)] = "conv"
        else:
            group_of[id(layer)] = "output" if id(layer) in outputs else "fc"
    if spec is None:
        return group_of
    given = {}
    if isinstance(spec, dict):
        names = {id(layer): layer.name for layer in layers}
        for group, selector in spec.items():
            _check_group(group)
            for layer_id in _choose(model, layers, selector, f"groups[{group!r}]"):
                if given.get(layer_id, group) != group:
                    raise errors.LotteryError(
                        f"groups: layer {names[layer_id]!r} is in both {given[layer_id]!r} "
                        f"and {group!r}; give each layer one group")
                given[layer_id] = group
    elif callable(spec):
        for layer in masked:
            group = spec(layer)
            if group is not None:
                given[id(layer)] = _check_group(group, layer)
    else:
        raise errors.LotteryError(
            f"groups={spec!r} is neither a dict group -> layers nor a callable layer -> group")
    unmasked = [layer.name for layer in layers if id(layer) in given and id(layer) not in group_of]
    if unmasked:
        raise errors.LotteryError(
            f"groups: layer {unmasked[0]!r} is given a pruning group but is not pruned; add it "
            "to prune= or leave it out of groups=")
    group_of.update(given)
    return group_of


def _check_group(group, layer=None):
    if group not in GROUPS:
        whose = f" for layer {layer.name!r}" if layer is not None else ""
        raise errors.LotteryError(
            f"groups: {group!r}{whose} is not a pruning group (groups: {', '.join(GROUPS)})")
    return group


def _output_dense(model):
    """ids of the Dense layers that produce a model output, directly or through
    layers without weights and with one input (activations, reshapes, dropout)."""
    found = set()
    pending = list(model.outputs or [])
    seen = set()
    while pending:
        tensor = pending.pop()
        history = getattr(tensor, "_keras_history", None)
        if history is None or id(history.layer) in seen:
            continue
        layer = history.layer
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            pending.extend(layer.outputs or [])
        elif _prunable_kind(layer) is keras.layers.Dense:
            found.add(id(layer))
        elif not layer.weights and not isinstance(layer, keras.layers.InputLayer):
            inputs = layer._inbound_nodes[history.node_index].keras_inputs
            if len(inputs) == 1:
                pending.extend(inputs)
    return found


# --- the copy -----------------------------------------------------------------------------


def _convert(model, chosen, group_of, copies):
    """The converted copy of `model`; `copies` collects id -> (old, new) leaf layers."""

    def copy_layer(layer):
        if isinstance(layer, keras.Model):
            return _convert(layer, chosen, group_of, copies)
        if id(layer) in chosen or isinstance(layer, (MaskedDense, MaskedConv2D)):
            masked = _MASKED[_prunable_kind(layer)]
            config = {**layer.get_config(), "pruning_group": group_of[id(layer)]}
            new = masked.from_config(config)
        else:
            try:
                new = layer.__class__.from_config(layer.get_config())
            except Exception as e:  # noqa: BLE001 - any failure of user code: one line
                raise errors.LotteryError(
                    f"layer {layer.name!r} ({type(layer).__name__}) cannot be copied "
                    f"({errors.one_line(e)}); give {type(layer).__name__} a get_config() that "
                    "returns its constructor's arguments (Keras's custom-layer guide)") from None
        copies[id(layer)] = (layer, new)
        return new

    return keras.models.clone_model(model, clone_function=copy_layer)


def _copy_weights(old, new):
    if isinstance(new, (MaskedDense, MaskedConv2D)) and not isinstance(old, (MaskedDense, MaskedConv2D)):
        # The mask stays as built (ones); kernel and bias are the original's.
        new.kernel.assign(old.kernel)
        if old.use_bias:
            new.bias.assign(old.bias)
        return
    new.set_weights(old.get_weights())


def _check_unique_weight_names(model):
    # Run directories key weights by name ('layer/kernel'): two alike would collide.
    seen = {}
    for variable in model.weights:
        key = variable.name.split(":")[0]
        if key in seen:
            raise errors.LotteryError(
                f"model {model.name!r}: two weights are named {key!r} (layers in different "
                "nested models share a name); give every layer a unique name")
        seen[key] = variable
