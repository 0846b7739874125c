"""ticket.json: what an export is, where it came from and how it was verified."""

import datetime
import json
import os

import numpy as np

TICKET_FILE = "ticket.json"


def _versions():
    import tensorflow as tf
    import tf_keras

    import lottery_tf

    return {"lottery_tf": lottery_tf.__version__, "tensorflow": tf.__version__,
            "tf_keras": tf_keras.__version__}


def ticket_json(ticket, fmt, quantize, reports, storages, verification, sizes,
                check_input_range=False):
    """The ticket.json dict: source round, signature, accuracy, sparsity per layer,
    verification figures and sizes."""
    masks = ticket.masks
    alive = {name: int(np.count_nonzero(m)) for name, m in masks.items()}
    total = sum(m.size for m in masks.values())
    layers = {}
    for report in reports:
        entry = report.to_dict()
        entry["remaining_pct"] = 100.0 * alive.get(report.name, 0) / max(
            masks[report.name].size, 1) if report.name in masks else None
        entry["storage"] = storages.get(report.name)
        layers[report.name] = entry
    shape = [None] + [int(d) for d in ticket.dataset["input_shape"]]
    metric_keys = ("early_stop_iteration", "early_stop_test_accuracy", "early_stop_val_accuracy",
                   "early_stop_val_loss", "final_test_accuracy")
    return {
        "format": fmt + ("_dynamic_range_quantized" if quantize else ""),
        "versions": _versions(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "run_dir": os.path.abspath(ticket.run_dir),
            "round": ticket.round,
            "round_selection": ticket.selection,
            "model": ticket.config.get("model"),
            "dataset": ticket.config.get("dataset"),
            "seed": ticket.config.get("seed"),
        },
        "signature": {
            "name": "serving_default",
            "inputs": {"image": {"dtype": "float32", "shape": shape,
                                 "range": "[0, 1]: pixel values / 255",
                                 "refused": _refused(fmt, check_input_range)}},
            "outputs": {
                "logits": {"dtype": "float32", "shape": [None, int(ticket.dataset["num_classes"])]},
                "probabilities": {"dtype": "float32",
                                  "shape": [None, int(ticket.dataset["num_classes"])]},
                "class_ids": {"dtype": "int64", "shape": [None]},
            },
        },
        "accuracy": {k: ticket.metrics.get(k) for k in metric_keys},
        "sparsity": {
            "remaining_pct": 100.0 * sum(alive.values()) / max(total, 1),
            "nonzero_weights": sum(alive.values()),
            "prunable_weights": total,
            "layers": layers,
        },
        "verification": verification,
        "size_bytes": sizes,
    }




def write(path, info):
    """Writes the ticket.json dict `info` to `path` (sorted keys, 2-space indent)."""
    with open(path, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")


def _refused(fmt, check_input_range):
    """What the served model refuses with an error (TFLite: nothing)."""
    if fmt != "saved_model":
        return []
    return ["non-finite values (NaN, ±inf)"] + (["values outside [0, 1]"] if check_input_range else [])
