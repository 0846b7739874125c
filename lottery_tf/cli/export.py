"""`lottery-tf export`: one round of a run as a compact, verified model for serving.

    lottery-tf export --run=runs/quickstart --round=best
    lottery-tf export --run=runs/quickstart --round=7 --format=tflite --quantize

What it does, in order (any problem ends it with one line `lottery-tf: error:
...`, exit status 2, and nothing written):

1. Reads the round's masks and trained weights from the run directory and
   rebuilds the masked Keras model.
2. Compacts it (`lottery_tf.export.compaction`: dead and unread units and
   filters removed, constants folded into biases, dead inputs kept as zero
   rows) and stores each compact kernel densely, as values plus a bitmask, or
   as values plus uint16 position steps, whichever is smallest
   (`lottery_tf.export.storage`).
3. Writes a SavedModel (or a TFLite file) into a temporary directory next to
   the target, loads what was written back, and compares its outputs on a
   probe batch with the masked model's: the export is refused unless the
   logits agree within 1e-5 of their scale and every class id is the same.
4. Renames the temporary directory into place (an existing export only with
   --overwrite).

The serving contract is in `lottery_tf.export.serving`; docs/EXPORT.md has the
details and the measurements behind these choices.
"""

import math

from absl import flags

from lottery_tf import errors
from lottery_tf.cli import app


class ExportCommand(app.Command):
    name = "export"
    summary = "Exports one round of a run as a compact, verified SavedModel or TFLite model."

    def define_flags(self, fv):
        flags.DEFINE_string("run", "", "Run directory to export from (the training --output_dir).",
                            flag_values=fv)
        flags.DEFINE_string(
            "round", "best",
            "Round to export: a number, 'last' (the last complete round) or 'best' "
            "(the sparsest complete round whose early-stop validation accuracy is "
            "within --best_tolerance points of round 0's).", flag_values=fv)
        flags.DEFINE_float(
            "best_tolerance", 0.5,
            "For --round=best: accuracy points (percent) a round may lose against round 0.",
            flag_values=fv)
        flags.DEFINE_string(
            "output", "",
            "Export directory; empty for saved_models/<run name>_round_<NNN>[_tflite].",
            flag_values=fv)
        flags.DEFINE_string("format", "saved_model", "saved_model or tflite.", flag_values=fv)
        flags.DEFINE_boolean(
            "quantize", False,
            "With --format=tflite: int8 weights; dynamic-range quantization, or for a ticket "
            "pruned with --block full-integer quantization with sparse 1x16 int8 weights "
            "(calibrated on the probe's dataset images).", flag_values=fv)
        flags.DEFINE_boolean("overwrite", False, "Replace an existing export at --output.",
                             flag_values=fv)
        flags.DEFINE_string(
            "probe", "auto",
            "Verification inputs: 'dataset' (the run's test set plus random images), "
            "'random' (random images only) or 'auto' (dataset when prepared, else random).",
            flag_values=fv)
        flags.DEFINE_string(
            "probe_data_dir", "",
            "TFDS data dir for the probe batch; empty for the run's --data_dir, "
            "else TFDS's default ($TFDS_DATA_DIR).", flag_values=fv)
        flags.DEFINE_integer("probe_size", 1000, "Test-set images in the probe batch.",
                             flag_values=fv)
        flags.DEFINE_boolean(
            "check_input_range", False,
            "The SavedModel refuses images with values outside [0, 1] (raw 0-255 pixels give "
            "confident wrong answers otherwise); NaN and infinite values are always refused.",
            flag_values=fv)
        flags.DEFINE_float(
            "quantized_min_agreement", 1.0,
            "With --quantize: fraction of the probe's dataset images whose class id "
            "must stay the same (default: all of them).", flag_values=fv)

    @staticmethod
    def check_flags(fv):
        """Refuses flag values that cannot work, before anything is read."""
        from lottery_tf.export import check_format, probe

        check_format(fv.format, fv.quantize, fv.check_input_range)
        probe.check_mode(fv.probe)
        if not 0.0 <= fv.quantized_min_agreement <= 1.0:
            raise errors.LotteryError(
                f"--quantized_min_agreement={fv.quantized_min_agreement} is outside [0, 1]")
        if fv.probe_size < 1:
            raise errors.LotteryError(f"--probe_size={fv.probe_size} must be positive")
        if not (math.isfinite(fv.best_tolerance) and fv.best_tolerance >= 0):
            raise errors.LotteryError(
                f"--best_tolerance={fv.best_tolerance} must not be negative")

    def run(self, fv):
        from lottery_tf import export

        self.check_flags(fv)
        ticket = export.load_ticket(fv.run, fv.round, fv.best_tolerance)
        output = fv.output or export.default_output(ticket, fv.format, fv.quantize)
        export.check_output(output, fv.overwrite)
        # Refuse unsupported models before looking for probe data.
        model = export.keras_model(ticket)
        export.network_from_model(model)
        probe = export.probe_images(ticket, fv.probe, fv.probe_data_dir, fv.probe_size)
        export.export(ticket, output, fv.format, fv.quantize, fv.overwrite, probe,
                      progress=app.print_line, model=model,
                      quantized_min_agreement=fv.quantized_min_agreement,
                      check_input_range=fv.check_input_range)


if __name__ == "__main__":
    app.main(ExportCommand())
