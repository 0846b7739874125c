import numpy as np
import tensorflow as tf

from lottery_tf import errors
from lottery_tf.nn import models
from lottery_tf.nn.layers import masked_layers


def _shapes(model):
    return {layer.name: tuple(layer.kernel.shape) for layer in masked_layers(model)}


class ModelRegistryTest(tf.test.TestCase):
    def test_lenet_300_100_matches_the_paper(self):
        model = models.build("lenet_300_100", (28, 28, 1), 10, seed=0)
        self.assertEqual(
            _shapes(model), {"fc1": (784, 300), "fc2": (300, 100), "output": (100, 10)}
        )
        groups = [layer.pruning_group for layer in masked_layers(model)]
        self.assertEqual(groups, ["fc", "fc", "output"])
        self.assertEqual(sum(np.prod(s) for s in _shapes(model).values()), 266200)

    def test_conv_nets_match_the_paper_on_cifar_shapes(self):
        # Kernel weights from the paper's architecture table. Its Table 1 rounds
        # Conv-2 to 4.3M and Conv-4 to 2.4M; it lists Conv-6 as 1.7M, which its
        # own layer list (and open_lth's Conv-6) puts at 2.26M.
        expected = {
            "conv2": (4_300_992, ["conv", "conv", "fc", "fc", "output"]),
            "conv4": (2_425_024, ["conv"] * 4 + ["fc", "fc", "output"]),
            "conv6": (2_261_184, ["conv"] * 6 + ["fc", "fc", "output"]),
        }
        for name, (weights, groups) in expected.items():
            model = models.build(name, (32, 32, 3), 10, seed=0)
            layers = masked_layers(model)
            self.assertEqual([layer.pruning_group for layer in layers], groups)
            count = sum(int(np.prod(layer.kernel.shape)) for layer in layers)
            self.assertEqual(count, weights, name)
            convs = [layer for layer in layers if layer.pruning_group == "conv"]
            self.assertEqual([c.kernel.shape[:2] for c in convs], [(3, 3)] * len(convs))
            self.assertEqual([layer.units for layer in layers[-3:]], [256, 256, 10])

    def test_input_shape_and_classes_come_from_the_dataset(self):
        for name in models.names():
            model = models.build(name, (28, 28, 1), 7, seed=0)
            out = model(tf.zeros((2, 28, 28, 1)))
            self.assertEqual(out.shape, (2, 7))

    def test_same_seed_same_init_other_seed_other_init(self):
        a = models.build("lenet_300_100", (28, 28, 1), 10, seed=3).get_weights()
        b = models.build("lenet_300_100", (28, 28, 1), 10, seed=3).get_weights()
        c = models.build("lenet_300_100", (28, 28, 1), 10, seed=4).get_weights()
        for x, y in zip(a, b):
            self.assertAllEqual(x, y)
        self.assertNotAllClose(a[0], c[0])
        # Glorot normal: std sqrt(2 / (fan_in + fan_out)).
        self.assertAllClose(np.std(a[0]), np.sqrt(2 / (784 + 300)), rtol=0.02)

    def test_unknown_model_lists_known_ones(self):
        with self.assertRaisesRegex(errors.LotteryError, "unknown model 'lenet5'.*conv2.*lenet_300_100.*resnet20, vgg19"):
            models.build("lenet5", (28, 28, 1), 10, seed=0)
