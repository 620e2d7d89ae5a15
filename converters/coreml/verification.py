"""Verification of a saved Core ML package on Linux, where Core ML cannot run.

`verify_coreml` checks the spec (`check_spec`), compares every weight of the package with the
folded Keras weight it was written from (`check_weights`), and runs the program with the numpy
evaluator (`converters.coreml.mil_eval`) against the unfolded Keras model.
"""

import numpy as np

from converters.coreml.formats import (
    INPUT_NAME,
    LABEL_NAME,
    LOGITS_NAME,
    PROBABILITIES_NAME,
    SPECIFICATION_VERSIONS,
    CoreMLVerificationError,
    compression_of,
    deployment_target,
    imagenet_labels,
)
from converters.metrics import fidelity, sqnr_db

# Per package tensor, the largest error allowed against its folded Keras source, relative to
# the source's largest magnitude: float32 (written as is), float16 (rounding, 2**-11), int8
# (half a step of the per-channel symmetric scale, max / 127, plus float16).
WEIGHT_RTOL = {"float32": 1e-5, "float16": 1e-3, "int8": 0.5 / 127 + 1e-3}
#: Compressed-weight and quantisation ops each kind of compression
#: (`converters.formats.CoreMLCompression.kind`) leaves in the program.
COMPRESSION_OPS = {None: set(), "linear": {"constexpr_affine_dequantize"},
                   "palettize": {"constexpr_lut_to_dense"},
                   "w8a8": {"constexpr_affine_dequantize", "quantize", "dequantize"}}
#: What iOS 18 programs write instead (linear weights with a scale per block or channel).
IOS18_OPS = {"constexpr_affine_dequantize": "constexpr_blockwise_shift_scale"}


def compression_ops(compression):
    """The `COMPRESSION_OPS` of a `converters.formats.CoreMLCompression` (or None) at its
    minimum OS."""
    ops = COMPRESSION_OPS[compression and compression.kind]
    if compression is not None and compression.minimum_os == "iOS18":
        ops = {IOS18_OPS.get(op, op) for op in ops}
    return ops


def _fail(problems, what):
    if problems:
        raise CoreMLVerificationError(f"{what}: " + "; ".join(problems))


def check_spec(info, *, precision, compression, classifier, class_labels=None, image_size=None,
               mean_pixel=None):
    """Checks an `converters.coreml.inspection.inspect_coreml` summary against the export
    options (`mean_pixel`: the (3,) pixel the image type must subtract, if given); raises
    CoreMLVerificationError listing every difference."""
    from converters.coreml.mil_eval import OPS

    problems = []
    compression = compression_of(compression)
    version = SPECIFICATION_VERSIONS[deployment_target(compression)]
    if info["specification_version"] != version:
        problems.append(f"specification version {info['specification_version']}, expected "
                        f"{version} ({deployment_target(compression)})")
    image = info["inputs"].get(INPUT_NAME, {})
    if list(info["inputs"]) != [INPUT_NAME] or image.get("type") != "imageType":
        problems.append(f"inputs {info['inputs']}, expected one image {INPUT_NAME!r}")
    elif image["color_space"] != "RGB":
        problems.append(f"image colour space {image['color_space']}, expected RGB")
    elif image_size is not None and (image["height"], image["width"]) != tuple(image_size):
        problems.append(f"image {image['height']}x{image['width']}, expected {image_size}")
    if classifier:
        expected = {LABEL_NAME: "stringType", PROBABILITIES_NAME: "dictionaryType"}
        if (info["predicted_feature"], info["predicted_probabilities"]) != (
                LABEL_NAME, PROBABILITIES_NAME):
            problems.append("classifier outputs not declared as predicted feature/probabilities")
        if info["labels"] is None:
            problems.append("no class labels")
        elif class_labels is not None and info["labels"] != list(class_labels):
            problems.append("class labels differ from the expected ones")
    else:
        expected = {LOGITS_NAME: "multiArrayType"}
        if info["labels"] is not None:
            problems.append("a classify op in a logits program")
    actual = {name: entry["type"] for name, entry in info["outputs"].items()}
    if actual != expected:
        problems.append(f"outputs {actual}, expected {expected}")
    steps = [step for step in info["image_preprocessing"] if step[0] not in ("cast", "quantize",
                                                                             "dequantize")]
    tol = 1e-3 if precision == "float16" else 1e-6
    if mean_pixel is not None and ([t for t, _ in steps] != ["add"] or not np.allclose(
            steps[0][1], -np.asarray(mean_pixel), rtol=tol, atol=0)):
        problems.append(f"image preprocessing {steps}, expected one add of the negative mean "
                        f"pixel {np.round(-np.asarray(mean_pixel), 4).tolist()}")
    if set(info["compute_dtypes"]) != {precision}:
        problems.append(f"compute dtypes {info['compute_dtypes']}, expected only {precision}")
    expected_ops = compression_ops(compression)
    found = {op for op in info["ops"]
             if op.startswith("constexpr_") or op in ("quantize", "dequantize")}
    if found != expected_ops:
        problems.append(f"compression ops {sorted(found)}, expected {sorted(expected_ops)}")
    unknown = set(info["ops"]) - set(OPS) - {"const"} - expected_ops
    if unknown:
        problems.append(f"operations the evaluator does not know: {sorted(unknown)}")
    if info["metadata"].get("precision") != precision or info["metadata"].get(
            "compression") != (compression.name if compression else "none"):
        problems.append(f"metadata {info['metadata']} does not state {precision}/"
                        f"{compression.name if compression else None}")
    _fail(problems, "Core ML spec check failed")


