"""XLA is chosen per device and model family; an explicit --jit_compile wins where XLA can run."""

import tensorflow as tf

from lottery_tf.nn import models
from lottery_tf.train import distribute, xla


class XlaPolicyTest(tf.test.TestCase):
    def test_model_families(self):
        self.assertEqual(xla.model_family(models.build("lenet_300_100", (28, 28, 1), 10, 0)), "dense")
        for name in ("conv2", "vgg19"):
            self.assertEqual(xla.model_family(models.build(name, (32, 32, 3), 10, 0)), "conv", name)
        self.assertEqual(xla.model_family(models.build("resnet20", (32, 32, 3), 10, 0)), "residual")

    def test_default_follows_the_measured_table(self):
        strategy = tf.distribute.get_strategy()
        device = xla.device_type()
        for name, family in (("lenet_300_100", "dense"), ("conv2", "conv"), ("resnet20", "residual")):
            model = models.build(name, (32, 32, 3), 10, 0)
            self.assertEqual(xla.for_training(None, model, strategy, deterministic=True),
                             xla.TRAINING[(device, family)], name)
            self.assertEqual(xla.for_evaluation(None, model, strategy), xla.EVALUATION[(device, family)], name)

    def test_explicit_choice_wins_where_xla_can_run(self):
        strategy = tf.distribute.get_strategy()
        resnet = models.build("resnet20", (32, 32, 3), 10, 0)
        lenet = models.build("lenet_300_100", (28, 28, 1), 10, 0)
        self.assertTrue(xla.for_training(True, resnet, strategy, deterministic=True))
        self.assertFalse(xla.for_training(False, lenet, strategy, deterministic=True))
        self.assertTrue(xla.for_evaluation(True, resnet, strategy))
        self.assertFalse(xla.for_evaluation(False, lenet, strategy))

    def test_never_where_it_cannot_run(self):
        conv2 = models.build("conv2", (28, 28, 1), 10, 0)  # max-pooling: no deterministic XLA gradient
        self.assertFalse(xla.for_training(True, conv2, tf.distribute.get_strategy(), deterministic=True))
        self.assertTrue(xla.for_training(True, conv2, tf.distribute.get_strategy(), deterministic=False))
        mirrored = distribute.make("mirrored")  # two logical CPUs (conftest)
        with mirrored.scope():
            lenet = models.build("lenet_300_100", (28, 28, 1), 10, 0)
        self.assertFalse(xla.for_training(True, lenet, mirrored, deterministic=False))
        self.assertFalse(xla.for_evaluation(True, lenet, mirrored))
