"""Block-structured pruning (--block): whole blocks of a kernel live or die together.

A block of `1xB` is B consecutive *input* weights of one output unit: in
TFLite's FULLY_CONNECTED weights, laid out [out, in], that is B neighbours
in a row, the layout of its sparse fast paths (1x4 for float, 1x16 for int8
weights, `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`). Keras kernels are laid
out [in, out] (Dense) and [kh, kw, in, out] (Conv2D), so here a block runs
along axis -2: rows i*B .. i*B+B-1 of one column. For a conv kernel that is
B consecutive input channels of one filter at one tap, the innermost run of
TFLite's [out, kh, kw, in] conv weights (TFLite has no sparse conv kernel;
the shape only keeps one rule for every layer). When the input dimension is
not a multiple of B, the last block of each column is shorter (784 inputs
in 1x16 blocks: 49 full ones; 300: 18 of 16 and one of 12).

Scoring stays the criterion's business; this module only pools per-weight
scores into one score per block and spreads block masks back over weights.
A block's score is the **mean** of its live weights' scores: for magnitude
that is the block's L1 norm / its size, so full blocks rank exactly as by
L1 norm (the usual choice), and a short last block is not pruned first just
for having fewer weights; signed scores (e.g. movement, `random`) keep
their sign, so every criterion means the same per block as per weight.
Selection (`selection.py`) then counts what it removes in weights.
"""

import functools

import numpy as np

from lottery_tf.registry import Registry

BLOCKS = Registry("block shape")

# name -> block length along the input axis (1: unstructured, the paper's).
for _name, _size in (("none", 1), ("1x4", 4), ("1x16", 16)):
    BLOCKS.register(_name)(_size)


def block_size(block):
    """The number of weights in a block of `block` ('none', '1x4', '1x16')."""
    return BLOCKS.get(block)


def _blocked(array, size):
    """`array` [..., in, out] as [..., in_blocks, size, out], the last block zero-padded."""
    if array.ndim < 2:
        raise ValueError(f"a kernel with blocks needs an input axis, got shape {array.shape}")
    inputs = array.shape[-2]
    pad = -inputs % size
    if pad:
        widths = [(0, 0)] * array.ndim
        widths[-2] = (0, pad)
        array = np.pad(array, widths)
    return array.reshape(array.shape[:-2] + ((inputs + pad) // size, size, array.shape[-1]))


def pool(scores, masks, size):
    """Per-block scores, masks and live-weight counts.

    Args:
      scores: layer name -> per-weight scores (the criterion's).
      masks: layer name -> current 0/1 mask, same shapes.
      size: the block length (> 1).

    Returns:
      (block_scores, block_masks, block_weights), each layer name -> an array
      of shape [..., ceil(in / size), out]: the mean score of each block's
      live weights (0 where none is live), 1 where a block has a live weight,
      and the number of its live weights (what pruning it removes).
    """
    block_scores, block_masks, block_weights = {}, {}, {}
    for name, mask in masks.items():
        alive = _blocked(mask != 0, size)
        live = alive.sum(axis=-2)
        total = np.where(alive, _blocked(np.asarray(scores[name], np.float64), size), 0.0)
        block_scores[name] = total.sum(axis=-2) / np.maximum(live, 1)
        block_masks[name] = (live > 0).astype(mask.dtype)
        block_weights[name] = live
    return block_scores, block_masks, block_weights


def blockwise(select, size):
    """The scope `select` (`selection.SCOPES`) choosing whole blocks of `size` weights.

    Same arguments and result as `select`: per-weight scores and masks in,
    new weight masks out; the fractions count weights.
    """
    def select_blocks(scores, masks, fractions):
        pooled, block_masks, weights = pool(scores, masks, size)
        return expand(select(pooled, block_masks, fractions, weights=weights), masks, size)

    select_blocks = functools.wraps(select)(select_blocks)  # keeps `pooled` (global)
    return select_blocks


def expand(block_masks, masks, size):
    """Weight masks: each weight of `masks` keeps its block's value in `block_masks`."""
    result = {}
    for name, mask in masks.items():
        spread = np.repeat(block_masks[name], size, axis=-2)[..., :mask.shape[-2], :]
        result[name] = (mask * spread).astype(mask.dtype)
    return result


def aligned(mask, size):
    """Whether every block of `mask` is wholly kept or wholly pruned."""
    counts = _blocked(mask != 0, size).sum(axis=-2)
    lengths = _blocked(np.ones(mask.shape, bool), size).sum(axis=-2)  # a short last block
    return bool(np.all((counts == 0) | (counts == lengths)))