# Weight check: the package's constant tensors against the folded Keras weights they were
# written from. Each candidate is (label, form, array). Forms: "kernel" (a conv weight, OIHW,
# or a linear weight (out, in)) and "vector" (anything else, flattened).

def expected_weights(model, image_size=None, graph=None):
    """The tensors a Core ML program of `model` holds, in Core ML's layout: every weight of
    its folded graph (`converters.coreml.graph.coreml_graph`), ``w_g`` as scaled by
    `converters.coreml.graph.token_weights`, and the image bias (the negative mean pixel).
    `graph`: that `coreml_graph`, if already built. Returns a list of (label, form, float64
    array)."""
    import keras

    from converters.coreml.graph import _conv_weight, coreml_graph, token_weights
    from converters.inference_graph import FoldedTokenMixing

    graph = graph or coreml_graph(model, image_size)
    candidates = [("image bias (-mean pixel)", "vector", -graph.mean_pixel)]
    for layer in graph.folded.layers:
        if isinstance(layer, FoldedTokenMixing):
            if layer.token_weighting == "ones":  # w_g unused: not in the program
                continue
            _, height, width, _ = layer.input[0].shape
            w_g = token_weights(np.asarray(layer.w_g), height * width)
            candidates.append((f"{layer.name}.w_g", "kernel", w_g.T.astype(np.float64)))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                keras.layers.Dense)):
            kernel = (np.asarray(layer.kernel).T if len(layer.input.shape) == 2
                      else _conv_weight(layer))
            candidates.append((f"{layer.name} kernel", "kernel", kernel.astype(np.float64)))
            if layer.bias is not None:
                candidates.append((f"{layer.name} bias", "vector",
                                   np.asarray(layer.bias, np.float64)))
        elif layer.weights:
            raise ValueError(f"No Core ML weight mapping for layer {layer.name} "
                             f"({type(layer).__name__})")
    return candidates


def _package_weights(program):
    """[(description, form, array, compression kind or None)] for every non-scalar float
    constant that an operation of `program` takes."""
    found = []
    for op in program.operations:
        if op.type == "const" or op.type.startswith("constexpr_"):
            continue
        for key, bindings in op.inputs.items():
            for kind, ref in bindings:
                value = program.constants.get(ref) if kind == "name" else ref
                if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.size < 2:
                    continue
                compressed = program.compressed.get(ref, (None,))[0] if kind == "name" else None
                array = value.astype(np.float64)
                if (op.type, key) in (("conv", "weight"), ("linear", "weight")):
                    form = "kernel"
                else:
                    form, array = "vector", array.reshape(-1)
                found.append((f"{op.type} {op.name!r} {key}", form, array, compressed))
    return found


def _matches(array, options, precision, compressed):
    """[(relative error, SQNR dB, label)] of `array` against each candidate of `options`."""
    found = []
    for label, reference in options:
        scale = max(float(np.max(np.abs(reference))), 1e-30)
        err = np.abs(array - reference)
        if precision == "float16" and not compressed:
            # Tiny weights are float16 subnormals, whose step (2**-24) is far above 2**-11 of
            # their magnitude.
            err = np.maximum(err - 2.0**-24, 0.0)
        found.append((float(np.max(err)) / scale, sqnr_db(reference, array), label))
    return found


