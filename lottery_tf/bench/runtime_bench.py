"""Latency per runtime, dense model vs tickets side by side: `python -m lottery_tf.export_benchmark`.

For LeNet-300-100 tickets pruned unstructured, in 1x4 blocks and in 1x16
blocks (`--block`), and the dense network they came from (round 0 of the
first run), it times in one run, one thread, every variant interleaved call
by call (`export_bench.interleaved`):

* SavedModel, loaded with `tf.saved_model.load` (dense: a plain SavedModel of
  the dense weights; tickets: `lottery-tf export`);
* TFLite float32 (dense: converted without sparsity; tickets: `lottery-tf
  export --format=tflite`);
* TFLite int8, full integer (dense: calibrated like the tickets, no
  sparsity; block tickets: `lottery-tf export --format=tflite --quantize`,
  sparse 1x16 int8 weights; the unstructured ticket: the same converter
  settings on its compact network);
* TFLite int8, dynamic range (dense int8 weights; the unstructured ticket's
  `--quantize` export; for block tickets also with sparse 1x16 int8 weights,
  which XNNPACK gets wrong or fails to prepare);

each TFLite file with `tf.lite.Interpreter`'s default delegate (XNNPACK) and
without (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`), at each batch size. Each
file's logits are compared with its masked model's on the test images
first (one agreeing on fewer than MIN_AGREEMENT of the class ids, or failing
to load, is not timed), and what the converter stored per layer is read
from the flatbuffer. The tables go to stdout and, between markers, into
`--runtime_bench_doc`.
"""

import os
import tempfile
import warnings

import numpy as np
from absl import flags

from lottery_tf import errors, quiet
from lottery_tf.bench.export_bench import _fmt, interleaved
from lottery_tf.cli import app

KIB = 1024
BEGIN = "<!-- runtime benchmark: begin (written by python -m lottery_tf.export_benchmark) -->"
END = "<!-- runtime benchmark: end -->"
TICKETS = ("none", "1x4", "1x16")
# A file whose class ids agree with its masked model's on fewer test images is not timed.
MIN_AGREEMENT = 0.9


# --- the models -----------------------------------------------------------------------


