"""The tf_keras twin of a Keras 3 SwiftFormer, the model TFMOT can optimise.

`build_twin(model)` walks the Keras 3 functional graph layer by layer (`model.layers` is in
topological order) and calls, for each layer, its tf_keras equivalent on the twin tensors of the
layer's inputs: stock layers are rebuilt by class name from their config, the custom ones are the
tf_keras subclasses below, which reuse the math mixins of `keras_swiftformer.layers` and
`converters.inference_graph` (written with `keras.ops`, which act on the tf tensors of tf_keras
on the TensorFlow backend). It works on the Keras model and on its folded inference graph. So the twin has
the same topology, layer names and weight order as the model, and there is no second copy of the
architecture. `keras_swiftformer.mapping.copy_weights` moves the weights across (either way)
layer by layer, by order, with every count, name and shape checked.
"""

import keras
import tensorflow as tf
import tf_keras
from keras import ops

from converters.inference_graph import FoldedTokenMixingMath
from keras_swiftformer.mapping import copy_weights
from keras_swiftformer.layers import (
    L2_EPSILON,
    AdditiveTokenMixingMath,
    LayerScaleMath,
    l2_normalize,
    sum_tokens,
)

#: Keras 3 config keys tf_keras layers do not take, with the value that makes dropping them
#: harmless; any other value is an error.
KERAS3_ONLY_KEYS = {"quantization_config": None, "lora_rank": None, "lora_alpha": None}

def _identity(x):
    return x


_identity.__name__ = "linear"  # what TFMOT's QuantizeAwareActivation recognises

#: Kinds of observation point (see `Observed`): what range a fake-quantiser there takes.
#: "range": a moving-average range from the data; "unit": the output of an L2 normalisation,
#: TFLite's fixed int8 range for it; "constant": a constant or weight, its own range;
#: "statistic": a tensor inside an RMS normalisation (`converters.tfmot.quantize` keeps these
#: in float).
POINT_KINDS = ("range", "unit", "constant", "statistic")


class Observed:
    """Mixin of twin layers with *observation points*: named internal tensors, each passed
    through ``self.observers[name]`` (identity until TFMOT's `QuantizeConfig` puts a
    fake-quantiser there, see `converters.tfmot.quantize`), so that every tensor the TFLite
    converter sees inside the layer carries a range learnt in training.

    ``points()`` returns {name: kind} (kinds: `POINT_KINDS`) in computation order.
    """

    def _init_observers(self):
        self.observers = {name: _identity for name in self.points()}
        self.observed = False

    def _observe(self, name, x):
        return self.observers[name](x)


class LayerScale(LayerScaleMath, tf_keras.layers.Layer):
    """tf_keras twin of `keras_swiftformer.layers.LayerScale`: (B, H, W, C) -> ``x * gamma``."""

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],),
            initializer=tf_keras.initializers.Constant(self.init_value))
        super().build(input_shape)

    def call(self, x):
        return self._layer_scale(x, self.gamma)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