def check_weights(program, model, *, precision, compression, image_size=None, graph=None):
    """Compares every weight of the package with the folded Keras weight it came from.

    Each non-scalar float constant of the program must equal a tensor of `expected_weights`
    of the same form and shape: within `WEIGHT_RTOL` of the precision (int8: of the int8
    step), or for palettized tensors with at least the compression's ``min_weight_sqnr_db``.
    Every folded weight must be found; one that rounds to zeros in `precision` may be absent.

    Returns:
        {"checked": tensors compared, "max_rel_error": largest error relative to its source's
        largest magnitude (non-palettized), "min_palette_sqnr_db": least SQNR of a palettized
        tensor or None}. Raises CoreMLVerificationError on a mismatch.
    """
    compression = compression_of(compression)
    candidates = expected_weights(model, image_size, graph)
    by_shape = {}
    for label, form, array in candidates:
        squeezed = np.squeeze(array) if form != "vector" else array.reshape(-1)
        by_shape.setdefault((form, squeezed.shape), []).append((label, squeezed))
    problems, used, max_rel, min_sqnr = [], set(), 0.0, None
    package = _package_weights(program)
    for where, form, array, compressed in package:
        array = np.squeeze(array) if form != "vector" else array
        palettized = compressed == "constexpr_lut_to_dense"
        matches = _matches(array, by_shape.get((form, array.shape), []), precision, compressed)
        if not matches:
            problems.append(f"{where} {array.shape}: no Keras weight of this shape")
            continue
        # palettes, and int8 weights GPTQ moved by more than half a step: an SQNR floor
        floor = (compression.min_weight_sqnr_db if compressed and (
            palettized or compression.rounding == "gptq") else None)
        if floor is not None:
            sqnr, label = max((m[1], m[2]) for m in matches)
            min_sqnr = sqnr if min_sqnr is None else min(min_sqnr, sqnr)
            if sqnr < floor:
                problems.append(f"{where}: closest Keras weight {label} at {sqnr:.1f} dB "
                                f"(at least {floor} dB expected)")
                continue
            good = {m[2] for m in matches if m[1] >= floor}
        else:
            bound = WEIGHT_RTOL["int8" if compressed else precision]
            rel, label = min((m[0], m[2]) for m in matches)
            if rel > bound:
                problems.append(f"{where}: closest Keras weight {label} differs by {rel:.2g} "
                                f"of its magnitude (allowed {bound:.2g})")
                continue
            max_rel = max(max_rel, rel)
            good = {m[2] for m in matches if m[0] <= bound}
        used |= good  # coremltools keeps one copy of equal constants (const_deduplication)
    missing = sorted(label for label, _, array in candidates
                     if label not in used and not _vanishes(array, precision))
    if missing:
        problems.append(f"folded Keras weights not found in the package ({len(missing)}): "
                        + ", ".join(missing[:12]))
    _fail(problems, "Core ML weight check failed")
    return {"checked": len(package), "max_rel_error": max_rel, "min_palette_sqnr_db": min_sqnr}


def _vanishes(array, precision):
    """Whether a folded tensor rounds to all zeros in `precision`, so that coremltools may drop
    it (a bias of zeros is no add): float16 rounds magnitudes up to half its least subnormal
    (2**-25) to zero."""
    limit = 2.0**-25 if precision == "float16" else 0.0
    return bool(np.all(np.abs(array) <= limit))


def logits_graph(model):
    """(logits tensor, takes_pixels) of a SwiftFormer classifier: the (B, classes) logits before
    the ``predictions`` activation, and whether the model normalises RGB pixels itself."""
    from keras_swiftformer.config import PREDICTIONS, PREPROCESSING

    names = {layer.name for layer in model.layers}
    logits = (model.get_layer(PREDICTIONS).input if PREDICTIONS in names
              else model.outputs[0])
    if len(model.outputs) != 1 or len(logits.shape) != 2:
        raise ValueError(f"{model.name}: expected a classifier with (B, classes) logits "
                         "(include_top=True)")
    return logits, PREPROCESSING in names


def keras_logits(model, images):
    """Logits of `model` (its own normalisation, or `preprocess_input`) for RGB `images`
    (N, H, W, 3) in [0, 255]."""
    import keras

    from keras_swiftformer.imagenet import preprocess_input

    logits, takes_pixels = logits_graph(model)
    logit_model = keras.Model(model.inputs, logits)
    x = preprocess_input(images, normalize=not takes_pixels)
    return logit_model.predict(x, verbose=0, batch_size=8)


