"""Inference-time folding of SwiftFormer weights: small pure functions on NumPy arrays.

Each fold rewrites the weights of a linear layer so that it absorbs a neighbouring per-channel
affine map (BatchNorm in inference mode, a layer scale, the input normalisation), or merges two
linear maps into one. All are exact up to float rounding; ``tests/test_fold.py`` checks each on
its own. `fold_swiftformer` applies them to a whole `keras_swiftformer.SwiftFormer` and returns
the folded arrays by layer name; `converters.inference_graph` builds the model that uses them.

Kernel layouts are Keras's: Conv2D (kh, kw, in, out), DepthwiseConv2D (kh, kw, C, 1), Dense
(in, out). Computation is in float64, results are float32.
"""

import numpy as np

from keras_swiftformer.config import (HEADS, NORM, POOL, PREPROCESSING, STEM_PATHS,
                                      SwiftFormerConfig, downsample_path, module_path)


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def batch_norm_affine(gamma, beta, mean, variance, epsilon):
    """BatchNorm in inference mode as ``scale * x + shift``; all (C,) -> (scale, shift)."""
    gamma, beta, mean, variance = _f64(gamma, beta, mean, variance)
    scale = gamma / np.sqrt(variance + epsilon)
    return scale, beta - mean * scale


def fold_affine_after(kernel, bias, scale, shift=None, depthwise=False):
    """``scale * layer(x) + shift`` as one layer: returns (kernel, bias).

    Args:
        kernel: Conv2D / Dense kernel (..., in, out), or with ``depthwise`` a (kh, kw, C, 1)
            depthwise kernel.
        bias: (out,) or None (no bias).
        scale, shift: (out,) per-output-channel affine map; shift None means 0 (a layer scale).
    """
    kernel, scale = _f64(kernel, scale)
    out = kernel.shape[-2] if depthwise else kernel.shape[-1]
    bias = np.zeros(out) if bias is None else np.asarray(bias, np.float64)
    shift = np.zeros(out) if shift is None else np.asarray(shift, np.float64)
    if scale.shape != (out,) or shift.shape != (out,) or bias.shape != (out,):
        raise ValueError(f"scale {scale.shape}, shift {shift.shape} and bias {bias.shape} must "
                         f"all be ({out},), the layer's output channels")
    folded = kernel * (scale[:, None] if depthwise else scale)
    return folded.astype(np.float32), (bias * scale + shift).astype(np.float32)


def fold_affine_before(kernel, bias, scale, shift=None):
    """``layer(scale * x + shift)`` as one layer: returns (kernel, bias).

    Exact for a Dense layer or a 1x1 convolution. For a larger zero-padded convolution it is only
    exact without `shift` (the padding would be shifted too), so a shift is refused there.

    Args:
        kernel: (in, out) or (kh, kw, in, out); bias: (out,) or None.
        scale, shift: (in,) per-input-channel affine map; shift None means 0.
    """
    kernel, scale = _f64(kernel, scale)
    if kernel.ndim == 4 and kernel.shape[:2] != (1, 1) and shift is not None and np.any(shift):
        raise ValueError(
            f"A shift cannot be folded into a {kernel.shape[0]}x{kernel.shape[1]} convolution: "
            "its zero padding would be shifted too. Subtract it before the padding instead."
        )
    channels, out = kernel.shape[-2], kernel.shape[-1]
    bias = np.zeros(out) if bias is None else np.asarray(bias, np.float64)
    if scale.shape != (channels,) or (shift is not None and np.shape(shift) != (channels,)):
        raise ValueError(f"scale {scale.shape} and shift must be ({channels},), the layer's "
                         "input channels")
    folded = kernel * scale[:, None]
    if shift is not None:
        bias = bias + np.tensordot(np.asarray(shift, np.float64),
                                   kernel.reshape(-1, channels, out).sum(0), axes=1)
    return folded.astype(np.float32), bias.astype(np.float32)


