"""converters.coreml.graph and .compression on their own: the float16-safe L2 normalisations,
the token-weight bound, the k-means palette, coremltools' own decompression against the
evaluator's, and the S/L1/L3 programs (op counts against the official conversion's 261)."""

import numpy as np
import pytest

pytest.importorskip("coremltools")

from converters import coreml  # noqa: E402
from converters.coreml.graph import (  # noqa: E402
    TOKEN_ENERGY_LIMIT,
    safe_l2_normalize,
    token_weights,
)
from converters.coreml.mil_eval import MLProgram  # noqa: E402
from converters.formats import COMPRESSIONS, CoreMLRecipe  # noqa: E402
from keras_swiftformer import SwiftFormer  # noqa: E402
from keras_swiftformer.images import list_images, load_images  # noqa: E402
from tests.support import SAMPLES  # noqa: E402
from keras_swiftformer.random_weights import realistic_weights  # noqa: E402

#: The official PyTorch SwiftFormer-S through coremltools 9.0 (ImageType, FLOAT16, iOS 16):
#: non-constant MIL ops and transposes (issue 17).
OFFICIAL_S_OPS, OFFICIAL_S_TRANSPOSES = 261, 8
FLOAT32_RTOL, FLOAT16_RTOL = 5e-5, 1.4e-3


@pytest.mark.parametrize("form", ["ours", "sum of squares"])
def test_l2_normalisation_of_large_vectors_is_float16_safe(form, tmp_path):
    """||x|| > 256: the sum of squares overflows float16 (every vector zeroed) unless x is
    divided by its peak first (`safe_l2_normalize`). Converted in float16, run by the
    evaluator."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 300, 8))], opset_version=ct.target.iOS16)
    def l2_normalize(x):
        if form == "ours":
            return safe_l2_normalize(mb, x, [1], "normalized")
        square_sum = mb.reduce_sum(x=mb.mul(x=x, y=x), axes=[1], keep_dims=True)
        return mb.mul(x=x, y=mb.rsqrt(x=mb.maximum(x=square_sum, y=np.float32(1e-24))))

    mlmodel = ct.convert(l2_normalize, convert_to="mlprogram", skip_model_load=True,
                         compute_precision=ct.precision.FLOAT16,
                         minimum_deployment_target=ct.target.iOS16)
    mlmodel.save(str(tmp_path / "l2.mlpackage"))
    program = MLProgram(tmp_path / "l2.mlpackage")
    x = np.random.default_rng(0).normal(0, 100, (1, 300, 8)).astype(np.float32)
    y = program.run({next(iter(program.inputs)): x})[program.outputs[0]]
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)
    if form == "ours":
        np.testing.assert_allclose(y, expected, atol=2e-3)
        assert program.overflows == {}
        assert coreml.op_histogram(tmp_path / "l2.mlpackage")["real_div"] == 2
    else:
        assert program.overflows and np.all(y == 0)


def test_token_weights_bound_the_token_energy_by_a_power_of_two():
    rng = np.random.default_rng(0)
    small = rng.normal(0, 0.01, (64, 1)).astype(np.float32)
    np.testing.assert_array_equal(token_weights(small, 49), small)
    large = rng.normal(0, 3.0, (48, 1)).astype(np.float32)
    scaled = token_weights(large, 56 * 56)
    ratio = scaled / large
    assert np.allclose(ratio, ratio[0]) and np.log2(ratio[0]) == np.round(np.log2(ratio[0]))
    energy = 56 * 56 * np.sum(scaled.astype(np.float64)**2)
    assert TOKEN_ENERGY_LIMIT / 4 < energy <= TOKEN_ENERGY_LIMIT


def test_kmeans_palette_beats_a_uniform_palette():
    weight = np.random.default_rng(0).normal(0, 1, 5000).astype(np.float32)
    lut, indices = coreml.kmeans_palette(4)(weight)
    assert lut.shape == (16,) and lut.dtype == np.float32 and np.all(np.diff(lut) > 0)
    assert indices.dtype == np.uint8 and indices.max() < 16 and indices.shape == (5000,)
    error = np.mean((lut[indices] - weight) ** 2)
    uniform = np.linspace(weight.min(), weight.max(), 16)
    nearest = uniform[np.abs(weight[:, None] - uniform).argmin(1)]
    assert error < 0.5 * np.mean((nearest - weight) ** 2)
    few = np.array([0.5, -1.0, 0.5, 2.0], np.float32)  # fewer values than palette entries
    lut, indices = coreml.kmeans_palette(4)(few)
    np.testing.assert_array_equal(lut[indices], few)


@pytest.mark.parametrize("compression", ["int8", "palettize6", "palettize4"])
def test_evaluator_decompresses_weights_as_coremltools_does(compression, tmp_path):
    """coremltools' public ``decompress_weights`` against the evaluator's own reading of the
    compressed constants (palette indices unpacked, int8 dequantized)."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    model = SwiftFormer("XS", depths=(1, 1, 1, 1), widths=(48, 48, 64, 64),
                        input_shape=(64, 64, 3), classes=10)
    path = coreml.export_coreml(realistic_weights(model), tmp_path / "c.mlpackage",
                                CoreMLRecipe(compression=COMPRESSIONS[compression]),
                                classifier=False)
    compressed = MLProgram(path)
    assert len(compressed.compressed) >= 8
    decompressed = cto.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True))
    decompressed.save(str(tmp_path / "d.mlpackage"))
    reference = MLProgram(tmp_path / "d.mlpackage").constants
    for name in compressed.compressed:
        np.testing.assert_array_equal(compressed.constants[name], reference[name])


