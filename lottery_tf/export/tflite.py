"""The TFLite flatbuffer of a compact network, and running one."""

import dataclasses
import warnings

import numpy as np

from lottery_tf import quiet
from lottery_tf.export import ir, serving
from lottery_tf.export.ir import tf_module as _tf

TFLITE_FILE = "model.tflite"


def convert_tflite(network, quantize, calibration=None):
    """TFLite flatbuffer bytes of `network`: float32, or int8 weights.

    With `EXPERIMENTAL_SPARSITY` the converter stores a sparse kernel sparsely
    when that is smaller: in 1x4 blocks of its [out, in] rows for float
    weights and 1x16 blocks for int8 ones (the block shapes of
    FULLY_CONNECTED's sparse kernels), else unstructured, expanded by a
    DENSIFY op at load; `weight_encodings` reads what it chose.

    Int8 (TF 2.21, measured in docs/EXPORT.md): with dynamic-range
    quantization (int8 weights, float activations) TFLite's default XNNPACK
    delegate fails on int8 weights behind DENSIFY ("failed to delegate
    FULLY_CONNECTED node") and returns NaN for 1x16 block-sparse ones, so
    dynamic range keeps its int8 weights dense. Full-integer quantization
    (int8 weights and activations, float input and output) runs sparse 1x16
    int8 weights correctly in the default interpreter; it needs calibration
    images for the activation ranges.

    Args:
      network: an `ir.Network`.
      quantize: int8 weights.
      calibration: with `quantize`, images to calibrate full-integer
        quantization with (sparse int8 weights); None: dynamic range (dense
        int8 weights).
    """
    if not quantize:
        return convert(network, sparse=True)
    if calibration is None:
        return convert(network, quantize=True)
    return convert(network, quantize=True, sparse=True, calibration=calibration)


