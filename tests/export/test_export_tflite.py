"""TFLite export: float (sparse tensors) and dynamic-range quantized, both verified."""

import json
import os

import numpy as np
import tensorflow as tf

from conftest import mock_tfds
from export.helpers import lenet_run, masked_reference, random_images, run_export
from lottery_tf.export import tflite


class TfliteExportTest(tf.test.TestCase):
    def test_float_and_quantized_tflite_are_verified_and_sized(self):
        run_dir = os.path.join(self.get_temp_dir(), "run")
        lenet_run(run_dir)
        images = random_images(50, seed=21)
        reference = masked_reference(run_dir, 1, images)
        for quantize in (False, True):
            out = os.path.join(self.get_temp_dir(), f"tflite_{quantize}")
            args = [f"--run={run_dir}", "--round=1", "--format=tflite", f"--output={out}",
                    "--probe_size=100"]
            with mock_tfds():  # "dataset" images: TFDS mock MNIST
                status, stdout, stderr = run_export(args + (["--quantize"] if quantize else []))
            self.assertEqual(status, 0, stderr)
            self.assertEqual(sorted(os.listdir(out)), ["model.tflite", "ticket.json"])
            with open(os.path.join(out, "ticket.json")) as f:
                ticket = json.load(f)
            size = os.path.getsize(os.path.join(out, "model.tflite"))
            self.assertEqual(ticket["size_bytes"]["export_without_ticket_json"], size)
            self.assertIn(f"model.tflite {size / 1024:.1f} KiB", stdout)
            self.assertEqual(ticket["verification"]["class_ids_differing_dataset"], 0)
            self.assertIn("100 mnist test images + 64 random images", stdout)
            outputs = tflite.run_tflite(os.path.join(out, "model.tflite"), images)
            agree = np.mean(outputs["class_ids"] == reference.argmax(-1))
            if quantize:
                self.assertEqual(ticket["format"], "tflite_dynamic_range_quantized")
                self.assertGreater(ticket["verification"]["max_abs_logit_diff"], 1e-5)
                self.assertGreaterEqual(agree, 0.9)
            else:
                self.assertLessEqual(ticket["verification"]["max_abs_logit_diff"], 1e-5)
                self.assertAllClose(outputs["logits"], reference, atol=1e-5, rtol=0)
                # Sparse tensors are stored sparsely: far below the 4 x 266,200 dense bytes.
                self.assertLess(size, 0.25 * 4 * 266200)

    def test_quantized_export_needs_dataset_images(self):
        run_dir = os.path.join(self.get_temp_dir(), "run")
        lenet_run(run_dir)
        out = os.path.join(self.get_temp_dir(), "q")
        status, stdout, stderr = run_export([f"--run={run_dir}", "--round=1", "--format=tflite",
                                             "--quantize", "--probe=random", f"--output={out}"])
        self.assertEqual(status, 2)
        self.assertEqual(stderr.count("\n"), 1)
        self.assertIn("--quantize needs dataset images", stderr)
        self.assertFalse(os.path.exists(out))
