"""converters.coreml.calibrated: the Core ML palettes and W8A8 calibrated as the LiteRT int8
file is (GPTQ weight rounding, `converters.calibration` ranges), on SwiftFormer-XS at 64 px."""

import numpy as np
import pytest

pytest.importorskip("coremltools")

from converters import coreml  # noqa: E402
from converters.coreml.mil_eval import MLProgram  # noqa: E402
from keras_swiftformer.images import list_images, load_images  # noqa: E402
from tests.support import SAMPLES  # noqa: E402

CASE, SIZE = "original_xs", 64
#: (compression, calibrated) of the packages the tests export.
JOBS = (("palettize4", False), ("palettize4", True), ("w8a8", True))


@pytest.fixture(scope="module")
def photos():
    """(calibration, evaluation): disjoint sample photos at `SIZE`."""
    paths = list_images(SAMPLES)
    return load_images(paths[0::2][:4], SIZE), load_images(paths[1::2][:2], SIZE)


@pytest.fixture(scope="module")
def packages(tmp_path_factory, golden_model, photos):
    folder = tmp_path_factory.mktemp("calibrated")
    calibration, _ = photos
    return {(compression, calibrated): coreml.export_coreml(
        golden_model(CASE), folder / f"{compression}_{calibrated}.mlpackage",
        f"coreml_{compression}", calibration=calibration if calibrated else None,
        image_size=SIZE) for compression, calibrated in JOBS}


@pytest.fixture(scope="module")
def reports(packages, golden_model, photos):
    """verify_coreml of every package (spec, every weight, the evaluator against Keras)."""
    return {job: coreml.verify_coreml(path, golden_model(CASE), photos[1])
            for job, path in packages.items()}


def test_calibrated_packages_pass_the_core_ml_verification(reports):
    for (compression, calibrated), report in reports.items():
        assert report["spec"]["metadata"]["compression"] == compression
        assert report["weights"]["min_palette_sqnr_db"] is not None
        assert np.isfinite(report["logits"]["sqnr_db"])


def test_rounded_palettes_beat_nearest_rounding(reports):
    """Regression guard: GPTQ rounding onto the same per-tensor palettes is more faithful to
    Keras than nearest rounding on photos it was not calibrated on."""
    rounded = reports["palettize4", True]["logits"]["sqnr_db"]
    nearest = reports["palettize4", False]["logits"]["sqnr_db"]
    assert rounded > nearest + 1.0, (rounded, nearest)


def test_rounded_palettes_keep_the_palettes_of_the_conversion(packages):
    """The rounded weights lie on their palette: each palettized tensor has at most 16
    distinct values, as the nearest-rounded package's."""
    for job in (("palettize4", True), ("palettize4", False)):
        program = MLProgram(packages[job])
        luts = [args["lut"] for kind, args in program.compressed.values()
                if kind == "constexpr_lut_to_dense"]
        assert luts and all(np.asarray(lut).size == 16 for lut in luts)


def test_w8a8_quantises_at_the_ranges_of_the_int8_calibration(packages, golden_model, photos):
    """Every quantize op of the w8a8 package has the asymmetric int8 grid of the range that
    `calibrated_ranges` chooses for its input tensor (`converters.calibration`), and sits at
    an input or output of a convolution or the linear layer (so none at the residual adds);
    those read int8 activations, but the depthwise convolutions and the classifier head
    (`float16_ops`, as LiteRT int8's), and the residual branches' last convolutions write
    float16 (`float16_outputs`)."""
    from converters.coreml.calibrated import (calibrated_ranges, float16_ops, float16_outputs,
                                              rounded_graph)
    from converters.coreml.compression import INT8_OPS, evaluated_program
    from converters.formats import COMPRESSIONS

    model, (calibration, _) = golden_model(CASE), photos
    graph = rounded_graph(model, calibration, COMPRESSIONS["w8a8"], SIZE)
    float16 = evaluated_program(coreml.convert_to_coreml(graph, target="iOS17"))
    ranges, kept = calibrated_ranges(float16, calibration), set(float16_ops(float16))
    program = MLProgram(packages["w8a8", True])
    producers = {out: op for op in program.operations for out, *_ in op.outputs}
    readers = {}
    for op in program.operations:
        for name in {n for key in op.inputs for n in op.input_names(key)}:
            readers.setdefault(name, []).append(op)
    int8 = [op for op in program.operations if op.type in INT8_OPS and op.name not in kept]
    quantized = [op for op in program.operations if op.type == "quantize"]
    assert len(quantized) > 80
    for op in quantized:
        source = op.input_names("input")[0]
        low, high = ranges[source]["rmin"], ranges[source]["rmax"]
        grid = (max(high, 0.0) - min(low, 0.0)) / 255
        assert abs(float(program.constant(op, "scale")) - grid) <= 2e-3 * grid, op.name
        fed = [reader for dequantize in readers[op.outputs[0][0]]
               for reader in readers.get(dequantize.outputs[0][0], ())]
        assert (producers[source].type in (*INT8_OPS, "relu")
                or any(reader in int8 for reader in fed)), op.name
    assert all(producers[op.input_names("x")[0]].type == "dequantize" for op in int8)
    branch_ends = [op for op in int8 if op.name in float16_outputs(float16)]
    assert branch_ends and not [op for op in branch_ends for reader in
                                readers[op.outputs[0][0]] if reader.type == "quantize"]
    heads = [op for op in program.operations if op.name in kept and op.type == "linear"]
    assert heads and all(producers[op.input_names("x")[0]].type != "dequantize"
                         for op in heads)
    assert len(kept) > len(heads)  # the depthwise convolutions


def test_calibration_images_of_another_size_are_refused(golden_model, photos):
    with pytest.raises(ValueError, match="load them at the export size"):
        coreml.export_coreml(golden_model(CASE), "unused.mlpackage", "coreml_w8a8",
                             calibration=photos[0][:, :32], image_size=SIZE)
