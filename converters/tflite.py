"""Keras SwiftFormer -> `.tflite` (LiteRT), float and quantised.

The path is the one TensorFlow 2.21 and Keras 3 support: the model is written as a SavedModel
by `keras.export.ExportArchive` with a fixed input signature, then converted with
`tf.lite.TFLiteConverter.from_saved_model`, builtin ops only (no Flex ops on the phone).
Batch 1 and a fixed input size by default, as phones run; a dynamic batch is an option.

Formats (`TFLITE_FORMATS`):

====================  =====================================================================
float32               float weights and activations
float16               float16 weights, dequantised at load (float activations)
dynamic_int8          int8 weights, float activations (dynamic-range quantisation)
int8                  integer inside except the `float_ops` and the classifier (pooling and
                      head); for the folded graph int8 convolutions and projections, float
                      elsewhere, one XNNPACK partition; float32 input and output: the int8
                      file MediaPipe opens (it refuses int8 input)
uint8                 as int8 with uint8 input and output (camera pixels as they are)
int8_float_io         full integer inside (no float op), float input and output
int16x8               16-bit activations, 8-bit weights, float input and output
int8_mixed            the same file as int8 (its earlier name, kept for scripts)
====================  =====================================================================

Integer formats need calibration images (`calibration`), fed through the reference evaluation
transform (`keras_swiftformer.imagenet.load_images`). The int8 formats take their activation
ranges from `converters.calibration` (`RANGES`): by default each tensor's range minimises its
int8 error on the calibration images (for a GELU's input, the error after the GELU) instead of
spanning their min and max; and their pointwise kernels are rounded by GPTQ
(`converters.weight_rounding`, `WEIGHT_ROUNDINGS`).
"""

import os
import tempfile

import numpy as np

from keras_swiftformer.files import atomic_output

TFLITE_FORMATS = ("float32", "float16", "dynamic_int8", "int8", "uint8", "int8_float_io",
                  "int16x8", "int8_mixed")
CALIBRATED_FORMATS = ("int8", "uint8", "int8_float_io", "int16x8", "int8_mixed")
#: Formats that keep the `float_ops` of `convert` in float.
FLOAT_OPS_FORMATS = ("int8", "uint8", "int8_mixed")
#: How int8 activation ranges are chosen: "mse" and "minmax" through `converters.calibration`
#: (error-minimising, or the observed min/max), "converter": the TFLite converter's own path
#: (min/max; the formats before `converters.calibration`, for comparison).
RANGES = ("mse", "minmax", "converter")
#: How the int8 formats' (not the converter path's) weights are rounded:
#: "gptq" (`converters.weight_rounding`, error-compensating) or "nearest" (the converter's).
WEIGHT_ROUNDINGS = ("gptq", "nearest")
#: Calibration images whose layer inputs drive "gptq" (more change little, cost time).
ROUNDING_IMAGES = 32
#: Layers a `FLOAT_OPS_FORMATS` model keeps in float (`converters.calibration.head_nodes`).
FLOAT_HEAD_LAYERS = ("head",)
#: Input and output type of the formats `converters.calibration` quantises: int8 takes float32
#: because MediaPipe Tasks opens float32 or uint8 input only; int8_mixed, int8's earlier name,
#: is the same file (the "converter" path keeps its own deny-list conversion).
_IO_TYPES = {"int8": "float32", "uint8": "uint8", "int8_float_io": "float32",
             "int8_mixed": "float32"}

#: Ops the Keras (unfolded) graph keeps in float in `FLOAT_OPS_FORMATS` (the folded graph's
#: are `converters.inference_graph.FOLDED_FLOAT_OPS`). Measured with the converter's ranges
#: (XS fixture weights, 32 calibration / 48 evaluation photos, SQNR against Keras float):
#: full int8 22.5 dB; keeping SUM, GELU or MEAN in float changes nothing; L2_NORMALIZATION
#: in float gives 25.0 dB (its int8 kernel has a fixed output step of 1/128, a few levels for
#: unit vectors of 48-220 channels); adding SUM and MUL reaches 25.4 dB for many more float
#: islands. See `quantization_error_by_layer`.
KERAS_FLOAT_OPS = ("L2_NORMALIZATION",)


