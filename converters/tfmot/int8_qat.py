"""Quantisation-aware training that starts from the post-training `int8` and exports through it.

The post-training `int8` of the folded graph (`converters.litert.tflite.convert`, format "int8" with
`converters.inference_graph.FOLDED_FLOAT_OPS`) runs only the convolutions and projections in
int8: each CONV_2D / FULLY_CONNECTED but the classifier takes an int8 input (a QUANTIZE of the
float tensor before it, through a PAD where there is one), holds per-output-channel int8 weights
and gives an int8 output that is dequantised for the float ops after it. The attention's
``q @ w_g`` is one of those FULLY_CONNECTEDs. Everything else is float.

`student` builds a tf_keras twin (`converters.tfmot.twin`) with fake quantisation at exactly
those places and nowhere else:

- weights: the GPTQ-rounded kernels of the post-training int8 (`converters.weight_rounding`),
  fake-quantised per output channel on TFLite's symmetric grid (``max|w| / 127``), straight
  through for the gradient;
- activations: the input and output of every quantised layer on the int8 grid of the range
  `converters.calibration.choose_ranges` picks on the calibration images (error-minimising; for
  a tensor only GELUs read, the error after the GELU), as the int8 file's.

So before fine-tuning the student computes what the int8 file computes. `finetune.distill`
then tunes every weight (the float ones too: depthwise kernels, biases, head) under that
quantisation noise, the ranges fixed (or learnt, with ``learn_ranges``). `export` puts the tuned
kernels, on their int8 grid, back into the Keras 3 folded graph (`tuned_weights`), calibrates it
by the post-training path and writes the student's own ranges at its int8 ops (matched by
kernel), so that the file computes what was fine-tuned: ranges chosen again on the tuned weights
would undo part of the tuning.
"""

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras

from converters.tfmot.twin import FoldedTokenMixing, build_twin

#: TFLite's symmetric int8 weight levels (narrow range).
LEVELS = 127


def quantized_kernel(kernel):
    """`kernel` (..., out) on TFLite's per-output-channel symmetric int8 grid, with a
    straight-through gradient; the channel's largest weight keeps its value, so the scale
    the converter derives from the exported kernel is the one used here."""
    peak = tf.reduce_max(tf.abs(kernel), axis=list(range(len(kernel.shape) - 1)))
    scale = tf.stop_gradient(tf.where(peak > 0, peak / LEVELS, tf.ones_like(peak)))
    return kernel + tf.stop_gradient(tf.round(kernel / scale) * scale - kernel)


def fake_quant(x, bounds):
    """`x` on the asymmetric int8 grid of the range ``bounds`` (2,) widened to hold zero, as
    TFLite's quantiser does (TF's op would shift a range that excludes zero instead)."""
    return tf.quantization.fake_quant_with_min_max_vars(
        x, tf.minimum(bounds[0], 0.0), tf.maximum(bounds[1], 0.0), num_bits=8)


