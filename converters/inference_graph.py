"""The SwiftFormer inference graph: folded weights in a graph shaped for LiteRT and XNNPACK.

`for_inference(model)` folds a `keras_swiftformer.SwiftFormer` (`converters.fold`) and rebuilds
it as a plain Keras model with the same outputs and fewer layers: no BatchNorm, no layer scale,
one head, the input normalisation reduced to a mean-pixel subtraction in front of the first
convolution, the attention's scale inside ``w_g``. Layers keep the name of the original layer
that absorbed the others.

Options shape the exported graph (see `for_inference`); the defaults are the fastest under
XNNPACK (`benchmarks/litert_vs_torch.py` measures them).
"""

import keras
import numpy as np
from keras import layers, ops

from converters.fold import fold_rms_normalization, fold_swiftformer
from keras_swiftformer.layers import L2_EPSILON, check_token_weighting, l2_normalize
from keras_swiftformer.config import (HEADS, MLP_RATIO, NORM, POOL, PREDICTIONS, PREPROCESSING,
                                      STEM_PATHS, downsample_path, layer_name)

#: How the attention's L2 normalisations are written.
#: "rsqrt": RMS normalisation ``x * rsqrt(max(mean(x * x), eps^2 / D))``, i.e. ``sqrt(D)`` times
#: the unit-norm vector, with the ``sqrt(D)`` folded into proj and final
#: (`converters.fold.fold_rms_normalization`): MUL/MEAN/MAXIMUM/RSQRT ops that XNNPACK takes,
#: so a float graph is one delegate partition.
#: "l2_normalization": the pattern the TFLite converter fuses into one L2_NORMALIZATION op,
#: which XNNPACK does not take (each one splits the delegated graph) and whose int8 kernel
#: is slow; kept for comparison.
L2_FORMS = ("rsqrt", "l2_normalization")
PROJECTIONS = ("dense", "conv")

#: The ops the int8 formats keep in float for the folded graph (``float_ops`` of
#: `converters.litert.tflite.convert`): int8 runs only the convolutions and projections (the GEMMs,
#: nearly all the MACs), float the rest, which XNNPACK runs in the same partition. GELU, RSQRT
#: and MAXIMUM have no XNNPACK int8 kernel; ADD keeps the residual stream from being
#: requantised at every block; MUL, MEAN and SUM are the attention's long-tailed products;
#: DEPTHWISE_CONV_2D then reads the float stream without a QUANTIZE in front.
#: `benchmarks/int8_report.py` measures what each choice gives.
FOLDED_FLOAT_OPS = ("GELU", "RSQRT", "MAXIMUM", "ADD", "MUL", "MEAN", "SUM",
                    "DEPTHWISE_CONV_2D")


def _check(value, allowed, what):
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    return value


def _unobserved(name, x):
    return x


def inverse_rms(x, prefix="x", observe=_unobserved):
    """(..., D) -> (..., 1): ``rsqrt(max(mean(x * x), eps^2 / D))`` over the last axis, so that
    ``x * inverse_rms(x)`` is ``sqrt(D) * x / max(||x||, eps)`` exactly (eps = 1e-12 as
    ``torch.nn.functional.normalize``).

    Written with ``x * x`` and MEAN, which the converter does not turn into L2_NORMALIZATION.
    ``observe(name, tensor)`` sees the intermediates (`FoldedTokenMixingMath`), named
    ``{prefix}_squares``, ``_mean``, ``_floor`` and ``_inv_rms``.
    """
    squares = observe(f"{prefix}_squares", x * x)
    mean = observe(f"{prefix}_mean", ops.mean(squares, axis=-1, keepdims=True))
    floor = observe(f"{prefix}_floor", ops.convert_to_tensor(L2_EPSILON**2 / x.shape[-1], x.dtype))
    return observe(f"{prefix}_inv_rms", ops.rsqrt(ops.maximum(mean, floor)))