class ExportError(RuntimeError):
    """A format could not be produced; the message names the format and the cause."""


def check_format(fmt):
    if fmt not in TFLITE_FORMATS:
        raise ValueError(f"Unknown TFLite format {fmt!r}; known: {', '.join(TFLITE_FORMATS)}")
    return fmt


def input_signature_shape(model, batch_size=1):
    """(batch, H, W, C) the export will use; raises if the model's size is not fixed."""
    shape = tuple(model.input_shape)
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"{model.name} takes any input size {shape}: build it with a fixed input_shape "
            "(e.g. (224, 224, 3)) to export it"
        )
    return (batch_size,) + shape[1:]


def saved_model(model, directory, batch_size=1):
    """Writes `model` (inference mode) as a SavedModel with one ``serve`` endpoint taking
    float32 (batch_size, H, W, C); ``batch_size=None`` makes the batch dynamic."""
    import keras
    import tensorflow as tf

    spec = tf.TensorSpec(input_signature_shape(model, batch_size), tf.float32, name="image")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
    archive.write_out(directory, verbose=False)
    return directory


def with_token_sum(model, method):
    """A copy of `model` (same weights) whose attention layers sum tokens with `method`
    ("sum" or "mean", see `keras_swiftformer.layers.sum_tokens`); `model` itself if they
    already do."""
    import keras

    from keras_swiftformer.layers import AdditiveTokenMixing

    mixers = [layer for layer in model.layers if isinstance(layer, AdditiveTokenMixing)]
    if all(layer.token_sum == method for layer in mixers):
        return model

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, AdditiveTokenMixing):
            config["token_sum"] = method
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def representative_dataset(images, limit=None):
    """Float images (N, H, W, C) or an iterable of such batches -> the converter's callable
    yielding one-image batches."""

    def generate():
        count = 0
        for batch in ([images] if isinstance(images, np.ndarray) else images):
            for image in np.asarray(batch, np.float32):
                if limit is not None and count >= limit:
                    return
                count += 1
                yield [image[None]]

    return generate


def configure(converter, fmt, calibration=None):
    """Sets the converter options of `fmt` (see the module table)."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if fmt == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "dynamic_int8":
        pass
    else:
        if calibration is None:
            raise ValueError(f"Format {fmt} needs calibration images")
        converter.representative_dataset = representative_dataset(calibration)
        if fmt == "int16x8":
            # Ops without a 16x8 kernel (L2_NORMALIZATION) fall back to float.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
        elif fmt != "int8_mixed":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if fmt == "uint8":  # int8 keeps float32 I/O: MediaPipe opens float32 or uint8 input only
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
    return converter


def convert(model, fmt="float32", calibration=None, batch_size=1, float_ops=KERAS_FLOAT_OPS,
            ranges="mse", weights="gptq", shared=None):
    """Converts `model` to `.tflite` bytes in format `fmt`.

    Args:
        model: a Keras model with a fixed input size.
        fmt: one of `TFLITE_FORMATS`.
        calibration: float32 images (N, H, W, C) in the model's input domain (raw RGB 0-255
            for models with built-in preprocessing), or an iterable of such batches; needed by
            `CALIBRATED_FORMATS`.
        batch_size: the input's batch; None for a dynamic batch.
        float_ops: op types `FLOAT_OPS_FORMATS` keep in float.
        ranges: how the int8 formats' activation ranges are chosen (`RANGES`).
        weights: how their weights are rounded (`WEIGHT_ROUNDINGS`; not with "converter").
        shared: a dict in which the int8 formats of one `model` and `calibration` keep their
            rounded and calibrated model: `int8` and `uint8` differ only in their input and
            output, so the second converted with the same dict skips the rounding and
            calibration (the pipeline passes one per graph).
    """
    import tensorflow as tf

    check_format(fmt)
    if ranges not in RANGES:
        raise ValueError(f"ranges must be one of {RANGES}, got {ranges!r}")
    if weights not in WEIGHT_ROUNDINGS:
        raise ValueError(f"weights must be one of {WEIGHT_ROUNDINGS}, got {weights!r}")
    if fmt in CALIBRATED_FORMATS and calibration is None:
        raise ValueError(f"Format {fmt} needs calibration images")
    if fmt == "int16x8":  # its SUM kernel fails over thousands of tokens, MEAN does not
        model = with_token_sum(model, "mean")
    if fmt in _IO_TYPES and ranges != "converter":
        from converters.calibration import head_nodes, quantize

        float_head = fmt in FLOAT_OPS_FORMATS
        key = (float_head, ranges, weights, batch_size)
        calibrated = (shared or {}).get(key)
        if calibrated is None:
            calibrated = _calibrated(model, fmt, _as_array(calibration), batch_size, ranges,
                                     weights)
            if shared is not None:
                shared[key] = calibrated
        return quantize(calibrated, _IO_TYPES[fmt], float_ops if float_head else (),
                        head_nodes(calibrated) if float_head else ())
    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory, batch_size)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory), fmt,
                              calibration)
        if fmt == "int8_mixed":
            return _selectively_quantized(converter, calibration, float_ops)
        return converter.convert()


def _calibrated(model, fmt, images, batch_size, ranges, weights):
    """`converters.calibration.ranged` of `model` for the int8 format `fmt`, its pointwise
    kernels rounded by GPTQ first with `weights="gptq"` (all but the float head of
    `FLOAT_OPS_FORMATS`)."""
    import tensorflow as tf

    from converters.calibration import ranged

    if weights == "gptq":
        from converters.weight_rounding import round_weights

        skip = FLOAT_HEAD_LAYERS if fmt in FLOAT_OPS_FORMATS else ()
        model = round_weights(model, images[:ROUNDING_IMAGES], skip)
    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory, batch_size)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory), fmt, images)
        return ranged(converter, images, ranges)


def _as_array(images):
    """(N, H, W, C) float32 from an array or an iterable of batches."""
    if isinstance(images, np.ndarray):
        return images.astype(np.float32, copy=False)
    return np.concatenate([np.asarray(b, np.float32) for b in images])


def _selectively_quantized(converter, calibration, float_ops):
    """Full-integer conversion with `float_ops` left in float (TFLite's quantisation debugger
    with a deny list: the documented way to keep chosen ops unquantised)."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative_dataset(calibration, limit=8),
        debug_options=options)
    return debugger.get_nondebug_quantized_model()


