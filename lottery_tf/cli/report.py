"""`lottery-tf report`: tables and figures over runs and trials (see report/)."""

import os

from absl import flags

from lottery_tf import errors
from lottery_tf.cli import app


class ReportCommand(app.Command):
    name = "report"
    summary = "Writes tables and figures over runs and their trials and branches."

    def define_flags(self, fv):
        flags.DEFINE_list("runs", [], "Run directories, or parents of trial_* run directories.",
                          flag_values=fv)
        flags.DEFINE_string("report_dir", "report", "Where tables and figures are written.",
                            flag_values=fv)
        flags.DEFINE_list("curve_rounds", [], "IMP rounds whose learning curves are plotted; "
                          "default: about five spread over the run.", flag_values=fv)
        flags.DEFINE_string("title", "", "Figure title prefix (default: model / dataset).",
                            flag_values=fv)
        flags.DEFINE_float("layers_at_remaining", 7.0, "Overall % of weights remaining at which "
                           "layer_sparsity_by_method.png compares the series' per-layer sparsities "
                           "(each series at its nearest level).", flag_values=fv)

    def run(self, fv):
        from lottery_tf.report import make_report

        try:
            curve_rounds = [int(r) for r in fv.curve_rounds]
        except ValueError:
            raise errors.LotteryError(
                f"--curve_rounds={','.join(fv.curve_rounds)} is not a list of rounds") from None
        if not 0.0 < fv.layers_at_remaining <= 100.0:
            raise errors.LotteryError(
                f"--layers_at_remaining={fv.layers_at_remaining} is outside (0, 100] (a percent of "
                "weights remaining)")
        rows = make_report(fv.runs, fv.report_dir, curve_rounds, fv.title, fv.layers_at_remaining)
        app.print_line(f"{len(rows)} rows -> {os.path.join(fv.report_dir, 'results.md')} and figures")
