"""Sparse storage of compact kernels: dense, bitmask or delta, whichever is smallest.

Each compact kernel is stored in whichever of three encodings is smallest:
`dense`, `bitmask` (nonzero values in C order plus one bit per position:
4 bytes + 1/(8 x density) bytes per nonzero) or `delta` (nonzero values in C
order plus the uint16 step from one flat position to the next: 6 bytes per
nonzero). Below 1/16 density `delta` wins. `serving.py` decodes them in
TensorFlow when the model loads; `decode` here is the numpy reference.
"""

import numpy as np

from lottery_tf.export import ir

STORAGE_FORMATS = ("dense", "bitmask", "delta")
_MAX_GAP = int(np.iinfo(np.uint16).max)


def _delta(kernel):
    """(values, gaps): nonzeros in C order and uint16 steps between their flat positions.

    positions = cumsum(gaps). A step longer than 65535 goes through zero-valued
    filler entries (harmless: they scatter 0 where the kernel is 0).
    """
    flat = np.asarray(kernel, np.float32).reshape(-1)
    positions = np.flatnonzero(flat)
    steps = np.diff(positions, prepend=0)
    repeats = np.maximum((steps + _MAX_GAP - 1) // _MAX_GAP, 1)  # entries per step
    if (repeats == 1).all():
        return flat[positions], steps.astype(np.uint16)
    # Split each long step into full 65535 steps (fillers) and the remainder.
    owner = np.repeat(np.arange(positions.size), repeats)
    first = np.concatenate([[0], np.cumsum(repeats)[:-1]])
    index_in_step = np.arange(owner.size) - first[owner]
    last = index_in_step == repeats[owner] - 1
    gaps = np.where(last, steps[owner] - _MAX_GAP * (repeats[owner] - 1), _MAX_GAP)
    values = np.where(last, flat[positions][owner], 0.0).astype(np.float32)
    return values, gaps.astype(np.uint16)


def storage_bytes(kernel, fmt):
    """Bytes `kernel` takes in storage format `fmt`."""
    if fmt == "dense":
        return 4 * kernel.size
    if fmt == "bitmask":
        return 4 * int(np.count_nonzero(kernel)) + (kernel.size + 7) // 8
    if fmt == "delta":
        return 6 * _delta(kernel)[0].size
    raise ValueError(f"unknown storage format {fmt!r}")


def choose_storage(kernel):
    """The smallest format for `kernel` (ties: the earlier in STORAGE_FORMATS)."""
    return min(STORAGE_FORMATS, key=lambda f: (storage_bytes(kernel, f), STORAGE_FORMATS.index(f)))


def encode(kernel, fmt):
    """`kernel` as a dict of arrays in format `fmt`; `decode` inverts it.

    dense: {"kernel"}; bitmask: {"values" (float32, C order), "bits" (uint8,
    np.packbits of kernel != 0)}; delta: {"values", "gaps" (uint16)}.
    """
    kernel = np.asarray(kernel, np.float32)
    if fmt == "dense":
        return {"kernel": kernel}
    if fmt == "bitmask":
        flat = kernel.reshape(-1)
        present = flat != 0
        return {"values": flat[present], "bits": np.packbits(present)}
    if fmt == "delta":
        values, gaps = _delta(kernel)
        return {"values": values, "gaps": gaps}
    raise ValueError(f"unknown storage format {fmt!r}")


def decode(arrays, fmt, shape):
    """The dense kernel of `shape` from `encode`'s arrays (numpy reference)."""
    if fmt == "dense":
        return arrays["kernel"].reshape(shape)
    size = int(np.prod(shape))
    flat = np.zeros(size, np.float32)
    if fmt == "bitmask":
        flat[np.unpackbits(arrays["bits"], count=size).astype(bool)] = arrays["values"]
    elif fmt == "delta":
        flat[np.cumsum(arrays["gaps"].astype(np.int64))] = arrays["values"]
    else:
        raise ValueError(f"unknown storage format {fmt!r}")
    return flat.reshape(shape)


def storage_formats(network, storage="auto"):
    """Layer name -> kernel storage format ('auto': the smallest per kernel)."""
    formats = {}
    for layer in ir.walk(network.layers):
        kernel = layer.stored_kernel()
        if kernel is not None:
            formats[layer.name] = choose_storage(kernel) if storage == "auto" else storage
    return formats
