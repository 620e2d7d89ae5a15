"""converters.calibration and the int8 formats of converters.litert.tflite: range choice, the
flatbuffer rewrite, and the fidelity of the default int8 on the fixture checkpoints."""

import numpy as np
import pytest

import keras
from keras import layers
from converters import calibration
from converters.litert import tflite
from converters.formats import FORMATS
from converters.metrics import fidelity
from converters.litert.runtime import TFLiteRunner
from tests.support import GOLDEN_CASES, HAS_SHARED_FIXTURES, SAMPLES

RNG = np.random.default_rng(0)


def test_quantization_mse_is_rounding_noise_inside_the_range():
    values = RNG.uniform(-1, 1, 200_000)
    step = 2 / 255
    assert calibration.quantization_mse(values, -1, 1) == pytest.approx(step**2 / 12, rel=0.05)
    # A range half as wide clips: the error is the clipping's, far above rounding.
    assert calibration.quantization_mse(values, -0.5, 0.5) > 100 * step**2 / 12


def test_mse_range_clips_a_long_tail_and_keeps_a_bounded_distribution():
    uniform = RNG.uniform(-1, 1, 50_000)
    low, high = calibration.mse_range(uniform, -1, 1)
    assert low < -0.97 and high > 0.97
    tailed = RNG.standard_t(2, 50_000)  # long tails: clipping the rare extremes pays
    low, high = calibration.mse_range(tailed, tailed.min(), tailed.max())
    assert tailed.min() <= low < 0 < high <= tailed.max()
    assert high - low < 0.9 * (tailed.max() - tailed.min())
    assert (calibration.quantization_mse(tailed, low, high)
            < 0.9 * calibration.quantization_mse(tailed, tailed.min(), tailed.max()))


def test_choose_ranges_keeps_per_image_summaries_at_min_max():
    sample = RNG.standard_t(3, 20_000)
    stats = {0: {"name": "big", "min": sample.min(), "max": sample.max(), "size": 50_000,
                 "sample": sample},
             1: {"name": "pooled", "min": -3.0, "max": 5.0, "size": 220, "sample": sample}}
    ranges = calibration.choose_ranges(stats, "mse", margin=1.5)
    assert ranges[0][1] < sample.max()
    assert ranges[1] == (-4.5, 7.5)
    assert calibration.choose_ranges(stats, "minmax")[0] == (sample.min(), sample.max())
    with pytest.raises(ValueError, match="Range method"):
        calibration.choose_ranges(stats, "kl")


def test_mse_range_after_gelu_spends_its_levels_where_gelu_keeps_differences():
    # A pre-GELU tensor: GELU maps everything below about -3 to nearly 0, so the range
    # chosen for the error after it clips that side far harder than plain MSE does.
    values = RNG.normal(-1.0, 2.5, 100_000)
    plain = calibration.mse_range(values, values.min(), values.max())
    aware = calibration.mse_range(values, values.min(), values.max(), after=calibration.gelu)
    assert plain[0] < aware[0] < -2.0, (plain, aware)
    target = calibration.gelu(values)

    def error_after_gelu(low, high):
        return calibration.quantization_mse(values, low, high, after=calibration.gelu,
                                            target=target)

    assert error_after_gelu(*aware) < 0.8 * error_after_gelu(*plain)
    # Without `after` the error is the tensor's own: the plain range is the better there.
    assert calibration.quantization_mse(values, *plain) < calibration.quantization_mse(
        values, *aware)


def test_gelu_tanh_form_is_within_a_thousandth_of_the_exact_one():
    x = np.linspace(-8, 8, 2001)
    exact = keras.ops.convert_to_numpy(keras.activations.gelu(x, approximate=False))
    np.testing.assert_allclose(calibration.gelu(x), exact, atol=1e-3)


