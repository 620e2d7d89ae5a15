"""converters.fold and converters.inference_graph: each fold on its own, then whole models."""

import numpy as np
import pytest

import keras
from keras import layers
from converters import fold
from converters.inference_graph import (
    FoldedTokenMixing,
    FOLDED_FLOAT_OPS,
    attention_weights,
    for_inference,
    inverse_rms,
)
from keras_swiftformer import SwiftFormer, SwiftFormerBackbone
from keras_swiftformer.config import SwiftFormerConfig
from keras_swiftformer.layers import AdditiveTokenMixing
from keras_swiftformer.config import BN_EPSILON, IMAGENET_MEAN, IMAGENET_STD
from tests.support import GOLDEN_CASES, assert_close_to_golden, golden, relative_error

RNG = np.random.default_rng(0)


def random_bn(channels):
    gamma, beta = RNG.uniform(0.5, 1.5, channels), RNG.normal(0, 0.1, channels)
    mean, variance = RNG.normal(0, 0.3, channels), RNG.uniform(0.5, 2.0, channels)
    return gamma, beta, mean, variance


def batch_norm_layer(params):
    layer = layers.BatchNormalization(epsilon=BN_EPSILON)
    layer.build((None, None, None, len(params[0])))
    layer.set_weights([np.asarray(p, np.float32) for p in params])
    return layer


def built(layer, input_shape):
    layer.build(input_shape)
    layer.set_weights([RNG.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.weights])
    return layer


def test_batch_norm_affine_equals_keras_batch_norm():
    params = random_bn(8)
    x = RNG.normal(0, 1, (4, 5, 5, 8)).astype(np.float32)
    scale, shift = fold.batch_norm_affine(*params, BN_EPSILON)
    expected = batch_norm_layer(params)(x, training=False)
    np.testing.assert_allclose(x * scale + shift, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["conv3x3", "depthwise", "dense"])
def test_affine_after_a_layer_folds_into_it(kind):
    channels = 6
    if kind == "conv3x3":
        layer, shape = layers.Conv2D(channels, 3, padding="same"), (2, 7, 7, 4)
    elif kind == "depthwise":
        layer, shape = layers.DepthwiseConv2D(3, padding="same"), (2, 7, 7, channels)
    else:
        layer, shape = layers.Dense(channels), (2, 5, 4)
    built(layer, shape)
    x = RNG.normal(0, 1, shape).astype(np.float32)
    scale, shift = fold.batch_norm_affine(*random_bn(channels), BN_EPSILON)
    expected = np.asarray(layer(x)) * scale + shift
    kernel, bias = fold.fold_affine_after(*layer.get_weights(), scale, shift,
                                          depthwise=kind == "depthwise")
    layer.set_weights([kernel, bias])
    assert relative_error(layer(x), expected) < 1e-6


def test_layer_scale_folds_into_projection_without_bias():
    dense = built(layers.Dense(5), (3, 4))
    x = RNG.normal(0, 1, (3, 4)).astype(np.float32)
    gamma = RNG.uniform(0.5, 1.0, 5)
    expected = np.asarray(dense(x)) * gamma
    dense.set_weights(list(fold.fold_affine_after(*dense.get_weights(), gamma)))
    assert relative_error(dense(x), expected) < 1e-6


@pytest.mark.parametrize("kind", ["conv1x1", "dense"])
def test_affine_before_a_pointwise_layer_folds_into_it(kind):
    layer = layers.Conv2D(7, 1) if kind == "conv1x1" else layers.Dense(7)
    built(layer, (2, 6, 6, 5))
    x = RNG.normal(0, 1, (2, 6, 6, 5)).astype(np.float32)
    scale, shift = fold.batch_norm_affine(*random_bn(5), BN_EPSILON)
    expected = layer(x * scale + shift)
    layer.set_weights(list(fold.fold_affine_before(*layer.get_weights(), scale, shift)))
    assert relative_error(layer(x), expected) < 1e-6


def test_shift_into_padded_convolution_is_refused_scale_alone_is_exact():
    conv = built(layers.Conv2D(4, 3, padding="same"), (1, 6, 6, 3))
    scale, shift = RNG.uniform(0.5, 2, 3), RNG.normal(0, 1, 3)
    with pytest.raises(ValueError, match="padding"):
        fold.fold_affine_before(*conv.get_weights(), scale, shift)
    x = RNG.normal(0, 1, (1, 6, 6, 3)).astype(np.float32)
    expected = conv(x * scale)
    conv.set_weights(list(fold.fold_affine_before(*conv.get_weights(), scale)))
    assert relative_error(conv(x), expected) < 1e-6


