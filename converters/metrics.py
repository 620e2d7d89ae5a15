"""Fidelity metrics of a converted model's outputs against the Keras float model's."""

import numpy as np


def sqnr_db(reference, actual):
    """Signal-to-quantisation-noise ratio of `actual` against `reference`, in dB (inf when
    equal)."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((np.asarray(actual, np.float64) - reference) ** 2))
    signal = float(np.sum(reference**2))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def fidelity(reference, actual):
    """Metrics of `actual` (N, K) against `reference` (N, K) logits.

    Returns:
        dict with ``max_abs_error``, ``max_rel_error`` (max abs error / max |reference|),
        ``sqnr_db`` (10 log10 of signal power over error power; inf when equal) and
        ``top1_agreement`` (fraction of rows with the same argmax).
    """
    reference = np.asarray(reference, np.float64)
    actual = np.asarray(actual, np.float64)
    if reference.shape != actual.shape:
        raise ValueError(f"Shapes differ: reference {reference.shape}, actual {actual.shape}")
    error = actual - reference
    return {
        "max_abs_error": float(np.max(np.abs(error))),
        "max_rel_error": float(np.max(np.abs(error)) / max(np.max(np.abs(reference)), 1e-30)),
        "sqnr_db": sqnr_db(reference, actual),
        "top1_agreement": float(np.mean(reference.argmax(-1) == actual.argmax(-1))),
    }
