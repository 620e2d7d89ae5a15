"""Keras SwiftFormer -> `.tflite` (LiteRT), float and quantised.

The path is the one TensorFlow 2.21 and Keras 3 support: the model is written as a SavedModel
by `keras.export.ExportArchive` with a fixed input signature, then converted with
`tf.lite.TFLiteConverter.from_saved_model`, builtin ops only (no Flex ops on the phone).
Batch 1 and a fixed input size by default, as phones run; a dynamic batch is an option.

What each format is lives in `converters.formats` (the LiteRT records of `FORMATS`). The int8
formats (int8, uint8, int8_float_io) round their pointwise kernels by GPTQ
(`converters.weight_rounding`) and choose each activation's range to minimise its error on the
calibration images (`converters.calibration`). Calibration images are fed through the reference evaluation transform
(`keras_swiftformer.imagenet.load_images`).
"""

import os
import tempfile

import numpy as np

from converters.formats import get_format
from keras_swiftformer.config import HEADS
from keras_swiftformer.files import atomic_output

#: Calibration images whose layer inputs drive the GPTQ rounding.
ROUNDING_IMAGES = 32
#: Layers the `float_ops` formats keep in float (`converters.calibration.head_nodes`).
FLOAT_HEAD_LAYERS = HEADS[:1]  # the folded graph's one head
#: Ops the Keras (unfolded) graph keeps in float in the `float_ops` formats (the folded graph's
#: are `converters.inference_graph.FOLDED_FLOAT_OPS`): the int8 L2_NORMALIZATION kernel's fixed
#: output step leaves a few levels for a unit vector.
KERAS_FLOAT_OPS = ("L2_NORMALIZATION",)


class ExportError(RuntimeError):
    """A format could not be produced; the message names the format and the cause."""


def check_format(fmt):
    """The `converters.formats.Format` of LiteRT format `fmt`; ValueError otherwise."""
    record = get_format(fmt)
    if record.litert is None:
        raise ValueError(f"{record.name} is a {record.target} format, not a LiteRT one")
    return record


def _ours(fmt):
    """Whether `fmt`'s integer model comes from `converters.calibration` (int8 activations)."""
    return fmt.litert.activations == "int8"


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
    """Sets the converter options of LiteRT format `fmt` (a name or `Format`)."""
    import tensorflow as tf

    fmt = check_format(fmt)
    recipe = fmt.litert
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if not recipe.optimize:
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe.weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if recipe.calibrated:
        if calibration is None:
            raise ValueError(f"Format {fmt.name} needs calibration images: give --images DIR")
        converter.representative_dataset = representative_dataset(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def convert(model, fmt="float32", calibration=None, batch_size=1, float_ops=KERAS_FLOAT_OPS,
            shared=None):
    """Converts `model` to `.tflite` bytes in LiteRT format `fmt`.

    Args:
        model: a Keras model with a fixed input size.
        fmt: a LiteRT format of `converters.formats.FORMATS` (name or record).
        calibration: float32 images (N, H, W, C) in the model's input domain (raw RGB 0-255
            for models with built-in preprocessing), or an iterable of such batches; needed by
            the calibrated formats.
        batch_size: the input's batch; None for a dynamic batch.
        float_ops: op types the ``float_ops`` formats (int8, uint8) keep in float: the graph's
            (`KERAS_FLOAT_OPS`, `converters.inference_graph.FOLDED_FLOAT_OPS`).
        shared: a dict in which the int8 formats of one `model` and `calibration` keep their
            rounded and calibrated model: `int8` and `uint8` differ only in their input and
            output, so the second converted with the same dict only quantises (the pipeline
            passes one per graph).
    """
    import tensorflow as tf

    fmt = check_format(fmt)
    if fmt.calibrated and calibration is None:
        raise ValueError(f"Format {fmt.name} needs calibration images")
    if _ours(fmt):
        from converters.calibration import head_nodes, quantize

        key = (fmt.float_ops, batch_size)
        ranged = (shared or {}).get(key)
        if ranged is None:
            skip = FLOAT_HEAD_LAYERS if fmt.float_ops else ()
            ranged = calibrated_int8(model, _as_array(calibration), batch_size, skip)
            if shared is not None:
                shared[key] = ranged
        return quantize(ranged, fmt.io, float_ops if fmt.float_ops else (),
                        head_nodes(ranged) if fmt.float_ops else ())
    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory, batch_size)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory), fmt,
                              calibration)
        return converter.convert()


def calibrated_int8(model, images, batch_size=1, skip_rounding=()):
    """The float flatbuffer of `model` with int8 activation ranges chosen on `images`
    (`converters.calibration.ranged`), its pointwise kernels rounded by GPTQ first (all but the
    layers named in `skip_rounding`); `converters.calibration.quantize` makes the int8 file."""
    import tensorflow as tf

    from converters.calibration import ranged
    from converters.weight_rounding import round_weights

    model = round_weights(model, images[:ROUNDING_IMAGES], skip_rounding)
    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory, batch_size)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory),
                              "int8_float_io", images)
        return ranged(converter, images)


def _as_array(images):
    """(N, H, W, C) float32 from an array or an iterable of batches."""
    if isinstance(images, np.ndarray):
        return images.astype(np.float32, copy=False)
    return np.concatenate([np.asarray(b, np.float32) for b in images])


def convert_checked(model, fmt="float32", calibration=None, batch_size=1,
                    float_ops=KERAS_FLOAT_OPS, shared=None):
    """`convert`, with the converter's own errors raised as ExportError naming the format."""
    fmt = check_format(fmt)
    try:
        return convert(model, fmt, calibration, batch_size, float_ops, shared)
    except ValueError:
        raise
    except Exception as err:  # the converter raises ConverterError and others
        raise ExportError(f"{fmt.name}: conversion failed: {err}") from err


def export_tflite(model, path, fmt="float32", calibration=None, batch_size=1,
                  float_ops=KERAS_FLOAT_OPS, shared=None):
    """Converts `model` (see `convert`) and writes `path` atomically; returns `path`.

    Raises:
        ExportError: conversion failed; nothing is written.
    """
    if not str(path).endswith(".tflite"):
        raise ValueError(f"A LiteRT model path must end in .tflite, got {path}")
    content = convert_checked(model, fmt, calibration, batch_size, float_ops, shared)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return os.fspath(path)
