"""What a served ticket does with invalid input, and an export onto a full disk."""

import os
import shutil
from unittest import mock

import numpy as np
import tensorflow as tf

from export.helpers import class_tmp, lenet_run, random_images, run_export, tree_files
from lottery_tf.export import serving, ticket_json


class InvalidInputTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = class_tmp("inputs")
        cls.run_dir = os.path.join(cls.tmp, "run")
        lenet_run(cls.run_dir)
        cls.plain = os.path.join(cls.tmp, "plain")
        cls.checked = os.path.join(cls.tmp, "checked")
        for out, extra in ((cls.plain, []), (cls.checked, ["--check_input_range"])):
            status, _, err = run_export([f"--run={cls.run_dir}", "--round=1", f"--output={out}",
                                         "--probe=random", *extra])
            assert status == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def _serve(self, path, images):
        loaded = tf.saved_model.load(path)
        return loaded.signatures["serving_default"](image=tf.constant(images))

    def test_non_finite_pixels_are_refused_never_answered(self):
        for path in (self.plain, self.checked):
            for value in (np.nan, np.inf, -np.inf):
                images = random_images(3)
                images[1, 4, 5, 0] = value
                with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                            "image holds NaN or infinite values"):
                    self._serve(path, images)
            # Finite images are answered as before.
            self.assertEqual(self._serve(path, random_images(3))["class_ids"].shape, [3])

    def test_raw_pixels_are_refused_only_with_the_range_check(self):
        raw = 255.0 * random_images(2)
        self.assertEqual(self._serve(self.plain, raw)["class_ids"].shape, [2])  # documented
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                    r"image values must be in \[0, 1\] \(pixel values / 255\)"):
            self._serve(self.checked, raw)
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, r"must be in \[0, 1\]"):
            self._serve(self.checked, -random_images(2))
        # The bounds themselves are valid.
        self._serve(self.checked, np.ones((1, 28, 28, 1), np.float32))
        self._serve(self.checked, np.zeros((1, 28, 28, 1), np.float32))

    def test_ticket_json_says_what_is_refused(self):
        import json

        for path, refused in ((self.plain, ["non-finite values (NaN, ±inf)"]),
                              (self.checked, ["non-finite values (NaN, ±inf)", "values outside [0, 1]"])):
            with open(os.path.join(path, "assets", ticket_json.TICKET_FILE)) as f:
                info = json.load(f)
            self.assertEqual(info["signature"]["inputs"]["image"]["refused"], refused)

    def test_range_check_is_for_saved_models_only(self):
        out = os.path.join(self.get_temp_dir(), "tflite")
        status, _, err = run_export([f"--run={self.run_dir}", "--round=1", f"--output={out}",
                                     "--format=tflite", "--check_input_range", "--probe=random"])
        self.assertEqual((status, err), (2, "lottery-tf: error: --check_input_range applies to "
                                            "--format=saved_model only (TFLite has no assertion ops)\n"))
        self.assertFalse(os.path.exists(out))


class FullDiskTest(tf.test.TestCase):
    def test_tensorflow_write_failure_is_one_line_and_leaves_nothing(self):
        tmp = self.get_temp_dir()
        run_dir = os.path.join(tmp, "run")
        lenet_run(run_dir)
        out = os.path.join(tmp, "export")

        def full_disk(module_and_serve, path):
            os.makedirs(os.path.join(path, "variables"), exist_ok=True)
            raise tf.errors.ResourceExhaustedError(
                None, None, f"{path}/variables/variables.data-00000-of-00001.tempstate; "
                "No space left on device\n\tand 40 more lines")

        before = tree_files(tmp)
        with mock.patch.object(serving, "save_saved_model", full_disk):
            status, out_text, err = run_export([f"--run={run_dir}", "--round=1", f"--output={out}",
                                                "--probe=random"])
        self.assertEqual(status, 2)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertRegex(err, r"^lottery-tf: error: writing .*export failed: .*No space left on "
                              r"device; nothing written\n$")
        self.assertEqual(tree_files(tmp), before)
