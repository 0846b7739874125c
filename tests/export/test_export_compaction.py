"""Compaction (numpy) and sparse storage, checked against TensorFlow's own ops."""

import os

import numpy as np
import tensorflow as tf

from lottery_tf.export import compaction, ir, layers, serving, storage


def _tf_forward(network, x):
    """The uncompacted network run with TensorFlow ops (the independent reference)."""
    x = tf.constant(x, tf.float32)
    acts = {"relu": tf.nn.relu, "linear": tf.identity}
    for layer in network.layers:
        if isinstance(layer, layers.Dense):
            x = acts[layer.activation](tf.matmul(x, layer.kernel) + layer.bias)
        elif isinstance(layer, layers.Conv2D):
            x = tf.nn.conv2d(x, layer.kernel, list(layer.strides), layer.padding.upper())
            x = acts[layer.activation](x + layer.bias)
        elif isinstance(layer, layers.MaxPool2D):
            x = tf.nn.max_pool2d(x, list(layer.pool_size), list(layer.strides),
                                 layer.padding.upper())
        elif isinstance(layer, layers.Flatten):
            x = tf.reshape(x, [x.shape[0], -1])
    return x.numpy()


def _dense_network():
    """12 inputs -> 8 relu -> 6 relu -> 4 logits, with planted dead structure."""
    rng = np.random.default_rng(3)
    w1 = rng.normal(size=(12, 8)).astype(np.float32)
    w2 = rng.normal(size=(8, 6)).astype(np.float32)
    w3 = rng.normal(size=(6, 4)).astype(np.float32)
    b1 = rng.normal(size=8).astype(np.float32)
    b2 = rng.normal(size=6).astype(np.float32)
    b3 = rng.normal(size=4).astype(np.float32)
    w1[3] = 0                 # input 3 is dead
    w1[:, 2] = 0              # unit 2 has no live input: constant relu(0.7) = 0.7 ...
    b1[2] = 0.7               # ... which must reach layer 2's bias
    w2[5] = 0                 # unit 5 of layer 1 is read by nobody
    w2[:, 0] = 0
    w2[2, 0] = 1.5            # layer-2 unit 0 only reads the constant unit 2: constant too
    b2[0] = 0.2
    w2[:, 4] = 0
    b2[4] = -1.0              # layer-2 unit 4: no input, relu(-1) = 0
    return ir.Network((12,), [
        layers.Dense("d1", w1, b1, "relu"),
        layers.Dense("d2", w2, b2, "relu"),
        layers.Dense("d3", w3, b3, "linear"),
    ])