def test_input_normalisation_folds_exactly_with_mean_pixel_centering():
    """Rescaling -> zero pad -> stride-2 conv == subtract mean pixel -> zero pad -> conv with
    the scale folded in, borders included; folding the offset into the bias instead is not."""
    scale = [1 / (255 * s) for s in IMAGENET_STD]
    offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    conv = built(layers.Conv2D(8, 3, strides=2), (1, 18, 18, 3))
    x = RNG.uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    pad = layers.ZeroPadding2D(1)
    expected = np.asarray(conv(pad(layers.Rescaling(scale, offset)(x))))
    kernel, bias = conv.get_weights()
    pixel, channel_scale = fold.rescaling_as_centering(scale, offset, 3)
    np.testing.assert_allclose(pixel, 255 * np.array(IMAGENET_MEAN), rtol=1e-6)
    conv.set_weights(list(fold.fold_affine_before(kernel, bias, channel_scale)))
    assert relative_error(conv(pad(x - pixel)), expected) < 1e-6
    # The tempting alternative (offset into the bias, raw zero padding) breaks the borders.
    offset_bias = np.einsum("hwio,i->o", kernel, np.asarray(offset, np.float32))
    conv.set_weights([conv.get_weights()[0], bias + offset_bias])
    wrong = np.asarray(conv(pad(x))) - expected
    assert np.max(np.abs(wrong[:, 1:, 1:])) < 1e-4 * np.max(np.abs(expected))
    assert np.max(np.abs(wrong[:, 0])) > 0.1 * np.max(np.abs(expected))


def test_two_heads_average_into_one():
    head, dist = built(layers.Dense(10), (3, 6)), built(layers.Dense(10), (3, 6))
    x = RNG.normal(0, 1, (3, 6)).astype(np.float32)
    expected = (np.asarray(head(x)) + np.asarray(dist(x))) / 2
    kernels, biases = zip(head.get_weights(), dist.get_weights())
    head.set_weights(list(fold.average_linear(kernels, biases)))
    assert relative_error(head(x), expected) < 1e-6


def test_inverse_rms_is_sqrt_d_over_norm_and_safe_at_zero():
    x = RNG.normal(0, 1, (2, 3, 3, 16)).astype(np.float32)
    x[0, 0, 0] = 0.0
    r = np.asarray(inverse_rms(x))
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    np.testing.assert_allclose((x * r)[1], 4.0 * x[1] / norm[1], rtol=1e-5)
    assert np.all(np.isfinite(x * r)) and np.all((x * r)[0, 0, 0] == 0)


@pytest.mark.parametrize("token_weighting", ["l2", "ones"])
@pytest.mark.parametrize("l2_form", ["rsqrt", "l2_normalization"])
def test_folded_attention_equals_additive_attention(token_weighting, l2_form):
    """AdditiveTokenMixing + proj + final == FoldedTokenMixing with w_g scaled and proj/final
    refolded for the normalisation form (`scale_token_weights`, `fold_rms_normalization`)."""
    dim, shape = 12, (2, 5, 6, 12)
    query, key = (RNG.normal(0, 1, shape).astype(np.float32) for _ in range(2))
    proj, final = built(layers.Dense(dim), shape), built(layers.Dense(dim), shape)
    original = AdditiveTokenMixing(token_weighting)
    original.build([shape, shape])
    w_g = RNG.normal(0, 1, (dim, 1)).astype(np.float32)
    original.set_weights([w_g])
    mixed, q = original([query, key])
    expected = np.asarray(final(np.asarray(proj(mixed)) + q))

    geometry = SwiftFormerConfig((1,), (dim,), token_weighting, include_preprocessing=False,
                                 classes=None, classifier_activation=None,
                                 input_shape=(None, None, 3), name="m")
    weights = {"stages.0.blocks.0.attn.to_query": None, "stages.0.blocks.0.attn.to_key": None,
               "stages.0.blocks.0.attn.proj": proj.get_weights(),
               "stages.0.blocks.0.attn.final": final.get_weights()}
    refolded = attention_weights(geometry, weights, l2_form)
    layer = FoldedTokenMixing(token_weighting, l2_form)
    layer.build([shape, shape])
    layer.set_weights([fold.scale_token_weights(w_g)])
    mixed, q = layer([query, key])
    proj.set_weights(refolded["stages.0.blocks.0.attn.proj"])
    final.set_weights(refolded["stages.0.blocks.0.attn.final"])
    assert relative_error(final(np.asarray(proj(mixed)) + q), expected) < 1e-5


@pytest.fixture(scope="module")
def golden_pair():
    """golden_pair(case, **kwargs) -> (Keras model of the checkpoint, its folded copy)."""
    cache = {}

    def get(case, **kwargs):
        key = (case, tuple(sorted(kwargs.items())))
        if key not in cache:
            checkpoint, _, variant = GOLDEN_CASES[case]
            model = SwiftFormer(variant, weights=str(checkpoint), input_shape=(None, None, 3),
                                include_preprocessing=False, classifier_activation=None)
            cache[key] = model, for_inference(model, **kwargs)
        return cache[key]

    return get


