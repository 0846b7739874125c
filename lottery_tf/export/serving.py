"""The SavedModel: a `tf.Module` serving a compact network, and its load-time decoder.

Serving contract (signature `serving_default`): input `image`, float32 in
[0, 1] (pixel / 255), shape [batch, *dataset image shape], any batch size;
outputs `logits` (float32 [batch, classes]), `probabilities` (softmax of the
logits) and `class_ids` (int64 [batch]). Sparse kernels are densified into
their compact shape once, when the model is loaded (a resource initialized by
the SavedModel's init op, which `tf.saved_model.load` and TF Serving run), so
every call is plain dense matmuls/convolutions of the compact shapes. Each
layer's TensorFlow call is its IR class's `tf_call`.
"""

import os
import uuid

import numpy as np

from lottery_tf.export import ir
from lottery_tf.export import storage as kernel_storage
from lottery_tf.export.ir import tf_module as _tf


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

    TensorFlow twin of `storage.decode`, in as few graph nodes as possible
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


def _is_index(array):
    return np.issubdtype(array.dtype, np.integer)


def _recipe(pools, name, array, kernel_format):
    """How the loader rebuilds `array`: (format, {part: (pool, piece)}, shape).

    A layer's "kernel" in `kernel_format`; integer arrays as indices (uint16
    when they fit); any other array densely."""
    if name == "kernel":
        encoded = kernel_storage.encode(array, kernel_format)
        parts = {key: pools.add(_POOL_OF[key], value) for key, value in encoded.items()}
        return kernel_format, parts, array.shape
    if _is_index(array):
        small = array.size == 0 or (array.min() >= 0 and array.max() <= np.iinfo(np.uint16).max)
        return "index", {"kernel": pools.add("u16" if small else "ints", array)}, array.shape
    return "dense", {"kernel": pools.add("floats", array)}, array.shape


def _shaped_reader(variable, shape):
    def read():
        value = variable.value()
        value.set_shape(shape)
        return value
    return read


def serving_module(network, storage="auto", constants=False, check_range=False):
    """(tf.Module, serve tf.function) running `network` with the serving contract.

    Args:
      network: an `ir.Network` (compact or not).
      storage: 'auto' (the smallest encoding per kernel), or one of
        `storage.STORAGE_FORMATS` for every kernel. When every kernel is
        stored densely the module holds plain per-layer variables (what any
        dense SavedModel holds); otherwise the storage is packed into one
        variable per dtype, and runtime tensors are built when it is loaded.
      constants: tensors as graph constants (for TFLite conversion, which has
        no assertion ops: a TFLite model checks nothing of its input).
      check_range: also refuse pixels outside [0, 1] (e.g. raw 0-255 values).

    Non-finite input (NaN, ±inf) is always refused with an error naming it
    (unless `constants`): a served model must not turn invalid input into a
    plausible answer.

    A packed module can only run once saved and loaded again: its runtime
    variables are empty until the loader fills them.
    """
    tf = _tf()
    module = tf.Module(name="ticket")
    formats = kernel_storage.storage_formats(network, storage)
    packed = not constants and any(f != "dense" for f in formats.values())
    getters = {}  # layer name -> {array name -> getter}, for every layer and those it holds
    if packed:
        pools, runtime = _Pools(), []
        module.runtime = {}
        for layer in ir.walk(network.layers):
            tensors = {}
            for name, array in layer.arrays().items():
                recipe = _recipe(pools, name, array, formats.get(layer.name))
                dtype = tf.int32 if _is_index(array) else tf.float32
                # Saved empty: the loader assigns its value at load time.
                variable = tf.Variable(tf.zeros([0], dtype), shape=tf.TensorShape(None),
                                       trainable=False, name=f"{layer.name}/{name}")
                module.runtime[f"{layer.name}/{name}"] = variable
                runtime.append((variable, recipe))
                tensors[name] = _shaped_reader(variable, array.shape)
            getters[layer.name] = tensors
        module.storage = {kind: tf.Variable(array, trainable=False, name=kind)
                          for kind, array in pools.arrays().items()}
        module.loader = _loader_class()(module.storage, pools.sizes(), runtime)
    else:
        module.weights = {}
        for layer in ir.walk(network.layers):
            tensors = {}
            for name, array in layer.arrays().items():
                if constants:
                    tensors[name] = (lambda c: lambda: c)(tf.constant(array))
                else:
                    variable = tf.Variable(array, trainable=False, name=f"{layer.name}/{name}")
                    module.weights[f"{layer.name}/{name}"] = variable
                    tensors[name] = variable.value
            getters[layer.name] = tensors
    calls = [layer.tf_build(getters) for layer in network.layers]
    spec = tf.TensorSpec([None, *network.input_shape], tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(image):
        # Loaded signatures do not check shapes at run time: say it clearly here.
        x = tf.ensure_shape(image, spec.shape, name="check_image_shape")
        if not constants:
            x = tf.debugging.assert_all_finite(
                x, "image holds NaN or infinite values; send finite pixel values / 255")
        if check_range:
            with tf.control_dependencies([
                tf.debugging.assert_greater_equal(
                    x, 0.0, message="image values must be in [0, 1] (pixel values / 255)"),
                tf.debugging.assert_less_equal(
                    x, 1.0, message="image values must be in [0, 1] (pixel values / 255)"),
            ]):
                x = tf.identity(x)
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


def run_saved_model(path, images, batch_size=1024):
    """Outputs of the SavedModel at `path` (loaded with tf.saved_model.load) on `images`."""
    tf = _tf()
    loaded = tf.saved_model.load(path)  # keep it: its resources live as long as it does
    serve = loaded.signatures["serving_default"]
    parts = [serve(image=tf.constant(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return {key: np.concatenate([p[key].numpy() for p in parts]) for key in parts[0]}


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