class FoldedTokenMixingMath:
    """The math of `FoldedTokenMixing`, written once for it and for the tf_keras twin that
    quantisation-aware training observes (`converters.tfmot.twin`).

    ``_folded_mix(inputs, w_g, observe)`` passes every intermediate tensor through
    ``observe(name, tensor)`` (identity here); `points` names them in computation order, each
    with its kind: "range" (an activation), "constant" (a constant or weight), "unit" (the
    output of an L2 normalisation) or "statistic" (inside an RMS normalisation's ``x * x``,
    MEAN, MAXIMUM, RSQRT chain).
    """

    def _set_options(self, token_weighting, l2_form):
        self.token_weighting = check_token_weighting(token_weighting)
        self.l2_form = _check(l2_form, L2_FORMS, "l2_form")

    @staticmethod
    def _token_shape(input_shape):
        """(B, H, W, D) of q and k from the inputs' shapes [(B, H, W, D)] * 2."""
        return tuple(input_shape[0])

    def compute_output_shape(self, input_shape):
        shape = self._token_shape(input_shape)
        return [shape, shape]

    def get_config(self):
        return {**super().get_config(), "token_weighting": self.token_weighting,
                "l2_form": self.l2_form}

    def points(self):
        """{name: kind} of the tensors `_folded_mix` passes to ``observe``."""
        def normalized(prefix):
            if self.l2_form == "l2_normalization":
                return {prefix: "unit"}
            return {f"{prefix}_squares": "statistic", f"{prefix}_mean": "statistic",
                    f"{prefix}_floor": "statistic", f"{prefix}_inv_rms": "statistic"}

        found = {**normalized("query"), "q": "range"}
        if self.token_weighting == "l2":
            found.update(w_g="constant", scores="range", squares="range", energy="range",
                         energy_floor="constant", inv_norm="range", weighted="range",
                         summed="range", global_query="range")
        else:
            found.update(global_query="range")
        if self.l2_form == "rsqrt":
            return {**found, **normalized("key"), "key_scale": "range", "mixed": "range"}
        return {**found, **normalized("key"), "mixed": "range"}

    def _folded_mix(self, inputs, w_g, observe=_unobserved):
        query, key = inputs
        rms = self.l2_form == "rsqrt"
        if rms:
            q = observe("q", query * inverse_rms(query, "query", observe))
        else:
            q = observe("q", observe("query", l2_normalize(query)))
        if self.token_weighting == "l2":
            # RMS-normalised q makes a sqrt(D) times larger: so must be the epsilon.
            epsilon = L2_EPSILON * (q.shape[-1] ** 0.5 if rms else 1.0)
            w_g = observe("w_g", ops.cast(w_g, q.dtype))
            a = observe("scores", ops.matmul(q, w_g))  # (B, H, W, 1)
            square_sum = observe("energy", ops.sum(observe("squares", a * a), axis=(1, 2),
                                                   keepdims=True))
            floor = observe("energy_floor", ops.convert_to_tensor(epsilon**2, q.dtype))
            inv_norm = observe("inv_norm", ops.rsqrt(ops.maximum(square_sum, floor)))
            g = observe("summed", ops.sum(observe("weighted", a * q), axis=(1, 2),
                                          keepdims=True))
            g = observe("global_query", g * inv_norm)
        else:
            g = observe("global_query", ops.sum(q, axis=(1, 2), keepdims=True))
        if rms:
            # key * (1/rms(key) * g), not (key / rms(key)) * g: in the latter the converter
            # gives the normalised key the int8 scale of the product.
            scale = observe("key_scale", inverse_rms(key, "key", observe) * g)
            return [observe("mixed", key * scale), q]
        return [observe("mixed", g * observe("key", l2_normalize(key))), q]


@keras.saving.register_keras_serializable(package="keras_swiftformer_inference")
class FoldedTokenMixing(FoldedTokenMixingMath, keras.layers.Layer):
    """Efficient additive attention's core for folded weights.

    Inputs: ``[query, key]`` (B, H, W, D) each. Outputs: ``[G * k, q]`` as `keras_swiftformer.layers.AdditiveTokenMixing`
    (q, k the normalised query and key, ``G = sum_tokens(alpha * q)``, ``alpha =
    normalize_tokens(q @ w_g)`` for "l2", 1 for "ones"), except that:

    - ``w_g`` holds the ``D ** -0.5`` factor (`converters.fold.scale_token_weights`);
    - with ``l2_form="rsqrt"`` q and k are RMS-normalised, so the outputs are ``D * G * k`` and
      ``sqrt(D) * q``; the following proj and final carry the compensation
      (`converters.fold.fold_rms_normalization`);
    - the token normalisation is applied to the sum, not to every weight:
      ``sum(a * q) / max(||a||, eps)`` equals ``sum(normalize(a) * q)`` and needs no reshape.
    """

    def __init__(self, token_weighting="l2", l2_form="rsqrt", **kwargs):
        super().__init__(**kwargs)
        self._set_options(token_weighting, l2_form)

    def build(self, input_shape):
        self.dim = self._token_shape(input_shape)[-1]
        self.w_g = self.add_weight(name="w_g", shape=(self.dim, 1), initializer="zeros")

    def call(self, inputs):
        return self._folded_mix(inputs, self.w_g)


