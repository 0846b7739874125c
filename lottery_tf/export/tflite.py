"""The TFLite flatbuffer of a compact network, and running one."""

import warnings

import numpy as np

from lottery_tf import quiet
from lottery_tf.export import serving
from lottery_tf.export.ir import tf_module as _tf

TFLITE_FILE = "model.tflite"


def convert_tflite(network, quantize):
    """TFLite flatbuffer bytes of `network` (float32, or dynamic-range int8 weights)."""
    tf = _tf()
    module, serve = serving.serving_module(network, storage="dense", constants=True)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], module)
    # Float: sparse tensors stored sparsely in the flatbuffer (the runtime
    # densifies them). Quantized: int8 weights, stored densely (TFLite's
    # XNNPACK delegate refuses sparse int8 fully-connected weights).
    converter.optimizations = [tf.lite.Optimize.DEFAULT if quantize
                               else tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    with quiet.quiet_stderr():
        return converter.convert()


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
