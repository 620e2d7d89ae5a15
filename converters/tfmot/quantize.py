"""Quantisation-aware training models of the tf_keras twin, through TFMOT.

`quantize_twin(twin)` annotates every layer and applies TFMOT's default 8-bit scheme (or a
collaborative one that preserves pruning or clustering). Stock layers TFMOT knows keep its
configs (Conv2D/DepthwiseConv2D + BatchNorm are fused as the converter fuses them); the others get
the `QuantizeConfig`s here:

==========================  ===============================================================
FoldedTokenMixing           (the folded graph's attention, what the pipeline quantises) every
                            internal tensor observed (`twin.Observed`) with a moving-average
                            range, ``w_g`` and the epsilon constants with their own, except the
                            query's and key's RMS statistics, left float (`FLOAT_POINT_KINDS`)
AdditiveTokenMixing,        every internal tensor observed (`twin.Observed`): the
Rescaling, Average          L2-normalised query, key and token weights with the fixed range of
                            TFLite's int8 L2_NORMALIZATION output (scale 1/128, zero point 0),
                            constants (``w_g``, the preprocessing's scale and offset, the
                            average's 1/2) with their own range, the others with moving-average
                            ranges
BatchNormalization          after a convolution: folded into it (TFMOT's transform); alone:
                            observed as ``x * scale + shift`` (inference mode, frozen)
LayerScale                  ``gamma`` fake-quantised (per tensor), output range
==========================  ===============================================================

so that every tensor of the converted graph has a range learnt in training (the float ones
excepted) and the converter needs no representative dataset. TFMOT starts every moving-average range at [-6, 6] and moves it
with an EMA of decay 0.999, too slowly for a short fine-tuning: `calibrate_ranges` sets them
from calibration images first.
"""

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

from converters.tfmot.twin import (
    CUSTOM_LAYERS,
    LayerScale,
    Observed,
    TwinError,
    freeze_batch_norm,
)

qkeras = tfmot.quantization.keras
quantizers = qkeras.quantizers

#: TFLite's int8 L2_NORMALIZATION output: scale 1/128, zero point 0, i.e. [-1, 127/128].
L2_NORMALIZED_RANGE = (-1.0, 127.0 / 128.0)
#: The EMA decay of TFMOT's MovingAverageQuantizer (`quant_ops.MovingAvgQuantize`).
RANGE_EMA_DECAY = np.float32(0.999)

SCHEMES = ("default", "prune_preserve", "cluster_preserve")

#: Observation points left in float: the RMS normalisations' statistics (``x * x``, MEAN,
#: MAXIMUM, RSQRT). Token norms span more than int8's 255 steps, so an int8 mean square rounds
#: the small ones to zero and their RSQRT saturates; fine-tuning through that diverged, and is
#: stable with these in float.
FLOAT_POINT_KINDS = ("statistic",)


def _weight_quantizer():
    """8-bit symmetric narrow-range per-tensor, as TFMOT quantises Dense kernels.

    (Per output channel, as post-training int8 quantises FULLY_CONNECTED weights, does not
    convert: TF's per-channel FakeQuant works on the last axis of the (in, out) kernel, and the
    converter fails with "'tfl.transpose' op has mismatched quantized axes" when it lays the
    kernel out as (out, in).)"""
    return quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True,
                                         narrow_range=True)


def _range_quantizer():
    """8-bit asymmetric moving-average range, as TFMOT quantises activations."""
    return quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                             narrow_range=False)


class OutputQuantizeConfig(qkeras.QuantizeConfig):
    """Fake-quantises the named weight attributes (per tensor, symmetric) and the output."""

    def __init__(self, weight_attrs=()):
        self.weight_attrs = tuple(weight_attrs)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, attr), _weight_quantizer()) for attr in self.weight_attrs]

    def set_quantize_weights(self, layer, quantize_weights):
        for attr, weight in zip(self.weight_attrs, quantize_weights):
            setattr(layer, attr, weight)

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_range_quantizer()]

    def get_config(self):
        return {"weight_attrs": list(self.weight_attrs)}