class CompactionTest(tf.test.TestCase):
    def test_dense_dead_units_with_bias_are_folded_exactly(self):
        network = _dense_network()
        x = np.random.default_rng(0).normal(size=(50, 12)).astype(np.float32)
        reference = _tf_forward(network, x)
        for gather in (False, True):
            compact, reports = compaction.compact(network, gather_inputs=gather)
            self.assertAllClose(ir.forward(compact, x), reference, atol=1e-5, rtol=0)
            d1, d2, d3 = reports
            # Layer 1 keeps units 0, 1, 3, 4, 6, 7: unit 2 is constant, unit 5 unread.
            self.assertEqual((d1.units_kept, d1.units_constant, d1.units_unread), (6, 1, 1))
            # Layer 2 keeps 1, 2, 3, 5: unit 0 (reads only a constant) and 4 are constant.
            self.assertEqual((d2.units_kept, d2.units_constant, d2.units_unread), (4, 2, 0))
            self.assertEqual((d2.inputs_live, d3.inputs_kept, d3.units_kept), (6, 4, 4))
            self.assertEqual(d1.inputs_live, 11)
            kernels = [layer.kernel.shape for layer in compact.layers
                       if isinstance(layer, layers.Dense)]
            self.assertEqual(kernels, [(11 if gather else 12, 6), (6, 4), (4, 4)])
            gathers = [layer for layer in compact.layers if isinstance(layer, layers.Gather)]
            self.assertLen(gathers, 1 if gather else 0)
        # The folded constants matter: dropping the dead units without folding is wrong.
        unfolded = ir.Network((12,), [
            layers.Dense("d1", network.layers[0].kernel, network.layers[0].bias, "relu"),
            layers.Dense("d2", network.layers[1].kernel * (np.arange(8) != 2)[:, None],
                             network.layers[1].bias, "relu"),
            network.layers[2]])
        self.assertGreater(np.abs(_tf_forward(unfolded, x) - reference).max(), 0.1)

    def test_dead_conv_filters_fold_into_a_bias_map_at_same_padding(self):
        rng = np.random.default_rng(1)
        k1 = (rng.normal(size=(3, 3, 3, 8)) * (rng.random((3, 3, 3, 8)) < 0.6)).astype(np.float32)
        b1 = rng.normal(0, 0.1, 8).astype(np.float32)
        k1[..., 2] = 0
        b1[2] = 0.8               # filter 2: constant 0.8, read by conv2 on every tap
        k1[..., 5] = 0
        b1[5] = 0.6               # filter 5: constant, read by conv2's centre tap only
        k1[:, :, 1, :] = 0        # input channel 1 dead
        k2 = (rng.normal(size=(3, 3, 8, 6)) * (rng.random((3, 3, 8, 6)) < 0.5)).astype(np.float32)
        k2[:, :, 2, :] = rng.normal(size=(3, 3, 6))
        k2[:, :, 5, :] = 0
        k2[1, 1, 5, :] = 1.0
        k2[:, :, 7, :] = 0        # conv1 filter 7 is read by nobody
        k3 = (rng.normal(size=(4 * 4 * 6, 5)) * (rng.random((96, 5)) < 0.3)).astype(np.float32)
        network = ir.Network((8, 8, 3), [
            layers.Conv2D("c1", k1, b1, "relu", padding="same"),
            layers.Conv2D("c2", k2, rng.normal(0, 0.1, 6).astype(np.float32), "relu",
                              padding="same"),
            layers.MaxPool2D("p", (2, 2), (2, 2), "valid"),
            layers.Flatten("f"),
            layers.Dense("d", k3, rng.normal(size=5).astype(np.float32), "linear"),
        ])
        for layer in (network.layers[0], network.layers[1], network.layers[4]):
            layer.kernel *= np.float32(0.2)  # logits O(1): float32 rounding well below 1e-5
        x = rng.random((20, 8, 8, 3)).astype(np.float32)
        reference = _tf_forward(network, x)
        compact, reports = compaction.compact(network)
        self.assertAllClose(ir.forward(compact, x), reference, atol=1e-5, rtol=0)
        c1, c2 = reports[:2]
        self.assertEqual((c1.units, c1.units_kept, c1.units_constant, c1.units_unread),
                         (8, 5, 2, 1))
        self.assertEqual((c1.inputs_live, c2.inputs_kept), (2, 5))
        self.assertFalse(c1.bias_map)
        self.assertTrue(c2.bias_map)  # the border sees fewer taps of filter 2 than the middle
        self.assertEqual(compact.layers[1].bias.shape, (8, 8, 6))
        # A plain bias vector (the interior value) would be wrong at the border.
        naive = ir.Network(compact.input_shape, list(compact.layers))
        naive.layers[1] = layers.Conv2D("c2", compact.layers[1].kernel,
                                            compact.layers[1].bias[4, 4], "relu", padding="same")
        self.assertGreater(np.abs(ir.forward(naive, x) - reference).max(), 1e-3)
        # With 'valid' padding every position sees every tap: a bias vector suffices.
        valid = ir.Network((8, 8, 3), [
            layers.Conv2D("c1", k1, b1, "relu", padding="valid"),
            layers.Conv2D("c2", k2, network.layers[1].bias, "relu", padding="valid"),
            layers.Flatten("f"),
            layers.Dense("d", k3[:4 * 4 * 6], network.layers[4].bias, "linear")])
        compact, reports = compaction.compact(valid)
        self.assertFalse(reports[1].bias_map)
        self.assertAllClose(ir.forward(compact, x), _tf_forward(valid, x), atol=1e-5,
                            rtol=0)

    def test_storage_formats_round_trip_and_the_smallest_is_chosen(self):
        rng = np.random.default_rng(2)
        cases = {
            "dense": rng.normal(size=(30, 20)),
            "half": rng.normal(size=(30, 20)) * (rng.random((30, 20)) < 0.5),
            "sparse": rng.normal(size=(300, 200)) * (rng.random((300, 200)) < 0.02),
            "empty": np.zeros((40, 5)),
            "long_gaps": np.zeros((70000, 3)),
            "conv": rng.normal(size=(3, 3, 4, 6)) * (rng.random((3, 3, 4, 6)) < 0.3),
        }
        cases["long_gaps"][0, 0] = cases["long_gaps"][-1, -1] = cases["long_gaps"][40000, 1] = 2.0
        expected = {"dense": "dense", "half": "bitmask", "sparse": "delta", "empty": "delta",
                    "long_gaps": "delta", "conv": "bitmask"}
        for name, kernel in cases.items():
            kernel = kernel.astype(np.float32)
            for fmt in storage.STORAGE_FORMATS:
                arrays = storage.encode(kernel, fmt)
                self.assertAllEqual(storage.decode(arrays, fmt, kernel.shape), kernel)
                self.assertEqual(sum(a.nbytes for a in arrays.values()),
                                 storage.storage_bytes(kernel, fmt), (name, fmt))
            self.assertEqual(storage.choose_storage(kernel), expected[name], name)
        self.assertEqual(storage.encode(cases["long_gaps"], "delta")["gaps"].dtype, np.uint16)

    def test_tensorflow_decoding_matches_for_every_format(self):
        network = _dense_network()
        x = np.random.default_rng(5).normal(size=(9, 12)).astype(np.float32)
        reference = _tf_forward(network, x)
        for fmt in storage.STORAGE_FORMATS:
            path = os.path.join(self.get_temp_dir(), fmt)
            serving.save_saved_model(serving.serving_module(network, storage=fmt), path)
            loaded = tf.saved_model.load(path)
            logits = loaded.signatures["serving_default"](image=tf.constant(x))["logits"]
            self.assertAllClose(logits, reference, atol=1e-5, rtol=0, msg=fmt)
