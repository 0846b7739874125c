"""`lottery-tf export`: one round of a run as a compact, verified model for serving.

    lottery-tf export --run=runs/quickstart --round=best
    lottery-tf export --run=runs/quickstart --round=7 --format=tflite --quantize

What it does, in order (any problem ends it with one line `lottery-tf: error:
...`, exit status 2, and nothing written):

1. Reads the round's masks and trained weights from the run directory and
   rebuilds the masked Keras model.
2. Compacts it (`compaction.compact`: dead and unread units and filters
   removed, constants folded into biases, dead inputs kept as zero rows) and
   stores each compact kernel densely, as values plus a bitmask, or as values
   plus uint16 position steps, whichever is smallest
   (`compaction.choose_storage`).
3. Writes a SavedModel (or a TFLite file) into a temporary directory next to
   the target, loads what was written back, and compares its outputs on a
   probe batch with the masked model's: the export is refused unless the
   logits agree within 1e-5 and every class id is the same.
4. Renames the temporary directory into place (an existing export only with
   --overwrite).

Serving contract (signature `serving_default`): input `image`, float32 in
[0, 1] (pixel / 255), shape [batch, *dataset image shape], any batch size;
outputs `logits` (float32 [batch, classes]), `probabilities` (softmax of the
logits) and `class_ids` (int64 [batch]). Sparse kernels are densified into
their compact shape once, when the model is loaded (a resource initialized by
the SavedModel's init op, which `tf.saved_model.load` and TF Serving run), so
every call is plain dense matmuls/convolutions of the compact shapes.
docs/EXPORT.md has the details and the measurements behind these choices.
"""

import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from lottery_tf import errors, faults, quiet  # noqa: E402
from lottery_tf.cli import app as startup  # noqa: E402  (interim)
from lottery_tf.export import compaction  # noqa: E402
from lottery_tf.lottery.storage import fsync_path  # noqa: E402

DEFAULT_ROOT = "saved_models"
FORMATS = ("saved_model", "tflite")
PROBES = ("auto", "dataset", "random")
LOGIT_TOLERANCE = 1e-5
RANDOM_PROBE_SIZE = 64
TICKET_FILE = "ticket.json"
TFLITE_FILE = "model.tflite"

# Flag names must differ from every other module's (cli.py, branch_cli.py, report.py,
# benchmarks.py): absl flags are global and the tests import them all in one process.
flags.DEFINE_string("run", "", "Run directory to export from (the training --output_dir).")
flags.DEFINE_string("round", "best",
                    "Round to export: a number, 'last' (the last complete round) or 'best' "
                    "(the sparsest complete round whose early-stop validation accuracy is "
                    "within --best_tolerance points of round 0's).")
flags.DEFINE_float("best_tolerance", 0.5,
                   "For --round=best: accuracy points (percent) a round may lose against round 0.")
flags.DEFINE_string("output", "",
                    "Export directory; empty for saved_models/<run name>_round_<NNN>[_tflite].")
flags.DEFINE_string("format", "saved_model", "saved_model or tflite.")
flags.DEFINE_boolean("quantize", False,
                     "With --format=tflite: dynamic-range quantization (int8 weights).")
flags.DEFINE_boolean("overwrite", False, "Replace an existing export at --output.")
flags.DEFINE_string("probe", "auto",
                    "Verification inputs: 'dataset' (the run's test set plus random images), "
                    "'random' (random images only) or 'auto' (dataset when prepared, else random).")
flags.DEFINE_string("probe_data_dir", "",
                    "TFDS data dir for the probe batch; empty for the run's --data_dir, "
                    "else TFDS's default ($TFDS_DATA_DIR).")
flags.DEFINE_integer("probe_size", 1000, "Test-set images in the probe batch.")
flags.DEFINE_float("quantized_min_agreement", 1.0,
                   "With --quantize: fraction of the probe's dataset images whose class id "
                   "must stay the same (default: all of them).")

FLAGS = flags.FLAGS


# --- the run directory side --------------------------------------------------------


@dataclasses.dataclass
class Ticket:
    """One round of a run: what the export needs, read from the run directory."""

    run_dir: str
    round: int
    selection: str
    config: dict
    dataset: dict
    masks: dict
    weights: dict
    metrics: dict


def _round_dir(run_dir, r):
    return os.path.join(run_dir, f"round_{r:03d}")


def _recorded(path):
    """Whether `path` was completely written (listed in its directory's manifest, if any)."""
    from lottery_tf.lottery import run_dir

    return getattr(run_dir, "is_recorded", os.path.exists)(path)


def complete_rounds(run_dir):
    """Rounds whose metrics.json is recorded (a round is complete when it is)."""
    found = []
    for name in os.listdir(run_dir):
        if name.startswith("round_") and name[6:].isdigit():
            r = int(name[6:])
            if _recorded(os.path.join(_round_dir(run_dir, r), "metrics.json")):
                found.append(r)
    return sorted(found)