class AdditiveTokenMixing(Observed, AdditiveTokenMixingMath, tf_keras.layers.Layer):
    """tf_keras twin of `keras_swiftformer.layers.AdditiveTokenMixing`.

    Inputs ``[query, key]``, (B, H, W, D) each; outputs ``[G * k, q]``. In float it runs the
    mixin's ``_mix`` unchanged; observed (for QAT), `_observed_mix`.
    """

    def __init__(self, token_weighting="l2", token_sum="sum", **kwargs):
        super().__init__(**kwargs)
        self._set_options(token_weighting, token_sum)
        self._init_observers()

    def points(self):
        if self.token_weighting == "l2":
            return {"query": "unit", "key": "unit", "w_g": "constant", "scores": "range",
                    "weighted": "range", "summed": "range", "squares": "range",
                    "energy": "range", "inv_norm": "range", "global_query": "range",
                    "mixed": "range"}
        return {"query": "unit", "key": "unit", "global_query": "range", "mixed": "range"}

    def build(self, input_shape):
        self.w_g = self.add_weight(
            name="w_g", shape=(input_shape[0][-1], 1),
            initializer=tf_keras.initializers.RandomNormal(stddev=1.0))
        super().build(input_shape)

    def call(self, inputs):
        query, key = inputs
        if not self.observed:
            return self._mix(query, key, self.w_g, self.token_weighting, self.token_sum)
        return self._observed_mix(query, key, self.w_g, self.token_weighting, self.token_sum,
                                  self._observe)

    def _observed_mix(self, query, key, w_g, token_weighting, token_sum, observe):
        """``_mix`` with ``observe(name, tensor)`` applied to each internal tensor.

        The function of `AdditiveTokenMixingMath._mix` (the tests check that they agree),
        written for int8: ``D ** -0.5`` scales ``w_g`` (so that the FULLY_CONNECTED weight is a
        fake-quantised constant), and the token weights are not normalised one by one:
        ``sum(normalize(s) * q) = sum(s * q) * rsqrt(sum(s * s))``. The int8
        L2_NORMALIZATION kernel has a fixed output step of 1/128, a few steps for token weights
        of size 1/sqrt(tokens), and rounds them off by one step for a quarter of the tokens;
        here every tensor keeps a range of its own.
        """
        q = observe("query", l2_normalize(query))
        k = observe("key", l2_normalize(key))
        if token_weighting == "l2":
            w_g = observe("w_g", ops.cast(w_g, q.dtype) * (q.shape[-1] ** -0.5))
            scores = observe("scores", ops.matmul(q, w_g))
            summed = observe("summed", sum_tokens(observe("weighted", scores * q), token_sum))
            energy = observe("energy", sum_tokens(observe("squares", scores * scores),
                                                  token_sum))
            inv_norm = observe("inv_norm", ops.rsqrt(ops.maximum(energy, L2_EPSILON**2)))
            global_query = observe("global_query", summed * inv_norm)
        else:
            global_query = observe("global_query", sum_tokens(q, token_sum))
        return observe("mixed", global_query * k), q

    def compute_output_shape(self, input_shape):
        return [input_shape[0], input_shape[0]]

    def get_config(self):
        return {**super().get_config(), "token_weighting": self.token_weighting,
                "token_sum": self.token_sum}


