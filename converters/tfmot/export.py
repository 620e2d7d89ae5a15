"""A quantisation-aware-trained tf_keras model -> integer `.tflite`, ranges from training.

The model's fake-quantisation ops carry every range the integer ops need, so the converter needs
no representative dataset (tensors with no fake-quantiser stay float, see `FLOAT_OPS`):
``optimizations=[DEFAULT]`` on a graph with FakeQuant ops is TFLite's QAT conversion.
The graph is traced at a fixed batch (1 by default, what phones run), which keeps the Dense
layers on 4-D tensors free of SHAPE/GATHER ops, and only builtin ops are allowed.

(``target_spec.supported_ops = [TFLITE_BUILTINS_INT8]`` cannot be set: TensorFlow 2.21's
converter checks for a representative dataset before it has looked at the graph. The tests check
instead which ops are float, with `converters.tfmot.tflite_stats.float_ops`.)
"""

import tensorflow as tf

#: The op types a QAT export of the folded graph keeps in float: the attention's RMS
#: normalisations (``x * x``, MEAN, MAXIMUM, RSQRT, and the MULs by the RSQRT), left
#: unquantised on purpose (`converters.tfmot.quantize.FLOAT_POINT_KINDS`). XNNPACK runs them in
#: float; everything else is int8.
FLOAT_OPS = ("MAXIMUM", "MEAN", "MUL", "RSQRT")

#: Input / output types of the QAT exports, as `converters.litert.tflite`'s "int8" / "int8_float_io".
IO_TYPES = {"int8": tf.int8, "float": tf.float32}


def convert_qat(model, io="int8", batch_size=1):
    """QAT tf_keras `model` -> `.tflite` bytes, integer inside.

    Args:
        model: a tf_keras model whose tensors pass through fake-quantisation
            (`converters.tfmot.quantize.quantize_twin`); those that do not stay float.
        io: "int8" (int8 input and output, quantised with the trained ranges) or "float"
            (float input and output, QUANTIZE / DEQUANTIZE at the ends).
        batch_size: the fixed batch of the export.

    Returns:
        bytes of the `.tflite` model.
    """
    if io not in IO_TYPES:
        raise ValueError(f"io must be one of {tuple(IO_TYPES)}, got {io!r}")
    spec = tf.TensorSpec((batch_size,) + tuple(model.input_shape[1:]), tf.float32)
    function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = IO_TYPES[io]
    converter.inference_output_type = IO_TYPES[io]
    return converter.convert()
