"""Export: one round of a run as a compact, verified model for serving.

    from lottery_tf import export
    ticket = export.load_ticket("runs/quickstart", "best")
    export.export(ticket, "saved_models/quickstart", probe=export.probe_images(ticket))

The package, one concern a module:

    ir.py           the layer IR: `Layer` (shape, numpy forward, Keras conversion,
                    compaction hooks, stored arrays, TF call), `Network`, the registry
    layers.py       the layer types: Flatten, Dense, Conv2D, MaxPool2D, Gather
    compaction.py   structured compaction (generic: calls the layers' hooks)
    storage.py      kernel encodings: dense, bitmask, delta
    convert.py      the ticket's masked Keras model, and Keras -> IR
    ticket.py       reading a run's round (through RunDir), best-round choice
    serving.py      the SavedModel: tf.Module, load-time decoder, running it
    tflite.py       the TFLite flatbuffer, running it
    probe.py        probe images to verify on
    verify.py       an export's outputs against the masked model's
    placement.py    default output, overwrite checks, staging, atomic placement
    ticket_json.py  ticket.json
    exporter.py     `export`: the steps above in order, and the report lines

The command line (`lottery-tf export`) is `lottery_tf.cli.export`; this
package defines no flags.
"""

import os

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it (as the
# command line does); `quiet.quiet_stderr` mutes the TFLite converter only then.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lottery_tf.export.compaction import compact  # noqa: E402
from lottery_tf.export.convert import keras_model, network_from_model  # noqa: E402
from lottery_tf.export.exporter import FORMATS, check_format, export  # noqa: E402
from lottery_tf.export.ir import Layer, Network, register  # noqa: E402
from lottery_tf.export.placement import DEFAULT_ROOT, check_output, default_output  # noqa: E402
from lottery_tf.export.probe import PROBES, Probe, probe_images, random_probe  # noqa: E402
from lottery_tf.export.ticket import Ticket, best_round, load_ticket  # noqa: E402

__all__ = [
    "DEFAULT_ROOT", "FORMATS", "Layer", "Network", "PROBES", "Probe", "Ticket", "best_round",
    "check_format", "check_output", "compact", "default_output", "export", "keras_model",
    "load_ticket", "network_from_model", "probe_images", "random_probe", "register",
]
