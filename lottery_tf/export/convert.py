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
    return (f"InputLayer, {', '.join(names)}; a chain of them, in which a tensor may fork "
            "into branches that meet again at an Add")


def _several_inputs(layer):
    return isinstance(layer.input, (list, tuple))


def network_from_model(model):
    """The Keras model as an `ir.Network` (kernels times masks, batch norms and
    activations folded into the layer before them where exact).

    The model must be a chain of layers, except that a tensor may fork into
    branches (chains themselves) that meet again at one merging layer (an
    `Add`): a residual block, which becomes one IR layer holding its branches.

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
    consumers = {}  # id(tensor) -> the layers reading it
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            inbound = layer.input
        except (AttributeError, ValueError):
            refuse(layer, "it is used more than once")
        if isinstance(inbound, dict):
            refuse(layer, "it has named inputs")
        for tensor in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
            consumers.setdefault(id(tensor), []).append(layer)

    def convert(layer, branches=None):
        data_format = getattr(layer, "data_format", "channels_last")
        if data_format != "channels_last":
            refuse(layer, f"data_format={data_format}")
        try:
            cls = ir_class(layer)
            if branches is None:
                if cls.merges:
                    refuse(layer, "its inputs are not branches from one tensor")
                return cls.from_keras(layer)
            if not cls.merges:
                refuse(layer, "it has several inputs")
            return cls.from_keras(layer, branches)
        except ir.NotConvertible as e:
            refuse(layer, str(e))

    def branch_end(tensor, first):
        """(merging layer, the tensor it takes from the branch starting at `first`)."""
        if _several_inputs(first):
            return first, tensor  # an identity shortcut
        layer = first
        while True:
            readers = consumers.get(id(layer.output), [])
            if len(readers) != 1:
                refuse(layer, "inside a branch its output must go to exactly one layer "
                              "(nested branches are not supported)")
            if _several_inputs(readers[0]):
                return readers[0], layer.output
            layer = readers[0]

    def chain(tensor, end, first=None):
        """The IR layers from `tensor` to `end` (`first`: the layer after `tensor`)."""
        found = []
        while tensor is not end:
            readers = [first] if first is not None else consumers.get(id(tensor), [])
            first = None
            if not readers:
                raise errors.LotteryError(
                    f"model {model.name}: export needs every layer to lead to the model's output")
            if len(readers) == 1 and not _several_inputs(readers[0]):
                found.append(convert(readers[0]))
                tensor = readers[0].output
                continue
            ends = [branch_end(tensor, reader) for reader in readers]
            merge = ends[0][0]
            if any(m is not merge for m, _ in ends):
                refuse(readers[0], "branches from one tensor must meet again at one layer")
            pending = [(reader, end_tensor) for reader, (_, end_tensor) in zip(readers, ends)]
            branches = []
            for inbound in merge.input:  # the merging layer's input order
                match = [p for p in pending if p[1] is inbound]
                if not match:
                    refuse(merge, "it adds tensors that do not branch from one tensor")
                pending.remove(match[0])
                reader, end_tensor = match[0]
                branches.append([] if reader is merge else chain(tensor, end_tensor, reader))
            if pending:
                refuse(merge, "it adds tensors that do not branch from one tensor")
            found.append(convert(merge, branches))
            tensor = merge.output
        return ir.fold(found)

    network = ir.Network(tuple(int(d) for d in model.inputs[0].shape[1:]),
                         chain(model.inputs[0], model.outputs[0]))
    try:
        ir.shapes(network)
        compaction.check_supported(network)
    except ir.UnsupportedNetwork as e:
        raise errors.LotteryError(f"model {model.name} cannot be exported: {e}") from None
    return network