def average_linear(kernels, biases):
    """The mean of several Dense layers on the same input as one: (kernel, bias)."""
    if len({np.shape(k) for k in kernels}) != 1 or len({np.shape(b) for b in biases}) != 1:
        raise ValueError("The layers to average must have the same shapes")
    return (np.mean(_f64(*kernels), axis=0).astype(np.float32),
            np.mean(_f64(*biases), axis=0).astype(np.float32))


def scale_token_weights(w_g):
    """Folds the attention's ``D ** -0.5`` into ``w_g`` (D, 1)."""
    w_g = np.asarray(w_g, np.float64)
    return (w_g * w_g.shape[0] ** -0.5).astype(np.float32)


def fold_rms_normalization(proj, final):
    """Lets the attention run on RMS-normalised q and k instead of unit-norm ones.

    ``x * rsqrt(mean(x^2))`` is ``sqrt(D)`` times ``x / ||x||``: with such q and k the global
    query is ``sqrt(D)`` times larger, ``G * k`` D times, ``proj(G * k) + q`` ``sqrt(D)`` times
    (its bias too). Dividing proj's kernel and final's kernel by ``sqrt(D)`` and multiplying
    proj's bias by ``sqrt(D)`` gives the same output, without the two per-token rescalings.

    Args:
        proj, final: (kernel (D, D), bias (D,)) of the two Dense layers.

    Returns:
        (proj, final) folded.
    """
    (proj_kernel, proj_bias), (final_kernel, final_bias) = proj, final
    proj_kernel, proj_bias, final_kernel = _f64(proj_kernel, proj_bias, final_kernel)
    root = np.sqrt(proj_kernel.shape[0])
    folded_proj = ((proj_kernel / root).astype(np.float32), (proj_bias * root).astype(np.float32))
    folded_final = ((final_kernel / root).astype(np.float32), np.asarray(final_bias, np.float32))
    return folded_proj, folded_final


def rescaling_as_centering(scale, offset, channels):
    """A Rescaling ``scale * x + offset`` as ``scale * (x - pixel)``: returns (pixel, scale),
    each (channels,). ``pixel`` is the input value that normalises to 0 (the mean pixel for
    the ImageNet normalisation): subtracting it before the zero padding and folding `scale`
    into the first convolution is exact, borders included."""
    scale = np.broadcast_to(np.asarray(scale, np.float64), (channels,))
    offset = np.broadcast_to(np.asarray(offset, np.float64), (channels,))
    if np.any(scale == 0):
        raise ValueError("A rescaling with a zero scale cannot be folded into a convolution")
    return (-offset / scale).astype(np.float32), scale


def _layers(model):
    """{timm module path: layer} (Keras names write the path's dots as dashes)."""
    return {module_path(layer.name): layer for layer in model.layers}


def _weights(layers, name):
    if name not in layers:
        raise ValueError(f"Not a keras_swiftformer.SwiftFormer model: no layer {name!r}")
    return [np.asarray(w) for w in layers[name].get_weights()]


def _bn(layers, name):
    layer = layers[name]
    gamma, beta, mean, variance = _weights(layers, name)
    return batch_norm_affine(gamma, beta, mean, variance, layer.epsilon)


def swiftformer_config(model):
    """The `SwiftFormerConfig` of a model to fold; ValueError for models that cannot be folded
    (not a SwiftFormer, several outputs, max pooling)."""
    config = SwiftFormerConfig.from_model(model)
    if config.top == "pool" and type(model.get_layer(POOL)).__name__ != "GlobalAveragePooling2D":
        raise ValueError("Only average pooling can absorb the final norm; "
                         "fold a pooling='avg' or pooling=None model")
    return config


def _fold_conv_block(layers, name, folded):
    """dwconv + norm; pwconv2 + layer scale."""
    kernel, bias = _weights(layers, f"{name}.dwconv")
    folded[f"{name}.dwconv"] = fold_affine_after(kernel, bias, *_bn(layers, f"{name}.norm"),
                                                 depthwise=True)
    folded[f"{name}.pwconv1"] = _weights(layers, f"{name}.pwconv1")
    kernel, bias = _weights(layers, f"{name}.pwconv2")
    (gamma,) = _weights(layers, f"{name}.layer_scale")
    folded[f"{name}.pwconv2"] = fold_affine_after(kernel, bias, gamma)