def _s_model():
    return realistic_weights(SwiftFormer("S", include_preprocessing=False,
                                         classifier_activation=None))


def test_s_float16_has_fewer_ops_than_the_official_conversion(tmp_path):
    """S float16 (iOS 16): at most the official conversion's 261 non-constant ops and 8
    transposes (measured: 243 and none), within the float16 bound of Keras."""
    model = _s_model()
    path = coreml.export_coreml(model, tmp_path / "s.mlpackage")
    report = coreml.verify_coreml(path, model, load_images(list_images(SAMPLES)[1:2]),
                                  rtol=FLOAT16_RTOL)
    assert report["ops"]["count"] <= OFFICIAL_S_OPS, report["ops"]
    assert report["ops"]["transposes"] <= OFFICIAL_S_TRANSPOSES, report["ops"]
    assert report["ops"]["count"] == 243  # regression guard: measured when written
    assert report["float16_overflows"] == {}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["S", "L1", "L3"])
def test_every_variant_exports_and_verifies_in_every_format(variant, tmp_path):
    """Every format of S, L1 and L3 (random weights at realistic scale) on two photos: float32
    and float16 within the README's bounds, no float16 overflow."""
    model = realistic_weights(SwiftFormer(variant, include_preprocessing=False,
                                          classifier_activation=None))
    photos = list_images(SAMPLES)
    paths = coreml.export_coreml_formats(model, tmp_path, name=variant.lower(),
                                         calibration=load_images(photos[0:8:2]))
    images = load_images(photos[1:4:2])
    for fmt, path in paths.items():
        rtol = {"coreml_float32": FLOAT32_RTOL, "coreml_float16": FLOAT16_RTOL}.get(fmt)
        report = coreml.verify_coreml(path, model, images, rtol=rtol)
        assert report["weights"]["checked"] > 150
        assert report["float16_overflows"] == {}, fmt
        assert report["ops"]["transposes"] == 0


@pytest.mark.slow
def test_l1_float16_query_norms_beyond_float16_stay_finite(tmp_path):
    """The L1 fixture on two photos: query and key vectors with ||x|| > 256, whose sum of
    squares passes float16's 65504 (33 of 196 were zeroed before the protection), come out
    finite and within the float16 bound."""
    from tests.support import GOLDEN_CASES

    checkpoint, _, variant = GOLDEN_CASES["original_l1"]
    model = SwiftFormer(variant, weights=str(checkpoint), include_preprocessing=False,
                        classifier_activation=None)
    path = coreml.export_coreml(model, tmp_path / "l1.mlpackage")
    photos = load_images(list_images(SAMPLES)[:2])
    peaks, norms = {}, {}

    def record(name, value):  # ||x|| = peak * ||x / peak|| of every query and key vector
        name = name.removesuffix("_cast_fp16")  # coremltools' float16 pass renames
        if name.endswith(("_query_peak_floor", "_key_peak_floor")):
            peaks[name[:-len("_peak_floor")]] = value.astype(np.float64)
        elif name.endswith(("_query_norm", "_key_norm")):
            norms.setdefault(name[:-len("_norm")], []).append(
                (peaks[name[:-len("_norm")]] * value).reshape(-1))

    coreml.run_coreml(MLProgram(path), photos, record=record)
    lengths = np.concatenate([np.concatenate(v) for v in norms.values()])
    # their plain sum of squares overflows float16 (measured: 33 of 16660 vectors)
    assert np.sum(lengths > 256) > 0
    report = coreml.verify_coreml(path, model, photos, rtol=FLOAT16_RTOL)
    assert report["float16_overflows"] == {}