def export_tflite(model, path, fmt="float32", calibration=None, batch_size=1,
                  float_ops=KERAS_FLOAT_OPS, ranges="mse", weights="gptq", shared=None):
    """Converts `model` (see `convert`) and writes `path` atomically; returns `path`.

    Raises:
        ExportError: conversion failed; nothing is written.
    """
    if not str(path).endswith(".tflite"):
        raise ValueError(f"A LiteRT model path must end in .tflite, got {path}")
    check_format(fmt)
    try:
        content = convert(model, fmt, calibration, batch_size, float_ops, ranges, weights,
                          shared)
    except ValueError:
        raise
    except Exception as err:  # the converter raises ConverterError and others
        raise ExportError(f"{fmt}: conversion failed: {err}") from err
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return os.fspath(path)


def quantization_error_by_layer(model, calibration, evaluation=None, limit=8):
    """Layer-by-layer int8 error of `model`'s full-integer conversion, worst first.

    Runs TFLite's quantisation debugger: each quantised op is fed the float model's inputs, so
    the error is that op's own, not accumulated. Returns rows
    ``{"op", "tensor", "rmse_per_step", "max_abs_error", "scale"}``, where ``rmse_per_step`` is
    the RMS error divided by the output's quantisation step (about 0.29 is ideal rounding;
    larger values mark the ops int8 damages).
    """
    import csv
    import io

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory, 1)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory),
                              "int8_float_io", calibration)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=representative_dataset(
                evaluation if evaluation is not None else calibration, limit=limit))
        debugger.run()
        buffer = io.StringIO()
        debugger.layer_statistics_dump(buffer)
    rows = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row["scale"] or 0)
        rmse = float(row["mean_squared_error"]) ** 0.5
        rows.append({"op": row["op_name"], "tensor": row["tensor_name"],
                     "rmse_per_step": rmse / scale if scale else 0.0,
                     "max_abs_error": float(row["max_abs_error"]), "scale": scale})
    return sorted(rows, key=lambda r: -r["rmse_per_step"])
