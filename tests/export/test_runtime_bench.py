"""python -m lottery_tf.export_benchmark: its report and the doc section it rewrites."""

import os

import tensorflow as tf

from lottery_tf import errors
from lottery_tf.bench import runtime_bench
from lottery_tf.cli import app


def _stats(median):
    return (median, median * 0.9, median * 1.1)


class RuntimeBenchReportTest(tf.test.TestCase):
    def test_targets_compare_each_ticket_with_dense_in_the_same_runtime(self):
        latency = {1: {
            ("dense", "SavedModel", None): _stats(100.0),
            ("1x4", "SavedModel", None): _stats(99.0),
            ("dense", "TFLite float", True): _stats(20.0),
            ("dense", "TFLite float", False): _stats(30.0),
            ("1x4", "TFLite float", True): _stats(5.0),
            ("1x4", "TFLite float", False): _stats(4.0),
            ("dense", "TFLite int8 full integer", True): _stats(8.0),
            ("1x16", "TFLite int8 full integer", False): _stats(6.0),
        }}
        lines = runtime_bench._targets(latency)
        self.assertIn("- 1x4 ticket, TFLite float / dense (each at its faster XNNPACK setting: "
                      "off / on): 0.20 (target <= 0.3): met", lines)
        self.assertIn("- 1x16 ticket, TFLite int8 (full integer) / dense (each at its faster "
                      "XNNPACK setting: off / on): 0.75 (target <= 0.6): MISSED", lines)
        self.assertIn("- SavedModel 1x4 ticket / dense, batch 1: 0.990 (target <= 1.0): met", lines)

    def test_doc_section_is_replaced_between_markers(self):
        path = os.path.join(self.get_temp_dir(), "doc.md")
        with open(path, "w") as f:
            f.write("# Title\n\nbefore\n")
        runtime_bench.write_doc(path, ["| a |", "old"])
        with open(path, "a") as f:
            f.write("\nafter\n")
        runtime_bench.write_doc(path, ["| b |"])
        with open(path) as f:
            text = f.read()
        self.assertEqual(text, "# Title\n\nbefore\n\n" + runtime_bench.BEGIN + "\n\n| b |\n\n"
                         + runtime_bench.END + "\n\nafter\n")

    def test_runs_must_name_every_block_shape(self):
        command = runtime_bench.RuntimeBenchmarkCommand()
        fv, _ = app.parse(command, ["bench", "--runtime_bench_runs=none=a,1x4=b"])
        with self.assertRaisesRegex(errors.LotteryError, "one run for each of none, 1x4 and 1x16"):
            command.run(fv)