def convert(network, quantize=False, sparse=False, calibration=None):
    """The converter at given settings, without `convert_tflite`'s choices (benchmarks).

    Args:
      network: an `ir.Network`.
      quantize: int8 weights (`tf.lite.Optimize.DEFAULT`).
      sparse: `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`.
      calibration: images for full-integer quantization, or None.
    """
    tf = _tf()
    module, serve = serving.serving_module(network, storage="dense", constants=True)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], module)
    converter.optimizations = ([tf.lite.Optimize.DEFAULT] if quantize else []) + (
        [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    if calibration is not None:
        images = np.asarray(calibration, np.float32)
        converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
    with warnings.catch_warnings(), quiet.quiet_stderr():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected"
        return converter.convert()


def pad_inputs(network, size):
    """`network` with each fully-connected layer after another one reading whole `size` blocks.

    TFLite's sparse encoder (TF 2.21) silently drops the short last block of
    each row when the input size is not a multiple of the block (measured: a
    300-input layer in 1x16 blocks lost inputs 288-299), so the layer before
    gets zero units (kernel columns and bias) and this one zero rows. Exact:
    only zero weights read the added units. (Fully connected: a 2-D [in, out]
    stored kernel, with a `bias`.)
    """
    found = list(network.layers)
    for i in range(1, len(found)):
        before, layer = found[i - 1], found[i]
        kernel, previous = layer.stored_kernel(), before.stored_kernel()
        if kernel is None or previous is None or kernel.ndim != 2 or previous.ndim != 2:
            continue
        pad = -kernel.shape[0] % size
        if pad:
            found[i - 1] = dataclasses.replace(before, kernel=np.pad(previous, [(0, 0), (0, pad)]),
                                               bias=np.pad(before.bias, (0, pad)))
            found[i] = dataclasses.replace(layer, kernel=np.pad(kernel, [(0, pad), (0, 0)]))
    return dataclasses.replace(network, layers=found)


def short_blocks(network, size):
    """Names of the fully-connected layers whose input size is not a multiple of `size`
    (TFLite's sparse encoder would drop the short last block of each of their rows)."""
    return [layer.name for layer in ir.walk(network.layers)
            if layer.stored_kernel() is not None and layer.stored_kernel().ndim == 2
            and layer.stored_kernel().shape[0] % size]


def weight_encodings(model_bytes, network):
    """How the converter stored each weighted layer's kernel in the flatbuffer.

    Read from the flatbuffer itself (each tensor's `sparsity` field): the
    weighted operators (FULLY_CONNECTED, CONV_2D), in graph order, are matched
    to `network`'s layers with kernels, checking shapes.

    Returns:
      layer name -> {"dtype", "sparse": stored sparsely, "block": [1, n] for
      a block-sparse encoding (None: dense or not in blocks), "stored_blocks",
      "densified": a DENSIFY op expands it before the operator (so the
      operator runs dense)}; {} when the operators cannot be matched.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    ops = schema.BuiltinOperator
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]

    def opcode(op):
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode)

    producers = {int(out): op for op in graph.operators for out in op.outputs}
    weighted = [op for op in graph.operators if opcode(op) in (ops.FULLY_CONNECTED, ops.CONV_2D)]
    # Residual blocks hold their convolutions: walk into them (graph order checked by shape below).
    layers = [layer for layer in ir.walk(network.layers) if layer.stored_kernel() is not None]
    if len(weighted) != len(layers):
        return {}
    result = {}
    for op, layer in zip(weighted, layers):
        index = int(op.inputs[1])
        densify = producers.get(index)
        densified = densify is not None and opcode(densify) == ops.DENSIFY
        if densified:
            index = int(densify.inputs[0])
        tensor = graph.tensors[index]
        kernel = layer.stored_kernel()
        # TFLite kernels put the output axis first: [out, in] and [out, kh, kw, in].
        if list(tensor.shape) != [kernel.shape[-1], *kernel.shape[:-1]]:
            return {}
        entry = {"dtype": dtypes.get(tensor.type, str(tensor.type)), "sparse": False,
                 "block": None, "stored_blocks": None, "densified": densified}
        if tensor.sparsity is not None:
            dims = tensor.sparsity.dimMetadata
            blocked = tensor.sparsity.blockMap is not None and len(tensor.sparsity.blockMap)
            indices = [d.arrayIndices.values for d in dims if d.arrayIndices is not None]
            entry.update(sparse=True, block=[1, int(dims[-1].denseSize)] if blocked else None,
                         stored_blocks=int(len(indices[-1])) if indices else None)
            entry["holds_every_weight"] = _holds_every_weight(tensor.sparsity, kernel)
        result[layer.name] = entry
    return result


def _holds_every_weight(sparsity, kernel):
    """Whether a [out, in] encoding in row blocks stores every nonzero of `kernel` [in, out]
    (None for other encodings)."""
    dims = sparsity.dimMetadata
    if kernel.ndim != 2 or len(dims) != 3 or dims[1].arrayIndices is None:
        return None
    size, (inputs, units) = int(dims[2].denseSize), kernel.shape
    segments = np.asarray(dims[1].arraySegments.values, np.int64)
    indices = np.asarray(dims[1].arrayIndices.values, np.int64)
    stored = np.zeros((units, -(-inputs // size)), bool)
    stored[np.repeat(np.arange(units), np.diff(segments)), indices] = True
    covered = np.repeat(stored, size, axis=1)[:, :inputs]
    return bool(np.all(covered | (kernel.T == 0)))


def describe(encoding):
    """One phrase for a `weight_encodings` entry: 'int8, sparse in 1x16 blocks'."""
    if not encoding:
        return "tflite"
    if not encoding["sparse"]:
        how = "dense"
    elif encoding["densified"]:
        how = "sparse in the file, densified at load"
    elif encoding["block"]:
        how = f"sparse in {encoding['block'][0]}x{encoding['block'][1]} blocks"
    else:
        how = "sparse"
    return f"tflite {encoding['dtype']}, {how}"


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
