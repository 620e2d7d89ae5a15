"""Compression of Core ML programs through coremltools' public ``coremltools.optimize.coreml``
API: int8 weights, k-means palettes, and W8A8 (int8 activations and weights, the Neural
Engine's int8 compute path on A17 Pro / M4 and later).

W8A8 follows ``coremltools.optimize.coreml.linear_quantize_activations``, whose calibration
runs the model with Core ML (macOS only): here the activation ranges come from the numpy
evaluator (`converters.coreml.mil_eval`) on the calibration images, and the quantize /
dequantize pairs are inserted by the same coremltools passes, run in the conversion's public
``coremltools.PassPipeline``. With calibration photos, the weights are rounded by GPTQ and the
ranges chosen as LiteRT int8's before this module compresses them
(`converters.coreml.calibrated`).
"""

import os
import tempfile

import numpy as np

from converters.coreml.formats import INPUT_NAME, METADATA_PREFIX, compression_of, coremltools

#: Weights with at most this many elements stay uncompressed (coremltools' default threshold).
WEIGHT_THRESHOLD = 2048
#: Passes of ``linear_quantize_activations``: quantize/dequantize pairs before and after the
#: ops with int8 inputs (`INT8_OPS`), then redundant pairs removed.
ACTIVATION_PASSES = ("compression::insert_prefix_quantize_dequantize_pair",
                     "compression::insert_suffix_quantize_dequantize_pair",
                     "common::dequantize_quantize_pair_elimination")
#: Op types W8A8 gives int8 inputs and outputs: the multiply-accumulates, which the Neural
#: Engine runs in int8, as LiteRT int8 runs only CONV_2D and FULLY_CONNECTED in int8
#: (`converters.inference_graph.FOLDED_FLOAT_OPS`). The passes' other types (add, the pools)
#: stay float16: a quantised residual add requantises the residual stream at every block (and
#: coremltools' ``distributive_quantized_binary_op_scale_normalization`` rescales its grids).
INT8_OPS = ("conv", "linear")


def kmeans_1d(values, weights, size, iterations=100, bins=128):
    """(size,) sorted centres of 1-D k-means of `values` (any shape), each weighted by `weights`
    (same shape: how often it occurs, or how much its error costs).

    Lloyd's iterations over the distinct values, from the palette that is optimal at high
    resolution: centres spaced by the cube root of the weighted value density (a `bins`-bin
    histogram). Fewer distinct values than `size`: those values, the last repeated.
    """
    values, inverse = np.unique(np.asarray(values, np.float64).reshape(-1), return_inverse=True)
    weights = np.bincount(inverse.reshape(-1), np.asarray(weights, np.float64).reshape(-1))
    if values.size <= size:
        return np.concatenate([values, np.full(size - values.size, values[-1])])
    histogram, edges = np.histogram(values, bins, weights=weights)
    density = np.concatenate([[0.0], np.cumsum(np.cbrt(histogram))])
    centres = np.interp((np.arange(size) + 0.5) / size, density / density[-1], edges)
    for _ in range(iterations):
        assign = np.searchsorted((centres[1:] + centres[:-1]) / 2, values)
        total = np.bincount(assign, weights, size)
        means = np.bincount(assign, values * weights, size) / np.maximum(total, 1e-300)
        updated = np.sort(np.where(total > 0, means, centres))
        if np.array_equal(updated, centres):
            break
        centres = updated
    return centres


def kmeans_palette(nbits, iterations=100, bins=128):
    """A coremltools ``lut_function`` (``OpPalettizerConfig(mode="custom")``): weight ->
    (palette of ``2**nbits`` values, uint8 indices) by 1-D k-means (`kmeans_1d`, each value
    weighted by how often it occurs).

    Close to optimal 1-D k-means (coremltools' bundled kmeans1d, a private API) in weight
    SQNR. coremltools' public "kmeans" mode needs scikit-learn, which it does not install,
    for tensors under 10,000 elements. A tensor of at most ``2**nbits`` distinct values (a
    GPTQ-rounded one) gets exactly those values.
    """
    size = 2**nbits

    def lut_function(weight):
        flat = np.asarray(weight, np.float64).reshape(-1)
        centres = kmeans_1d(flat, np.ones_like(flat), size, iterations, bins)
        assign = np.searchsorted((centres[1:] + centres[:-1]) / 2, flat)
        return centres.astype(weight.dtype), assign.astype(np.uint8)

    return lut_function


def channel_group(channels, group_size):
    """The divisor of `channels` nearest `group_size` (the smaller on a tie): the channels per
    palette of a grouped palettization, whose groups must divide the channels (SwiftFormer's
    220 or 56 are no multiples of 16). None: one group of all channels."""
    if group_size is None:
        return channels
    divisors = [d for d in range(1, channels + 1) if channels % d == 0]
    return min(divisors, key=lambda d: (abs(d - group_size), d))


def weight_shapes(mlmodel):
    """{const op name: shape} of the float weights of an ML program with more than
    `WEIGHT_THRESHOLD` elements and at least two dimensions (what compression may touch)."""
    spec = mlmodel.get_spec()
    function = spec.mlProgram.functions["main"]
    shapes = {}
    for op in function.block_specializations[function.opset].operations:
        tensor = op.outputs[0].type.tensorType
        shape = tuple(d.constant.size for d in tensor.dimensions)
        if (op.type == "const" and tensor.dataType in (10, 11) and len(shape) >= 2
                and np.prod(shape) > WEIGHT_THRESHOLD):
            shapes[op.attributes["name"].immediateValue.tensor.strings.values[0]] = shape
    return shapes


