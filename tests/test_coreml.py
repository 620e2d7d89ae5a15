"""converters.coreml: Core ML export of SwiftFormer-XS in every format, checked on Linux (spec,
every weight, and the program run by the numpy evaluator against Keras)."""

import os

import numpy as np
import pytest

pytest.importorskip("coremltools")

from converters import coreml  # noqa: E402
from converters.coreml.mil_eval import MILError, MLProgram  # noqa: E402
from converters.formats import COREML_FORMATS, FORMATS, CoreMLRecipe  # noqa: E402
from keras_swiftformer import SwiftFormer  # noqa: E402
from keras_swiftformer.images import list_images, load_images  # noqa: E402
from keras_swiftformer.random_weights import realistic_weights  # noqa: E402
from tests.support import GOLDEN_CASES, SAMPLES, golden, run_python, to_pixels  # noqa: E402

CASE = "original_xs"
CLASSIFIER_FORMATS = ("coreml_float16", "coreml_int8", "coreml_palettize6", "coreml_palettize4",
                      "coreml_w8a8")
#: Measured bounds of the logits' max error relative to max |Keras logits| (README).
FLOAT32_RTOL, FLOAT16_RTOL = 5e-5, 1.4e-3


@pytest.fixture(scope="session")
def packages(tmp_path_factory, golden_model):
    """The golden XS checkpoint exported once: a float32 logits package from a model with its
    own preprocessing layer, and classifier packages in the float16-based formats (w8a8
    calibrated on two sample photos)."""
    folder = tmp_path_factory.mktemp("coreml")
    checkpoint, _, variant = GOLDEN_CASES[CASE]
    metadata = {"source_checkpoint": os.path.basename(checkpoint), "license": "test licence"}
    with_preprocessing = SwiftFormer(variant, weights=str(checkpoint),
                                     classifier_activation="softmax")
    calibration = load_images(list_images(SAMPLES)[:2])
    paths = coreml.export_coreml_formats(golden_model(CASE), folder, CLASSIFIER_FORMATS,
                                         name="xs", metadata=metadata, calibration=calibration)
    paths["coreml_float32"] = coreml.export_coreml(
        with_preprocessing, folder / "xs_logits.mlpackage", "coreml_float32", classifier=False,
        metadata=metadata)
    return {"paths": paths, "folder": folder, "with_preprocessing": with_preprocessing}


@pytest.fixture(scope="session")
def reports(packages, golden_model):
    """verify_coreml of every package on the golden inputs (compressed ones: two of them)."""
    pixels = to_pixels(golden(CASE)["inputs"])
    out = {"coreml_float32": coreml.verify_coreml(packages["paths"]["coreml_float32"],
                                                  packages["with_preprocessing"], pixels)}
    for fmt in CLASSIFIER_FORMATS:
        images = pixels if fmt == "coreml_float16" else pixels[2:]
        out[fmt] = coreml.verify_coreml(packages["paths"][fmt], golden_model(CASE), images)
    return out


def test_importing_the_package_loads_neither_coremltools_nor_tensorflow():
    out = run_python(
        "import sys\n"
        "from converters.formats import COREML_FORMATS\n"
        "import converters.coreml as c\n"
        "print(sorted(COREML_FORMATS), 'coremltools' in sys.modules, "
        "'tensorflow' in sys.modules, callable(c.export_coreml))\n")
    assert out.strip().endswith("False False True"), out


def test_export_does_not_depend_on_tf_keras(tmp_path):
    """The program is written with coremltools' MIL builder, not its TensorFlow frontend: a
    process whose tf.keras is tf_keras (TF_USE_LEGACY_KERAS=1) exports as well."""
    path = tmp_path / "m.mlpackage"
    out = run_python(
        "from converters.coreml import export_coreml, op_histogram\n"
        "from keras_swiftformer import SwiftFormer\n"
        "m = SwiftFormer('XS', depths=(1, 1, 1, 1), widths=(16, 16, 32, 32),"
        " input_shape=(64, 64, 3), classes=10)\n"
        f"export_coreml(m, {str(path)!r}, classifier=False)\n"
        f"print('ops', sum(op_histogram({str(path)!r}).values()))\n",
        env={"TF_USE_LEGACY_KERAS": "1"})
    assert "ops " in out and path.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]