def test_choose_ranges_uses_the_function_of_a_tensors_only_consumer():
    sample = RNG.normal(-1.0, 2.5, 50_000)
    entry = {"min": sample.min(), "max": sample.max(), "size": 50_000, "sample": sample}
    stats = {0: {**entry, "consumers": ["GELU"]}, 1: {**entry, "consumers": ["ADD", "GELU"]},
             2: {**entry, "consumers": []}, 3: entry}
    ranges = calibration.choose_ranges(stats, "mse")
    assert ranges[0] == calibration.mse_range(sample, entry["min"], entry["max"],
                                              after=calibration.gelu)
    plain = calibration.mse_range(sample, entry["min"], entry["max"])
    assert ranges[1] == ranges[2] == ranges[3] == plain  # other or mixed consumers: plain


@pytest.fixture(scope="module")
def small_model():
    image = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same")(image)
    x = layers.Activation("gelu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, layers.Dense(4)(x))
    images = RNG.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
    return model, images


def test_with_ranges_rewrites_the_recorded_ranges_only(small_model, tmp_path):
    import tensorflow as tf

    model, images = small_model
    tflite.saved_model(model, str(tmp_path))
    converter = tflite.configure(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path)),
                                 "int8_float_io", images)
    calibrated = calibration.calibrate(converter)
    recorded = calibration.recorded_tensors(calibrated)
    first, *others = sorted(recorded)
    rewritten = calibration.recorded_tensors(calibration.with_ranges(calibrated,
                                                                     {first: (-0.5, 0.25)}))
    assert rewritten[first][1:] == (-0.5, 0.25)
    assert all(rewritten[i] == recorded[i] for i in others)
    stats = calibration.activation_statistics(calibrated, images)
    assert set(stats) == set(recorded)
    # The convolution's output feeds the GELU only (the input of `CONSUMER_FUNCTIONS`).
    assert ["GELU"] in [entry["consumers"] for entry in stats.values()]
    for i, entry in stats.items():  # the interpreter sees what the converter recorded
        assert entry["min"] == pytest.approx(recorded[i][1], abs=1e-4)
        assert entry["max"] == pytest.approx(recorded[i][2], abs=1e-4)
    with pytest.raises(ValueError, match="no recorded range"):
        calibration.with_ranges(calibrated, {max(others) + 1000: (0, 1)})


def test_int8_formats_keep_their_io_types_and_float_ops(small_model):
    model, images = small_model
    reference = model.predict(images, verbose=0)
    # int8 takes float32 (MediaPipe opens float32 or uint8 input only).
    for fmt, dtype in (("int8", np.float32), ("uint8", np.uint8), ("int8_float_io", np.float32)):
        runner = TFLiteRunner(content=tflite.convert(model, fmt, images, float_ops=("GELU",)))
        assert runner.input_dtype == dtype, fmt
        ops = [op["op_name"] for op in runner.interpreter._get_ops_details()]
        float_gelu = ops[ops.index("GELU") - 1] == "DEQUANTIZE"
        assert float_gelu == FORMATS[fmt].float_ops, (fmt, ops)
        assert fidelity(reference, runner.predict(images))["sqnr_db"] > 25, fmt
    with pytest.raises(ValueError, match="coreml_int8 is a coreml format, not a LiteRT one"):
        tflite.convert(model, "coreml_int8", images)


def test_int8_and_uint8_share_one_calibration_through_shared(small_model, monkeypatch):
    from converters import calibration as module

    model, images = small_model
    alone = {fmt: tflite.convert(model, fmt, images, float_ops=("GELU",))
             for fmt in ("int8", "uint8")}
    calls = []
    calibrate = module.calibrate
    monkeypatch.setattr(module, "calibrate", lambda c: calls.append(1) or calibrate(c))
    shared = {}
    together = {fmt: tflite.convert(model, fmt, images, float_ops=("GELU",), shared=shared)
                for fmt in ("int8", "uint8", "int8_float_io")}
    assert len(calls) == 2  # int8 and uint8 once; int8_float_io rounds its head too
    for fmt in ("int8", "uint8"):
        assert together[fmt] == alone[fmt], fmt