def best_round(metrics_by_round, tolerance_points):
    """The sparsest round whose early-stop validation accuracy is at most
    `tolerance_points` (percentage points) below round 0's.

    Validation accuracy, not test accuracy, so that choosing the ticket does
    not peek at the test set. Equal sparsity: the higher validation accuracy,
    then the earlier round.
    """
    if 0 not in metrics_by_round:
        raise errors.LotteryError("--round=best compares with round 0, which is not complete")
    floor = metrics_by_round[0]["early_stop_val_accuracy"] - tolerance_points / 100.0
    candidates = [
        (m["remaining_pct"], -m["early_stop_val_accuracy"], r)
        for r, m in metrics_by_round.items()
        if m["early_stop_val_accuracy"] >= floor - 1e-12  # False for NaN
    ]
    if not candidates:
        raise errors.LotteryError(
            "--round=best: round 0 has no usable validation accuracy; give --round=N")
    return min(candidates)[2]


def _read(path, reader, what):
    from lottery_tf.lottery.run_dir import read_arrays, read_json

    reader = {"json": read_json, "arrays": read_arrays}[reader]
    try:
        return reader(path)
    except (OSError, ValueError) as e:
        raise errors.LotteryError(f"cannot read {what} {path}: {e}") from None


def load_ticket(run_dir, round_spec, tolerance_points=0.5):
    """Reads round `round_spec` ('best', 'last' or a number) of `run_dir`."""
    if not run_dir:
        raise errors.LotteryError("--run (the run directory) is required")
    if not os.path.isdir(run_dir):
        raise errors.LotteryError(f"--run {run_dir} does not exist or is not a directory")
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(config_path):
        raise errors.LotteryError(
            f"--run {run_dir} is not a lottery-tf run directory (no config.json)")
    config = _read(config_path, "json", "run configuration")
    dataset_path = os.path.join(run_dir, "dataset.json")
    if not os.path.exists(dataset_path):
        raise errors.LotteryError(
            f"{dataset_path} is missing (runs made before lottery-tf recorded dataset facts "
            "cannot be exported; rerun the training command once to write it)")
    dataset = _read(dataset_path, "json", "dataset facts")
    complete = complete_rounds(run_dir)
    known = ", ".join(map(str, complete)) if complete else "none"
    spec = str(round_spec).strip().lower()
    if spec in ("best", "last"):
        if not complete:
            raise errors.LotteryError(f"run {run_dir} has no complete round to export")
        if spec == "last":
            r, selection = complete[-1], "last complete round"
        else:
            metrics = {c: _read(os.path.join(_round_dir(run_dir, c), "metrics.json"), "json",
                                "round metrics") for c in complete}
            r = best_round(metrics, tolerance_points)
            selection = (f"best: sparsest complete round with early-stop validation accuracy "
                         f"within {tolerance_points:g} points of round 0's")
    else:
        try:
            r = int(spec)
        except ValueError:
            raise errors.LotteryError(
                f"--round={round_spec} is neither a round number, 'best' nor 'last'") from None
        if r < 0:
            raise errors.LotteryError(f"--round={r} must not be negative")
        if r not in complete:
            raise errors.LotteryError(
                f"round {r} of {run_dir} does not exist or is not complete "
                f"(complete rounds: {known})")
        selection = f"--round={r}"
    mask_path = os.path.join(_round_dir(run_dir, r), "mask.npz")
    weights_path = os.path.join(_round_dir(run_dir, r), "weights.npz")
    if not _recorded(mask_path):
        raise errors.LotteryError(f"round {r} of {run_dir} has no masks ({mask_path} is missing)")
    if not _recorded(weights_path):
        raise errors.LotteryError(
            f"round {r} of {run_dir} has no trained weights ({weights_path} is missing)")
    return Ticket(
        run_dir=run_dir,
        round=r,
        selection=selection,
        config=config,
        dataset=dataset,
        masks=_read(mask_path, "arrays", "masks"),
        weights=_read(weights_path, "arrays", "weights"),
        metrics=_read(os.path.join(_round_dir(run_dir, r), "metrics.json"), "json",
                      "round metrics"),
    )


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


def network_from_model(model):
    """The Keras model as a `compaction.Network` (kernels times masks).

    Raises:
      errors.LotteryError: a layer or connection the exporter does not support.
    """
    import tf_keras as keras

    from lottery_tf.nn.layers import MaskedConv2D, MaskedDense

    supported = "InputLayer, Flatten, (Masked)Dense, (Masked)Conv2D, MaxPool2D in a chain"

    def refuse(layer, why):
        raise errors.LotteryError(
            f"model {model.name}: layer {layer.name!r} ({type(layer).__name__}) is not "
            f"supported by export: {why} (supported: {supported})")

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
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            if type(layer) not in (keras.layers.Dense, keras.layers.Conv2D, MaskedDense,
                                   MaskedConv2D):
                refuse(layer, "unknown subclass")
            activation = keras.activations.serialize(layer.activation)
            if activation not in compaction.ACTIVATIONS:
                refuse(layer, f"activation {activation!r}")
            kernel = layer.kernel.numpy()
            if hasattr(layer, "mask") and isinstance(layer, (MaskedDense, MaskedConv2D)):
                kernel = kernel * layer.mask.numpy()
            units = kernel.shape[-1]
            bias = layer.bias.numpy() if layer.use_bias else np.zeros(units, np.float32)
            if isinstance(layer, keras.layers.Dense):
                layers.append(compaction.Dense(layer.name, kernel, bias, activation))
            else:
                if layer.groups != 1:
                    refuse(layer, "groups > 1")
                layers.append(compaction.Conv2D(
                    layer.name, kernel, bias, activation, tuple(layer.strides),
                    layer.padding, tuple(layer.dilation_rate)))
        elif isinstance(layer, keras.layers.MaxPool2D):
            layers.append(compaction.MaxPool2D(
                layer.name, tuple(layer.pool_size), tuple(layer.strides), layer.padding))
        elif isinstance(layer, keras.layers.Flatten):
            layers.append(compaction.Flatten(layer.name))
        else:
            refuse(layer, "unknown layer type")
    if previous is None or previous.output is not model.outputs[0]:
        raise errors.LotteryError(
            f"model {model.name}: export needs the last layer's output to be the model's output")
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    network = compaction.Network(input_shape, layers)
    try:
        compaction.shapes(network)
        compaction.check_supported(network)
    except compaction.UnsupportedNetwork as e:
        raise errors.LotteryError(f"model {model.name} cannot be exported: {e}") from None
    return network


