"""Verification: an export's outputs against the masked model's on the probe batch."""

import math

import numpy as np

from lottery_tf import errors

# Exact transformations still round differently in float32 (a folded batch norm
# multiplies the kernel before the convolution instead of after it), and that
# rounding grows with the logits: ~4e-7 of the largest |logit| on ResNet-20
# tickets with trained-like batch norms (logits 150: 6e-5 off). So each
# example's difference is measured relative to its own logits' scale (a LeNet
# ticket trained 50K iterations: largest |logit| ~180 on random probe images,
# ~90 on test images, medians), and absolutely for logits within +-1.
LOGIT_TOLERANCE = 1e-5


def scaled_logit_diff(reference_logits, logits):
    """The largest |logit difference| of an example over max(1, its largest |reference logit|)."""
    if not logits.size:
        return 0.0
    reference = reference_logits.reshape(len(reference_logits), -1)
    scale = np.maximum(1.0, np.max(np.abs(reference), axis=-1))
    return float(np.max(np.max(np.abs(logits.reshape(reference.shape) - reference), axis=-1) / scale))


QUANTIZE_NEEDS_DATASET = (
    "--quantize needs dataset images to verify on (class ids of random images near a tie "
    "legitimately change under quantization): use --probe=dataset or --probe_data_dir")


def verify(reference_logits, outputs, probe, what, quantized=False, min_agreement=1.0):
    """Compares an export's outputs with the masked model's; returns the figures.

    Exact transformations (compaction, sparse storage, float TFLite): every
    logit within LOGIT_TOLERANCE (1e-5) of max(1, its example's largest
    |logit|) (`scaled_logit_diff`) and every class id identical. Dynamic-range
    quantization changes logits by design: at least `min_agreement` (default
    all) of the class ids on the dataset images must be identical (random
    images near a tie legitimately flip; those flips are counted, not
    refused), so it needs a probe with dataset images.

    Raises:
      errors.LotteryError: the export disagrees (message with the figures).
    """
    logits = outputs["logits"]
    diff = float(np.max(np.abs(logits - reference_logits))) if logits.size else 0.0
    scaled = scaled_logit_diff(reference_logits, logits) if np.isfinite(diff) else diff
    expected = np.argmax(reference_logits, axis=-1)
    flipped = outputs["class_ids"] != expected
    real_flips = int(flipped[:probe.real].sum())
    random_flips = int(flipped[probe.real:].sum())
    problem = None
    if not np.isfinite(diff):
        problem = "non-finite logits"
    elif quantized:
        if not probe.real:
            raise errors.LotteryError(QUANTIZE_NEEDS_DATASET)
        agreement = 1.0 - real_flips / probe.real
        if agreement + 1e-12 < min_agreement:
            accuracy = np.mean(outputs["class_ids"][:probe.real] == probe.labels)
            masked_accuracy = np.mean(expected[:probe.real] == probe.labels)
            digits = max(3, math.ceil(math.log10(probe.real)))  # one flip's worth, not coarser
            accepting = math.floor(agreement * 10**digits + 1e-9) / 10**digits  # <= agreement
            problem = (f"{real_flips} of {probe.real} dataset class ids differ, more than "
                       f"--quantized_min_agreement={min_agreement:g} allows (accuracy on them "
                       f"{100 * accuracy:.2f}%, masked model {100 * masked_accuracy:.2f}%); "
                       f"to accept it, pass --quantized_min_agreement={accepting:g}")
    elif scaled > LOGIT_TOLERANCE or real_flips or random_flips:
        problem = (f"max |logit difference| {diff:.3g}, relative to max(1, its example's largest "
                   f"|logit|) {scaled:.3g} (limit {LOGIT_TOLERANCE:g}), "
                   f"{real_flips + random_flips} of {len(expected)} class ids differ")
    if problem:
        raise errors.LotteryError(
            f"{what} disagrees with the masked model on the probe batch ({probe.description}): "
            f"{problem}; nothing written")
    figures = {
        "probe": probe.description,
        "examples": int(len(expected)),
        "max_abs_logit_diff": diff,
        "max_scaled_logit_diff": scaled,
        "logit_limit": None if quantized else LOGIT_TOLERANCE,
        "class_ids_differing_dataset": real_flips,
        "min_agreement_dataset": min_agreement if quantized else 1.0,
        "class_ids_differing_random": random_flips,
    }
    if probe.real:
        figures["probe_accuracy_masked"] = float(np.mean(expected[:probe.real] == probe.labels))
        figures["probe_accuracy_export"] = float(
            np.mean(outputs["class_ids"][:probe.real] == probe.labels))
    return figures
