"""TFLite export: float (sparse tensors) and dynamic-range quantized, both verified."""

import json
import os
import re

import numpy as np
import tensorflow as tf

from conftest import mock_tfds
from export.helpers import (lenet_run, masked_reference, random_images, random_weights,
                            run_export, write_run)
from lottery_tf.export import tflite
from lottery_tf.lottery.storage import write_json
from lottery_tf.nn import models
from lottery_tf.pruning import blocks


def block_run(path, block, density=0.05, seed=3):
    """A --block run: round 1 keeps `density` of each kernel's blocks (fc1 units 0-4 dead too)."""
    size = blocks.block_size(block)
    rng = np.random.default_rng(seed)
    model = models.build("lenet_300_100", (28, 28, 1), 10, seed=0)
    masks = {}
    for name, shape in (("fc1", (784, 300)), ("fc2", (300, 100)), ("output", (100, 10))):
        grid = rng.random((-(-shape[0] // size), shape[1])) < (0.3 if name == "output" else density)
        masks[name] = np.repeat(grid, size, axis=0)[:shape[0]].astype(np.float32)
    masks["fc1"][:, :5] = 0  # dead units: compaction would drop fc2's rows 0-4
    dense = {name: np.ones_like(m) for name, m in masks.items()}
    write_run(path, rounds={0: (dense, random_weights(model, dense, 0)),
                            1: (masks, random_weights(model, masks, 1))})
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    write_json(os.path.join(path, "config.json"), {**config, "block": block})
    return masks


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


class BlockSparseTfliteTest(tf.test.TestCase):
    def test_block_tickets_reach_the_sparse_kernels_in_their_layout(self):
        # Float weights go to FULLY_CONNECTED's 1x4 kernel, int8 ones to its 1x16 one; the
        # converter's stored block count equals the ticket's live blocks along Keras's input
        # axis (blocks across output units would need about 4x or 16x as many).
        images = random_images(50, seed=5)
        for block, quantize in (("1x4", False), ("1x16", True)):
            run_dir = os.path.join(self.get_temp_dir(), f"run_{block}")
            masks = block_run(run_dir, block)
            size = blocks.block_size(block)
            out = os.path.join(self.get_temp_dir(), f"tflite_{block}")
            args = [f"--run={run_dir}", "--round=1", "--format=tflite", f"--output={out}",
                    "--probe_size=100"]
            if quantize:  # random weights and images: logits near ties flip under int8
                args += ["--quantize", "--quantized_min_agreement=0.5"]
            with mock_tfds():
                status, stdout, stderr = run_export(args)
            self.assertEqual(status, 0, stderr)
            self.assertIn(f"not compacted (--block={block}", stdout)
            with open(os.path.join(out, "ticket.json")) as f:
                ticket = json.load(f)
            self.assertFalse(ticket["sparsity"]["compacted"])
            layers = ticket["sparsity"]["layers"]
            for name in ("fc1", "fc2"):
                encoding = layers[name]["tflite_weights"]
                live = blocks.pool({name: masks[name]}, {name: masks[name]}, size)[1][name]
                self.assertEqual(encoding, {
                    "dtype": "int8" if quantize else "float32", "sparse": True,
                    "block": [1, size], "stored_blocks": int(live.sum()), "densified": False,
                    "holds_every_weight": True},
                    f"{block} {name}")
                self.assertIn(f"sparse in 1x{size} blocks", layers[name]["storage"])
            outputs = tflite.run_tflite(os.path.join(out, "model.tflite"), images)
            reference = masked_reference(run_dir, 1, images)
            if quantize:  # in the default interpreter (XNNPACK), finite and near
                self.assertEqual(ticket["format"], "tflite_full_integer_quantized")
                flips = ticket["verification"]["class_ids_differing_dataset"]
                if flips:  # the report line says so (it once said "identical")
                    self.assertIn(f", {flips} dataset and ", stdout)
                self.assertLess(np.abs(outputs["logits"] - reference).max(),
                                0.2 * np.abs(reference).max())
            else:
                self.assertAllClose(outputs["logits"], reference, atol=1e-5, rtol=0)

    def test_a_refused_int8_export_names_the_agreement_that_accepts_it(self):
        # Full-integer int8 flips class ids near ties (random weights: many); the refusal's
        # advice must work as given.
        run_dir = os.path.join(self.get_temp_dir(), "run_q")
        block_run(run_dir, "1x16")
        out = os.path.join(self.get_temp_dir(), "tflite_q")
        args = [f"--run={run_dir}", "--round=1", "--format=tflite", "--quantize",
                "--probe_size=100", f"--output={out}"]
        with mock_tfds():
            status, _, stderr = run_export(args)
            self.assertEqual(status, 2, stderr)
            self.assertRegex(stderr, r"\d+ of 100 dataset class ids differ, more than "
                                     r"--quantized_min_agreement=1 allows \(accuracy on them ")
            self.assertFalse(os.path.exists(out))
            advice = re.search(r"to accept it, pass (--quantized_min_agreement=[0-9.]+)",
                               stderr).group(1)
            status, stdout, stderr = run_export(args + [advice])
        self.assertEqual(status, 0, stderr)
        with open(os.path.join(out, "ticket.json")) as f:
            verification = json.load(f)["verification"]
        self.assertGreater(verification["class_ids_differing_dataset"], 0)

    def test_padding_keeps_the_short_last_block_the_converter_drops(self):
        run_dir = os.path.join(self.get_temp_dir(), "run")
        block_run(run_dir, "1x16")
        from lottery_tf import export
        network = export.network_from_model(export.keras_model(export.load_ticket(run_dir, "1")))
        # fc2 reads 300 = 18 x 16 + 12 inputs: unpadded, the int8 encoding loses inputs 288-299.
        for padded, holds in ((False, False), (True, True)):
            net = tflite.pad_inputs(network, 16) if padded else network
            model = tflite.convert_tflite(net, True, random_images(20, seed=1))
            self.assertEqual(tflite.weight_encodings(model, net)["fc2"]["holds_every_weight"], holds)
            # What the export checks before converting (a layer padding cannot reach is refused).
            self.assertEqual(tflite.short_blocks(net, 16), [] if padded else ["fc2", "output"])  # 300, 100 inputs
            self.assertEqual(tflite.short_blocks(net, 4), [])