# --- the TensorFlow side -----------------------------------------------------------


def _tf():
    import tensorflow as tf

    return tf


class _Pools:
    """Packs arrays end to end into one array per dtype (few variables, small graph)."""

    DTYPES = {"floats": np.float32, "u16": np.uint16, "ints": np.int32, "bits": np.uint8}

    def __init__(self):
        self.parts = {kind: [] for kind in self.DTYPES}

    def add(self, kind, array):
        """Appends `array` (flattened) to pool `kind`; returns (kind, piece number)."""
        self.parts[kind].append(np.asarray(array).reshape(-1).astype(self.DTYPES[kind]))
        return kind, len(self.parts[kind]) - 1

    def arrays(self):
        return {kind: np.concatenate(parts) for kind, parts in self.parts.items() if parts}

    def sizes(self):
        return {kind: [p.size for p in parts] for kind, parts in self.parts.items() if parts}


_POOL_OF = {"kernel": "floats", "values": "floats", "bits": "bits", "gaps": "u16"}


def _build_tensor(recipe, pieces):
    """The runtime tensor `recipe` describes, from the split pools (at load time).

    TensorFlow twin of `compaction.decode`, in as few graph nodes as possible
    (each costs about 100 bytes of saved_model.pb).
    """
    tf = _tf()
    fmt, parts, shape = recipe
    arrays = {name: pieces[kind][i] for name, (kind, i) in parts.items()}
    size = int(np.prod(shape))
    if fmt == "dense":
        kernel = arrays["kernel"]
        return kernel if len(shape) == 1 else tf.reshape(kernel, shape)
    if fmt == "index":
        return tf.cast(arrays["kernel"], tf.int32)
    if fmt == "bitmask":
        # np.packbits pads the last byte with zero bits: no position beyond `size`.
        bits = tf.reshape(tf.cast(arrays["bits"], tf.int32), [-1, 1])
        shifts = np.arange(7, -1, -1, dtype=np.int32)
        present = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, shifts), 1)
        positions = tf.where(tf.reshape(tf.cast(present, tf.bool), [-1]))
    elif fmt == "delta":
        positions = tf.reshape(tf.cumsum(tf.cast(arrays["gaps"], tf.int32)), [-1, 1])
    else:
        raise ValueError(f"unknown recipe format {fmt!r}")
    return tf.reshape(tf.scatter_nd(positions, arrays["values"], [size]), shape)


def _loader_class():
    tf = _tf()

    class Loader(tf.saved_model.experimental.TrackableResource):
        """Builds the runtime tensors from packed storage once, when the model loads.

        The SavedModel's checkpoint holds only the packed storage (nonzero
        values, bitmasks, uint16 indices, biases: one variable per dtype) and
        empty runtime variables. This resource's `_initialize`, which the
        SavedModel's init op runs right after the variables are restored (in
        `tf.saved_model.load` and in the C++ loader TF Serving uses alike),
        assigns every runtime variable its compact dense value; serving calls
        read them exactly as they would read plain variables.
        """

        def __init__(self, storage, sizes, runtime):
            # Unique per export; the Python loader also makes it unique per load.
            self._shared_name = f"lottery_tf_loader_{uuid.uuid4().hex}"
            self._sizes = sizes
            super().__init__()
            # Not tracked here (resources are no AutoTrackables): the module
            # owning them tracks (and saves) them.
            self._storage = storage
            self._runtime = runtime  # [(variable, recipe)]

        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.int32, shape=[],
                                          shared_name=self._shared_name)

        def _initialize(self):
            pieces = {kind: tf.split(self._storage[kind], sizes) if len(sizes) > 1
                      else [self._storage[kind].read_value()]
                      for kind, sizes in self._sizes.items()}
            return tf.group([
                tf.raw_ops.AssignVariableOp(resource=variable.handle,
                                            value=_build_tensor(recipe, pieces))
                for variable, recipe in self._runtime])

        def _destroy_resource(self):
            return tf.raw_ops.DestroyResourceOp(resource=self.resource_handle,
                                                ignore_lookup_error=True)

    return Loader


