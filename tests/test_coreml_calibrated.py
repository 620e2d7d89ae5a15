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


@pytest.mark.xfail(reason="open: the residual adds' quantize ops carry grids wider than any "
                   "range calibrated_ranges chooses on a second conversion (28 of 140 on XS)",
                   strict=False)
def test_w8a8_quantises_at_the_ranges_of_the_int8_calibration(packages, golden_model, photos):
    """Every quantize op of the w8a8 package has the asymmetric int8 grid of a range that
    `calibrated_ranges` chooses with `converters.calibration` (the passes rename tensors, so
    the grid is matched among the chosen ranges, not by name); the classifier head stays
    float (as LiteRT int8's)."""
    from converters.coreml.calibrated import FLOAT_LAYERS, calibrated_ranges, rounded_graph
    from converters.formats import COMPRESSIONS

    model, (calibration, _) = golden_model(CASE), photos
    graph = rounded_graph(model, calibration, COMPRESSIONS["w8a8"], SIZE)
    ranges = calibrated_ranges(coreml.convert_to_coreml(graph, target="iOS17"), calibration)
    grids = np.sort([(max(r["rmax"], 0.0) - min(r["rmin"], 0.0)) / 255
                     for r in ranges.values()])
    program = MLProgram(packages["w8a8", True])
    quantized = [op for op in program.operations if op.type == "quantize"]
    assert len(quantized) > 100
    unmatched = []
    for op in quantized:
        scale = float(program.constant(op, "scale"))
        nearest = grids[np.clip(np.searchsorted(grids, scale), 1, len(grids) - 1) - 1:][:2]
        if np.min(np.abs(nearest - scale)) > 2e-3 * scale:
            unmatched.append((op.name, op.input_names("input")[0], scale))
    assert not unmatched, unmatched
    heads = [op for op in program.operations if op.name in FLOAT_LAYERS]
    producers = {out: op for op in program.operations for out, *_ in op.outputs}
    assert heads and all(producers[op.input_names("x")[0]].type != "dequantize"
                         for op in heads)


def test_calibration_images_of_another_size_are_refused(golden_model, photos):
    with pytest.raises(ValueError, match="load them at the export size"):
        coreml.export_coreml(golden_model(CASE), "unused.mlpackage", "coreml_w8a8",
                             calibration=photos[0][:, :32], image_size=SIZE)