class _Builder:
    """Creates the folded layers and assigns their weights as it goes."""

    def __init__(self, weights, projections):
        self.weights = weights
        self.projections = projections
        self.assigned = []

    def _set(self, layer, path):
        """Records that `layer` takes the folded weights of module `path`."""
        self.assigned.append((layer, path))
        return layer

    def token_mixing(self, inputs, token_weighting, l2_form, path):
        layer = FoldedTokenMixing(token_weighting, l2_form, name=layer_name(path))
        return self._set(layer, path)(inputs)

    def conv(self, x, filters, kernel_size, path, **kwargs):
        layer = layers.Conv2D(filters, kernel_size, name=layer_name(path), **kwargs)
        return self._set(layer, path)(x)

    def dwconv(self, x, path):
        layer = layers.DepthwiseConv2D(3, padding="same", name=layer_name(path))
        return self._set(layer, path)(x)

    def dense(self, x, units, path):
        return self._set(layers.Dense(units, name=layer_name(path)), path)(x)

    def projection(self, x, units, path):
        """A channel projection of (B, H, W, C): Dense or 1x1 convolution."""
        if self.projections == "conv":
            return self.conv(x, units, 1, path)
        return self.dense(x, units, path)

    def assign(self):
        for layer, path in self.assigned:
            values = self.weights[path]
            if isinstance(layer, layers.Conv2D) and values[0].ndim == 2:
                values = [values[0][None, None], values[1]]  # a Dense kernel in a 1x1 conv
            layer.set_weights(values)


def _conv_block(b, x, dim, hidden, name):
    y = b.dwconv(x, f"{name}.dwconv")
    y = b.conv(y, hidden, 1, f"{name}.pwconv1")
    y = layers.Activation("gelu", name=layer_name(f"{name}.act"))(y)
    y = b.conv(y, dim, 1, f"{name}.pwconv2")
    return layers.Add(name=layer_name(f"{name}.add"))([x, y])


def _attention_block(b, x, dim, name, token_weighting, l2_form):
    x = _conv_block(b, x, dim, dim, f"{name}.local_representation")
    attn = f"{name}.attn"
    inputs = [b.projection(x, dim, f"{attn}.to_query"), b.projection(x, dim, f"{attn}.to_key")]
    mixed, q = b.token_mixing(inputs, token_weighting, l2_form, attn)
    y = b.projection(mixed, dim, f"{attn}.proj")
    y = layers.Add(name=layer_name(f"{attn}.add"))([y, q])
    y = b.projection(y, dim, f"{attn}.final")
    x = layers.Add(name=layer_name(f"{name}.layer_scale_1.add"))([x, y])
    y = b.conv(x, MLP_RATIO * dim, 1, f"{name}.linear.fc1")
    y = layers.Activation("gelu", name=layer_name(f"{name}.linear.act"))(y)
    y = b.conv(y, dim, 1, f"{name}.linear.fc2")
    return layers.Add(name=layer_name(f"{name}.layer_scale_2.add"))([x, y])


def subtract_pixel(x, pixel, name=PREPROCESSING):
    """(B, H, W, C) - `pixel` (C,): the input normalisation left after folding.

    With a known width it runs on the (B, H, W * C) view against `pixel` tiled W times: the
    same numbers, but XNNPACK's broadcast over a 3-long innermost axis is slow.
    """
    _, height, width, channels = x.shape
    offset = -np.asarray(pixel, np.float64)
    if height is None or width is None:
        return layers.Rescaling(1.0, offset=offset.tolist(), name=name)(x)
    x = layers.Reshape((height, width * channels), name=f"{name}-rows")(x)
    x = layers.Rescaling(1.0, offset=np.tile(offset, width).tolist(), name=name)(x)
    return layers.Reshape((height, width, channels), name=f"{name}-image")(x)