class ObservedQuantizeConfig(qkeras.QuantizeConfig):
    """Layers with observation points (`converters.tfmot.twin.Observed`): a fake-quantiser at
    each point, by kind: "range" a moving-average range, "unit" TFLite's fixed int8
    L2_NORMALIZATION output range, "constant" the tensor's own symmetric range.

    Outputs are observation points too (TFMOT's wrapper cannot quantise a layer with several
    outputs itself).
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    @staticmethod
    def _quantized_points(layer):
        return [name for name, kind in layer.points().items() if kind not in FLOAT_POINT_KINDS]

    def get_activations_and_quantizers(self, layer):
        kinds = layer.points()
        return [(layer.observers[name], _point_quantizer(kinds[name]))
                for name in self._quantized_points(layer)]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.observers.update(zip(self._quantized_points(layer), quantize_activations))
        layer.observed = True

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


def _point_quantizer(kind):
    if kind == "range":
        return _range_quantizer()
    if kind == "unit":
        return quantizers.FixedQuantizer(8, *L2_NORMALIZED_RANGE, narrow_range=False)
    if kind == "constant":
        return _weight_quantizer()
    raise ValueError(f"Unknown observation point kind {kind!r}")


def custom_objects():
    """What tf_keras needs to clone or load a quantised twin."""
    return {**CUSTOM_LAYERS, "OutputQuantizeConfig": OutputQuantizeConfig,
            "ObservedQuantizeConfig": ObservedQuantizeConfig}


def _quantize_config(layer, producer):
    """The QuantizeConfig of a twin layer, or None for TFMOT's own; `producer`: the layer whose
    output it takes."""
    if isinstance(layer, tf_keras.layers.BatchNormalization) and isinstance(
            producer, (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)):
        return None  # TFMOT folds it into the convolution, as the converter does
    if isinstance(layer, Observed):
        return ObservedQuantizeConfig()
    if isinstance(layer, LayerScale):
        return OutputQuantizeConfig(["gamma"])
    return None


def _scheme(name):
    if name == "default":
        return qkeras.default_8bit.Default8BitQuantizeScheme()
    if name == "prune_preserve":
        return qkeras.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    if name == "cluster_preserve":
        # Not exported by TFMOT 0.8's public API; its CQAT guide imports it from here.
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.\
            cluster_preserve.default_8bit_cluster_preserve_quantize_scheme import \
            Default8BitClusterPreserveQuantizeScheme

        return Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {name!r}")


def quantize_twin(twin, scheme="default"):
    """QAT model of a (float, pruned-and-stripped or clustered-and-stripped) twin.

    Args:
        twin: a `converters.tfmot.twin.build_twin` model (tf_keras), weights as they are.
        scheme: "default" (TFMOT's 8-bit), "prune_preserve" (PQAT: keeps the zeros of a
            pruned model) or "cluster_preserve" (CQAT: keeps the clusters, and the zeros).

    Returns:
        The QAT tf_keras model (layers wrapped by `QuantizeWrapperV2`, names ``quant_<name>``),
        with the twin's weights and BatchNorm frozen (inference statistics); run
        `calibrate_ranges` before fine-tuning it.
    """
    producers = {}
    for layer in twin.layers:
        for node in layer._outbound_nodes:  # noqa: SLF001 -- tf_keras has no public graph API
            producers[node.outbound_layer.name] = layer

    def annotate(layer):
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer
        config = _quantize_config(layer, producers.get(layer.name))
        return qkeras.quantize_annotate_layer(layer, config)

    annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
    with qkeras.quantize_scope(custom_objects()):
        try:
            model = qkeras.quantize_apply(annotated, _scheme(scheme))
        except RuntimeError as err:
            raise TwinError(f"TFMOT could not quantise {twin.name}: {err}") from err
    freeze_batch_norm(model)
    return model


def moving_average_ranges(model):
    """[(min variable, max variable)] of every moving-average range of a QAT model.

    Reads TFMOT's wrappers (0.8): activation quantisers, output quantisers, QuantizeLayers.
    """
    found = []

    def add(quantizer, variables):
        if isinstance(quantizer, quantizers.MovingAverageQuantizer):
            found.append((variables["min_var"], variables["max_var"]))

    for layer in model.layers:
        if isinstance(layer, qkeras.QuantizeWrapper):
            for activation in layer._quantize_activations:  # noqa: SLF001
                for when in ("pre", "post"):
                    if getattr(activation, f"_should_{when}_quantize")():
                        add(activation.quantizer,
                            getattr(activation, f"_{when}_activation_vars"))
            for quantizer in layer._output_quantizers:  # noqa: SLF001
                add(quantizer, layer._output_quantizer_vars)  # noqa: SLF001
        elif hasattr(layer, "quantizer") and hasattr(layer, "quantizer_vars"):
            add(layer.quantizer, layer.quantizer_vars)
    return found


def calibrate_ranges(model, images, batch_size=16, max_passes=8, tolerance=0.1,
                     statistic="extreme"):
    """Sets every moving-average range of QAT `model` from `images`' batch minima and maxima,
    as a post-training calibration would.

    One training-mode pass moves each range by ``(1 - decay) * (batch range - range)``; that
    update is inverted exactly to read the batch range. A pass sees the ranges upstream as they
    were before it, and TFMOT's initial [-6, 6] crushes small tensors (the attention's token
    weights) to zero, so passes repeat until no range moves by more than `tolerance` of its
    width (each pass settles at least one more level of the graph).

    Args:
        model: from `quantize_twin` (BatchNorm frozen, so that training mode only updates
            ranges).
        images: (N, H, W, C) float32 in the model's input domain.
        batch_size: calibration batch.
        max_passes: at most this many passes.
        tolerance: relative change below which the ranges count as settled.
        statistic: "extreme" (the lowest min and highest max over the batches, as
            post-training calibration) or "mean" (the mean of the batches' ranges).

    Returns:
        The number of passes run.
    """
    if statistic not in ("extreme", "mean"):
        raise ValueError(f"statistic must be 'extreme' or 'mean', got {statistic!r}")
    variables = [v for pair in moving_average_ranges(model) for v in pair]
    complement = np.float32(1.0) - RANGE_EMA_DECAY
    batches = [tf.constant(images[i:i + batch_size], tf.float32)
               for i in range(0, len(images), batch_size)]
    step = tf.function(lambda x: model(x, training=True))
    for passes in range(1, max_passes + 1):
        before = np.array([v.numpy() for v in variables], np.float64)
        seen = []
        for batch in batches:
            step(batch)
            after = np.array([v.numpy() for v in variables], np.float64)
            seen.append(before + (after - before) / complement)
            for variable, old in zip(variables, before):
                variable.assign(np.float32(old))
        seen = np.array(seen)
        if statistic == "mean":
            calibrated = seen.mean(axis=0)
        else:
            calibrated = np.where(np.arange(len(before)) % 2 == 0, seen.min(axis=0),
                                  seen.max(axis=0))
        for variable, value in zip(variables, calibrated):
            variable.assign(np.float32(value))
        width = np.repeat(np.maximum(calibrated[1::2] - calibrated[0::2], 1e-12), 2)
        if np.max(np.abs(calibrated - before) / width) < tolerance:
            break
    return passes