_ACTIVATIONS_TF = {
    "linear": lambda tf, x: x,
    "relu": lambda tf, x: tf.nn.relu(x),
    "sigmoid": lambda tf, x: tf.sigmoid(x),
    "tanh": lambda tf, x: tf.tanh(x),
}


def _layer_call(layer, tensors):
    """x -> layer(x), reading its kernel/bias/indices from `tensors` (name -> getter)."""
    tf = _tf()
    if isinstance(layer, compaction.Dense):
        activation = _ACTIVATIONS_TF[layer.activation]
        return lambda x: activation(tf, tf.nn.bias_add(
            tf.matmul(x, tensors["kernel"]()), tensors["bias"]()))
    if isinstance(layer, compaction.Conv2D):
        activation = _ACTIVATIONS_TF[layer.activation]
        bias_map = layer.bias.ndim == 3

        def call(x):
            y = tf.nn.conv2d(x, tensors["kernel"](), strides=list(layer.strides),
                             padding=layer.padding.upper(), dilations=list(layer.dilation))
            y = y + tensors["bias"]() if bias_map else tf.nn.bias_add(y, tensors["bias"]())
            return activation(tf, y)
        return call
    if isinstance(layer, compaction.Flatten):
        return lambda x: tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])
    if isinstance(layer, compaction.MaxPool2D):
        return lambda x: tf.nn.max_pool2d(x, list(layer.pool_size), list(layer.strides),
                                          layer.padding.upper())
    if isinstance(layer, compaction.Gather):
        return lambda x: tf.gather(x, tensors["indices"](), axis=-1)
    raise ValueError(f"unknown layer {layer!r}")


def _layer_arrays(layer):
    if isinstance(layer, (compaction.Dense, compaction.Conv2D)):
        return {"kernel": layer.kernel, "bias": layer.bias}
    if isinstance(layer, compaction.Gather):
        return {"indices": layer.indices.astype(np.int32)}
    return {}


def storage_formats(network, storage="auto"):
    """Layer name -> kernel storage format ('auto': the smallest per kernel)."""
    return {
        layer.name: compaction.choose_storage(layer.kernel) if storage == "auto" else storage
        for layer in network.layers if isinstance(layer, (compaction.Dense, compaction.Conv2D))
    }


def _shaped_reader(variable, shape):
    def read():
        value = variable.value()
        value.set_shape(shape)
        return value
    return read


