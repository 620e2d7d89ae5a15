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
int8                  full integer, int8 input and output
uint8                 full integer, uint8 input and output (camera pixels as they are)
int8_float_io         full integer inside, float input and output
int16x8               16-bit activations, 8-bit weights, float input and output
int8_mixed            full integer except the ops in `MIXED_FLOAT_OPS`, kept in float
====================  =====================================================================

Integer formats need calibration images (`calibration`), fed through the reference evaluation
transform (`keras_swiftformer.imagenet.load_images`).
"""

import os
import tempfile

import numpy as np

from converters.files import atomic_output

TFLITE_FORMATS = ("float32", "float16", "dynamic_int8", "int8", "uint8", "int8_float_io",
                  "int16x8", "int8_mixed")
CALIBRATED_FORMATS = ("int8", "uint8", "int8_float_io", "int16x8", "int8_mixed")

#: Ops that `int8_mixed` keeps in float: the ones the layer-by-layer comparison
#: (`quantization_error_by_layer`) finds int8 damages most in SwiftFormer.
MIXED_FLOAT_OPS = ("L2_NORMALIZATION", "SUM", "MEAN", "RSQRT", "SQUARE")


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
        if fmt in ("int8", "uint8"):
            io_type = tf.int8 if fmt == "int8" else tf.uint8
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    return converter


def convert(model, fmt="float32", calibration=None, batch_size=1, float_ops=MIXED_FLOAT_OPS):
    """Converts `model` to `.tflite` bytes in format `fmt`.

    Args:
        model: a Keras model with a fixed input size.
        fmt: one of `TFLITE_FORMATS`.
        calibration: float32 images (N, H, W, C) in the model's input domain (raw RGB 0-255
            for models with built-in preprocessing), or an iterable of such batches; needed by
            `CALIBRATED_FORMATS`.
        batch_size: the input's batch; None for a dynamic batch.
        float_ops: op types `int8_mixed` keeps in float.
    """
    import tensorflow as tf

    check_format(fmt)
    if fmt in CALIBRATED_FORMATS and calibration is None:
        raise ValueError(f"Format {fmt} needs calibration images")
    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory, batch_size)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory), fmt,
                              calibration)
        if fmt == "int8_mixed":
            return _selectively_quantized(converter, calibration, float_ops)
        return converter.convert()


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
                  float_ops=MIXED_FLOAT_OPS):
    """Converts `model` (see `convert`) and writes `path` atomically; returns `path`.

    Raises:
        ExportError: conversion failed; nothing is written.
    """
    if not str(path).endswith(".tflite"):
        raise ValueError(f"A LiteRT model path must end in .tflite, got {path}")
    check_format(fmt)
    try:
        content = convert(model, fmt, calibration, batch_size, float_ops)
    except ValueError:
        raise
    except Exception as err:  # the converter raises ConverterError and others
        raise ExportError(f"{fmt}: conversion failed: {err}") from err
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return os.fspath(path)


def quantization_error_by_layer(model, calibration, evaluation=None):
    """Layer-by-layer int8 error: runs TFLite's quantisation debugger on the full-integer
    conversion of `model` and returns rows sorted by relative error, worst first:
    ``{"op": op type, "tensor": name, "rmse/scale": ..., "range": ..., "scale": ...}``.

    ``rmse/scale`` is the RMS difference between the float and the quantised tensor divided by
    the tensor's quantisation step: around 0.29 is ideal rounding; much larger values mark the
    ops int8 damages.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory, 1)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory),
                              "int8_float_io", calibration)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=representative_dataset(
                evaluation if evaluation is not None else calibration, limit=8))
        debugger.run()
        stats = debugger.layer_statistics
        details = {d["index"]: d for d in debugger._quant_interpreter._get_ops_details()}  # noqa
    rows = []
    for name, metrics in stats.items():
        rows.append({
            "tensor": name,
            "rmse/scale": float(metrics["rmse/scale"]),
            "range": float(metrics["range"]),
            "scale": float(metrics["scale"]),
        })
    _ = details
    return sorted(rows, key=lambda r: -r["rmse/scale"])