def run_coreml(program, images, record=None):
    """Runs a loaded program on RGB `images` (N, H, W, 3) in [0, 255] with the numpy evaluator.

    Args:
        record: passed to `converters.coreml.mil_eval.MLProgram.run` (sees every value).

    Returns:
        (logits (N, classes), probabilities (N, classes) or None, overflows): a classifier's
        logits are the input of its final softmax; overflows is {variable: count} of values
        that exceeded float16's range, summed over the images.
    """
    softmax = [op for op in program.operations if op.type == "softmax"]
    classifier = any(op.type == "classify" for op in program.operations)
    keep = [softmax[-1].input_names("x")[0]] if classifier else []
    logits, probabilities, overflows = [], [], {}
    for image in np.asarray(images, np.float32):
        out = program.run({INPUT_NAME: image.transpose(2, 0, 1)[None]}, keep=keep,
                          record=record)
        for name, count in program.overflows.items():
            overflows[name] = overflows.get(name, 0) + count
        if classifier:
            logits.append(out[keep[0]].reshape(-1))
            dictionary = out[PROBABILITIES_NAME]
            probabilities.append(np.array(list(dictionary.values()), np.float32))
        else:
            logits.append(out[LOGITS_NAME].reshape(-1))
    return np.stack(logits), (np.stack(probabilities) if classifier else None), overflows


def verify_coreml(path, model, images, *, rtol=None, class_labels=None):
    """Verifies a saved package against the Keras model it was exported from.

    Checks the spec (`check_spec`, options read from the package metadata) and every weight
    (`check_weights`), then runs the program on `images` with the numpy evaluator and compares
    its logits with Keras's.

    Args:
        path: the ``.mlpackage``.
        model: the Keras model given to `converters.coreml.export_coreml`.
        images: (N, H, W, 3) RGB in [0, 255] (any floats), H x W the package's image size;
            None: the spec and weight checks only (no "logits", "probabilities").
        rtol: if given, the logits' max error relative to max |Keras logits| must be below it.
        class_labels: the labels a classifier must carry (default: ImageNet's for 1000
            classes).

    Returns:
        {"size_bytes", "spec" (`inspect_coreml`), "ops" (`op_summary`), "weights"
        (`check_weights`), "logits" (`converters.metrics.fidelity` vs Keras),
        "float16_overflows" ({variable: values beyond float16's range, over all images}),
        "probabilities" (max abs error, classifiers only)}.
    """
    from converters.coreml.graph import coreml_graph
    from converters.coreml.inspection import inspect_coreml, op_histogram, op_summary
    from converters.coreml.mil_eval import MLProgram

    program = MLProgram(path)
    info = inspect_coreml(path, program)
    meta = info["metadata"]
    precision, compression = meta.get("precision"), meta.get("compression")
    compression = None if compression in (None, "none") else compression_of(compression)
    classifier = meta.get("classifier") == "True"
    image = info["inputs"].get(INPUT_NAME, {})
    size = (image.get("height"), image.get("width"))
    if images is not None:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (*size, 3):
            raise ValueError(f"images must be (N, {size[0]}, {size[1]}, 3) RGB, got "
                             f"{images.shape}")
    labels = class_labels
    if labels is None and classifier and logits_graph(model)[0].shape[-1] == 1000:
        labels = imagenet_labels()
    graph = coreml_graph(model, size)
    check_spec(info, precision=precision, compression=compression, classifier=classifier,
               class_labels=labels, mean_pixel=graph.mean_pixel)
    weights = check_weights(program, model, precision=precision, compression=compression,
                            graph=graph)
    report = {"size_bytes": info["size_bytes"], "spec": info,
              "ops": op_summary(op_histogram(program)), "weights": weights}
    if images is None:
        return report
    reference = keras_logits(model, images)
    logits, probabilities, overflows = run_coreml(program, images)
    report.update(logits=fidelity(reference, logits), float16_overflows=overflows)
    if probabilities is not None:
        exp = np.exp(reference - reference.max(-1, keepdims=True))
        report["probabilities"] = {"max_abs": float(np.max(np.abs(
            probabilities - exp / exp.sum(-1, keepdims=True))))}
    if rtol is not None and report["logits"]["max_rel_error"] > rtol:
        raise CoreMLVerificationError(
            f"{path}: logits differ from Keras by {report['logits']['max_rel_error']:.3g} of their "
            f"magnitude, more than {rtol:.3g}")
    return report
