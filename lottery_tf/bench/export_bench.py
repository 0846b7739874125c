"""Export benchmark, dense vs compact side by side: `python -m lottery_tf.bench.export_bench`.

For LeNet-300-100 tickets at about 100 %, 21 %, 7 % and 3.6 % of the weights
(rounds of one IMP run on real MNIST; the run is trained first when the run
directory lacks them), it reports in one run:

* sizes: the dense export (a plain SavedModel of the masked weights, same
  signature) against the compact export (`lottery-tf export`), the compact
  variables per nonzero weight, and the TFLite files (float, dynamic-range
  quantized);
* serving latency of the dense and the compact SavedModel, both loaded with
  `tf.saved_model.load`, at batch 1 and batch 256;
* per layer, what each way of computing it costs (the uncompacted dense
  kernel, the compact kernel the export uses, the compact kernel behind a
  gather of the live inputs, `tf.sparse.sparse_dense_matmul`, and a scatter
  into the compact kernel on every call): the measurement behind the export's
  per-layer choice.

Timing: variants are interleaved call by call (in a new random order for
every round of calls), in `--export_bench_repeats` repeats of
`--export_bench_calls` calls of each, so a noisy machine slows them alike;
each figure is the median of the per-repeat medians (in µs per call,
including the Python call and fetching the result), with their min and max.
"""

import os
import shutil
import statistics
import tempfile
import time

import numpy as np
from absl import flags

from lottery_tf import errors
from lottery_tf.cli import app
from lottery_tf.export import compaction, layers as ir_layers, placement, serving, storage, tflite
from lottery_tf.export.probe import RANDOM_PROBE_SIZE
from lottery_tf.export.verify import LOGIT_TOLERANCE, scaled_logit_diff
from lottery_tf.lottery.run_dir import RunDir

KIB = 1024


# --- timing ----------------------------------------------------------------------------


def interleaved(variants, repeats, calls, warmup=20):
    """{name: (median, min, max)} in microseconds per call of each zero-arg callable."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    names = list(variants)
    per_repeat = {name: [] for name in names}
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        times = {name: [] for name in names}
        for _ in range(calls):
            # Call by call, in a fresh random order each time: load from other
            # processes, and the cache left by the previous call, hit every
            # variant alike.
            for name in rng.permutation(names):
                fn = variants[name]
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        for name in names:
            per_repeat[name].append(1e6 * statistics.median(times[name]))
    return {name: (statistics.median(v), min(v), max(v)) for name, v in per_repeat.items()}


def _fmt(stat, scale=1.0, digits=1):
    median, low, high = (s * scale for s in stat)
    return f"{median:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


# --- the tickets -----------------------------------------------------------------------


def ensure_run(run_dir, rounds, iterations, data_dir):
    """Trains the benchmark's IMP run unless `run_dir` already has `rounds` complete rounds."""
    if os.path.isdir(run_dir) and len(RunDir(run_dir).complete_rounds()) >= rounds:
        return
    from lottery_tf.lottery import runner
    from lottery_tf.config import Config

    print(f"training {rounds} rounds x {iterations} iterations into {run_dir} ...", flush=True)
    runner.run(Config(model="lenet_300_100", dataset="mnist", rounds=rounds,
                      iterations=iterations, eval_every=500, output_dir=run_dir,
                      data_dir=data_dir, verbose=0),
               progress=lambda line: print(line, flush=True))


def pick_rounds(run_dir, targets):
    """The complete round nearest (in % remaining) to each target."""
    run = RunDir(run_dir)
    remaining = {r: run.read_metrics(r)["remaining_pct"] for r in run.complete_rounds()}
    return [min(remaining, key=lambda r: abs(remaining[r] - float(t))) for t in targets]


# --- one ticket ------------------------------------------------------------------------------


