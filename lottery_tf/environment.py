"""What a run ran on: library versions and the processor.

Float results depend on more than the code and the seed: the same code and
seed gave other learning curves on another day here (docs/RESULTS.md), and
the TensorFlow build, its kernels (oneDNN, XLA) and the CPU's instruction
set all change the rounding. Each run records this next to its config, so a
result that does not reproduce can be traced to what differed.
"""

import os
import platform
import sys
from importlib import metadata

PACKAGES = ("tensorflow", "tf_keras", "tensorflow-model-optimization", "tensorflow-datasets", "numpy")
# Environment variables that change TensorFlow's kernels, hence the numbers. The thread
# counts too: a 5,000-iteration LeNet-300-100 round 0 (seed 0) early-stops at 5,000 with
# TF_NUM_INTRAOP_THREADS=1 and at 4,000 with the default two threads here.
VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS", "TF_DETERMINISTIC_OPS", "OMP_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


# Instruction sets that decide which kernels TensorFlow's CPU ops run (a VM may hide the model name).
FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16",
            "amx_tile")


def _cpuinfo():
    """(model name, the FEATURES the CPU has) from /proc/cpuinfo; (None, None) elsewhere."""
    model = flags = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and flags is None:
                    flags = [name for name in FEATURES if name in value.split()]
    except OSError:
        pass
    return model, flags


def describe():
    """A JSON-ready dict: Python, package versions, CPU model and count, OS, kernel variables."""
    from lottery_tf import __version__, onednn

    return {
        "lottery_tf": __version__,
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cpu": _cpuinfo()[0] or platform.processor() or platform.machine(),
        "cpu_features": _cpuinfo()[1],
        "cpu_count": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "variables": {name: os.environ[name] for name in VARIABLES if name in os.environ},
        # On, off or unknown (TensorFlow not imported yet): some CPUs have it on unasked.
        "onednn": onednn.enabled() if "tensorflow" in sys.modules else None,
        "executable": sys.executable,
    }


def differences(before, now):
    """The fields of `now` that differ from `before` (executables aside), as 'field: a -> b'.

    A field that `before` did not record (an older lottery-tf wrote it) is not a difference:
    otherwise every resumed older run would gain an entry that says nothing changed.
    """
    changed = []
    for key in sorted(set(before) | set(now)):
        if key == "executable" or key not in before or before.get(key) == now.get(key):
            continue
        changed.append(f"{key}: {before.get(key)} -> {now.get(key)}")
    return changed