def test_format_table_and_bad_options_fail_before_converting(golden_model):
    assert list(COREML_FORMATS) == ["coreml_float32", "coreml_float16", "coreml_int8",
                                           "coreml_palettize6", "coreml_palettize4",
                                           "coreml_w8a8"]
    model = golden_model(CASE)
    with pytest.raises(ValueError, match=r"\.mlpackage"):
        coreml.export_coreml(model, "model.mlmodel")
    with pytest.raises(ValueError, match="precision"):
        coreml.export_coreml(model, "m.mlpackage", CoreMLRecipe("int8"))
    with pytest.raises(ValueError, match="compression 'palettize3'"):
        coreml.export_coreml(model, "m.mlpackage", CoreMLRecipe(compression="palettize3"))
    with pytest.raises(ValueError, match="not a Core ML one"):
        coreml.export_coreml(model, "m.mlpackage", "int8")
    with pytest.raises(ValueError, match="calibration"):
        coreml.export_coreml(model, "m.mlpackage", "coreml_w8a8")
    with pytest.raises(ValueError, match="unique"):
        coreml.export_coreml(model, "m.mlpackage", class_labels=["a"] * 1000)
    headless = SwiftFormer("XS", include_top=False, pooling="avg")
    with pytest.raises(ValueError, match="classifier"):
        coreml.export_coreml(headless, "m.mlpackage")
    ten = SwiftFormer("XS", classes=10)
    with pytest.raises(ValueError, match="class_labels"):
        coreml.export_coreml(ten, "m.mlpackage")
    with pytest.raises(ValueError, match="Unknown Core ML formats"):
        coreml.export_coreml_formats(model, "out", ["float8"])
    assert not os.path.exists("m.mlpackage")