def measure_ticket(run_dir, r, probe, test_images, out_dir, batch_sizes, repeats, calls,
                   quantized_min_agreement):
    import tensorflow as tf

    from lottery_tf import export

    ticket = export.load_ticket(run_dir, str(r))
    model = export.keras_model(ticket)
    network = export.network_from_model(model)
    compact, reports = compaction.compact(network)
    quiet = lambda line: None  # noqa: E731

    paths = {name: os.path.join(out_dir, f"round_{r:03d}_{name}")
             for name in ("dense", "compact", "tflite", "tflite_quantized")}
    serving.save_saved_model(serving.serving_module(network, storage="dense"), paths["dense"])
    info = export.export(ticket, paths["compact"], probe=probe, progress=quiet, model=model)
    tfl = export.export(ticket, paths["tflite"], fmt="tflite", probe=probe, progress=quiet,
                        model=model)
    # Dynamic-range int8 can flip a test image near a tie: allow 0.5 % (reported below).
    tflq = export.export(ticket, paths["tflite_quantized"], fmt="tflite", quantize=True,
                         probe=probe, progress=quiet, model=model,
                         quantized_min_agreement=quantized_min_agreement)
    nonzeros = info["sparsity"]["nonzero_weights"]
    row = {
        "round": r,
        "remaining_pct": info["sparsity"]["remaining_pct"],
        "nonzeros": nonzeros,
        "dense_bytes": placement.tree_bytes(paths["dense"]),
        "compact_bytes": placement.tree_bytes(paths["compact"]),
        "compact_variable_bytes": serving.variable_bytes(paths["compact"]),
        "dense_variable_bytes": serving.variable_bytes(paths["dense"]),
        "tflite_bytes": os.path.getsize(os.path.join(paths["tflite"], tflite.TFLITE_FILE)),
        "tflite_quantized_bytes": os.path.getsize(
            os.path.join(paths["tflite_quantized"], tflite.TFLITE_FILE)),
        "verification": info["verification"],
        "tflite_verification": tfl["verification"],
        "tflite_quantized_verification": tflq["verification"],
        "reports": [rep.to_dict() for rep in reports],
        "storage": storage.storage_formats(compact),
        "compact_shapes": {layer.name: tuple(layer.stored_kernel().shape)
                           for layer in compact.layers if layer.stored_kernel() is not None},
    }

    # Serving latency, dense vs compact, both as a server would load them.
    loaded = {name: tf.saved_model.load(paths[name]) for name in ("dense", "compact")}
    serve = {name: obj.signatures["serving_default"] for name, obj in loaded.items()}
    check = {name: fn(image=tf.constant(test_images[:256]))["logits"].numpy()
             for name, fn in serve.items()}
    reference = model(test_images[:256], training=False).numpy()
    for name, logits in check.items():  # the dense baseline must be the same model too
        if not scaled_logit_diff(reference, logits) <= LOGIT_TOLERANCE:  # NaN fails too
            raise AssertionError(f"round {r}: the {name} SavedModel differs from the masked model")
    row["latency_us"] = {}
    for batch in batch_sizes:
        images = tf.constant(test_images[:batch])
        variants = {name: (lambda fn=fn: fn(image=images)["class_ids"].numpy())
                    for name, fn in serve.items()}
        row["latency_us"][batch] = interleaved(variants, repeats, calls)
    return row, network, compact