@pytest.mark.parametrize("case", ["original_xs", "original_l1", "hf_xs"])
def test_folded_model_matches_unfolded_on_golden_inputs(case, golden_pair):
    """Float32 logits within 1e-5 relative of the unfolded model's, and within the fixtures'
    tolerance of the float64 reference."""
    model, folded = golden_pair(case)
    data = golden(case)
    pairs = [(data["inputs"], data["logits"])]
    if case != "hf_xs":  # a 256x320 input once per attention math is enough
        pairs.append((data["inputs_odd"], data["logits_odd"]))
    for inputs, logits in pairs:
        expected, actual = model(inputs), np.asarray(folded(inputs))
        assert relative_error(actual, expected) < 1e-5
        assert_close_to_golden(actual, logits)


@pytest.mark.parametrize("options", [dict(l2_form="l2_normalization"),
                                     dict(projections="conv")])
def test_graph_options_keep_the_outputs(options, golden_pair):
    model, folded = golden_pair("original_xs", **options)
    x = golden("original_xs")["inputs"]
    assert relative_error(folded(x), model(x)) < 1e-5


def test_folded_graph_has_no_batch_norm_or_layer_scale_and_keeps_names(golden_pair):
    model, folded = golden_pair("original_xs")
    kinds = {type(layer).__name__ for layer in folded.layers}
    assert not kinds & {"BatchNormalization", "LayerScale", "Average", "StochasticDepth"}
    original = {layer.name for layer in model.layers}
    weighted = [layer.name for layer in folded.layers if layer.weights]
    assert set(weighted) <= original
    assert len(weighted) < len([layer for layer in model.layers if layer.weights]) - 50


def test_raw_pixel_classifier_and_headless_models_fold(golden_pair):
    source, _ = golden_pair("original_xs")
    pixels = RNG.uniform(0, 255, (2, 64, 96, 3)).astype(np.float32)
    for kwargs in (dict(classifier_activation="softmax"), dict(include_top=False, pooling="avg"),
                   dict(include_top=False)):
        model = SwiftFormer("XS", input_shape=(64, 96, 3), **kwargs)
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(source.get_layer(layer.name).get_weights())
        folded = for_inference(model)
        assert folded.output.shape == model.output.shape
        assert relative_error(folded(pixels), model(pixels)) < 1e-5


def test_folded_model_saves_and_loads(golden_pair, tmp_path):
    _, folded = golden_pair("hf_xs")
    path = tmp_path / "folded.keras"
    folded.save(path)
    loaded = keras.saving.load_model(path)
    x = golden("hf_xs")["inputs"][:2]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), folded.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert loaded.get_layer("stages-0-blocks-2-attn").token_weighting == "ones"


def test_bad_input_is_rejected():
    image = keras.Input((32, 32, 3))
    with pytest.raises(ValueError, match="SwiftFormer"):
        for_inference(keras.Model(image, layers.Conv2D(4, 3)(image)))
    with pytest.raises(ValueError, match="single-output"):
        for_inference(SwiftFormerBackbone("XS", input_shape=(64, 64, 3)))
    with pytest.raises(ValueError, match="l2_form"):
        for_inference(SwiftFormer("XS", input_shape=(64, 64, 3)), l2_form="softmax")
    with pytest.raises(ValueError, match="same shapes"):
        fold.average_linear([np.ones((2, 3)), np.ones((3, 3))], [np.ones(3), np.ones(3)])


def test_exported_float_graph_is_one_xnnpack_partition_without_l2_normalization(golden_pair):
    """The folded float32 .tflite: no L2_NORMALIZATION, TRANSPOSE or shape ops, every op taken
    by XNNPACK in one partition, and the same logits as Keras."""
    from converters.litert.inspection import delegation
    from converters.litert.runtime import TFLiteRunner
    from converters.litert.tflite import convert

    checkpoint, _, variant = GOLDEN_CASES["original_xs"]
    model = SwiftFormer(variant, weights=str(checkpoint), classifier_activation=None)
    content = convert(for_inference(model), "float32")
    runner = TFLiteRunner(content=content, num_threads=2)
    assert set(runner.op_types()) == {"ADD", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                                      "GELU", "MAXIMUM", "MEAN", "MUL", "PAD", "RESHAPE", "RSQRT",
                                      "SUM"}
    assert delegation(content) == {"ops": 211, "partitions": 1, "undelegated": {}}
    pixels = RNG.uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    assert relative_error(runner.predict(pixels), model.predict(pixels, verbose=0)) < 1e-5
    assert set(FOLDED_FLOAT_OPS) <= set(runner.op_types())
