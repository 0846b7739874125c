"""SavedModel export end to end: compact, exact, served by TensorFlow alone.

The fresh-process serving test loads an export with `tf.saved_model.load`
only, in a new Python process that never imports lottery_tf.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import tensorflow as tf

from export.helpers import (class_tmp, lenet_run, masked_reference, random_images,
                            random_weights, run_export, write_run)
from lottery_tf import errors, export
from lottery_tf.export import serving
from lottery_tf.nn import models
from lottery_tf.nn.layers import masked_layers


class BestRoundTest(tf.test.TestCase):
    def test_best_is_the_sparsest_round_within_tolerance_of_round_0(self):
        metrics = {
            0: {"remaining_pct": 100.0, "early_stop_val_accuracy": 0.980},
            1: {"remaining_pct": 80.0, "early_stop_val_accuracy": 0.984},
            2: {"remaining_pct": 64.0, "early_stop_val_accuracy": 0.976},   # -0.4 points
            3: {"remaining_pct": 51.2, "early_stop_val_accuracy": 0.9749},  # -0.51 points
            4: {"remaining_pct": 41.0, "early_stop_val_accuracy": 0.970},
        }
        self.assertEqual(export.best_round(metrics, 0.5), 2)
        self.assertEqual(export.best_round(metrics, 1.0), 4)
        self.assertEqual(export.best_round(metrics, 0.0), 1)
        with self.assertRaisesRegex(errors.LotteryError, "round 0"):
            export.best_round({1: metrics[1]}, 0.5)


# --- the export end to end ------------------------------------------------------------------


class SavedModelExportTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = class_tmp("savedmodel")
        cls.run_dir = os.path.join(cls.tmp, "run")
        cls.rounds = lenet_run(cls.run_dir)
        cls.out = os.path.join(cls.tmp, "exports", "lenet_r1")
        cls.status, cls.stdout, cls.stderr = run_export(
            [f"--run={cls.run_dir}", "--round=1", f"--output={cls.out}", "--probe=random",
             "--probe_size=200"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def test_export_is_compact_and_matches_the_masked_model(self):
        self.assertEqual(self.status, 0, self.stderr)
        self.assertEqual(self.stderr, "")
        self.assertIn("verified on 200 random images", self.stdout)
        masks = self.rounds[1][0]
        images = random_images(300)
        reference = masked_reference(self.run_dir, 1, images)
        loaded = tf.saved_model.load(self.out)
        outputs = loaded.signatures["serving_default"](image=tf.constant(images))
        self.assertAllClose(outputs["logits"], reference, atol=1e-5, rtol=0)
        self.assertAllEqual(outputs["class_ids"], reference.argmax(-1))
        self.assertAllClose(outputs["probabilities"], tf.nn.softmax(reference), atol=1e-6)
        with open(os.path.join(self.out, "assets", "ticket.json")) as f:
            ticket = json.load(f)
        self.assertEqual(ticket["source"]["round"], 1)
        self.assertEqual(ticket["source"]["run_dir"], os.path.abspath(self.run_dir))
        self.assertEqual(ticket["versions"]["tensorflow"], tf.__version__)
        self.assertIn("lottery_tf", ticket["versions"])
        self.assertEqual(ticket["accuracy"]["early_stop_test_accuracy"], 0.9)
        nonzeros = sum(int(m.sum()) for m in masks.values())
        self.assertEqual(ticket["sparsity"]["nonzero_weights"], nonzeros)
        self.assertAllClose(ticket["sparsity"]["layers"]["fc1"]["remaining_pct"],
                            100 * masks["fc1"].mean())
        # The kept units, derived here from the masks alone: a unit is constant
        # without a live weight from a non-constant input, and kept when it is
        # not constant and a kept unit of the next layer reads it.
        fc1_constant = ~masks["fc1"].any(0)
        fc2_constant = ~masks["fc2"][~fc1_constant].any(0)
        fc2_kept = ~fc2_constant & masks["output"].any(1)
        fc1_kept = ~fc1_constant & masks["fc2"][:, fc2_kept].any(1)
        layers = ticket["sparsity"]["layers"]
        self.assertEqual((layers["fc1"]["units_constant"], layers["fc2"]["units_constant"]),
                         (10, 3))
        self.assertEqual(layers["fc1"]["units_kept"], int(fc1_kept.sum()))
        self.assertEqual(layers["fc2"]["units_kept"], int(fc2_kept.sum()))
        self.assertEqual(layers["fc1"]["inputs_live"],
                         int(masks["fc1"][:, fc1_kept].any(1).sum()))
        self.assertEqual(layers["fc1"]["inputs_kept"], 784)  # dead inputs: zero rows
        # Sparse storage: the variables cost about what the nonzeros cost.
        variables = serving.variable_bytes(self.out)
        self.assertEqual(ticket["size_bytes"]["variables"], variables)
        self.assertLess(variables, 1.6 * 4 * nonzeros + 4 * 1024)
        self.assertEqual(ticket["verification"]["class_ids_differing_random"], 0)
        self.assertLessEqual(ticket["verification"]["max_abs_logit_diff"], 1e-5)

    def test_signature_contract_and_clear_errors(self):
        loaded = tf.saved_model.load(self.out)
        serve = loaded.signatures["serving_default"]
        inputs = serve.structured_input_signature[1]
        self.assertEqual(list(inputs), ["image"])
        self.assertEqual(inputs["image"].dtype, tf.float32)
        self.assertEqual(inputs["image"].shape.as_list(), [None, 28, 28, 1])
        outputs = serve.structured_outputs
        self.assertEqual({k: v.dtype for k, v in outputs.items()},
                         {"logits": tf.float32, "probabilities": tf.float32,
                          "class_ids": tf.int64})
        for batch in (1, 3):
            out = serve(image=tf.zeros((batch, 28, 28, 1)))
            self.assertEqual(out["logits"].shape, (batch, 10))
        with self.assertRaisesRegex((TypeError, ValueError, tf.errors.InvalidArgumentError),
                                    "float.*uint8"):
            serve(image=tf.zeros((2, 28, 28, 1), tf.uint8))
        for wrong in ((2, 784), (2, 28, 28, 3), (28, 28, 1)):
            with self.assertRaisesRegex((TypeError, ValueError, tf.errors.InvalidArgumentError),
                                        r"image.*not compatible with expected shape \[\?,28,28,1\]"):
                serve(image=tf.zeros(wrong))

    def test_fresh_process_serves_with_tf_saved_model_load_only(self):
        images = random_images(64, seed=11)
        expected = masked_reference(self.run_dir, 1, images).argmax(-1)
        tmp = tempfile.mkdtemp(dir=self.get_temp_dir())
        np.save(os.path.join(tmp, "images.npy"), images)
        script = textwrap.dedent("""
            import sys
            import numpy as np
            import tensorflow as tf
            loaded = tf.saved_model.load(sys.argv[1])
            serve = loaded.signatures["serving_default"]
            images = np.load(sys.argv[2])
            print("classes", " ".join(map(str, serve(image=tf.constant(images))["class_ids"].numpy())))
            try:
                serve(image=tf.constant(images.astype(np.uint8)))
                print("wrong dtype accepted")
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
                print("dtype error:", str(e).splitlines()[0])
            print("lottery_tf imported:", any(m.startswith("lottery_tf") for m in sys.modules))
        """)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("PYTHONPATH", None)
        result = subprocess.run([sys.executable, "-c", script, self.out,
                                 os.path.join(tmp, "images.npy")],
                                capture_output=True, text=True, cwd=tmp, env=env, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
        self.assertEqual(lines["classes"], " ".join(map(str, expected)))
        self.assertRegex(lines["dtype"], "error: .*float.*uint8")
        self.assertEqual(lines["lottery_tf"], "imported: False")

    def test_saved_model_cli_lists_and_runs_the_signature(self):
        cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        show = subprocess.run([cli, "show", "--dir", self.out, "--all"],
                              capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn("signature_def['serving_default']", show.stdout)
        for text in ("inputs['image']", "DT_FLOAT", "(-1, 28, 28, 1)", "outputs['class_ids']",
                     "DT_INT64", "outputs['logits']", "outputs['probabilities']"):
            self.assertIn(text, show.stdout)
        # `run` loads through the TF1 session loader (restore, then the init op that
        # builds the compact kernels), the path TF Serving's C++ loader takes.
        images = random_images(5, seed=13)
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "x.npy")
        np.save(path, images)
        run = subprocess.run([cli, "run", "--dir", self.out, "--tag_set", "serve",
                              "--signature_def", "serving_default", "--inputs",
                              f"image={path}"], capture_output=True, text=True, env=env,
                             timeout=120)
        self.assertEqual(run.returncode, 0, run.stderr)
        expected = masked_reference(self.run_dir, 1, images).argmax(-1)
        classes = run.stdout.split("Result for output key class_ids:")[1].split("Result")[0]
        self.assertEqual([int(c) for c in classes.strip().strip("[]").split()], list(expected))


class ConvExportTest(tf.test.TestCase):
    def test_conv2_with_dead_filters_exports_exactly(self):
        shape = (8, 8, 3)
        model = models.build("conv2", shape, 10, seed=0)
        rng = np.random.default_rng(4)
        masks = {layer.name: (rng.random(layer.kernel.shape) < 0.3).astype(np.float32)
                 for layer in masked_layers(model)}
        masks["conv1"][..., :6] = 0          # dead conv1 filters, constant relu(bias) > 0
        masks["conv2"][:, :, :6, :] = 0
        masks["conv2"][:, :, 0, :] = 1       # conv2 reads dead filter 0 on every tap
        masks["conv2"][..., 60:] = 0         # dead conv2 filters
        weights = random_weights(model, masks, seed=4, positive_bias=("conv1", "conv2"))
        run_dir = os.path.join(self.get_temp_dir(), "run")
        write_run(run_dir, "conv2", shape, {0: (masks, weights)})
        out = os.path.join(self.get_temp_dir(), "conv2_export")
        ticket = export.load_ticket(run_dir, "0")
        info = export.export(ticket, out, probe=export.random_probe(shape, 100),
                             progress=lambda line: None)
        layers = info["sparsity"]["layers"]
        self.assertEqual((layers["conv1"]["units_constant"], layers["conv1"]["units_kept"]),
                         (6, 58))
        self.assertTrue(layers["conv2"]["bias_map"])
        self.assertEqual(layers["conv2"]["units_constant"], 4)  # 60-63: relu(bias) constants
        self.assertLessEqual(info["verification"]["max_abs_logit_diff"], 1e-5)
        images = random_images(40, shape, seed=3)
        loaded = tf.saved_model.load(out)
        logits = loaded.signatures["serving_default"](image=tf.constant(images))["logits"]
        self.assertAllClose(logits, masked_reference(run_dir, 0, images), atol=1e-5, rtol=0)