def _fold_attention_block(layers, name, folded):
    _fold_conv_block(layers, f"{name}.local_representation", folded)
    attn = f"{name}.attn"
    folded[f"{attn}.to_query"] = _weights(layers, f"{attn}.to_query")
    folded[f"{attn}.to_key"] = _weights(layers, f"{attn}.to_key")
    (w_g,) = _weights(layers, attn)
    folded[attn] = [scale_token_weights(w_g)]
    folded[f"{attn}.proj"] = _weights(layers, f"{attn}.proj")
    kernel, bias = _weights(layers, f"{attn}.final")
    (gamma,) = _weights(layers, f"{name}.layer_scale_1")
    folded[f"{attn}.final"] = fold_affine_after(kernel, bias, gamma)
    kernel, bias = _weights(layers, f"{name}.linear.fc1")
    folded[f"{name}.linear.fc1"] = fold_affine_before(kernel, bias,
                                                      *_bn(layers, f"{name}.linear.norm1"))
    kernel, bias = _weights(layers, f"{name}.linear.fc2")
    (gamma,) = _weights(layers, f"{name}.layer_scale_2")
    folded[f"{name}.linear.fc2"] = fold_affine_after(kernel, bias, gamma)


def fold_swiftformer(model):
    """Folds a `keras_swiftformer.SwiftFormer` model's weights for inference.

    Returns:
        (`SwiftFormerConfig`, {module path: [arrays]}). A surviving layer keeps its name and
        absorbs its neighbours: the stem's first conv holds its norm (``stem.0``, ``stem.1``); ``...dwconv`` its ``norm``;
        ``...pwconv2`` its layer scale; ``...linear.fc1`` the ``linear.norm1`` before it;
        ``...attn.final`` ``layer_scale_1``; ``...linear.fc2`` ``layer_scale_2``; ``...attn``
        holds the scaled ``w_g``; ``head`` both heads and the final ``norm`` before them.
        ``preprocessing`` is the mean pixel to subtract (the scale is in ``stem.0``); without
        heads, ``norm`` stays as a (scale, shift) pair.
    """
    geometry = swiftformer_config(model)
    layers = _layers(model)
    folded = {}
    conv0, norm0, _, conv1, norm1, _ = STEM_PATHS
    kernel, bias = _weights(layers, conv0)
    if geometry.include_preprocessing:
        config = layers[PREPROCESSING].get_config()
        pixel, scale = rescaling_as_centering(config["scale"], config["offset"], kernel.shape[2])
        folded[PREPROCESSING] = [pixel]
        kernel, bias = fold_affine_before(kernel, bias, scale)
    folded[conv0] = fold_affine_after(kernel, bias, *_bn(layers, norm0))
    kernel, bias = _weights(layers, conv1)
    folded[conv1] = fold_affine_after(kernel, bias, *_bn(layers, norm1))
    for i in range(len(geometry.depths)):
        if i > 0:
            name = downsample_path(i)
            kernel, bias = _weights(layers, f"{name}.proj")
            folded[f"{name}.proj"] = fold_affine_after(kernel, bias, *_bn(layers, f"{name}.norm"))
        *conv_blocks, attention_block = geometry.block_paths(i)
        for name in conv_blocks:
            _fold_conv_block(layers, name, folded)
        _fold_attention_block(layers, attention_block, folded)
    norm = _bn(layers, NORM)
    if geometry.top == "logits":
        kernels, biases = zip(*(_weights(layers, head) for head in HEADS))
        folded[HEADS[0]] = fold_affine_before(*average_linear(kernels, biases), *norm)
    else:
        folded[NORM] = [a.astype(np.float32) for a in norm]
    return geometry, folded
