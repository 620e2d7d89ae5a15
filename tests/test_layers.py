"""keras_swiftformer.layers against NumPy references of the reference math."""

import numpy as np
import pytest

import keras
from keras_swiftformer.layers import AdditiveTokenMixing, LayerScale, StochasticDepth


def numpy_attention_core(q, k, w_g, weighting):
    """The official forward (B, N, D) in float64: normalise, weight tokens, global query."""
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    if weighting == "l2":
        a = q @ w_g * q.shape[-1] ** -0.5
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    else:  # softmax over a singleton axis
        a = np.exp(q @ w_g - q @ w_g)
    g = np.sum(a * q, axis=1, keepdims=True)
    return g * k, q


@pytest.mark.parametrize("weighting", ["l2", "ones"])
def test_additive_token_mixing_matches_reference(weighting):
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 5, 7, 8)), rng.normal(size=(2, 5, 7, 8))
    layer = AdditiveTokenMixing(weighting)
    mixed, qn = layer([q.astype("float32"), k.astype("float32")])
    w_g = np.asarray(layer.w_g, np.float64)
    ref_mixed, ref_q = numpy_attention_core(q.reshape(2, 35, 8), k.reshape(2, 35, 8), w_g,
                                            weighting)
    np.testing.assert_allclose(np.asarray(mixed).reshape(2, 35, 8), ref_mixed, atol=1e-5)
    np.testing.assert_allclose(np.asarray(qn).reshape(2, 35, 8), ref_q, atol=1e-6)


def test_layers_serialise_with_their_options():
    for layer in (AdditiveTokenMixing("ones", name="a"), LayerScale(0.5, name="b"),
                  StochasticDepth(0.2, seed=3, name="c")):
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert type(restored) is type(layer)


def test_stochastic_depth_drops_whole_samples_only_in_training():
    layer = StochasticDepth(0.5, seed=1)
    x = np.ones((64, 3, 3, 4), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(1) == per_sample.max(1))  # a sample is kept or dropped whole
    assert 10 < np.sum(per_sample[:, 0] == 0) < 54


def test_layer_scale_scales_channels():
    layer = LayerScale(0.25)
    np.testing.assert_allclose(layer(np.ones((1, 2, 2, 3), "float32")), 0.25)
    assert layer.gamma.shape == (3,)
