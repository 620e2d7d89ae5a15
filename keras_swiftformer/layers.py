"""The few SwiftFormer operations that Keras does not ship as layers.

Everything else in the model (convolutions, BatchNorm, Dense, GELU) is a stock Keras layer; see
`keras_swiftformer.model`. The layers here are written with `keras.ops` only, so they run on the
TensorFlow, JAX and PyTorch backends, and are registered so that `.keras` files load without
`custom_objects`.

The math of each layer lives in a small mixin (`*Math`) so that another Keras implementation
(for instance `tf_keras`, which tensorflow-model-optimization needs) can reuse it unchanged.
"""

import keras
from keras import ops

#: The two token weightings of the efficient additive attention.
#: ``"l2"``: the official code since July 2023 and timm -- ``normalize(q @ w_g * D**-0.5)`` over
#: the tokens. ``"ones"``: the first official release and Hugging Face ``transformers``, whose
#: ``softmax`` over a singleton axis makes every token weight exactly 1.
TOKEN_WEIGHTINGS = ("l2", "ones")

#: ``torch.nn.functional.normalize``'s epsilon: ``x / max(||x||, 1e-12)``.
L2_EPSILON = 1e-12

PACKAGE = "keras_swiftformer"


def check_token_weighting(token_weighting):
    """Returns `token_weighting` if it is one of `TOKEN_WEIGHTINGS`, else raises ValueError."""
    if token_weighting not in TOKEN_WEIGHTINGS:
        raise ValueError(
            f"token_weighting must be one of {TOKEN_WEIGHTINGS}, got {token_weighting!r}"
        )
    return token_weighting


def l2_normalize(x, axis=-1):
    """``x / max(||x||_2, 1e-12)`` over `axis`, as ``torch.nn.functional.normalize``.

    Written as ``x * rsqrt(max(sum(square(x)), 1e-24))``, the pattern of ``tf.math.l2_normalize``,
    which the TFLite converter turns into one ``L2_NORMALIZATION`` op (int8-capable) when
    `axis` is the last one. (``keras.ops.normalize`` clips the reciprocal instead, which
    converts to SQUARE/SUM/RSQRT/MINIMUM/MUL.)
    """
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, L2_EPSILON**2))


def l2_normalize_tokens(weights):
    """(B, H, W, 1) or (B, N, 1) token weights, L2-normalised over the tokens.

    Flattened to (B, tokens) first, so that the normalisation runs over the last axis (one
    ``L2_NORMALIZATION`` op in TFLite), then reshaped back.
    """
    shape = ops.shape(weights)
    flat = ops.reshape(weights, (shape[0], -1))
    return ops.reshape(l2_normalize(flat, axis=-1), shape)


TOKEN_SUMS = ("sum", "mean")


def sum_tokens(x, method="sum"):
    """(B, H, W, D) or (B, N, D) -> (B, 1, 1, D) / (B, 1, D): the sum over the tokens.

    ``method="mean"`` computes it as the token mean times the token count. The two agree in
    float to rounding; they differ once quantised: TFLite's 16-bit SUM kernel loses the result
    over thousands of tokens while its MEAN does not, and the int8 kernels the other way round
    (the int8 formats use "sum").
    """
    token_axes = tuple(range(1, len(x.shape) - 1))
    if method == "sum":
        return ops.sum(x, axis=token_axes, keepdims=True)
    count = 1
    for axis in token_axes:
        count = count * ops.shape(x)[axis]
    return ops.mean(x, axis=token_axes, keepdims=True) * ops.cast(count, x.dtype)


class LayerScaleMath:
    """``x * gamma``, gamma of shape (C,) broadcast over the last (channel) axis."""

    def _layer_scale(self, x, gamma):
        return x * ops.cast(gamma, x.dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LayerScale(LayerScaleMath, keras.layers.Layer):
    """Per-channel learnable scale of a residual branch (timm's ``LayerScale2d``).

    Input and output: (B, H, W, C).

    Args:
        init_value: initial value of every scale (1 in the conv blocks, 1e-5 in the attention
            blocks, as in the reference).
    """

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
        )

    def call(self, x):
        return self._layer_scale(x, self.gamma)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package=PACKAGE)
class StochasticDepth(keras.layers.Layer):
    """Drops a whole residual branch per sample while training (DropPath); identity at inference.

    Input and output: any shape (B, ...). Kept samples are scaled by ``1 / (1 - rate)``.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class AdditiveTokenMixingMath:
    """The parameter-light core of efficient additive attention (see `AdditiveTokenMixing`)."""

    def _set_options(self, token_weighting, token_sum):
        """Validates and stores the two options of `AdditiveTokenMixing`."""
        self.token_weighting = check_token_weighting(token_weighting)
        if token_sum not in TOKEN_SUMS:
            raise ValueError(f"token_sum must be one of {TOKEN_SUMS}, got {token_sum!r}")
        self.token_sum = token_sum

    def _mix(self, query, key, w_g, token_weighting, token_sum="sum"):
        q = l2_normalize(query)
        k = l2_normalize(key)
        if token_weighting == "l2":
            dim = q.shape[-1]
            weights = l2_normalize_tokens(ops.matmul(q, ops.cast(w_g, q.dtype)) * (dim**-0.5))
            global_query = sum_tokens(weights * q, token_sum)
        else:
            global_query = sum_tokens(q, token_sum)
        return global_query * k, q


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdditiveTokenMixing(AdditiveTokenMixingMath, keras.layers.Layer):
    """Efficient additive attention between its projections (Shaker et al., 2023, eq. 4-6).

    Inputs: ``[query, key]``, the outputs of the ``to_query`` and ``to_key`` projections, each
    (B, H, W, D) (or (B, N, D)). Both are L2-normalised over channels; a global query
    ``G = sum_tokens(alpha * q)`` is formed and broadcast against the keys.

    Outputs: ``[G * k, q]`` (both of the input shape): the attention model adds ``proj(G * k)``
    to the normalised query ``q`` and applies ``final``.

    Args:
        token_weighting: ``"l2"`` (``alpha = normalize_tokens(q @ w_g / sqrt(D))``, the current
            official and timm math) or ``"ones"`` (``alpha = 1``, the first release's and Hugging
            Face's math). `w_g` exists in both cases, so either checkpoint loads into either.
        token_sum: how the sum over tokens is written (see `sum_tokens`): ``"sum"``, or
            ``"mean"`` for export to TFLite's 16-bit-activation format.
    """

    def __init__(self, token_weighting="l2", token_sum="sum", **kwargs):
        super().__init__(**kwargs)
        self._set_options(token_weighting, token_sum)

    def build(self, input_shape):
        dim = input_shape[0][-1]
        self.w_g = self.add_weight(
            name="w_g", shape=(dim, 1), initializer=keras.initializers.RandomNormal(stddev=1.0)
        )

    def call(self, inputs):
        query, key = inputs
        return self._mix(query, key, self.w_g, self.token_weighting, self.token_sum)

    def compute_output_shape(self, input_shape):
        return [input_shape[0], input_shape[0]]

    def get_config(self):
        return {**super().get_config(), "token_weighting": self.token_weighting,
                "token_sum": self.token_sum}