def _interpreter(model_bytes, xnnpack, batch, images):
    """A one-thread `tf.lite.Interpreter` resized to `batch`, its input set; and its logits index."""
    import tensorflow as tf

    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings(), quiet.quiet_stderr():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(
            model_content=model_bytes, num_threads=1,
            experimental_op_resolver_type=(resolver.BUILTIN if xnnpack
                                           else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        runner = interpreter.get_signature_runner()
        (image,) = runner.get_input_details().values()
        logits = runner.get_output_details()["logits"]["index"]
        del runner
        interpreter.resize_tensor_input(image["index"], [batch, *images.shape[1:]])
        interpreter.allocate_tensors()
    interpreter.set_tensor(image["index"], images[:batch])
    return interpreter, logits


def _tflite_files(name, network, ticket_run, r, probe, out_dir):
    """{mode: bytes} of one model's TFLite files, and their per-layer encodings."""
    from lottery_tf import export
    from lottery_tf.export import compaction, exporter, tflite

    calibration = probe.images[:probe.real][:exporter.CALIBRATION_IMAGES]
    files = {}
    if ticket_run is None:  # the dense network: no sparsity anywhere
        files["float"] = tflite.convert(network)
        files["int8 full integer"] = tflite.convert(tflite.pad_inputs(network, 16), True,
                                                    calibration=calibration)
        files["int8 dynamic range"] = tflite.convert(network, True)
        return files
    ticket = export.load_ticket(ticket_run, str(r))
    modes = (("float", False), ("int8 full integer" if exporter.block_structured(ticket)
                                else "int8 dynamic range", True))
    for mode, quantize in modes:
        path = os.path.join(out_dir, f"{name}_{'int8' if quantize else 'float'}")
        export.export(ticket, path, fmt="tflite", quantize=quantize, probe=probe,
                      progress=lambda line: None, quantized_min_agreement=0.99)
        with open(os.path.join(path, tflite.TFLITE_FILE), "rb") as f:
            files[mode] = f.read()
    if exporter.block_structured(ticket):
        files["int8 dynamic range"] = tflite.convert(network, True)
        files["int8 dynamic range, sparse"] = tflite.convert(
            tflite.pad_inputs(network, 16), True, sparse=True)
    else:  # what full integer does with unstructured sparsity
        files["int8 full integer"] = tflite.convert(
            compaction.compact(network)[0], True, sparse=True, calibration=calibration)
    return files


def measure(runs, r, probe, test_images, batch_sizes, repeats, calls, out_dir):
    """Sizes, encodings, logit checks and latencies of every model and runtime."""
    import tensorflow as tf

    from lottery_tf import export
    from lottery_tf.export import compaction, serving, tflite

    models, rows = {}, {}
    first = runs[TICKETS[0]]
    dense_ticket = export.load_ticket(first, "0")
    for name, run, rnd in [("dense", None, 0)] + [(b, runs[b], r[b]) for b in TICKETS]:
        ticket = dense_ticket if run is None else export.load_ticket(run, str(rnd))
        model = export.keras_model(ticket)
        network = export.network_from_model(model)
        reference = model(test_images, training=False).numpy()
        path = os.path.join(out_dir, f"{name}_saved_model")
        if run is None:
            serving.save_saved_model(serving.serving_module(network, storage="dense"), path)
        else:
            export.export(ticket, path, probe=probe, progress=lambda line: None, model=model)
        files = _tflite_files(name, export.network_from_model(model), run, rnd, probe, out_dir)
        remaining = 100.0 * sum(int(np.count_nonzero(m)) for m in ticket.masks.values()) / sum(
            m.size for m in ticket.masks.values())
        models[name] = {"saved_model": path, "files": files, "reference": reference,
                        "remaining_pct": remaining, "round": rnd}
        info = rows.setdefault(name, {})
        for mode, data in files.items():
            # Block tickets' files hold the padded uncompacted network, the unstructured
            # ticket's export the compact one.
            encodings = (tflite.weight_encodings(data, tflite.pad_inputs(network, 16))
                         or tflite.weight_encodings(data, network)
                         or tflite.weight_encodings(data, compaction.compact(network)[0]))
            checks = {}
            for xnnpack in (True, False):
                try:
                    interp, index = _interpreter(data, xnnpack, len(test_images), test_images)
                except RuntimeError as e:  # e.g. XNNPACK on int8 weights behind DENSIFY
                    checks[xnnpack] = "fails: " + str(e).splitlines()[0][:60]
                    continue
                interp.invoke()
                logits = interp.get_tensor(index)
                checks[xnnpack] = (float(np.max(np.abs(logits - reference))),
                                   float(np.mean(logits.argmax(-1) == reference.argmax(-1))))
            info[mode] = {"bytes": len(data), "encodings": encodings, "max_logit_diff": checks}
    latency = {}
    for batch in batch_sizes:
        images = test_images[:batch]
        variants, keep = {}, []
        for name, m in models.items():
            loaded = tf.saved_model.load(m["saved_model"])
            keep.append(loaded)
            serve, x = loaded.signatures["serving_default"], tf.constant(images)
            variants[(name, "SavedModel", None)] = (
                lambda serve=serve, x=x: serve(image=x)["class_ids"].numpy())
            for mode, data in m["files"].items():
                for xnnpack in (True, False):
                    check = rows[name][mode]["max_logit_diff"][xnnpack]
                    if isinstance(check, str) or not check[1] >= MIN_AGREEMENT:
                        continue  # failures and wrong answers are not timed
                    interp, _ = _interpreter(data, xnnpack, batch, images)
                    keep.append(interp)
                    variants[(name, f"TFLite {mode}", xnnpack)] = interp.invoke
        n = calls if batch == 1 else max(1, calls // 4)
        # `interleaved` shuffles names with numpy: string keys, not tuples.
        keys = {repr(key): key for key in variants}
        timed = interleaved({repr(key): fn for key, fn in variants.items()}, repeats, n, warmup=10)
        latency[batch] = {keys[k]: v for k, v in timed.items()}
        print(f"batch {batch}: {len(variants)} variants x {repeats} repeats x {n} calls timed",
              flush=True)
    return models, rows, latency


# --- the report ------------------------------------------------------------------------------


def _encoding_cell(encodings):
    from lottery_tf.export import tflite

    if not encodings:
        return "–"
    return "; ".join(f"{layer}: {tflite.describe(e).replace('tflite ', '')}"
                     for layer, e in encodings.items())


def report(models, rows, latency, repeats, calls):
    """The markdown tables and the targets, as a list of lines."""
    lines = ["| model | remaining | TFLite file | size | stored weights per layer (read from the "
             "flatbuffer) | max \\|logit diff\\| vs masked model (class ids agreeing), XNNPACK on / off |",
             "| --- | ---: | --- | ---: | --- | ---: |"]
    for name, modes in rows.items():
        for mode, info in modes.items():
            on, off = (c if isinstance(c, str) else f"{c[0]:.2g} ({100 * c[1]:.0f} %)"
                       for c in (info["max_logit_diff"][x] for x in (True, False)))
            lines.append(f"| {name} | {models[name]['remaining_pct']:.2f} % | {mode} "
                         f"| {info['bytes'] / KIB:.1f} KiB | {_encoding_cell(info['encodings'])} "
                         f"| {on} / {off} |")
    names = list(models)
    for batch, stats in latency.items():
        n = calls if batch == 1 else max(1, calls // 4)
        lines += ["", f"Batch {batch}: µs per call, median of {repeats} repeat medians "
                  f"({n} calls each, all variants interleaved call by call; min–max of the "
                  "repeat medians); ratio = ticket / dense in the same runtime.", "",
                  "| runtime | XNNPACK | " + " | ".join(names) + " | "
                  + " | ".join(f"{t} / dense" for t in names[1:]) + " |",
                  "| --- | --- | " + " | ".join(["---:"] * (2 * len(names) - 1)) + " |"]
        runtimes = []
        for (_, runtime, xnnpack) in stats:
            if (runtime, xnnpack) not in runtimes:
                runtimes.append((runtime, xnnpack))
        for runtime, xnnpack in runtimes:
            cells = [_fmt(stats[(n, runtime, xnnpack)]) if (n, runtime, xnnpack) in stats else "–"
                     for n in names]
            base = stats.get(("dense", runtime, xnnpack))
            ratios = [f"{stats[(n, runtime, xnnpack)][0] / base[0]:.2f}"
                      if base and (n, runtime, xnnpack) in stats else "–" for n in names[1:]]
            flag = "–" if xnnpack is None else ("on" if xnnpack else "off")
            lines.append(f"| {runtime} | {flag} | " + " | ".join(cells + ratios) + " |")
    lines += ["", "Targets (ratios of medians, batch 1 unless said):", ""] + _targets(latency)
    return lines


def _best(stats, name, runtime):
    """The faster of XNNPACK on and off: (median µs, setting), or None."""
    found = [(stats[(name, runtime, x)][0], x) for x in (True, False) if (name, runtime, x) in stats]
    return min(found) if found else None


def _targets(latency):
    lines = []
    one = latency.get(1)
    if one:
        for label, ticket, runtime, limit in (
                ("1x4 ticket, TFLite float", "1x4", "TFLite float", 0.3),
                ("1x16 ticket, TFLite int8 (full integer)", "1x16", "TFLite int8 full integer", 0.6),
                ("1x16 ticket, TFLite int8 (dynamic range, sparse) vs dense int8 dynamic range",
                 "1x16", "TFLite int8 dynamic range, sparse", 0.6)):
            mine = _best(one, ticket, runtime)
            dense_runtime = runtime.replace(", sparse", "")
            dense = _best(one, "dense", dense_runtime)
            if mine and dense:
                ratio = mine[0] / dense[0]
                lines.append(f"- {label} / dense (each at its faster XNNPACK setting: "
                             f"{'on' if mine[1] else 'off'} / {'on' if dense[1] else 'off'}): "
                             f"{ratio:.2f} (target <= {limit}): "
                             f"{'met' if ratio <= limit else 'MISSED'}")
    for batch, stats in latency.items():
        for ticket in TICKETS:
            key, base = (ticket, "SavedModel", None), ("dense", "SavedModel", None)
            if key in stats and base in stats:
                ratio = stats[key][0] / stats[base][0]
                lines.append(f"- SavedModel {ticket} ticket / dense, batch {batch}: {ratio:.3f} "
                             f"(target <= 1.0): {'met' if ratio <= 1.0 else 'MISSED'}")
    return lines


def write_doc(path, lines):
    """Replaces the text between BEGIN and END in `path` (appends them if missing)."""
    with open(path) as f:
        text = f.read()
    block = "\n".join([BEGIN, "", *lines, "", END])
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


class RuntimeBenchmarkCommand(app.Command):
    name = "export_benchmark"
    summary = ("Latency per runtime: the dense model and unstructured, 1x4 and 1x16 block tickets "
               "as SavedModel and TFLite (float, int8; XNNPACK on and off).")

    def define_flags(self, fv):
        def define(kind, name, default, help_text):
            getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)

        define("list", "runtime_bench_runs", [],
               "none=RUN,1x4=RUN,1x16=RUN: LeNet-300-100 runs pruned with each --block; "
               "round 0 of the first is the dense model.")
        define("string", "runtime_bench_round", "last",
               "Round of each run to time: a number or 'last'.")
        define("string", "runtime_bench_data_dir", "", "TFDS data dir with MNIST; empty for "
               "$TFDS_DATA_DIR.")
        define("integer", "runtime_bench_repeats", 9, "Interleaved timed repeats.")
        define("integer", "runtime_bench_calls", 100,
               "Calls per repeat and variant at batch 1 (a quarter at larger batches).")
        define("list", "runtime_bench_batch_sizes", ["1", "256"], "Batch sizes to time.")
        define("string", "runtime_bench_doc", "docs/EXPORT.md",
               "Markdown file whose benchmark section is replaced; empty: stdout only.")

    def run(self, fv):
        runs = dict(item.split("=", 1) for item in fv.runtime_bench_runs if "=" in item)
        if sorted(runs) != sorted(TICKETS):
            raise errors.LotteryError(
                "--runtime_bench_runs must name one run for each of none, 1x4 and 1x16 "
                "(none=RUN,1x4=RUN,1x16=RUN)")
        try:
            batch_sizes = [int(b) for b in fv.runtime_bench_batch_sizes]
        except ValueError:
            raise errors.LotteryError("--runtime_bench_batch_sizes must be numbers") from None
        if min(fv.runtime_bench_repeats, fv.runtime_bench_calls, *batch_sizes) < 1:
            raise errors.LotteryError("--runtime_bench_repeats, --runtime_bench_calls and "
                                      "--runtime_bench_batch_sizes must be positive")
        from lottery_tf import export
        from lottery_tf.lottery.run_dir import RunDir
        from lottery_tf.train import data

        rounds = {}
        for block, run in runs.items():
            complete = RunDir(run).complete_rounds() if os.path.isdir(run) else []
            if not complete:
                raise errors.LotteryError(f"{run} has no complete round: train it first")
            rounds[block] = (max(complete) if fv.runtime_bench_round == "last"
                             else int(fv.runtime_bench_round))
        probe = export.probe_images(export.load_ticket(runs["none"], "0"), "dataset",
                                    fv.runtime_bench_data_dir, 1000)
        test = data.load("mnist", data_dir=fv.runtime_bench_data_dir or None, validation_size=1)
        test_images = next(iter(test.test))[0].numpy()[:max(batch_sizes)]
        with tempfile.TemporaryDirectory(prefix="lottery_runtime_bench_") as out_dir:
            models, rows, latency = measure(runs, rounds, probe, test_images, batch_sizes,
                                            fv.runtime_bench_repeats, fv.runtime_bench_calls,
                                            out_dir)
        lines = report(models, rows, latency, fv.runtime_bench_repeats, fv.runtime_bench_calls)
        print("\n".join(lines))
        if fv.runtime_bench_doc:
            write_doc(fv.runtime_bench_doc, lines)
            print(f"wrote the tables into {fv.runtime_bench_doc}")