class FoldedTokenMixing(Observed, FoldedTokenMixingMath, tf_keras.layers.Layer):
    """tf_keras twin of `converters.inference_graph.FoldedTokenMixing` (the folded graph's
    attention): the same math, with every intermediate observed once quantised."""

    def __init__(self, token_weighting="l2", l2_form="rsqrt", **kwargs):
        super().__init__(**kwargs)
        self._set_options(token_weighting, l2_form)
        self._init_observers()

    def build(self, input_shape):
        self.w_g = self.add_weight(name="w_g", shape=(self._token_shape(input_shape)[-1], 1),
                                   initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        if not self.observed:
            return self._folded_mix(inputs, self.w_g)
        return self._folded_mix(inputs, self.w_g, self._observe)


class Rescaling(Observed, tf_keras.layers.Rescaling):
    """tf_keras's Rescaling with its constants and intermediate observed, so that the
    preprocessing's MUL and ADD convert to int8 (TFLite leaves an op with a constant operand
    that no fake-quantiser covers in float)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_observers()

    def points(self):
        return {"scale": "constant", "scaled": "range", "offset": "constant", "output": "range"}

    def call(self, inputs):
        if not self.observed:
            return super().call(inputs)
        dtype = self.compute_dtype
        scale = self._observe("scale", tf.cast(self.scale, dtype))
        scaled = self._observe("scaled", tf.cast(inputs, dtype) * scale)
        return self._observe("output", scaled + self._observe("offset",
                                                              tf.cast(self.offset, dtype)))


class Average(Observed, tf_keras.layers.Average):
    """tf_keras's Average with the sum and the factor observed (int8 ADD and MUL)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_observers()

    def points(self):
        return {"sum": "range", "factor": "constant", "output": "range"}

    def _merge_function(self, inputs):
        if not self.observed:
            return super()._merge_function(inputs)
        total = inputs[0]
        for x in inputs[1:]:
            total = self._observe("sum", total + x)
        factor = self._observe("factor", tf.constant(1.0 / len(inputs), total.dtype))
        return self._observe("output", total * factor)


class BatchNormalization(Observed, tf_keras.layers.BatchNormalization):
    """tf_keras's BatchNormalization; observed, it always runs in inference mode, as
    ``x * scale + shift`` with both constants and the product observed (int8 MUL and ADD). Only
    a BatchNorm that no convolution absorbs is observed (`converters.tfmot.quantize`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_observers()

    def points(self):
        return {"scale": "constant", "scaled": "range", "shift": "constant", "output": "range"}

    def call(self, inputs, training=None):
        if not self.observed:
            return super().call(inputs, training=training)
        scale = tf.math.rsqrt(self.moving_variance + self.epsilon)
        if self.scale:
            scale = scale * self.gamma
        shift = -self.moving_mean * scale
        if self.center:
            shift = shift + self.beta
        scaled = self._observe("scaled", inputs * self._observe("scale", scale))
        return self._observe("output", scaled + self._observe("shift", shift))


#: The twin classes that replace tf_keras's own, by Keras 3 class name (also the custom
#: objects that tf_keras needs to clone or deserialise a twin).
CUSTOM_LAYERS = {"LayerScale": LayerScale, "AdditiveTokenMixing": AdditiveTokenMixing,
                 "FoldedTokenMixing": FoldedTokenMixing,
                 "Rescaling": Rescaling, "Average": Average,
                 "BatchNormalization": BatchNormalization}


class TwinError(ValueError):
    """The Keras 3 model has something the twin cannot reproduce; the message says what."""


def _require_tensorflow_backend():
    if keras.backend.backend() != "tensorflow":
        raise TwinError(
            "The tf_keras twin runs the layers' keras.ops math on tf tensors, which needs the "
            f"TensorFlow backend; this process uses {keras.backend.backend()!r} "
            "(set KERAS_BACKEND=tensorflow before importing keras)")


def twin_layer(layer):
    """The tf_keras layer equivalent to Keras 3 `layer` (same class name, config and name),
    unbuilt. Initialisers are not carried over: the weights are copied afterwards."""
    class_name = type(layer).__name__
    config = dict(layer.get_config())
    config["dtype"] = layer.dtype_policy.name
    for key in [k for k in config if k.endswith("_initializer")]:
        del config[key]
    for key, harmless in KERAS3_ONLY_KEYS.items():
        if key in config:
            if config[key] != harmless:
                raise TwinError(f"Layer {layer.name}: {key}={config[key]!r} has no tf_keras "
                                "equivalent")
            del config[key]
    if class_name in CUSTOM_LAYERS:
        return CUSTOM_LAYERS[class_name].from_config(config)
    if class_name == "StochasticDepth":
        raise TwinError(f"Layer {layer.name}: stochastic depth has no tf_keras twin; build the "
                        "model with drop_path_rate=0 for compression")
    cls = getattr(tf_keras.layers, class_name, None)
    if cls is None or type(layer).__module__.split(".")[0] != "keras":
        raise TwinError(f"Layer {layer.name}: no tf_keras equivalent of {type(layer).__name__}")
    try:
        return cls.from_config(config)
    except (TypeError, ValueError) as err:
        raise TwinError(f"Layer {layer.name}: tf_keras {class_name} rejects its config: "
                        f"{err}") from err


def build_twin(model, batch_size=None, copy=True):
    """The tf_keras twin of Keras 3 functional `model`.

    Args:
        model: a functional Keras 3 model with one input, every layer called once (as
            `keras_swiftformer.SwiftFormer` builds).
        batch_size: fixed batch of the twin's input; None: dynamic.
        copy: copy the weights of `model` into the twin (`copy_weights`).

    Returns:
        A `tf_keras.Model` with the same name, layer names, topology and weight order; input
        (batch_size, H, W, C) like the model's.
    """
    _require_tensorflow_backend()
    if len(model.inputs) != 1:
        raise TwinError(f"{model.name} has {len(model.inputs)} inputs; the twin takes one")
    source = model.inputs[0]
    image = tf_keras.Input(shape=tuple(source.shape[1:]), batch_size=batch_size,
                           name=model.layers[0].name, dtype=source.dtype)
    tensors = {id(source): image}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:  # noqa: SLF001 -- public .input needs one node
            raise TwinError(f"Layer {layer.name} is called {len(layer._inbound_nodes)} times; "
                            "the twin needs every layer called once")
        try:
            inputs = keras.tree.map_structure(lambda t: tensors[id(t)], layer.input)
        except KeyError:
            raise TwinError(f"Layer {layer.name}: an input is not computed before it "
                            "(not a topologically ordered functional model)") from None
        outputs = twin_layer(layer)(inputs)
        for k3_tensor, tf_tensor in zip(keras.tree.flatten(layer.output),
                                        keras.tree.flatten(outputs)):
            tensors[id(k3_tensor)] = tf_tensor
    outputs = keras.tree.map_structure(lambda t: tensors[id(t)], model.outputs)
    twin = tf_keras.Model(image, outputs[0] if len(outputs) == 1 else outputs, name=model.name)
    if copy:
        copy_weights(model, twin)
    return twin


def freeze_batch_norm(model):
    """Puts the BatchNorm layers of tf_keras `model` (wrapped by TFMOT or not) in inference mode
    with frozen parameters: fine-tuning on a few small batches must not move their statistics.
    Returns `model`."""
    for layer in model.layers:
        if isinstance(getattr(layer, "layer", layer), tf_keras.layers.BatchNormalization):
            layer.trainable = False
    return model
