"""Keras <-> IR: the ticket's masked Keras model, and that model as an `ir.Network`.

`network_from_model` looks each Keras layer up in the IR registry
(`ir.register`): a layer type it does not find is refused by name.
"""

from lottery_tf import errors
from lottery_tf.export import compaction, ir
from lottery_tf.export import layers as _builtin_layers  # noqa: F401  (registers them)


def keras_model(ticket):
    """The run's masked Keras model with the round's weights and masks."""
    from lottery_tf.nn import models
    from lottery_tf.nn.layers import masked_layers

    try:
        input_shape = tuple(int(d) for d in ticket.dataset["input_shape"])
        num_classes = int(ticket.dataset["num_classes"])
        name = ticket.config["model"]
    except (KeyError, TypeError, ValueError) as e:
        raise errors.LotteryError(f"run {ticket.run_dir}: incomplete config/dataset facts ({e})")
    model = models.build(name, input_shape, num_classes, int(ticket.config.get("seed", 0)))
    masks = {id(layer.mask): layer.name for layer in masked_layers(model)}
    for variable in model.weights:
        key = variable.name.split(":")[0]
        if id(variable) in masks:
            source, key = ticket.masks, masks[id(variable)]
            what = "mask.npz"
        else:
            source, what = ticket.weights, "weights.npz"
        if key not in source:
            raise errors.LotteryError(
                f"round {ticket.round} of {ticket.run_dir}: {what} has no {key!r}")
        value = source[key]
        if tuple(value.shape) != tuple(variable.shape):
            raise errors.LotteryError(
                f"round {ticket.round} of {ticket.run_dir}: {what} {key!r} has shape "
                f"{tuple(value.shape)}, the model {tuple(variable.shape)}")
        variable.assign(value.astype(variable.dtype.as_numpy_dtype))
    return model


def ir_class(keras_layer):
    """The registered IR class for `keras_layer`; raises `ir.NotConvertible`.

    A Keras class is looked up as itself, then as its nearest registered
    ancestor, which converts it only if its IR class accepts subclasses.
    """
    by_keras = {}
    for cls in ir.registered():
        for keras_type in cls.keras_types():
            by_keras.setdefault(keras_type, cls)
    kind = type(keras_layer)
    if kind in by_keras:
        return by_keras[kind]
    for ancestor in kind.__mro__[1:]:
        if ancestor in by_keras:
            if by_keras[ancestor].accepts_keras_subclasses:
                return by_keras[ancestor]
            raise ir.NotConvertible("unknown subclass")
    raise ir.NotConvertible("unknown layer type")


def _supported():
    names = [cls.keras_description for cls in ir.registered() if cls.keras_description]
    return f"InputLayer, {', '.join(names)} in a chain"


def network_from_model(model):
    """The Keras model as an `ir.Network` (kernels times masks).

    Raises:
      errors.LotteryError: a layer or connection the exporter does not support.
    """
    import tf_keras as keras

    def refuse(layer, why):
        raise errors.LotteryError(
            f"model {model.name}: layer {layer.name!r} ({type(layer).__name__}) is not "
            f"supported by export: {why} (supported: {_supported()})")

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise errors.LotteryError(f"model {model.name}: export needs one input and one output")
    layers, previous = [], None
    for layer in model.layers:
        try:
            inbound = layer.input
        except (AttributeError, ValueError):
            refuse(layer, "it is used more than once")
        if isinstance(inbound, (list, tuple, dict)):
            refuse(layer, "it has several inputs")
        if previous is not None and inbound is not previous.output:
            refuse(layer, "the model is not a chain of layers")
        previous = layer
        if isinstance(layer, keras.layers.InputLayer):
            continue
        data_format = getattr(layer, "data_format", "channels_last")
        if data_format != "channels_last":
            refuse(layer, f"data_format={data_format}")
        try:
            layers.append(ir_class(layer).from_keras(layer))
        except ir.NotConvertible as e:
            refuse(layer, str(e))
    if previous is None or previous.output is not model.outputs[0]:
        raise errors.LotteryError(
            f"model {model.name}: export needs the last layer's output to be the model's output")
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    network = ir.Network(input_shape, layers)
    try:
        ir.shapes(network)
        compaction.check_supported(network)
    except ir.UnsupportedNetwork as e:
        raise errors.LotteryError(f"model {model.name} cannot be exported: {e}") from None
    return network

