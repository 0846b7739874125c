"""The export itself: compact, write, verify, place; and its report lines.

`export` runs the steps in order (any problem raises `errors.LotteryError`
and leaves nothing written):

1. rebuilds the ticket's masked Keras model (`convert.keras_model`) and its
   IR network (`convert.network_from_model`);
2. compacts it (`compaction.compact`) and chooses each kernel's storage
   (`storage.storage_formats`);
3. writes a SavedModel (`serving`) or a TFLite file (`tflite`) into a staging
   directory next to the target, loads it back and compares its outputs with
   the masked model's on the probe batch (`verify`);
4. writes ticket.json (`ticket_json`) and renames the directory into place
   (`placement`).
"""

import os

import numpy as np

from lottery_tf import errors
from lottery_tf.export import (compaction, convert, ir, placement, serving, storage, tflite,
                               ticket_json, verify)
from lottery_tf.export import probe as probes

FORMATS = ("saved_model", "tflite")

# Full-integer quantization (--quantize of a --block ticket) calibrates its
# activation ranges on this many of the probe's dataset images.
CALIBRATION_IMAGES = 200


def check_format(fmt, quantize, check_input_range=False):
    """Refuses a format this export does not write, or options it does not take."""
    if fmt not in FORMATS:
        raise errors.LotteryError(f"--format={fmt} is not one of {', '.join(FORMATS)}")
    if quantize and fmt != "tflite":
        raise errors.LotteryError("--quantize applies to --format=tflite only")
    if check_input_range and fmt != "saved_model":
        raise errors.LotteryError("--check_input_range applies to --format=saved_model only "
                                  "(TFLite has no assertion ops)")


def export(ticket, output, fmt="saved_model", quantize=False, overwrite=False,
           probe=None, progress=print, model=None, quantized_min_agreement=1.0,
           check_input_range=False):
    """Exports `ticket` to `output`; returns the ticket.json dict it wrote.

    Args:
      ticket: a `Ticket` (see `load_ticket`).
      output: the export directory to create.
      fmt: 'saved_model' or 'tflite'.
      quantize: int8 weights (TFLite only): dynamic range (dense int8 weights), or
        for a --block ticket full integer (sparse 1x16 int8 weights; see
        `tflite.convert_tflite`).
      overwrite: replace an existing export at `output`.
      probe: the `Probe` to verify on (None: 64 random images).
      progress: called with each line of the report.
      model: the ticket's masked Keras model, when already built.
      quantized_min_agreement: with `quantize`, the fraction of the probe's
        dataset class ids that must stay the same.
      check_input_range: the SavedModel refuses pixels outside [0, 1] (it
        always refuses NaN and infinite ones); TFLite models check nothing.

    Raises:
      errors.LotteryError: bad input or a failed verification; nothing written.
    """
    check_format(fmt, quantize, check_input_range)
    placement.check_output(output, overwrite)
    model = model or convert.keras_model(ticket)
    network = convert.network_from_model(model)
    try:
        compact, reports = compaction.compact(network)
    except ir.UnsupportedNetwork as e:
        raise errors.LotteryError(f"model {model.name} cannot be exported: {e}") from None
    if probe is None:
        probe = probes.random_probe(ticket.dataset["input_shape"])
    if quantize and not probe.real:
        raise errors.LotteryError(verify.QUANTIZE_NEEDS_DATASET)
    reference = model(probe.images, training=False).numpy()
    storages = storage.storage_formats(compact)
    if fmt == "tflite" and block_structured(ticket):
        compact = tflite.pad_inputs(network, 16)  # see `block_structured`
        # Padding covers a layer after another fully-connected one; any other short block
        # would be dropped (float exports would be refused after converting, int8 ones not).
        short = tflite.short_blocks(compact, 16 if quantize else 4)
        if short:
            raise errors.LotteryError(
                f"layer {', '.join(short)} of a --block ticket reads an input size that is not a "
                f"multiple of {16 if quantize else 4}, and TFLite's sparse encoder drops a row's "
                "short last block: export it as a SavedModel (--format=saved_model)")
    try:
        info = _write(ticket, output, fmt, quantize, overwrite, probe, compact, reports,
                      storages, reference, quantized_min_agreement, check_input_range)
    except OSError as e:
        raise errors.LotteryError(
            f"writing {output} failed: {e.strerror or e}; nothing written") from None
    except _tf_errors() as e:  # TensorFlow's own writes (disk full: ResourceExhaustedError)
        first = (e.message or type(e).__name__).strip().splitlines()[0]
        raise errors.LotteryError(f"writing {output} failed: {first}; nothing written") from None
    _report(info, reports, output, progress)
    return info


def block_structured(ticket):
    """Whether `ticket` was pruned in blocks (--block): its TFLite export is not compacted.

    Removing a dead unit removes a row of the next kernel and shifts the block
    grid of every row after it, so the converter would find no blocks; TFLite's
    sparse kernel skips empty blocks (dead units' among them) anyway. Input
    sizes are padded to whole 1x16 blocks instead (`tflite.pad_inputs`).
    """
    return ticket.config.get("block", "none") != "none"


def _tf_errors():
    import tensorflow as tf

    return tf.errors.OpError