def layer_variants(network, compact, batch, rng):
    """Zero-arg callables computing each weighted layer in every candidate way."""
    import tensorflow as tf

    dense = [layer for layer in network.layers if isinstance(layer, ir_layers.Dense)]
    small = [layer for layer in compact.layers if isinstance(layer, ir_layers.Dense)]
    gathered, _ = compaction.compact(network, gather_inputs=True)
    gathers = {}
    pending = None
    for layer in gathered.layers:
        if isinstance(layer, ir_layers.Gather):
            pending = layer.indices
        elif isinstance(layer, ir_layers.Dense):
            gathers[layer.name] = (pending, layer.kernel)
            pending = None
    matmul = tf.function(lambda x, w: tf.matmul(x, w))
    gather_matmul = tf.function(lambda x, i, w: tf.matmul(tf.gather(x, i, axis=1), w))
    sparse_matmul = tf.function(lambda x, w: tf.sparse.sparse_dense_matmul(x, w))
    scatter_matmul = tf.function(
        lambda x, p, v, s: tf.matmul(x, tf.scatter_nd(p, v, s)))
    result = {}
    for full, comp in zip(dense, small):
        x_full = tf.constant(rng.random((batch, full.kernel.shape[0]), dtype=np.float32))
        x_comp = tf.constant(rng.random((batch, comp.kernel.shape[0]), dtype=np.float32))
        w_full, w_comp = tf.constant(full.kernel), tf.constant(comp.kernel)
        positions = tf.constant(np.argwhere(comp.kernel != 0).astype(np.int64))
        values = tf.constant(comp.kernel[comp.kernel != 0])
        shape = tf.constant(comp.kernel.shape, tf.int64)
        sparse = tf.sparse.from_dense(comp.kernel)
        # Default arguments bind this layer's tensors (a plain closure would see the last layer's).
        variants = {
            "uncompacted dense kernel":
                lambda x=x_full, w=w_full: matmul(x, w).numpy(),
            "compact dense kernel (export)":
                lambda x=x_comp, w=w_comp: matmul(x, w).numpy(),
            "sparse_dense_matmul":
                lambda x=x_comp, w=sparse: sparse_matmul(x, w).numpy(),
            "scatter every call + matmul":
                lambda x=x_comp, p=positions, v=values, s=shape: scatter_matmul(x, p, v, s).numpy(),
        }
        indices, kernel = gathers[comp.name]
        if indices is not None:
            idx, w_g = tf.constant(indices.astype(np.int32)), tf.constant(kernel)
            variants["gather live inputs + compact kernel"] = (
                lambda x=x_full, i=idx, w=w_g: gather_matmul(x, i, w).numpy())
        result[comp.name] = (full.kernel.shape, comp.kernel.shape,
                             np.count_nonzero(comp.kernel) / max(comp.kernel.size, 1), variants)
    return result


# --- the report ----------------------------------------------------------------------------


def _targets_met(rows):
    last = min(rows, key=lambda row: row["remaining_pct"])
    limit = 1.6 * 4 * last["nonzeros"] + 64 * KIB
    lines = [
        f"- at {last['remaining_pct']:.2f} % remaining: compact variables "
        f"{last['compact_variable_bytes'] / KIB:.1f} KiB <= 1.6 x nonzeros x 4 B + 64 KiB = "
        f"{limit / KIB:.1f} KiB: {'met' if last['compact_variable_bytes'] <= limit else 'MISSED'}",
        f"- at {last['remaining_pct']:.2f} % remaining: whole export "
        f"{last['dense_bytes'] / last['compact_bytes']:.2f}x smaller than the dense export "
        f"(target >= 10x): {'met' if last['dense_bytes'] >= 10 * last['compact_bytes'] else 'MISSED'}",
    ]
    for row in rows:
        for batch, stats in row["latency_us"].items():
            ratio = stats["compact"][0] / stats["dense"][0]
            lines.append(
                f"- round {row['round']} ({row['remaining_pct']:.1f} %), batch {batch}: "
                f"compact/dense latency {ratio:.3f} (target <= 1.05): "
                f"{'met' if ratio <= 1.05 else 'MISSED'}")
    return lines


