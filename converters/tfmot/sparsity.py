"""Magnitude pruning of the tf_keras twin with TFMOT, unstructured or 2:4, and sparsity figures.

TFMOT prunes the kernels of Conv2D and Dense layers. It wraps DepthwiseConv2D but prunes nothing
in it, and it knows nothing of the custom layers, so what stays dense in SwiftFormer is: the
depthwise 3x3 kernels, every bias, BatchNorm, the layer scales, the attention's ``w_g`` -- and,
by choice here, the first convolution (`SKIP`: 3 input channels, 2:4 along them would remove a
colour). `sparsity_summary` measures what that leaves of the target.

The 2:4 pattern (`PATTERNS`) keeps the two largest of every four consecutive weights along the
input channels (the last axis of TFLite's kernel layout), the layout sparse tensor cores and
XNNPACK's sparse kernels take.
"""

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras

from converters.tfmot.tflite_stats import is_m_by_n
from converters.tfmot.twin import CUSTOM_LAYERS
from keras_swiftformer.config import STEM

sparsity = tfmot.sparsity.keras

PATTERNS = ("unstructured", "2:4")
#: Layers left dense by default: the stem's first convolution (3 input channels).
SKIP = STEM[:1]


def is_prunable(layer, skip=SKIP):
    """Whether TFMOT prunes `layer`'s kernel here: a Conv2D (not depthwise) or Dense layer not
    named in `skip`."""
    return (type(layer) in (tf_keras.layers.Conv2D, tf_keras.layers.Dense)
            and layer.name not in skip)


def prune_twin(twin, target=0.5, pattern="unstructured", steps=100, skip=SKIP):
    """Wraps the prunable layers of `twin` for magnitude pruning during fine-tuning.

    Args:
        twin: a float tf_keras twin (`converters.tfmot.twin.build_twin`).
        target: final fraction of zeros in each pruned kernel ("unstructured"); 2:4 is 0.5.
        pattern: "unstructured" (sparsity rising polynomially from 0 to `target` over the
            first half of the steps, pruned every `steps // 10`) or "2:4" (from the first
            step).
        steps: fine-tuning steps planned (the schedule's length).
        skip: names of prunable layers to leave dense.

    Returns:
        The model to fine-tune with `converters.tfmot.finetune.distill` and
        ``callbacks=[tfmot.sparsity.keras.UpdatePruningStep()]``, then `strip`.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if pattern == "2:4":
        kwargs = dict(pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1),
                      sparsity_m_by_n=(2, 4))
    else:
        if not 0 < target < 1:
            raise ValueError(f"target sparsity must be in (0, 1), got {target}")
        end = max(1, steps // 2)
        kwargs = dict(pruning_schedule=sparsity.PolynomialDecay(
            0.0, target, begin_step=0, end_step=end, frequency=max(1, end // 5)))

    return wrap_prunable(twin, lambda layer: sparsity.prune_low_magnitude(layer, **kwargs),
                         skip)


def wrap_prunable(twin, wrapper, skip=SKIP):
    """A clone of tf_keras `twin` with `wrapper(layer)` in place of every prunable layer
    (`is_prunable`): how TFMOT's pruning and clustering wrappers are applied."""

    def wrap(layer):
        return wrapper(layer) if is_prunable(layer, skip) else layer

    with tf_keras.utils.custom_object_scope(CUSTOM_LAYERS):
        return tf_keras.models.clone_model(twin, clone_function=wrap)


def strip(model):
    """The pruned model without its wrappers: the twin's layers, zeros in the kernels."""
    return sparsity.strip_pruning(model)


def callbacks():
    """The callbacks pruning needs during fine-tuning."""
    return [sparsity.UpdatePruningStep()]


def sparsity_summary(model, skip=SKIP):
    """Zeros in a model's weights (Keras 3 or tf_keras, any layers).

    Returns:
        dict: ``prunable_sparsity`` (zeros / weights over the kernels `is_prunable` would
        prune, by layer name and type), ``overall_sparsity`` (zeros / all weights),
        ``prunable_fraction`` (share of all weights in those kernels), ``weights``,
        ``is_2_4`` (every group of four consecutive input-channel weights of each pruned kernel
        holds at least two zeros).
    """
    prunable = zeros_prunable = total = zeros_total = 0
    is_2_4 = True
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        kind = type(inner).__name__
        for weight in inner.weights:
            values = np.asarray(weight)
            count, zeros = values.size, int(np.sum(values == 0))
            total, zeros_total = total + count, zeros_total + zeros
            if kind in ("Conv2D", "Dense") and inner.name not in skip and \
                    weight.name.split("/")[-1].split(":")[0] == "kernel":
                prunable, zeros_prunable = prunable + count, zeros_prunable + zeros
                rows = np.moveaxis(values, -2, -1).reshape(-1, values.shape[-2])
                is_2_4 = is_2_4 and is_m_by_n(rows, 2, 4)
    return {"prunable_sparsity": zeros_prunable / max(prunable, 1),
            "overall_sparsity": zeros_total / max(total, 1),
            "prunable_fraction": prunable / max(total, 1), "weights": total,
            "is_2_4": bool(is_2_4 and prunable)}
