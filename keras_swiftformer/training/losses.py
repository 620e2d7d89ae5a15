"""The recipe's losses in `keras.ops` (any backend): soft-target cross-entropy with label
smoothing, and DeiT's distillation through the second head.

DeiT (Touvron et al., 2021) and the official SwiftFormer ``util/losses.py``::

    loss = (1 - alpha) * CE(head, targets) + alpha * D(head_dist, teacher)

with ``D`` = cross-entropy against the teacher's argmax ("hard", the official choice, alpha 0.5)
or ``KL(softmax(teacher / tau) || softmax(head_dist / tau)) * tau**2`` summed and divided by
``batch * classes`` ("soft", DeiT's normalisation). The targets are smoothed
(``(1 - s) * y + s / K``) and may be MixUp/CutMix mixtures; the teacher's argmax is not smoothed.
All functions return per-sample losses (B,); the caller averages them.
"""

from keras import ops

DISTILLATION_TYPES = ("none", "hard", "soft")


def smooth_labels(targets, smoothing):
    """(B, K) one-hot or soft targets -> ``(1 - smoothing) * targets + smoothing / K``."""
    if not smoothing:
        return targets
    classes = ops.shape(targets)[-1]
    return targets * (1.0 - smoothing) + smoothing / ops.cast(classes, targets.dtype)


def soft_target_cross_entropy(targets, logits):
    """Per-sample ``-sum(targets * log_softmax(logits))``: (B, K), (B, K) -> (B,)."""
    logits = ops.cast(logits, "float32")
    return -ops.sum(ops.cast(targets, "float32") * ops.log_softmax(logits, axis=-1), axis=-1)


def hard_distillation(dist_logits, teacher_logits):
    """Per-sample cross-entropy of `dist_logits` against ``argmax(teacher_logits)``: (B,)."""
    teacher = ops.one_hot(ops.argmax(teacher_logits, axis=-1), ops.shape(dist_logits)[-1])
    return soft_target_cross_entropy(teacher, dist_logits)


def soft_distillation(dist_logits, teacher_logits, tau=1.0):
    """Per-sample share of DeiT's soft term: ``tau**2 / K * KL(p_teacher || p_student)`` at
    temperature `tau`, so that the batch mean equals DeiT's ``sum / numel * tau**2``: (B,)."""
    student = ops.log_softmax(ops.cast(dist_logits, "float32") / tau, axis=-1)
    teacher = ops.log_softmax(ops.cast(teacher_logits, "float32") / tau, axis=-1)
    kl = ops.sum(ops.exp(teacher) * (teacher - student), axis=-1)
    classes = ops.cast(ops.shape(dist_logits)[-1], "float32")
    return kl * (tau * tau) / classes


def distillation_loss(targets, head_logits, dist_logits, teacher_logits=None,
                      distillation="hard", alpha=0.5, tau=1.0, smoothing=0.0):
    """The recipe's per-sample training loss.

    Args:
        targets: (B, K) one-hot or mixed targets (not yet smoothed).
        head_logits, dist_logits: (B, K) logits of ``head`` and ``head_dist``.
        teacher_logits: (B, K) teacher logits; needed unless `distillation` is "none".
        distillation: "none" (cross-entropy of the averaged heads, i.e. one linear head),
            "hard" or "soft".
        alpha: weight of the distillation term.
        tau: soft distillation temperature.
        smoothing: label smoothing of `targets`.

    Returns:
        (B,) float32 losses.
    """
    if distillation not in DISTILLATION_TYPES:
        raise ValueError(f"distillation must be one of {DISTILLATION_TYPES}, got {distillation!r}")
    targets = smooth_labels(ops.cast(targets, "float32"), smoothing)
    if distillation == "none":
        average = (ops.cast(head_logits, "float32") + ops.cast(dist_logits, "float32")) / 2
        return soft_target_cross_entropy(targets, average)
    if teacher_logits is None:
        raise ValueError(f"distillation={distillation!r} needs teacher_logits")
    base = soft_target_cross_entropy(targets, head_logits)
    if distillation == "hard":
        term = hard_distillation(dist_logits, teacher_logits)
    else:
        term = soft_distillation(dist_logits, teacher_logits, tau)
    return (1.0 - alpha) * base + alpha * term