def attention_weights(geometry, weights, l2_form):
    """`weights` with the attention's projections refolded for `l2_form`."""
    weights = dict(weights)
    for i in range(len(geometry.depths)):
        attn = f"{geometry.block_paths(i)[-1]}.attn"
        if l2_form == "rsqrt":
            proj, final = fold_rms_normalization(weights[f"{attn}.proj"], weights[f"{attn}.final"])
            weights[f"{attn}.proj"], weights[f"{attn}.final"] = list(proj), list(final)
    return weights


def build_inference_model(geometry, weights, l2_form="rsqrt", projections="dense",
                          name=None):
    """The folded SwiftFormer graph of `geometry` carrying `weights` (`fold_swiftformer`)."""
    _check(l2_form, L2_FORMS, "l2_form")
    _check(projections, PROJECTIONS, "projections")
    b = _Builder(attention_weights(geometry, weights, l2_form), projections)
    image = keras.Input(shape=geometry.input_shape, name="image")
    x = image
    if geometry.include_preprocessing:
        x = subtract_pixel(x, weights[PREPROCESSING][0])
    widths = geometry.widths
    for conv, filters in ((STEM_PATHS[0], widths[0] // 2), (STEM_PATHS[3], widths[0])):
        x = layers.ZeroPadding2D(1, name=layer_name(f"{conv}.pad"))(x)
        x = b.conv(x, filters, 3, conv, strides=2, activation="relu")
    for i, width in enumerate(widths):
        if i > 0:
            name = f"{downsample_path(i)}.proj"
            x = layers.ZeroPadding2D(1, name=layer_name(f"{name}.pad"))(x)
            x = b.conv(x, width, 3, name, strides=2)
        *conv_blocks, attention_block = geometry.block_paths(i)
        for name in conv_blocks:
            x = _conv_block(b, x, width, MLP_RATIO * width, name)
        x = _attention_block(b, x, width, attention_block, geometry.token_weighting, l2_form)
    if geometry.top == "logits":
        head = HEADS[0]  # holds both heads' mean
        classes = weights[head][0].shape[-1]
        if projections == "conv":  # per-channel int8 weights in QAT (converters.tfmot)
            x = layers.GlobalAveragePooling2D(keepdims=True, name=POOL)(x)
            x = b.conv(x, classes, 1, head)
            x = layers.Reshape((classes,), name=f"{head}-flatten")(x)
        else:
            x = layers.GlobalAveragePooling2D(name=POOL)(x)
            x = b.dense(x, classes, head)
        if geometry.classifier_activation is not None:
            x = layers.Activation(geometry.classifier_activation, name=PREDICTIONS)(x)
    else:
        scale, shift = weights[NORM]
        if geometry.top == "pool":
            x = layers.GlobalAveragePooling2D(name=POOL)(x)
        x = layers.Rescaling(scale.tolist(), offset=shift.tolist(), name=NORM)(x)
    model = keras.Model(image, x, name=name or f"{geometry.name}_inference")
    b.assign()
    return model


def for_inference(model, l2_form="rsqrt", projections="dense"):
    """A folded copy of a `keras_swiftformer.SwiftFormer` model for export and inference.

    Same input and outputs as `model` (logits or probabilities, pooled features, or the final
    feature map), within float rounding; `model` is left unchanged.

    Args:
        model: a SwiftFormer classifier (``include_top=True``) or feature extractor
            (``pooling="avg"`` or None), with or without built-in preprocessing.
        l2_form: how the attention's L2 normalisations are written (`L2_FORMS`):
            "rsqrt" keeps a float graph in one XNNPACK partition; "l2_normalization" gives
            TFLite's int8-capable L2_NORMALIZATION op.
        projections: the attention's channel projections and the classifier as "dense"
            (FULLY_CONNECTED) or "conv" (1x1 CONV_2D; the classifier on the (B, 1, 1, C) pooled
            map, then reshaped); XNNPACK runs both as the same GEMM.
            Quantisation-aware training uses "conv": TFMOT quantises convolution kernels per
            output channel, Dense kernels only per tensor.

    Raises:
        ValueError: `model` is not a single-output SwiftFormer model, or an unknown option.
    """
    geometry, weights = fold_swiftformer(model)
    return build_inference_model(geometry, weights, l2_form, projections)