#: case -> (SQNR dB, top-1 agreement) regression floors for the default int8 (float32 I/O), a
#: little under what benchmarks/int8_report.py measured on 2026-12-01 on the shared fixtures
#: (100 calibration / 64 evaluation photos, 224 px): XS 34.23 dB / 0.984, L1 33.76 / 0.938. The
#: top-1 floors sit lower: the fixtures' random weights leave photos whose first two classes
#: are within 0.01 of a logit std, which any int8 noise may swap.
FIXTURE_FLOORS = {"original_xs": (33.5, 0.95), "original_l1": (33.0, 0.9)}


def _fixture_int8(case):
    from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.images import list_images, load_images

    checkpoint, _, variant = GOLDEN_CASES[case]
    model = SwiftFormer(variant, weights=str(checkpoint), classifier_activation=None)
    paths = list_images(SAMPLES)
    calibration_images = load_images(paths[0::2][:100])
    evaluation = load_images(paths[1::2][:64])
    folded, reference = for_inference(model), model.predict(evaluation, verbose=0)
    content = tflite.convert(folded, "int8", calibration_images, float_ops=FOLDED_FLOAT_OPS)
    return fidelity(reference, TFLiteRunner(content=content).predict(evaluation)), content


def _check_fixture_floor(case):
    from converters.litert.inspection import delegation

    if not HAS_SHARED_FIXTURES:
        pytest.skip("the floors were measured on ../shared's fixture checkpoints")
    result, content = _fixture_int8("shared_" + case)
    sqnr, top1 = FIXTURE_FLOORS[case]
    assert result["sqnr_db"] >= max(sqnr, 30.0), result  # regression floor; the 30 dB
    assert result["top1_agreement"] >= top1, result  # regression floor
    assert delegation(content)["partitions"] == 1


def test_default_int8_of_the_xs_fixture_with_the_sample_photos():
    """The pipeline's photo split (even-indexed calibrate, odd-indexed evaluate): the default
    int8 of the XS fixture stays above its regression floor and the issue's 30 dB, in one
    XNNPACK partition. About 80 s on 2 cores."""
    _check_fixture_floor("original_xs")


@pytest.mark.slow
def test_default_int8_of_the_l1_fixture_with_the_sample_photos():
    """As for XS, on L1 (about 3 minutes)."""
    _check_fixture_floor("original_l1")


def test_gptq_kernel_stays_on_the_converters_grid_and_lowers_the_output_error():
    from converters.weight_rounding import channel_scales, gptq_kernel

    mixing = RNG.normal(0, 1, (32, 32))
    x = RNG.normal(0, 1, (4000, 32)) @ mixing  # correlated inputs, as a layer's are
    kernel = RNG.normal(0, 32**-0.5, (32, 16)).astype(np.float32)
    rounded = gptq_kernel(kernel, x.T @ x / len(x))
    scales = channel_scales(kernel)
    np.testing.assert_allclose(channel_scales(rounded), scales, rtol=1e-6)
    levels = rounded / scales
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    nearest = np.round(kernel / scales) * scales
    gptq_error = np.mean((x @ (rounded - kernel)) ** 2)
    assert gptq_error < 0.7 * np.mean((x @ (nearest - kernel)) ** 2)


def test_round_weights_rounds_pointwise_layers_of_a_copy(small_model):
    from converters.weight_rounding import channel_scales, round_weights

    model, images = small_model
    before = [w.copy() for w in model.get_weights()]
    dense = next(layer for layer in model.layers if isinstance(layer, layers.Dense))
    rounded = round_weights(model, images)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)  # the original is untouched
    kernel = rounded.get_layer(dense.name).get_weights()[0]
    levels = kernel / channel_scales(dense.get_weights()[0])
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    skipped = round_weights(model, images, skip=(dense.name,))
    np.testing.assert_array_equal(skipped.get_layer(dense.name).get_weights()[0],
                                  dense.get_weights()[0])