def serving_module(network, storage="auto", constants=False):
    """(tf.Module, serve tf.function) running `network` with the serving contract.

    Args:
      network: a `compaction.Network` (compact or not).
      storage: 'auto' (the smallest encoding per kernel), or one of
        `compaction.STORAGE_FORMATS` for every kernel. When every kernel is
        stored densely the module holds plain per-layer variables (what any
        dense SavedModel holds); otherwise the storage is packed into one
        variable per dtype, and runtime tensors are built when it is loaded.
      constants: tensors as graph constants (for TFLite conversion).

    A packed module can only run once saved and loaded again: its runtime
    variables are empty until the loader fills them.
    """
    tf = _tf()
    module = tf.Module(name="ticket")
    formats = storage_formats(network, storage)
    packed = not constants and any(f != "dense" for f in formats.values())
    getters = []
    if packed:
        pools, runtime = _Pools(), []
        module.runtime = {}
        for layer in network.layers:
            tensors = {}
            for name, array in _layer_arrays(layer).items():
                if name == "kernel":
                    encoded = compaction.encode(array, formats[layer.name])
                    parts = {key: pools.add(_POOL_OF[key], value)
                             for key, value in encoded.items()}
                    recipe = (formats[layer.name], parts, array.shape)
                elif name == "indices":
                    small = array.size == 0 or array.max() <= np.iinfo(np.uint16).max
                    recipe = ("index", {"kernel": pools.add("u16" if small else "ints", array)},
                              array.shape)
                else:
                    recipe = ("dense", {"kernel": pools.add("floats", array)}, array.shape)
                dtype = tf.int32 if name == "indices" else tf.float32
                # Saved empty: the loader assigns its value at load time.
                variable = tf.Variable(tf.zeros([0], dtype), shape=tf.TensorShape(None),
                                       trainable=False, name=f"{layer.name}/{name}")
                module.runtime[f"{layer.name}/{name}"] = variable
                runtime.append((variable, recipe))
                tensors[name] = _shaped_reader(variable, array.shape)
            getters.append(tensors)
        module.storage = {kind: tf.Variable(array, trainable=False, name=kind)
                          for kind, array in pools.arrays().items()}
        module.loader = _loader_class()(module.storage, pools.sizes(), runtime)
    else:
        module.weights = {}
        for layer in network.layers:
            tensors = {}
            for name, array in _layer_arrays(layer).items():
                if constants:
                    tensors[name] = (lambda c: lambda: c)(tf.constant(array))
                else:
                    variable = tf.Variable(array, trainable=False, name=f"{layer.name}/{name}")
                    module.weights[f"{layer.name}/{name}"] = variable
                    tensors[name] = variable.value
            getters.append(tensors)
    calls = [_layer_call(layer, tensors) for layer, tensors in zip(network.layers, getters)]
    spec = tf.TensorSpec([None, *network.input_shape], tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(image):
        # Loaded signatures do not check shapes at run time: say it clearly here.
        x = tf.ensure_shape(image, spec.shape, name="check_image_shape")
        for call in calls:
            x = call(x)
        return {
            "logits": x,
            "probabilities": tf.nn.softmax(x),
            "class_ids": tf.argmax(x, axis=-1),
        }

    # Not an attribute of the module: saved once, as the signature only.
    return module, serve


def save_saved_model(module_and_serve, path):
    tf = _tf()
    module, serve = module_and_serve
    tf.saved_model.save(
        module, path,
        signatures={"serving_default": serve.get_concrete_function()},
        options=tf.saved_model.SaveOptions(save_debug_info=False),
    )


def convert_tflite(network, quantize):
    """TFLite flatbuffer bytes of `network` (float32, or dynamic-range int8 weights)."""
    tf = _tf()
    module, serve = serving_module(network, storage="dense", constants=True)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], module)
    # Float: sparse tensors stored sparsely in the flatbuffer (the runtime
    # densifies them). Quantized: int8 weights, stored densely (TFLite's
    # XNNPACK delegate refuses sparse int8 fully-connected weights).
    converter.optimizations = [tf.lite.Optimize.DEFAULT if quantize
                               else tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    with quiet.quiet_stderr():
        return converter.convert()


def run_saved_model(path, images, batch_size=1024):
    """Outputs of the SavedModel at `path` (loaded with tf.saved_model.load) on `images`."""
    tf = _tf()
    loaded = tf.saved_model.load(path)  # keep it: its resources live as long as it does
    serve = loaded.signatures["serving_default"]
    parts = [serve(image=tf.constant(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


def run_tflite(path, images):
    """Logits and class ids of the TFLite model at `path` on `images`."""
    tf = _tf()
    with warnings.catch_warnings(), quiet.quiet_stderr():
        # tf.lite.Interpreter warns that it moves to ai_edge_litert (not installed
        # here) and announces its XNNPACK delegate on stderr.
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=path)
        runner = interpreter.get_signature_runner()
        (image,) = runner.get_input_details().values()
        outputs = runner.get_output_details()
        del runner
        interpreter.resize_tensor_input(image["index"], list(images.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(image["index"], images.astype(np.float32))
        interpreter.invoke()
        return {name: interpreter.get_tensor(detail["index"]).copy()
                for name, detail in outputs.items()}


def variable_bytes(path):
    """Bytes of every variable stored in the SavedModel at `path`, and their count."""
    tf = _tf()
    prefix = os.path.join(path, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    total = 0
    for name, shape in reader.get_variable_to_shape_map().items():
        if name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            continue
        total += int(np.prod(shape)) * dtypes[name].size
    return total


def tree_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


# --- probe data, verification, placement ------------------------------------------------


@dataclasses.dataclass
class Probe:
    """Images to verify an export on: `real` dataset images first, then random ones."""

    images: np.ndarray
    labels: np.ndarray  # of the real images
    description: str

    @property
    def real(self):
        return len(self.labels)


def random_probe(input_shape, size=RANDOM_PROBE_SIZE, seed=0):
    images = np.random.default_rng(seed).random((size,) + tuple(input_shape), dtype=np.float32)
    return Probe(images, np.zeros(0, np.int64), f"{size} random images")


def probe_images(ticket, mode="auto", data_dir="", size=1000, seed=0):
    """The `Probe` to verify `ticket`'s export on.

    'dataset': the first `size` test images of the run's dataset plus
    RANDOM_PROBE_SIZE uniform random images (random pixels reach inputs the
    dataset leaves at 0, e.g. MNIST's border); 'random': `size` random images;
    'auto': 'dataset' when the dataset is prepared in the data dir, else 'random'.
    """
    if mode not in PROBES:
        raise errors.LotteryError(f"--probe={mode} is not one of {', '.join(PROBES)}")
    shape = tuple(int(d) for d in ticket.dataset["input_shape"])
    name = ticket.config.get("dataset", ticket.dataset.get("name", ""))
    data_dir = data_dir or ticket.config.get("data_dir") or None
    real = None
    if mode in ("auto", "dataset"):
        real, labels, why = _dataset_images(name, data_dir, size, shape)
        if real is None and mode == "dataset":
            raise errors.LotteryError(f"--probe=dataset: {why}")
    if real is None:
        return random_probe(shape, size, seed)
    extra = random_probe(shape, RANDOM_PROBE_SIZE, seed).images
    return Probe(np.concatenate([real, extra]), labels,
                 f"{len(real)} {name} test images + {RANDOM_PROBE_SIZE} random images")


def _dataset_images(name, data_dir, size, shape):
    """The first `size` test images (scaled as in training) and labels, or (None, None, why)."""
    import tensorflow_datasets as tfds

    from lottery_tf.train import data

    try:
        if not tfds.builder(name, data_dir=data_dir).is_prepared():
            where = data_dir or "the TFDS data dir"
            return None, None, f"dataset {name!r} is not prepared in {where}"
        dataset = data.load(name, data_dir=data_dir, validation_size=1)
        images, labels, count = [], [], 0
        for batch, batch_labels in dataset.test:
            images.append(batch.numpy())
            labels.append(batch_labels.numpy())
            count += len(images[-1])
            if count >= size:
                break
    except errors.LotteryError as e:
        return None, None, str(e)
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; fall back to random
        return None, None, f"dataset {name!r} unavailable ({type(e).__name__}: {e})"
    if not images:
        return None, None, f"dataset {name!r} has no test images"
    images = np.concatenate(images)[:size].astype(np.float32)
    if images.shape[1:] != shape:
        return None, None, f"dataset {name!r} images are {images.shape[1:]}, the model's {shape}"
    return images, np.concatenate(labels)[:size].astype(np.int64), ""


QUANTIZE_NEEDS_DATASET = (
    "--quantize needs dataset images to verify on (class ids of random images near a tie "
    "legitimately change under quantization): use --probe=dataset or --probe_data_dir")


def verify(reference_logits, outputs, probe, what, quantized=False, min_agreement=1.0):
    """Compares an export's outputs with the masked model's; returns the figures.

    Exact transformations (compaction, sparse storage, float TFLite): every
    logit within LOGIT_TOLERANCE and every class id identical. Dynamic-range
    quantization changes logits by design: at least `min_agreement` (default
    all) of the class ids on the dataset images must be identical (random
    images near a tie legitimately flip; those flips are counted, not
    refused), so it needs a probe with dataset images.

    Raises:
      errors.LotteryError: the export disagrees (message with the figures).
    """
    logits = outputs["logits"]
    diff = float(np.max(np.abs(logits - reference_logits))) if logits.size else 0.0
    expected = np.argmax(reference_logits, axis=-1)
    flipped = outputs["class_ids"] != expected
    real_flips = int(flipped[:probe.real].sum())
    random_flips = int(flipped[probe.real:].sum())
    problem = None
    if not np.isfinite(diff):
        problem = "non-finite logits"
    elif quantized:
        if not probe.real:
            raise errors.LotteryError(QUANTIZE_NEEDS_DATASET)
        if 1.0 - real_flips / probe.real < min_agreement:
            problem = (f"{real_flips} of {probe.real} dataset class ids differ "
                       f"(--quantized_min_agreement={min_agreement:g})")
    elif diff > LOGIT_TOLERANCE or real_flips or random_flips:
        problem = (f"max |logit difference| {diff:.3g} (limit {LOGIT_TOLERANCE:g}), "
                   f"{real_flips + random_flips} of {len(expected)} class ids differ")
    if problem:
        raise errors.LotteryError(
            f"{what} disagrees with the masked model on the probe batch ({probe.description}): "
            f"{problem}; nothing written")
    figures = {
        "probe": probe.description,
        "examples": int(len(expected)),
        "max_abs_logit_diff": diff,
        "logit_limit": None if quantized else LOGIT_TOLERANCE,
        "class_ids_differing_dataset": real_flips,
        "min_agreement_dataset": min_agreement if quantized else 1.0,
        "class_ids_differing_random": random_flips,
    }
    if probe.real:
        figures["probe_accuracy_masked"] = float(np.mean(expected[:probe.real] == probe.labels))
        figures["probe_accuracy_export"] = float(
            np.mean(outputs["class_ids"][:probe.real] == probe.labels))
    return figures


def default_output(ticket, fmt, quantize):
    name = os.path.basename(os.path.normpath(os.path.abspath(ticket.run_dir)))
    suffix = "" if fmt == "saved_model" else ("_tflite_quantized" if quantize else "_tflite")
    return os.path.join(DEFAULT_ROOT, f"{name}_round_{ticket.round:03d}{suffix}")


def _is_export(path):
    return os.path.isfile(os.path.join(path, "assets", TICKET_FILE)) or os.path.isfile(
        os.path.join(path, TICKET_FILE))


def check_output(output, overwrite):
    """Refuses an output path that cannot (or must not) be written."""
    if os.path.lexists(output):
        if not overwrite:
            raise errors.LotteryError(
                f"--output {output} exists; pass --overwrite to replace it")
        if not os.path.isdir(output) or not _is_export(output):
            raise errors.LotteryError(
                f"--output {output} exists and is not a lottery-tf export; not overwriting it")
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise errors.LotteryError(f"--output {output} is not writable ({parent})")


@contextlib.contextmanager
def staging_dir(output):
    """A temporary directory next to `output`, removed unless `place` moved it.

    Parent directories it had to create are removed again on failure.
    """
    target = os.path.abspath(output)
    parent = os.path.dirname(target)
    created = []
    probe = parent
    while not os.path.exists(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide it from a serving user
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:  # deepest first
            try:
                os.rmdir(directory)
            except OSError:
                break
        raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def place(tmp, output, overwrite):
    """Renames the finished `tmp` directory to `output` (replacing an old export)."""
    target = os.path.abspath(output)
    _fsync_tree(tmp)
    faults.point("export")
    aside = None
    if os.path.lexists(target):
        check_output(output, overwrite)  # it may have appeared meanwhile
        aside = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-",
                                 dir=os.path.dirname(target))
        os.rename(target, os.path.join(aside, "export"))
    try:
        os.rename(tmp, target)
    except BaseException:
        if aside:
            os.rename(os.path.join(aside, "export"), target)
            os.rmdir(aside)
        raise
    fsync_path(os.path.dirname(target))
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


def _fsync_tree(path):
    for root, _, files in os.walk(path):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


# --- the export -------------------------------------------------------------------------


def _versions():
    import tensorflow as tf
    import tf_keras

    import lottery_tf

    return {"lottery_tf": lottery_tf.__version__, "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__}


def _ticket_json(ticket, fmt, quantize, reports, storages, verification, sizes):
    masks = ticket.masks
    alive = {name: int(np.count_nonzero(m)) for name, m in masks.items()}
    total = sum(m.size for m in masks.values())
    layers = {}
    for report in reports:
        entry = report.to_dict()
        entry["remaining_pct"] = 100.0 * alive.get(report.name, 0) / max(
            masks[report.name].size, 1) if report.name in masks else None
        entry["storage"] = storages.get(report.name)
        layers[report.name] = entry
    shape = [None] + [int(d) for d in ticket.dataset["input_shape"]]
    metric_keys = ("early_stop_iteration", "early_stop_test_accuracy", "early_stop_val_accuracy",
                   "early_stop_val_loss", "final_test_accuracy")
    return {
        "format": fmt + ("_dynamic_range_quantized" if quantize else ""),
        "versions": _versions(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "run_dir": os.path.abspath(ticket.run_dir),
            "round": ticket.round,
            "round_selection": ticket.selection,
            "model": ticket.config.get("model"),
            "dataset": ticket.config.get("dataset"),
            "seed": ticket.config.get("seed"),
        },
        "signature": {
            "name": "serving_default",
            "inputs": {"image": {"dtype": "float32", "shape": shape,
                                 "range": "[0, 1]: pixel values / 255"}},
            "outputs": {
                "logits": {"dtype": "float32", "shape": [None, int(ticket.dataset["num_classes"])]},
                "probabilities": {"dtype": "float32",
                                  "shape": [None, int(ticket.dataset["num_classes"])]},
                "class_ids": {"dtype": "int64", "shape": [None]},
            },
        },
        "accuracy": {k: ticket.metrics.get(k) for k in metric_keys},
        "sparsity": {
            "remaining_pct": 100.0 * sum(alive.values()) / max(total, 1),
            "nonzero_weights": sum(alive.values()),
            "prunable_weights": total,
            "layers": layers,
        },
        "verification": verification,
        "size_bytes": sizes,
    }


def export(ticket, output, fmt="saved_model", quantize=False, overwrite=False,
           probe=None, progress=print, model=None, quantized_min_agreement=1.0):
    """Exports `ticket` to `output`; returns the ticket.json dict it wrote.

    Args:
      ticket: a `Ticket` (see `load_ticket`).
      output: the export directory to create.
      fmt: 'saved_model' or 'tflite'.
      quantize: dynamic-range quantization (TFLite only).
      overwrite: replace an existing export at `output`.
      probe: the `Probe` to verify on (None: 64 random images).
      progress: called with each line of the report.
      model: the ticket's masked Keras model, when already built.
      quantized_min_agreement: with `quantize`, the fraction of the probe's
        dataset class ids that must stay the same.

    Raises:
      errors.LotteryError: bad input or a failed verification; nothing written.
    """
    if fmt not in FORMATS:
        raise errors.LotteryError(f"--format={fmt} is not one of {', '.join(FORMATS)}")
    if quantize and fmt != "tflite":
        raise errors.LotteryError("--quantize applies to --format=tflite only")
    check_output(output, overwrite)
    model = model or keras_model(ticket)
    network = network_from_model(model)
    try:
        compact, reports = compaction.compact(network)
    except compaction.UnsupportedNetwork as e:
        raise errors.LotteryError(f"model {model.name} cannot be exported: {e}") from None
    if probe is None:
        probe = random_probe(ticket.dataset["input_shape"])
    if quantize and not probe.real:
        raise errors.LotteryError(QUANTIZE_NEEDS_DATASET)
    reference = model(probe.images, training=False).numpy()
    storages = storage_formats(compact)
    try:
        info = _write(ticket, output, fmt, quantize, overwrite, probe, compact, reports,
                      storages, reference, quantized_min_agreement)
    except OSError as e:
        raise errors.LotteryError(
            f"writing {output} failed: {e.strerror or e}; nothing written") from None
    _report(info, reports, output, progress)
    return info


def _write(ticket, output, fmt, quantize, overwrite, probe, compact, reports, storages,
           reference, quantized_min_agreement):
    """Writes, verifies and places the export; returns its ticket.json dict."""
    with staging_dir(output) as tmp:
        sizes = {}
        if fmt == "saved_model":
            save_saved_model(serving_module(compact, storage="auto"), tmp)
            outputs = run_saved_model(tmp, probe.images)
            verification = verify(reference, outputs, probe, "the compact SavedModel")
            sizes["variables"] = variable_bytes(tmp)
            ticket_path = os.path.join(tmp, "assets", TICKET_FILE)
            os.makedirs(os.path.dirname(ticket_path), exist_ok=True)
        else:
            storages = dict.fromkeys(storages, "tflite int8" if quantize else "tflite sparse")
            model_path = os.path.join(tmp, TFLITE_FILE)
            with open(model_path, "wb") as f:
                f.write(convert_tflite(compact, quantize))
            outputs = run_tflite(model_path, probe.images)
            verification = verify(reference, outputs, probe,
                                  "the quantized TFLite model" if quantize else "the TFLite model",
                                  quantized=quantize, min_agreement=quantized_min_agreement)
            ticket_path = os.path.join(tmp, TICKET_FILE)
        nonzeros = sum(int(np.count_nonzero(m)) for m in ticket.masks.values())
        sizes["nonzero_weight_bytes"] = 4 * nonzeros
        sizes["export_without_ticket_json"] = tree_bytes(tmp)
        info = _ticket_json(ticket, fmt, quantize, reports, storages, verification, sizes)
        with open(ticket_path, "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")
        place(tmp, output, overwrite)
    return info


def _report(info, reports, output, progress):
    source, sparsity = info["source"], info["sparsity"]
    accuracy = info["accuracy"].get("early_stop_test_accuracy")
    acc = f", early-stop test acc {100 * accuracy:.2f}%" if accuracy is not None else ""
    progress(f"round {source['round']} of {source['run_dir']} ({source['round_selection']}): "
             f"{sparsity['remaining_pct']:.2f}% weights remaining{acc}")
    parts = []
    for r in reports:
        storage = sparsity["layers"][r.name]["storage"]
        dead = r.inputs_kept - r.inputs_live
        note = f", {dead} dead inputs as zero rows" if dead else ""
        parts.append(f"{r.name} {r.inputs}x{r.units} -> {r.inputs_kept}x{r.units_kept} "
                     f"({storage}{note})")
    progress("compaction: " + "; ".join(parts))
    v = info["verification"]
    line = f"verified on {v['probe']}: max |logit diff| {v['max_abs_logit_diff']:.2g}"
    if v["class_ids_differing_random"]:
        line += (f", class ids identical on the dataset images, "
                 f"{v['class_ids_differing_random']} random images flipped")
    else:
        line += ", class ids identical"
    if "probe_accuracy_export" in v:
        line += (f"; accuracy on the dataset images {100 * v['probe_accuracy_export']:.2f}% "
                 f"(masked model {100 * v['probe_accuracy_masked']:.2f}%)")
    progress(line)
    sizes = info["size_bytes"]
    if "variables" in sizes:
        progress(f"wrote {output} ({info['format']}: {tree_bytes(output) / 1024:.1f} KiB in all; "
                 f"variables {sizes['variables'] / 1024:.1f} KiB = "
                 f"{sizes['variables'] / max(sizes['nonzero_weight_bytes'], 1):.2f} x nonzero "
                 "weight bytes)")
    else:
        size = os.path.getsize(os.path.join(output, TFLITE_FILE))
        progress(f"wrote {output} ({info['format']}: {TFLITE_FILE} {size / 1024:.1f} KiB)")


def main(argv):
    if len(argv) > 1:
        startup.fail(f"unexpected arguments: {' '.join(argv[1:])}")
    startup.quiet_logging()
    try:
        fmt = FLAGS.format
        if fmt not in FORMATS:
            raise errors.LotteryError(f"--format={fmt} is not one of {', '.join(FORMATS)}")
        if FLAGS.quantize and fmt != "tflite":
            raise errors.LotteryError("--quantize applies to --format=tflite only")
        if FLAGS.probe not in PROBES:
            raise errors.LotteryError(f"--probe={FLAGS.probe} is not one of {', '.join(PROBES)}")
        if not 0.0 <= FLAGS.quantized_min_agreement <= 1.0:
            raise errors.LotteryError(
                f"--quantized_min_agreement={FLAGS.quantized_min_agreement} is outside [0, 1]")
        if FLAGS.probe_size < 1:
            raise errors.LotteryError(f"--probe_size={FLAGS.probe_size} must be positive")
        if not (math.isfinite(FLAGS.best_tolerance) and FLAGS.best_tolerance >= 0):
            raise errors.LotteryError(
                f"--best_tolerance={FLAGS.best_tolerance} must not be negative")
        ticket = load_ticket(FLAGS.run, FLAGS.round, FLAGS.best_tolerance)
        output = FLAGS.output or default_output(ticket, fmt, FLAGS.quantize)
        check_output(output, FLAGS.overwrite)
        startup.start_tensorflow_quietly()
        # Refuse unsupported models before looking for probe data.
        model = keras_model(ticket)
        network_from_model(model)
        probe = probe_images(ticket, FLAGS.probe, FLAGS.probe_data_dir, FLAGS.probe_size)
        export(ticket, output, fmt, FLAGS.quantize, FLAGS.overwrite, probe,
               progress=lambda line: print(line, flush=True), model=model,
               quantized_min_agreement=FLAGS.quantized_min_agreement)
    except errors.LotteryError as e:
        startup.fail(str(e))


if __name__ == "__main__":
    from absl import app

    app.run(main)
