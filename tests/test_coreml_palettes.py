"""The Core ML palettes at the limit of their bits: grouped (iOS 18) palettes, GPTQ rounding
onto them (pointwise and spatial convolutions), and the numpy evaluator's iOS 18 compressed
weights (grouped look-up tables, sub-byte indices, block-wise scales)."""

import dataclasses

import numpy as np
import pytest

from converters.coreml.mil_constexpr import CONSTEXPR, unpack_sub_byte
from converters.formats import COMPRESSIONS

#: palettize4 with a palette per group of about 16 output channels (iOS 18): no named format
#: (it does not pay over per-tensor palettes once GPTQ-rounded), a `CoreMLRecipe` option.
GROUPED4 = dataclasses.replace(COMPRESSIONS["palettize4"], name="palettize4_grouped",
                               granularity="per_grouped_channel", group_size=16,
                               minimum_os="iOS18")


def test_sub_byte_values_unpack_least_significant_bits_first_with_their_sign():
    packed = np.array([0x9F, 0x07], np.uint8)  # nibbles 0xF, 0x9, 0x7, 0x0
    assert unpack_sub_byte(packed, 25, 4).tolist() == [-1, -7, 7, 0]  # int4
    assert unpack_sub_byte(packed, 35, 4).tolist() == [15, 9, 7, 0]  # uint4