def grouped_configs(mlmodel, group_size, make_config, axis=0):
    """``OptimizationConfig(op_name_configs=...)`` input: {const op name: make_config(group)},
    group the `channel_group` for `group_size` of each weight's dimension `axis` (0: output
    channels, palettes; 1: input channels, the blocks of a per-block linear quantisation)."""
    return {name: make_config(channel_group(shape[axis], group_size))
            for name, shape in weight_shapes(mlmodel).items()}


def _weight_config(compression, group=None):
    """The coremltools op config of `compression`; `group`: channels per palette of a
    ``per_grouped_channel`` palettization (`channel_group`)."""
    import coremltools.optimize.coreml as cto

    if compression.kind in ("linear", "w8a8"):
        return cto.OpLinearQuantizerConfig(mode="linear_symmetric",
                                           dtype=f"int{compression.nbits}",
                                           granularity=compression.granularity,
                                           weight_threshold=WEIGHT_THRESHOLD)
    return cto.OpPalettizerConfig(mode="custom", lut_function=kmeans_palette(compression.nbits),
                                  granularity=compression.granularity, group_size=group,
                                  weight_threshold=WEIGHT_THRESHOLD)


def compress_coreml(mlmodel, compression):
    """Compresses the weights of an ML program by a `converters.formats.CoreMLCompression` (or
    its name): ``"int8"`` and ``"w8a8"`` (linear symmetric,
    per output channel; w8a8's activations are quantised by `activation_pipeline` first),
    ``"palettize6"`` / ``"palettize4"`` (a k-means palette of 64 / 16 values per tensor,
    `kmeans_palette`); a palettization ``per_grouped_channel`` (iOS 18) has one per group of
    about its `group_size` output channels (`channel_group`). Tensors of at most
    `WEIGHT_THRESHOLD` elements stay as they are."""
    compression = compression_of(compression)
    if compression is None:
        return mlmodel
    ct = coremltools()
    import coremltools.optimize.coreml as cto

    if compression.granularity == "per_grouped_channel":
        config = cto.OptimizationConfig(op_name_configs=grouped_configs(
            mlmodel, compression.group_size, lambda group: _weight_config(compression, group)))
    else:
        config = cto.OptimizationConfig(_weight_config(compression))
    if compression.kind in ("linear", "w8a8"):
        compressed = cto.linear_quantize_weights(mlmodel, config)
    else:
        compressed = cto.palettize_weights(mlmodel, config)
    spec = compressed.get_spec()
    spec.description.metadata.userDefined[METADATA_PREFIX + "compression"] = compression.name
    return ct.models.MLModel(spec, weights_dir=compressed.weights_dir, skip_model_load=True)


def evaluated_program(mlmodel):
    """The numpy evaluator's `converters.coreml.mil_eval.MLProgram` of an in-memory
    ``MLModel`` (saved to a temporary folder and read whole)."""
    from converters.coreml.mil_eval import MLProgram

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "float.mlpackage")
        mlmodel.save(path)
        return MLProgram(path)


def activation_ranges(mlmodel, images):
    """{tensor name: {"rmin", "rmax"}} over `images` (N, H, W, 3) RGB in [0, 255] for every
    tensor of `mlmodel`'s program, the input included (what ``linear_quantize_activations``
    gathers by running Core ML), computed by the numpy evaluator (`evaluated_program`)."""
    from converters.coreml.verification import run_coreml

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration images must be (N, H, W, 3) RGB, got {images.shape}")
    ranges = {INPUT_NAME: {"rmin": float(images.min()), "rmax": float(images.max())}}

    def record(name, value):
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.size == 0:
            return
        low, high = float(np.min(value)), float(np.max(value))
        entry = ranges.setdefault(name, {"rmin": low, "rmax": high})
        entry["rmin"], entry["rmax"] = min(entry["rmin"], low), max(entry["rmax"], high)

    run_coreml(evaluated_program(mlmodel), images, record=record)
    return ranges


def activation_pipeline(ranges, mode="linear_symmetric", float_ops=(), float_outputs=()):
    """The conversion pass pipeline that gives a float16 iOS 17 program int8 activations:
    quantize / dequantize pairs around the ops of `INT8_OPS`, at `ranges` ({tensor name:
    {"rmin", "rmax"}}, from `activation_ranges` or
    `converters.coreml.calibrated.calibrated_ranges`), on a grid that is
    ``"linear_symmetric"`` (no zero point) or ``"linear"`` (asymmetric, as LiteRT's int8
    activations); the ops named in `float_ops` keep float inputs and outputs, those in
    `float_outputs` read int8 but write float. Convert again with it:
    `converters.coreml.calibrated.calibrated_program`."""
    ct = coremltools()
    import coremltools.optimize.coreml as cto

    quantizer = cto.OpLinearQuantizerConfig(mode=mode, dtype="int8")

    def config(floats):
        return cto.OptimizationConfig(op_type_configs={kind: quantizer for kind in INT8_OPS},
                                      op_name_configs={name: None for name in floats})

    pipeline = ct.PassPipeline.DEFAULT
    for name in ACTIVATION_PASSES:
        pipeline.append_pass(name)
    prefix, suffix = ACTIVATION_PASSES[:2]
    pipeline.set_options(prefix, {"config": config(float_ops), "activation_stats": ranges})
    pipeline.set_options(suffix, {"config": config((*float_ops, *float_outputs)),
                                  "activation_stats": ranges})
    return pipeline