def _write(ticket, output, fmt, quantize, overwrite, probe, compact, reports, storages,
           reference, quantized_min_agreement, check_input_range=False):
    """Writes, verifies and places the export; returns its ticket.json dict."""
    with placement.staging_dir(output) as tmp:
        sizes = {}
        if fmt == "saved_model":
            serving.save_saved_model(
                serving.serving_module(compact, storage="auto", check_range=check_input_range), tmp)
            outputs = serving.run_saved_model(tmp, probe.images)
            verification = verify.verify(reference, outputs, probe, "the compact SavedModel")
            sizes["variables"] = serving.variable_bytes(tmp)
            ticket_path = os.path.join(tmp, "assets", ticket_json.TICKET_FILE)
            os.makedirs(os.path.dirname(ticket_path), exist_ok=True)
        else:
            model_path = os.path.join(tmp, tflite.TFLITE_FILE)
            calibration = (probe.images[:min(probe.real, CALIBRATION_IMAGES)]
                           if quantize and block_structured(ticket) else None)
            model_bytes = tflite.convert_tflite(compact, quantize, calibration)
            with open(model_path, "wb") as f:
                f.write(model_bytes)
            encodings = tflite.weight_encodings(model_bytes, compact)
            lost = [name for name, e in encodings.items() if e.get("holds_every_weight") is False]
            if lost and not quantize:  # (int8: a block may legitimately quantize to zeros)
                raise errors.LotteryError(
                    f"TFLite's converter left out weights of {', '.join(lost)} from its sparse "
                    "encoding; nothing written")
            storages = {name: tflite.describe(encodings.get(name)) for name in storages}
            outputs = tflite.run_tflite(model_path, probe.images)
            what = "the quantized TFLite model" if quantize else "the TFLite model"
            verification = verify.verify(reference, outputs, probe, what, quantized=quantize,
                                         min_agreement=quantized_min_agreement)
            ticket_path = os.path.join(tmp, ticket_json.TICKET_FILE)
        nonzeros = sum(int(np.count_nonzero(m)) for m in ticket.masks.values())
        sizes["nonzero_weight_bytes"] = 4 * nonzeros
        sizes["export_without_ticket_json"] = placement.tree_bytes(tmp)
        info = ticket_json.ticket_json(ticket, fmt, quantize, reports, storages, verification,
                                       sizes, check_input_range)
        if fmt == "tflite":
            info["sparsity"]["block"] = ticket.config.get("block", "none")
            info["sparsity"]["compacted"] = not block_structured(ticket)
            if calibration is not None:
                info["format"] = "tflite_full_integer_quantized"
                info["quantization"] = {"calibration": f"the first {len(calibration)} "
                                        "dataset images of the probe batch"}
            for name, encoding in encodings.items():
                info["sparsity"]["layers"][name]["tflite_weights"] = encoding
        ticket_json.write(ticket_path, info)
        placement.place(tmp, output, overwrite)
    return info


def _report(info, reports, output, progress):
    source, sparsity = info["source"], info["sparsity"]
    accuracy = info["accuracy"].get("early_stop_test_accuracy")
    acc = f", early-stop test acc {100 * accuracy:.2f}%" if accuracy is not None else ""
    progress(f"round {source['round']} of {source['run_dir']} ({source['round_selection']}): "
             f"{sparsity['remaining_pct']:.2f}% weights remaining{acc}")
    parts = []
    for r in reports:
        kept_as = sparsity["layers"][r.name]["storage"]
        dead = r.inputs_kept - r.inputs_live
        note = f", {dead} dead inputs as zero rows" if dead else ""
        parts.append(f"{r.name} {r.inputs}x{r.units} -> {r.inputs_kept}x{r.units_kept} "
                     f"({kept_as}{note})")
    if sparsity.get("compacted", True):
        progress("compaction: " + "; ".join(parts))
    else:
        progress(f"not compacted (--block={sparsity['block']}: compaction would shift the block "
                 "grid): " + "; ".join(f"{r.name} {r.inputs}x{r.units} "
                                       f"({sparsity['layers'][r.name]['storage']})" for r in reports))
    v = info["verification"]
    line = f"verified on {v['probe']}: max |logit diff| {v['max_abs_logit_diff']:.2g}"
    if v["class_ids_differing_dataset"]:  # (quantized, within --quantized_min_agreement)
        line += (f", {v['class_ids_differing_dataset']} dataset and "
                 f"{v['class_ids_differing_random']} random images changed class")
    elif v["class_ids_differing_random"]:
        line += (f", class ids identical on the dataset images, "
                 f"{v['class_ids_differing_random']} random images flipped")
    else:
        line += ", class ids identical"
    if "probe_accuracy_export" in v:
        line += (f"; accuracy on the dataset images {100 * v['probe_accuracy_export']:.2f}% "
                 f"(masked model {100 * v['probe_accuracy_masked']:.2f}%)")
    progress(line)
    sizes = info["size_bytes"]
    if "variables" in sizes:
        total = placement.tree_bytes(output)
        progress(f"wrote {output} ({info['format']}: {total / 1024:.1f} KiB in all; "
                 f"variables {sizes['variables'] / 1024:.1f} KiB = "
                 f"{sizes['variables'] / max(sizes['nonzero_weight_bytes'], 1):.2f} x nonzero "
                 "weight bytes)")
    else:
        size = os.path.getsize(os.path.join(output, tflite.TFLITE_FILE))
        progress(f"wrote {output} ({info['format']}: {tflite.TFLITE_FILE} {size / 1024:.1f} KiB)")