class _Quantized:
    """Mixin of a tf_keras Conv2D / Dense run as its int8 op: fake-quantised input, kernel and
    output. The two ranges are weights after the layer's own (``input_range``,
    ``output_range``, (2,) each), trainable with ``learn_ranges``."""

    def __init__(self, *args, learn_ranges=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.learn_ranges = learn_ranges

    def build(self, input_shape):
        super().build(input_shape)
        self.input_range = self.add_weight("input_range", shape=(2,), trainable=self.learn_ranges,
                                           initializer="zeros")
        self.output_range = self.add_weight("output_range", shape=(2,),
                                            trainable=self.learn_ranges, initializer="zeros")

    def call(self, inputs):
        kernel = self.kernel
        # The parent's call reads self.kernel: give it the quantised one for this call
        # (object.__setattr__: not a new tracked weight).
        object.__setattr__(self, "kernel", quantized_kernel(kernel))
        try:
            outputs = super().call(fake_quant(inputs, self.input_range))
        finally:
            object.__setattr__(self, "kernel", kernel)
        return fake_quant(outputs, self.output_range)

    def float_weights(self):
        """The weights of the plain layer, the kernel on its int8 grid."""
        return [quantized_kernel(self.kernel).numpy()] + [
            w.numpy() for w in self.weights[1:-2]]

    def get_config(self):
        return {**super().get_config(), "learn_ranges": self.learn_ranges}


class QuantizedConv2D(_Quantized, tf_keras.layers.Conv2D):
    """A Conv2D as its int8 CONV_2D (see `_Quantized`)."""


class QuantizedDense(_Quantized, tf_keras.layers.Dense):
    """A Dense as its int8 FULLY_CONNECTED (see `_Quantized`)."""


class _ScoresQuantizer:
    """Observers of a twin `FoldedTokenMixing` (`converters.tfmot.twin.Observed`) that run its
    ``q @ w_g`` as the int8 FULLY_CONNECTED it converts to: q quantised on that path only (its
    other uses are float ops), ``w_g`` on its int8 grid, the scores on theirs."""

    def __init__(self, q_range, scores_range):
        self.q_range = tf.constant(q_range, tf.float32)
        self.scores_range = tf.constant(scores_range, tf.float32)
        self.seen = {}

    def install(self, layer):
        layer.observers.update(q=self._keep("q"), w_g=self._keep("w_g"), scores=self._scores)
        layer.observed = True

    def _keep(self, name):
        def observe(x):
            self.seen[name] = x
            return x
        return observe

    def _scores(self, _):
        q = fake_quant(self.seen["q"], self.q_range)
        return fake_quant(tf.matmul(q, quantized_kernel(self.seen["w_g"])), self.scores_range)


def _source(tensor):
    """(layer, output index) producing `tensor` in a tf_keras functional graph."""
    history = tensor._keras_history  # noqa: SLF001 -- tf_keras has no public graph API
    return history.layer, history.tensor_index


def _unpadded(tensor):
    """The tensor a ZeroPadding2D pads (int8 PAD keeps its input's grid), else `tensor`."""
    layer, _ = _source(tensor)
    return layer.input if isinstance(layer, tf_keras.layers.ZeroPadding2D) else tensor


def _reads_only_gelu(layer):
    consumers = [node.outbound_layer for node in layer._outbound_nodes]  # noqa: SLF001
    return bool(consumers) and all(
        isinstance(c, tf_keras.layers.Activation)
        and getattr(c.activation, "__name__", "") == "gelu" for c in consumers)


def quantized_layers(twin, skip=()):
    """Names of the twin's Conv2D / Dense layers the int8 file runs in int8 (all but `skip`),
    and of its attention layers."""
    layers = [layer.name for layer in twin.layers
              if type(layer) in (tf_keras.layers.Conv2D, tf_keras.layers.Dense)
              and layer.name not in skip]
    attention = [layer.name for layer in twin.layers if isinstance(layer, FoldedTokenMixing)]
    return layers, attention


def int8_ranges(twin, images, skip=(), batch_size=8, seed=0):
    """The int8 file's activation ranges, measured on the float twin.

    Returns:
        {layer name: {"input": (low, high), "output": (low, high)}} for the quantised layers
        (`quantized_layers`), {"q": ..., "scores": ...} for the attention layers; chosen by
        `converters.calibration.choose_ranges` ("mse") from the calibration images' values.
    """
    from converters.calibration import choose_ranges, new_summary, record

    layers, attention = quantized_layers(twin, skip)
    tensors, keys, points = [], {}, {}

    def point(tensor):
        layer, index = _source(tensor)
        key = (layer.name, index)
        if key not in keys:
            keys[key] = len(tensors)
            tensors.append(tensor)
        return keys[key]

    for name in layers:
        layer = twin.get_layer(name)
        points[name] = {"input": point(_unpadded(layer.input)), "output": point(layer.output)}
    for name in attention:
        points[name] = {"q": point(twin.get_layer(name).output[1])}
    gelu = {points[name]["output"] for name in layers if _reads_only_gelu(twin.get_layer(name))}
    scores = {name: len(tensors) + i for i, name in enumerate(attention)}
    w_g = {name: twin.get_layer(name).w_g.numpy() for name in attention}

    probe = tf_keras.Model(twin.inputs, tensors)
    rng = np.random.default_rng(seed)
    count = len(tensors) + len(attention)
    stats = {i: new_summary(consumers=["GELU"] if i in gelu else []) for i in range(count)}
    for start in range(0, len(images), batch_size):
        values = probe.predict(images[start:start + batch_size], verbose=0)
        values = list(values) if len(tensors) > 1 else [values]
        values += [values[points[name]["q"]] @ w_g[name] for name in attention]
        for index, batch in enumerate(values):
            for image in batch:
                record(stats[index], image, rng)
    for entry in stats.values():
        entry["sample"] = np.concatenate(entry.pop("samples"))
    chosen = choose_ranges(stats, "mse")
    ranges = {name: {kind: chosen[i] for kind, i in found.items()}
              for name, found in points.items()}
    for name in attention:
        ranges[name]["scores"] = chosen[scores[name]]
    return ranges


def student(folded, images, skip=("head",), learn_ranges=False, rounding_images=32):
    """The QAT student of Keras 3 `folded` (`converters.inference_graph.for_inference`): its
    tf_keras twin quantised as the post-training int8 file (see the module).

    Args:
        folded: the folded graph (Dense projections, as the pipeline converts it).
        images: (N, H, W, 3) float32 calibration images.
        skip: layers left in float (the int8 file's float head).
        learn_ranges: train the activation ranges too (else they stay as chosen).
        rounding_images: images whose layer inputs drive the GPTQ rounding (as the int8
            format's).

    Returns:
        (student tf_keras model, its ranges as `int8_ranges` returns them).
    """
    from converters.weight_rounding import round_weights

    twin = build_twin(round_weights(folded, images[:rounding_images], skip))
    ranges = int8_ranges(twin, images, skip)
    layers, attention = quantized_layers(twin, skip)
    swap = {tf_keras.layers.Conv2D: QuantizedConv2D, tf_keras.layers.Dense: QuantizedDense}

    def clone(layer):
        if layer.name in layers:
            config = dict(layer.get_config(), learn_ranges=learn_ranges)
            return swap[type(layer)].from_config(config)
        return layer.__class__.from_config(layer.get_config())

    model = tf_keras.models.clone_model(twin, clone_function=clone)
    for layer in model.layers:
        source = twin.get_layer(layer.name).get_weights()
        if layer.name in layers:
            bounds = ranges[layer.name]
            layer.set_weights(source + [np.array(bounds["input"], np.float32),
                                        np.array(bounds["output"], np.float32)])
        elif source:
            layer.set_weights(source)
    for name in attention:
        _ScoresQuantizer(ranges[name]["q"], ranges[name]["scores"]).install(
            model.get_layer(name))
    return model, ranges


def tuned_weights(model, folded):
    """A copy of Keras 3 `folded` carrying `student` `model`'s weights, its quantised kernels
    (and the attention's ``w_g``) on their int8 grid."""
    import keras

    from keras_swiftformer.mapping import copy_weights

    twin = build_twin(folded, copy=False)
    for layer in model.layers:
        target = twin.get_layer(layer.name)
        if isinstance(layer, _Quantized):
            target.set_weights(layer.float_weights())
        elif isinstance(layer, FoldedTokenMixing):
            target.set_weights([quantized_kernel(layer.w_g).numpy()])
        elif layer.weights:
            target.set_weights(layer.get_weights())
    copy = keras.models.clone_model(folded)
    copy_weights(twin, copy)
    return copy


def student_ranges(model):
    """[(kernel in TFLite's layout, input range, output range)] of every int8 op the `student`
    `model` simulates: the quantised layers' and the attention's ``q @ w_g``."""
    found = []
    for layer in model.layers:
        if isinstance(layer, _Quantized):
            kernel = quantized_kernel(layer.kernel).numpy()
            kernel = np.moveaxis(kernel, -1, 0)  # (out, h, w, in) / (out, in), as TFLite's
            found.append((kernel, layer.input_range.numpy(), layer.output_range.numpy()))
        elif isinstance(layer, FoldedTokenMixing):
            quantizer = layer.observers["scores"].__self__
            found.append((quantized_kernel(layer.w_g).numpy().T, quantizer.q_range.numpy(),
                          quantizer.scores_range.numpy()))
    return found


def _matching_ranges(calibrated, simulated):
    """{tensor index: (low, high)} of the calibrated `.tflite` `calibrated`: each CONV_2D /
    FULLY_CONNECTED whose float kernel is one of `simulated` (`student_ranges`) takes that
    op's input range (also on the tensor a PAD pads into it) and output range."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    producers = {out: op for op in graph.operators for out in op.outputs}
    by_shape = {}
    for kernel, low_high_in, low_high_out in simulated:
        by_shape.setdefault(kernel.shape, []).append((kernel, low_high_in, low_high_out))
    ranges, matched = {}, 0
    for op in graph.operators:
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        if name not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        tensor = graph.tensors[op.inputs[1]]
        data = model.buffers[tensor.buffer].data
        if data is None or not len(data):
            continue
        kernel = np.frombuffer(bytes(data), np.float32).reshape(tensor.shape)
        found = [entry for entry in by_shape.get(tuple(kernel.shape), ())
                 if np.allclose(entry[0], kernel, rtol=0, atol=1e-6 * np.abs(kernel).max())]
        if not found:
            continue
        _, low_high_in, low_high_out = found[0]
        matched += 1
        source = op.inputs[0]
        ranges[source] = tuple(low_high_in)
        pad = producers.get(source)
        if pad is not None and flatbuffer_utils.opcode_to_name(model, pad.opcodeIndex) == "PAD":
            ranges[pad.inputs[0]] = tuple(low_high_in)
        ranges[op.outputs[0]] = tuple(low_high_out)
    if matched != len(simulated):
        raise ValueError(f"{matched} of the student's {len(simulated)} int8 ops found in the "
                         "converted graph")
    return ranges


def export(model, folded, images, batch_size=1):
    """The ``int8`` `.tflite` (float32 input and output, `FOLDED_FLOAT_OPS` in float, the
    classifier in float) of `student` `model`: its weights in Keras 3 `folded`
    (`tuned_weights`), calibrated by the post-training path, with the student's own activation
    ranges at its int8 ops (the ranges it was fine-tuned with)."""
    import tempfile

    from converters import calibration
    from converters.inference_graph import FOLDED_FLOAT_OPS
    from converters.litert.tflite import configure, saved_model

    tuned = tuned_weights(model, folded)
    with tempfile.TemporaryDirectory() as directory:
        saved_model(tuned, directory, batch_size)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory), "int8",
                              images)
        calibrated = calibration.calibrate(converter)
    calibrated = calibration.with_ranges(calibrated,
                                         _matching_ranges(calibrated, student_ranges(model)))
    return calibration.quantize(calibrated, "float32", FOLDED_FLOAT_OPS,
                                calibration.head_nodes(calibrated))


#: Peak learning rate of `qat_int8`'s fine-tuning (relative to each tensor's RMS,
#: `converters.tfmot.finetune.RelativeAdam`): smaller than pruning's, the start is good already.
LEARNING_RATE = 1e-4


def qat_int8(model, images, steps, tuning, progress=None, evaluation=None, reference=None):
    """``qat_int8``: the post-training int8 of `model`'s folded graph, fine-tuned under its own
    quantisation by distillation from `model`, exported by the post-training int8 path.

    Args:
        model: the Keras 3 float model (logits out), the teacher.
        images: (N, H, W, 3) float32 calibration and fine-tuning images.
        steps: fine-tuning steps.
        tuning: a `converters.compress.FineTuning` (learning rate None: `LEARNING_RATE`).
        progress: callable taking one line of text, or None.
        evaluation, reference: images never used here and `model`'s logits on them, to measure
            the start.

    Returns:
        (`.tflite` bytes (`export`): as format "int8" of `converters.litert.tflite`, float32 input and
        output;
        `converters.metrics.fidelity` of the student before fine-tuning on `evaluation`, i.e.
        of the post-training int8 file within float rounding, or None without `evaluation`).
    """
    from converters.inference_graph import for_inference
    from converters.metrics import fidelity
    from converters.tfmot.finetune import distill

    folded = for_inference(model)
    tuned, _ = student(folded, images)
    start = None
    if evaluation is not None:
        start = fidelity(reference, tuned.predict(evaluation, verbose=0,
                                                  batch_size=tuning.batch_size))
    tuning = dataclasses.replace(tuning, learning_rate=tuning.learning_rate or LEARNING_RATE)
    distill(tuned, model, images, steps, tuning, progress=progress)
    return export(tuned, folded, images), start