def test_a_model_that_is_not_swiftformer_is_refused():
    import keras

    image = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(8, 3, strides=4)(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    other = keras.Model(image, keras.layers.Dense(1000)(x))
    with pytest.raises(ValueError, match="not a keras_swiftformer.SwiftFormer model"):
        coreml.export_coreml(other, "m.mlpackage")


def test_imagenet_labels_are_unique():
    labels = coreml.imagenet_labels()
    assert len(labels) == len(set(labels)) == 1000
    assert labels[0] == "tench" and "crane (n02012849)" in labels


def test_every_format_passes_spec_and_weight_checks(packages, reports):
    """verify_coreml raises on any spec or weight difference; here: what it found."""
    for fmt, report in reports.items():
        spec, weights = report["spec"], report["weights"]
        target = (8, "CoreML7") if fmt == "coreml_w8a8" else (7, "CoreML6")
        assert (spec["specification_version"], spec["opset"]) == target, fmt
        assert spec["inputs"] == {"image": {"type": "imageType", "width": 224, "height": 224,
                                            "color_space": "RGB"}}
        assert set(spec["compute_dtypes"]) == {FORMATS[fmt].coreml.precision}
        assert spec["metadata"]["variant"] == "XS"
        assert spec["metadata"]["token_weighting"] == "l2"
        assert spec["metadata"]["source_checkpoint"] == "swiftformer_xs_random.pth"
        assert spec["license"] == "test licence"
        # every weight tensor of the program was matched: 161 for XS
        assert weights["checked"] > 150, fmt
    assert reports["coreml_float32"]["spec"]["outputs"] == {
        "logits": {"type": "multiArrayType", "shape": [1, 1000]}}
    classifier = reports["coreml_float16"]["spec"]
    assert set(classifier["outputs"]) == {"classLabel", "probabilities"}
    assert classifier["labels"] == coreml.imagenet_labels()
    assert reports["coreml_int8"]["spec"]["ops"]["constexpr_affine_dequantize"] > 50
    assert reports["coreml_palettize4"]["weights"]["min_palette_sqnr_db"] > 10  # GPTQ-rounded
    sizes = [reports[f]["size_bytes"] for f in ("coreml_float32", "coreml_float16",
                                                "coreml_int8", "coreml_palettize6",
                                                "coreml_palettize4")]
    assert sizes == sorted(sizes, reverse=True), sizes
    assert sizes[1] < 0.55 * sizes[0] and sizes[2] < 0.6 * sizes[1]
    assert reports["coreml_w8a8"]["size_bytes"] < 0.6 * sizes[1]
    assert not [p for p in os.listdir(packages["folder"]) if "partial" in p]


def test_programs_have_no_transposes_and_protected_l2_normalisations(reports):
    """Written channel-first from the folded graph: convolutions for every projection, no
    transposes or reshapes; each query and key normalisation divides by its peak first."""
    for fmt, report in reports.items():
        ops = report["ops"]
        histogram = ops["histogram"]
        assert ops["transposes"] == 0 and "reshape" not in histogram, fmt
        assert histogram["reduce_max"] == histogram["abs"] == 8, fmt  # 2 per attention block
        assert histogram["reduce_l2_norm"] == 12, fmt  # q, k and the token weights
        assert "const" not in histogram and not any(op.startswith("constexpr_")
                                                    for op in histogram)
        assert report["float16_overflows"] == {}, fmt
    # regression guard: the count measured when the MIL translation was written
    assert reports["coreml_float16"]["ops"]["count"] == 218


def test_float32_program_matches_keras_and_golden_logits(packages, reports):
    """The float32 program, run by the numpy evaluator from RGB pixels (the image type's bias,
    the 1/(255 std) folded into the first convolution), against Keras's own preprocessing."""
    assert reports["coreml_float32"]["logits"]["max_rel_error"] < FLOAT32_RTOL
    assert reports["coreml_float32"]["logits"]["top1_agreement"] == 1.0
    data = golden(CASE)
    logits, probabilities, _ = coreml.run_coreml(
        MLProgram(packages["paths"]["coreml_float32"]), to_pixels(data["inputs"]))
    assert probabilities is None
    err = np.max(np.abs(logits - data["logits"])) / np.max(np.abs(data["logits"]))
    assert err < 1e-4


def test_float32_program_on_photos_matches_keras_preprocessing(packages):
    photos = load_images(list_images(SAMPLES)[:2])
    report = coreml.verify_coreml(packages["paths"]["coreml_float32"],
                                  packages["with_preprocessing"],
                                  photos, rtol=FLOAT32_RTOL)
    assert report["logits"]["top1_agreement"] == 1.0


def test_float16_and_compressed_programs_stay_close(reports):
    assert reports["coreml_float16"]["logits"]["max_rel_error"] < FLOAT16_RTOL
    assert reports["coreml_float16"]["probabilities"]["max_abs"] < 5e-3
    assert reports["coreml_int8"]["logits"]["sqnr_db"] > 30
    assert reports["coreml_palettize6"]["logits"]["sqnr_db"] > 15
    assert reports["coreml_w8a8"]["logits"]["sqnr_db"] > 12
    for fmt in CLASSIFIER_FORMATS:
        assert np.isfinite(reports[fmt]["logits"]["max_abs_error"])


def test_w8a8_quantises_activations_at_the_calibrated_ranges(packages, reports):
    """Every quantize op's scale is the 8-bit step of its input's calibrated range (an
    asymmetric grid, as LiteRT int8's activations: coremltools writes it as uint8 with a zero
    point), and the convolutions but the depthwise ones (float16, as LiteRT int8's) take
    dequantized 8-bit activations."""
    program = MLProgram(packages["paths"]["coreml_w8a8"])
    producers = {op.name: op for op in program.operations}
    quantized = [op for op in program.operations if op.type == "quantize"]
    assert len(quantized) > 80  # the convolutions' inputs, and outputs but the branch ends'
    assert reports["coreml_w8a8"]["ops"]["histogram"]["dequantize"] > 80
    for op in quantized:
        scale = float(program.constant(op, "scale"))
        assert scale > 0 and str(program.constant(op, "output_dtype")) in ("int8", "uint8")
    convs = [op for op in program.operations
             if op.type == "conv" and int(program.constant(op, "groups")) == 1]
    fed = [op for op in convs if producers.get(op.input_names("x")[0], op).type == "dequantize"]
    assert len(fed) == len(convs)


def test_w8a8_ranges_come_from_the_calibration_images(golden_model, tmp_path):
    """activation_ranges on the float16 program: the input's range is the images' range, and
    every tensor's range contains what one more evaluation of those images computes."""
    model = golden_model(CASE)
    mlmodel = coreml.convert_to_coreml(model, target="iOS17", image_size=64)
    images = load_images(list_images(SAMPLES)[:1], size=64)
    ranges = coreml.activation_ranges(mlmodel, images)
    assert ranges["image"] == {"rmin": float(images.min()), "rmax": float(images.max())}
    assert len(ranges) > 200
    mlmodel.save(str(tmp_path / "f.mlpackage"))
    seen = {}
    coreml.run_coreml(MLProgram(tmp_path / "f.mlpackage"), images,
                      record=lambda name, value: seen.setdefault(name, value))
    for name, value in seen.items():
        if value.dtype.kind == "f":
            assert ranges[name]["rmin"] <= value.min() and value.max() <= ranges[name]["rmax"]


def test_classifier_evaluation_returns_label_dictionary(packages):
    program = MLProgram(packages["paths"]["coreml_float16"])
    image = to_pixels(golden(CASE)["inputs"][:1])[0].transpose(2, 0, 1)[None]
    out = program.run({"image": image})
    label, probabilities = out["classLabel"], out["probabilities"]
    assert len(probabilities) == 1000 and label == max(probabilities, key=probabilities.get)
    assert abs(sum(probabilities.values()) - 1) < 1e-2
    with pytest.raises(MILError, match="shape"):
        program.run({"image": image[:, :, :100]})


def test_weight_check_finds_a_changed_keras_weight(packages, golden_model):
    checkpoint, _, variant = GOLDEN_CASES[CASE]
    changed = SwiftFormer(variant, weights=str(checkpoint), input_shape=(None, None, 3),
                          include_preprocessing=False, classifier_activation=None)
    layer = changed.get_layer("stages-2-blocks-5-attn-to_key")
    layer.kernel.assign(layer.kernel.numpy() * 1.01)
    program = MLProgram(packages["paths"]["coreml_float16"])
    with pytest.raises(coreml.CoreMLVerificationError, match="to_key"):
        coreml.check_weights(program, changed, precision="float16", compression=None)
    # and the unchanged model passes on the same package
    coreml.check_weights(program, golden_model(CASE), precision="float16", compression=None)


def test_unused_token_weights_are_not_expected_in_the_package(golden_model):
    """Hugging Face's all-ones token weighting never reads w_g, so no program holds it."""
    def labels(case):
        return [label for label, *_ in coreml.expected_weights(golden_model(case), 224)]

    assert sum("w_g" in label for label in labels("original_xs")) == 4
    assert not any("w_g" in label for label in labels("hf_xs"))


def test_spec_check_reports_differences(reports):
    with pytest.raises(coreml.CoreMLVerificationError, match="compute dtypes.*compression"):
        coreml.check_spec(reports["coreml_float16"]["spec"], precision="float32",
                          compression="int8", classifier=True)
    with pytest.raises(coreml.CoreMLVerificationError, match="outputs"):
        coreml.check_spec(reports["coreml_float16"]["spec"], precision="float16",
                          compression=None, classifier=False)
    with pytest.raises(coreml.CoreMLVerificationError, match="mean pixel"):
        coreml.check_spec(reports["coreml_float16"]["spec"], precision="float16",
                          compression=None, classifier=True, mean_pixel=[0.0, 0.0, 0.0])


@pytest.mark.parametrize("fmt", ["coreml_float16", "coreml_float32"])
def test_zero_and_vanishing_biases_export_and_verify(fmt, tmp_path):
    """A model trained from scratch has biases of exactly 0 and ~1e-12 (float16 rounds them to
    0, coremltools keeps one copy of equal constants): export and verification agree."""
    import keras

    model = realistic_weights(SwiftFormer("XS", depths=(1, 1, 1, 1), widths=(16, 16, 32, 32),
                                          input_shape=(64, 64, 3), classes=10))
    biased = [layer for layer in model.layers if getattr(layer, "bias", None) is not None
              and isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    for i, layer in enumerate(biased):
        value = (0.0, 1e-12 * (i + 1), -3e-9)[i % 3]
        layer.bias.assign(np.full(layer.bias.shape, value, np.float32))
    path = coreml.export_coreml(model, tmp_path / "m.mlpackage", fmt, classifier=False)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    report = coreml.verify_coreml(path, model, images)
    assert report["weights"]["checked"] > 0
