"""Error-compensating weight rounding (GPTQ, Frantar et al. 2023), before conversion.

TFLite quantises a kernel per output channel to ``round(w / s) * s`` with ``s = max|w| / 127``.
Rounding each weight to its nearest level is not what minimises the layer's output error on
real inputs: `gptq_kernel` rounds one input row at a time and spreads its error over the rows
not rounded yet, weighted by the inputs' second moments ``H = X^T X``. The kernel it returns
lies on TFLite's grid already (same per-channel ``max|w|``), so the converter keeps its levels.

`round_weights(model, images)` applies it to the 1x1 convolutions and Dense layers of a Keras
model (the folded SwiftFormer's pointwise and attention projections and its head), with their
inputs on the calibration images; other layers are left as they are.
"""

import numpy as np

LEVELS = 127
#: Calibration images whose layer inputs drive the rounding (LiteRT int8 and Core ML alike).
ROUNDING_IMAGES = 32


def channel_scales(kernel):
    """(out,) TFLite's symmetric per-output-channel int8 scales of a (in, out) kernel."""
    peak = np.max(np.abs(kernel), axis=0)
    return np.where(peak > 0, peak / LEVELS, 1.0)


def gptq_round(kernel, hessian, nearest, damping=0.01):
    """(in, out) kernel rounded one input row at a time by `nearest`, each row's error spread
    over the rows not rounded yet (GPTQ).

    Args:
        kernel: (in, out) float weights of ``y = x @ kernel``.
        hessian: (in, in) ``X^T X / N`` of the layer's inputs.
        nearest: ``nearest(row, i)`` -> the (out,) grid values for the (out,) float row `i`
            (int8 levels times their scales, a palette's nearest values...).
        damping: added to the diagonal, as a fraction of its mean (numerical stability).

    Returns:
        (in, out) float64 on the grid.
    """
    w = np.array(kernel, np.float64)
    h = np.array(hessian, np.float64)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[dead] = 0.0
    h += damping * np.mean(np.diag(h)) * np.eye(len(h))
    inverse = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H^-1
    rounded = np.zeros_like(w)
    for i in range(len(w)):
        rounded[i] = nearest(w[i], i)
        error = (w[i] - rounded[i]) / inverse[i, i]
        w[i + 1:] -= np.outer(inverse[i, i + 1:], error)
    return rounded


def gptq_kernel(kernel, hessian, damping=0.01):
    """(in, out) kernel rounded to int8 levels (times their scales) by `gptq_round`.

    Returns:
        (in, out) float32 on the grid ``k * channel_scales(kernel)``, |k| <= 127, with each
        channel's largest weight kept, so that TFLite (and coremltools' per-channel symmetric
        int8) derives the same scales. Channels whose largest level would move fall back to
        plain rounding.
    """
    scales = channel_scales(np.asarray(kernel, np.float64))
    rounded = gptq_round(kernel, hessian,
                         lambda row, i: np.clip(np.round(row / scales), -LEVELS, LEVELS) * scales,
                         damping)
    levels = np.round(rounded / scales)
    plain = np.clip(np.round(np.asarray(kernel, np.float64) / scales), -LEVELS, LEVELS)
    keep = np.max(np.abs(levels), axis=0) == LEVELS
    levels = np.where(keep, levels, plain)
    return (levels * scales).astype(np.float32)


def _pointwise_layers(model):
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            found.append(layer)
        elif (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
              and tuple(layer.strides) == (1, 1)):
            found.append(layer)
    return found


def round_weights(model, images, skip=(), batch_size=8, max_rows=200_000, rounder=gptq_kernel):
    """A copy of `model` whose Dense and 1x1 Conv2D kernels are rounded by `rounder`, with the
    layers' inputs on `images` (N, H, W, C); `model` is left unchanged.

    Args:
        skip: names of layers to leave as they are (e.g. a head kept in float).
        max_rows: cap on the input rows (tokens) gathered per layer (evenly subsampled).
        rounder: ``rounder(kernel, hessian)`` -> the rounded (in, out) kernel: `gptq_kernel`
            (int8) or another grid's (`converters.coreml.calibrated`).
    """
    import keras

    layers = [layer for layer in _pointwise_layers(model) if layer.name not in skip]
    if not layers:
        return model
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    hessians = [0.0] * len(layers)
    count = [0] * len(layers)
    per_batch = max(1, max_rows * batch_size // max(1, len(images)))
    for start in range(0, len(images), batch_size):
        outputs = probe.predict(images[start:start + batch_size], verbose=0)
        if len(layers) == 1:
            outputs = [outputs]
        for k, x in enumerate(outputs):
            x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
            if len(x) > per_batch:
                x = x[:: len(x) // per_batch + 1]
            hessians[k] = hessians[k] + x.T @ x
            count[k] += len(x)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer, hessian, n in zip(layers, hessians, count):
        target = copy.get_layer(layer.name)
        kernel, *rest = target.get_weights()
        flat = kernel.reshape(-1, kernel.shape[-1])
        rounded = rounder(flat, hessian / n).reshape(kernel.shape)
        target.set_weights([rounded, *rest])
    return copy