def test_grouped_look_up_tables_pick_each_block_of_channels_palette():
    lut = np.array([[0.0, 1.0], [10.0, 20.0]])[:, None, :, None]  # 2 groups along axis 0
    indices = np.array([[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
    dense = CONSTEXPR["constexpr_lut_to_dense"](indices=indices, lut=lut)
    assert dense.tolist() == [[0, 1, 1], [1, 0, 0], [20, 20, 10], [10, 10, 20]]


def test_block_wise_scales_repeat_over_their_blocks():
    data = np.arange(8, dtype=np.int8).reshape(2, 4)
    scale = np.array([[1.0, 10.0]], np.float16)  # blocks of 2 along axis 1
    offset = np.array([[1, 0]], np.int8)
    out = CONSTEXPR["constexpr_blockwise_shift_scale"](data=data, scale=scale, offset=offset)
    assert out.dtype == np.float16
    assert out.tolist() == [[-1, 0, 20, 30], [3, 4, 60, 70]]


def test_channel_groups_divide_the_channels_nearest_the_group_size():
    from converters.coreml.compression import channel_group

    assert [channel_group(c, 16) for c in (48, 56, 220, 1000)] == [16, 14, 20, 20]
    assert channel_group(220, None) == 220


def test_patches_compute_the_convolution():
    keras = pytest.importorskip("keras")
    from converters.coreml.calibrated import patches

    x = np.random.default_rng(0).normal(size=(2, 9, 8, 4)).astype(np.float32)
    for padding, strides in (("same", 2), ("valid", 2), ("same", 1)):
        layer = keras.layers.Conv2D(5, 3, strides=strides, padding=padding)
        y = np.asarray(layer(x))
        kernel, bias = layer.get_weights()
        np.testing.assert_allclose(patches(x, layer) @ kernel.reshape(-1, 5) + bias,
                                   y.reshape(-1, 5), atol=1e-5)


@pytest.mark.parametrize("compression", [COMPRESSIONS["palettize4"], GROUPED4])
def test_gptq_palettes_beat_nearest_palettes_on_the_layer_output(compression):
    """The rounded kernel keeps 16 values per palette group (the conversion's
    `channel_group`) and a smaller output error ``tr(E^T H E)`` on correlated inputs than the
    nearest value of the same palettes."""
    from converters.coreml.calibrated import column_palettes, palette_rounder
    from converters.coreml.compression import channel_group

    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(4000, 24)) @ rng.normal(size=(24, 48)) + rng.normal(size=(1, 48))
    hessian = inputs.T @ inputs / len(inputs)
    kernel = rng.normal(size=(48, 56)) * 0.1
    rounded = palette_rounder(compression)(kernel, hessian).astype(np.float64)
    group = channel_group(56, compression.group_size)
    assert group == (56 if compression.group_size is None else 14)
    assert all(len(np.unique(rounded[:, g:g + group])) <= 16 for g in range(0, 56, group))
    palettes = column_palettes(kernel, np.ones_like(kernel), 16, group)
    edges = (palettes[:, 1:] + palettes[:, :-1]) / 2
    nearest = palettes[np.arange(56), np.sum(kernel[..., None] > edges, axis=-1)]

    def error(q):
        return np.trace((kernel - q).T @ hessian @ (kernel - q))

    assert error(rounded) < 0.7 * error(nearest), (error(rounded), error(nearest))


@pytest.fixture(scope="module")
def xs_ios18(golden_model):
    pytest.importorskip("coremltools")
    from converters import coreml

    return golden_model("original_xs"), coreml.convert_to_coreml(
        golden_model("original_xs"), image_size=64, target="iOS18")


def test_the_evaluator_reads_coremltools_ios18_compressed_weights(xs_ios18, tmp_path):
    """Grouped palettes with per-channel scales and int4 per-block weights decompress in the
    evaluator as in coremltools' own ``decompress_weights``."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from converters.coreml.mil_eval import MLProgram

    _, base = xs_ios18
    settings = {
        "scaled": (cto.palettize_weights, cto.OpPalettizerConfig(
            mode="uniform", nbits=4, granularity="per_grouped_channel", group_size=8,
            enable_per_channel_scale=True)),
        "int4": (cto.linear_quantize_weights, cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=8)),
    }
    for name, (compress, config) in settings.items():
        path, dense_path = tmp_path / f"{name}.mlpackage", tmp_path / f"{name}_d.mlpackage"
        compress(base, cto.OptimizationConfig(config)).save(str(path))
        cto.decompress_weights(ct.models.MLModel(str(path), skip_model_load=True)).save(
            str(dense_path))
        program, dense = MLProgram(path), MLProgram(dense_path)
        weights = {op.name: program.constant(op, "weight") for op in program.operations
                   if op.type in ("conv", "linear")
                   and op.input_names("weight")[0] in program.compressed}
        assert len(weights) > 10, name
        for op in dense.operations:
            if op.name in weights:
                np.testing.assert_array_equal(weights[op.name], dense.constant(op, "weight"))


def test_grouped_palettes_pass_the_core_ml_verification(golden_model, tmp_path, monkeypatch):
    """A grouped-palette package is an iOS 18 program (specification 9) of grouped look-up
    tables that `verify_coreml` passes (spec, every weight, the evaluator against Keras)."""
    pytest.importorskip("coremltools")
    from converters import coreml
    from converters.coreml.mil_eval import MLProgram
    from converters.formats import CoreMLRecipe
    from keras_swiftformer.images import list_images, load_images
    from tests.support import SAMPLES

    monkeypatch.setitem(COMPRESSIONS, GROUPED4.name, GROUPED4)  # the metadata names it
    paths = list_images(SAMPLES)
    calibration, evaluation = load_images(paths[0::2][:4], 64), load_images(paths[1::2][:2], 64)
    model = golden_model("original_xs")
    path = coreml.export_coreml(model, tmp_path / "p4.mlpackage",
                                CoreMLRecipe("float16", GROUPED4), calibration=calibration,
                                image_size=64)
    report = coreml.verify_coreml(path, model, evaluation)
    assert report["spec"]["specification_version"] == 9
    assert report["weights"]["min_palette_sqnr_db"] >= 10.0
    luts = [args["lut"] for kind, args in MLProgram(path).compressed.values()
            if kind == "constexpr_lut_to_dense"]
    assert luts and all(lut.shape[-2:] == (16, 1) for lut in luts)
    assert max(lut.shape[0] for lut in luts) > 1  # groups of output channels


def test_ios18_int8_weights_pass_the_core_ml_verification(golden_model, tmp_path, monkeypatch):
    """iOS 18 writes linear weights as ``constexpr_blockwise_shift_scale``: `verify_coreml`
    expects that op at that OS and checks the weights it decompresses."""
    pytest.importorskip("coremltools")
    from converters import coreml
    from converters.formats import CoreMLRecipe
    from keras_swiftformer.images import list_images, load_images
    from tests.support import SAMPLES

    int8 = dataclasses.replace(COMPRESSIONS["int8"], name="int8_ios18", minimum_os="iOS18")
    monkeypatch.setitem(COMPRESSIONS, int8.name, int8)
    model = golden_model("original_xs")
    path = coreml.export_coreml(model, tmp_path / "i8.mlpackage", CoreMLRecipe("float16", int8),
                                image_size=64)
    report = coreml.verify_coreml(path, model, load_images(list_images(SAMPLES)[1:2], 64))
    assert report["spec"]["ops"].get("constexpr_blockwise_shift_scale", 0) > 10
    assert report["logits"]["sqnr_db"] > 25