def report(rows, layer_rows, repeats, calls, layer_calls):
    random = RANDOM_PROBE_SIZE
    print("\n### Sizes (LeNet-300-100 on MNIST)\n")
    print("| round | remaining | nonzero weights | dense export | compact export | dense / compact "
          "| compact variables | variable bytes per nonzero | TFLite float | TFLite int8 (dynamic range) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['round']} | {row['remaining_pct']:.2f} % | {row['nonzeros']:,} "
              f"| {row['dense_bytes'] / KIB:.1f} KiB | {row['compact_bytes'] / KIB:.1f} KiB "
              f"| {row['dense_bytes'] / row['compact_bytes']:.2f}x "
              f"| {row['compact_variable_bytes'] / KIB:.1f} KiB "
              f"| {row['compact_variable_bytes'] / row['nonzeros']:.2f} B "
              f"| {row['tflite_bytes'] / KIB:.1f} KiB | {row['tflite_quantized_bytes'] / KIB:.1f} KiB |")
    print("\n### Compaction and verification\n")
    print("| round | layer | kernel | compact kernel | storage | units constant / unread "
          "| dead inputs (zero rows) |")
    print("| ---: | --- | --- | --- | --- | --- | ---: |")
    for row in rows:
        for rep in row["reports"]:
            print(f"| {row['round']} | {rep['name']} | {rep['inputs']}x{rep['units']} "
                  f"| {'x'.join(map(str, row['compact_shapes'][rep['name']]))} "
                  f"| {row['storage'][rep['name']]} | {rep['units_constant']} / {rep['units_unread']} "
                  f"| {rep['inputs_kept'] - rep['inputs_live']} |")
    print()
    for row in rows:
        v, t, q = (row["verification"], row["tflite_verification"],
                   row["tflite_quantized_verification"])
        print(f"- round {row['round']}: verified on {v['probe']}; max |logit diff| SavedModel "
              f"{v['max_abs_logit_diff']:.2g}, TFLite float {t['max_abs_logit_diff']:.2g}, TFLite int8 "
              f"{q['max_abs_logit_diff']:.2g} (int8: {q['class_ids_differing_dataset']} of "
              f"{v['examples'] - random} test images and {q['class_ids_differing_random']} of the "
              f"{random} random "
              f"images flip; test-image accuracy {100 * q.get('probe_accuracy_export', float('nan')):.2f} % "
              f"vs {100 * q.get('probe_accuracy_masked', float('nan')):.2f} %)")
    print(f"\n### Serving latency, µs per call: median ({repeats} repeats x {calls} calls "
          "interleaved call by call in random order; min–max of the repeat medians)\n")
    print("| round | remaining | batch | dense SavedModel | compact SavedModel | compact / dense |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        for batch, stats in row["latency_us"].items():
            print(f"| {row['round']} | {row['remaining_pct']:.2f} % | {batch} "
                  f"| {_fmt(stats['dense'])} | {_fmt(stats['compact'])} "
                  f"| {stats['compact'][0] / stats['dense'][0]:.3f} |")
    if layer_rows:
        print(f"\n### Per layer: each way of computing it, µs per call: median ({repeats} repeats "
              f"x {layer_calls} calls interleaved call by call in random order; min–max of the "
              "repeat medians)\n")
        names = ["uncompacted dense kernel", "compact dense kernel (export)",
                 "gather live inputs + compact kernel", "sparse_dense_matmul",
                 "scatter every call + matmul"]
        print("| round | layer | kernel -> compact (density) | batch | " + " | ".join(names) + " |")
        print("| ---: | --- | --- | ---: | " + " | ".join(["---:"] * len(names)) + " |")
        for (r, layer, batch), (full, comp, density, stats) in layer_rows.items():
            cells = [_fmt(stats[n]) if n in stats else "–" for n in names]
            print(f"| {r} | {layer} | {full[0]}x{full[1]} -> {comp[0]}x{comp[1]} "
                  f"({100 * density:.1f} %) | {batch} | " + " | ".join(cells) + " |")
    print("\n### Targets\n")
    for line in _targets_met(rows):
        print(line)


class ExportBenchmarkCommand(app.Command):
    name = "export_benchmark"
    summary = "Export benchmark: dense vs compact sizes and serving latency of LeNet-300-100 tickets."

    def define_flags(self, fv):
        def define(kind, name, default, help_text):
            getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)

        define("string", "export_bench_run_dir", "runs/export_benchmark_lenet_300_100_mnist",
               "IMP run of LeNet-300-100 on MNIST to take the tickets from; trained "
               "(--export_bench_iterations per round) when it lacks the rounds needed.")
        define("list", "export_bench_targets", ["100", "21", "7", "3.6"],
               "Percent of weights remaining: the complete round nearest to each is measured.")
        define("integer", "export_bench_iterations", 2000,
               "Training iterations per round, if training.")
        define("integer", "export_bench_train_rounds", 16,
               "Rounds to train, if training (fc 20 %, output 10 % per round: "
               "round 15 has 3.6 % of the weights).")
        define("string", "export_bench_data_dir", "",
               "TFDS data dir with MNIST; empty for $TFDS_DATA_DIR.")
        define("integer", "export_bench_repeats", 9, "Interleaved timed repeats of each variant.")
        define("integer", "export_bench_calls", 100,
               "Serving calls per repeat and variant (each repeat's figure is their median).")
        define("integer", "export_bench_layer_calls", 30,
               "Calls per repeat and variant in the per-layer part (some variants are slow).")
        define("list", "export_bench_batch_sizes", ["1", "256"], "Batch sizes to time.")
        define("boolean", "export_bench_layers", True, "Also time each layer's alternatives.")
        define("float", "export_bench_quantized_min_agreement", 0.995,
               "--quantized_min_agreement for the int8 TFLite exports measured.")
        define("string", "export_bench_export_dir", "",
               "Where to write the exports (kept); empty for a temporary directory.")

    def run(self, fv):
        try:
            batch_sizes = [int(b) for b in fv.export_bench_batch_sizes]
        except ValueError:
            raise errors.LotteryError(
                "--export_bench_batch_sizes must be a list of numbers") from None
        if min(fv.export_bench_repeats, fv.export_bench_calls,
               fv.export_bench_layer_calls, *batch_sizes) < 1:
            raise errors.LotteryError(
                "--export_bench_repeats, --export_bench_calls, --export_bench_layer_calls and "
                "--export_bench_batch_sizes must be positive")
        from lottery_tf import export
        from lottery_tf.train import data

        run_dir = fv.export_bench_run_dir
        data_dir = fv.export_bench_data_dir or None
        ensure_run(run_dir, fv.export_bench_train_rounds, fv.export_bench_iterations,
                   fv.export_bench_data_dir)
        rounds = pick_rounds(run_dir, fv.export_bench_targets)
        ticket0 = export.load_ticket(run_dir, str(rounds[0]))
        probe = export.probe_images(ticket0, "dataset", fv.export_bench_data_dir, 1000)
        test = data.load("mnist", data_dir=data_dir, validation_size=1).test
        test_images = next(iter(test))[0].numpy()[:max(batch_sizes)]
        out_dir = fv.export_bench_export_dir or tempfile.mkdtemp(prefix="lottery_export_bench_")
        os.makedirs(out_dir, exist_ok=True)
        print(f"rounds {rounds} of {run_dir}; exports in {out_dir}", flush=True)
        rows, layer_rows = [], {}
        rng = np.random.default_rng(0)
        try:
            for r in rounds:
                row, network, compact = measure_ticket(
                    run_dir, r, probe, test_images, out_dir, batch_sizes,
                    fv.export_bench_repeats, fv.export_bench_calls,
                    fv.export_bench_quantized_min_agreement)
                rows.append(row)
                print(f"round {r} ({row['remaining_pct']:.2f} %) measured", flush=True)
                if fv.export_bench_layers:
                    for batch in batch_sizes:
                        for layer, (full, comp, density, variants) in layer_variants(
                                network, compact, batch, rng).items():
                            stats = interleaved(variants, fv.export_bench_repeats,
                                                fv.export_bench_layer_calls)
                            layer_rows[(r, layer, batch)] = (full, comp, density, stats)
        finally:
            if not fv.export_bench_export_dir:
                shutil.rmtree(out_dir, ignore_errors=True)
        report(rows, layer_rows, fv.export_bench_repeats, fv.export_bench_calls,
               fv.export_bench_layer_calls)


if __name__ == "__main__":
    app.main(ExportBenchmarkCommand())
