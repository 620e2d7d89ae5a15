"""Core ML compressions calibrated as the LiteRT int8 file is: one calibration, two targets.

The calibration photos drive two things, with the same code as `converters.tflite`'s int8:

- weight rounding (`converters.weight_rounding`, GPTQ): the pointwise convolutions and
  projections of the folded graph are rounded on the int8 grid (``w8a8``) or on each tensor's
  (or channel group's) k-means palette (``palettize6`` / ``palettize4``, `palette_rounder`),
  and the stem's and downsamples' 3x3 kernels too (`round_convolutions`), with their rounding
  errors spread over the inputs' second moments, before the program is written; coremltools'
  compression then finds the weights on its grid already and keeps them;
- activation ranges (``w8a8``, `calibrated_ranges`): per tensor, `converters.calibration`'s
  statistics and `choose_ranges` ("mse": the range minimising the int8 error, after the GELU
  that consumes it where one does) on the values the numpy evaluator computes, quantised on
  an asymmetric int8 grid (a zero point) as LiteRT's activations are, at the inputs and
  outputs of the convolutions only (`float16_ops`): as LiteRT int8, the residual adds, GELU,
  the attention's products and norms, the depthwise convolutions and the classifier head stay
  float (float16); the residual branches' last convolutions write float16 too
  (`float16_outputs`), as their folded layer scale would widen the grid of their output.
"""

import dataclasses

import numpy as np

from converters.coreml.formats import INPUT_NAME

#: Layers ``w8a8`` keeps in float (activations, and no rounding), as LiteRT's int8 keeps them
#: (`converters.tflite.FLOAT_HEAD_LAYERS`): the classifier head.
FLOAT_LAYERS = ("head",)


def column_palettes(kernel, importance, size, group):
    """(out, size) sorted palette of each column of an (in, out) kernel: the weighted k-means
    (`compression.kmeans_1d`, weights `importance`, same shape) of its group of `group`
    consecutive columns."""
    from converters.coreml.compression import kmeans_1d

    palettes = np.stack([kmeans_1d(kernel[:, g:g + group], importance[:, g:g + group], size)
                         for g in range(0, kernel.shape[1], group)])
    return palettes[np.arange(kernel.shape[1]) // group]


def palette_rounder(compression, weighted=True):
    """A `converters.weight_rounding.round_weights` rounder for a palettization: the (in, out)
    kernel's palettes of ``2**nbits`` values, one per tensor or per group of output channels
    (`compression.channel_group`, as the conversion groups them), rows rounded onto them by
    GPTQ (`weight_rounding.gptq_round`), the most active inputs first.

    `weighted`: each palette is the k-means of its values weighted by their input's second
    moment (the Hessian's diagonal, as SqueezeLLM's sensitivity-weighted k-means); False: by
    how often they occur (`compression.kmeans_palette`).
    """
    from converters.coreml.compression import channel_group
    from converters.weight_rounding import gptq_round

    size = 2**compression.nbits

    def rounder(kernel, hessian):
        kernel = np.asarray(kernel, np.float64)
        group = channel_group(kernel.shape[1], compression.group_size)
        importance = np.broadcast_to(np.maximum(np.diag(hessian), 0)[:, None] if weighted
                                     else 1.0, kernel.shape)
        palettes = column_palettes(kernel, importance, size, group)
        edges = (palettes[:, 1:] + palettes[:, :-1]) / 2
        columns = np.arange(kernel.shape[1])

        def nearest(row, i):
            return palettes[columns, np.sum(row[:, None] > edges, axis=1)]

        order = np.argsort(-np.diag(hessian), kind="stable")  # the most active inputs first
        rounded = gptq_round(kernel[order], np.asarray(hessian)[np.ix_(order, order)], nearest)
        return rounded[np.argsort(order)].astype(np.float32)

    return rounder


def rounder_of(compression):
    """The weight rounder of a `converters.formats.CoreMLCompression` rounded by GPTQ: the
    int8 grid for linear weights, its k-means palettes for a palettization."""
    from converters.weight_rounding import gptq_kernel

    return palette_rounder(compression) if compression.kind == "palettize" else gptq_kernel


def check_images(images, size):
    """(N, H, W, 3) float32 calibration images of the program's `size`; ValueError otherwise."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0 or images.shape[1:] != (*size, 3):
        raise ValueError(f"calibration images must be (N, {size[0]}, {size[1]}, 3) RGB in "
                         f"[0, 255], got {images.shape}: load them at the export size")
    return images


def patches(x, layer):
    """(N * OH * OW, KH * KW * C) float64 im2col rows of a Conv2D `layer`'s input `x`
    (N, H, W, C), in its (KH, KW, in) kernel order: the conv is ``patches @ kernel.reshape(-1,
    out)`` (plus bias)."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    x = np.asarray(x, np.float64)
    if layer.padding == "same":
        pads = []
        for n, k, s, d in zip(x.shape[1:3], (kh, kw), (sh, sw), (dh, dw)):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, ((0, 0), *pads, (0, 0)))
    oh = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    columns = [x[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
               for i in range(kh) for j in range(kw)]
    return np.concatenate(columns, axis=-1).reshape(-1, kh * kw * x.shape[-1])


def round_convolutions(model, images, rounder, max_rows=200_000):
    """`model` (changed in place) with its spatial Conv2D kernels (3x3, ungrouped, more than
    `compression.WEIGHT_THRESHOLD` weights: the stem and the downsamples) rounded by
    `rounder(kernel, hessian)` as (KH * KW * in, out) kernels on their im2col inputs
    (`patches`) from `images` (N, H, W, C), as `weight_rounding.round_weights` rounds the
    pointwise ones."""
    import keras

    from converters.coreml.compression import WEIGHT_THRESHOLD

    layers = [layer for layer in model.layers if type(layer) is keras.layers.Conv2D
              and tuple(layer.kernel_size) != (1, 1) and layer.groups == 1
              and int(np.prod(layer.kernel.shape)) > WEIGHT_THRESHOLD]
    if not layers:
        return model
    inputs = keras.Model(model.inputs, [layer.input for layer in layers]).predict(images,
                                                                                 verbose=0)
    for layer, x in zip(layers, inputs if len(layers) > 1 else [inputs]):
        rows = patches(x, layer)
        rows = rows[:: len(rows) // max_rows + 1]
        kernel, *rest = layer.get_weights()
        rounded = rounder(kernel.reshape(-1, kernel.shape[-1]), rows.T @ rows / len(rows))
        layer.set_weights([rounded.reshape(kernel.shape), *rest])
    return model


def rounded_graph(model, images, compression, image_size=None):
    """The `converters.coreml.graph.coreml_graph` of `model` with its pointwise kernels rounded
    for `compression` (`rounder_of`) on the layers' inputs from `images` (N, H, W, 3) RGB in
    [0, 255] (the first `converters.weight_rounding.ROUNDING_IMAGES` of them), and its
    spatial convolutions (`round_convolutions`)."""
    from converters.coreml.graph import coreml_graph
    from converters.weight_rounding import ROUNDING_IMAGES, round_weights

    graph = coreml_graph(model, image_size)
    images = check_images(images, graph.image_size)[:ROUNDING_IMAGES]
    centred = images - graph.mean_pixel.astype(np.float32)  # the folded graph's input
    skip = FLOAT_LAYERS if compression.calibrated else ()
    rounder = rounder_of(compression)
    folded = round_weights(graph.folded, centred, skip, rounder=rounder)
    if folded is not graph.folded:
        folded = round_convolutions(folded, centred, rounder)
    return dataclasses.replace(graph, folded=folded, logits=folded.output)


def readers(program):
    """{tensor name: the types of the ops of `program` (an `MLProgram`) that read it}."""
    found = {}
    for op in program.operations:
        for bindings in op.inputs.values():
            for kind, name in bindings:
                if kind == "name":
                    found.setdefault(name, set()).add(op.type)
    return found


def float16_ops(program):
    """Names of the ops of the float16 `program` (an `MLProgram`) that ``w8a8`` keeps float
    although their type is in `compression.INT8_OPS`, as LiteRT int8 keeps them float
    (`converters.inference_graph.FOLDED_FLOAT_OPS`): the `FLOAT_LAYERS` and the grouped
    (depthwise) convolutions."""
    def kept(op):
        if op.type == "conv" and int(program.constant(op, "groups")) > 1:
            return True
        # a layer's op is named after it, with the suffix of coremltools' float16 cast pass
        return op.name.removesuffix("_cast_fp16") in FLOAT_LAYERS

    return tuple(op.name for op in program.operations if kept(op))


def float16_outputs(program):
    """Names of the convolutions of `program` (an `MLProgram`) whose output only adds read:
    the residual branches' ends, whose per-channel layer scale the Core ML graph folds into
    the kernel. ``w8a8`` gives them int8 inputs and float16 outputs: one per-tensor grid
    after the layer scale spends its levels on the channels it scales most (LiteRT int8
    quantises before it, then multiplies in float)."""
    read_by = readers(program)
    return tuple(op.name for op in program.operations
                 if op.type == "conv" and read_by.get(op.outputs[0][0]) == {"add"})


def calibrated_ranges(program, images, method="mse", seed=0):
    """{tensor name: {"rmin", "rmax"}} of every float tensor of `program` (the float16
    program's `compression.evaluated_program`) on `images` (N, H, W, 3) RGB in [0, 255], the input
    included: `converters.calibration`'s per-tensor statistics (`new_summary`, `record`) and
    ranges (`choose_ranges` with `method`, each tensor's consumers named by their op types in
    capitals, as ``GELU``)."""
    from converters.calibration import choose_ranges, new_summary, record
    from converters.coreml.verification import run_coreml

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"calibration images must be (N, H, W, 3) RGB, got {images.shape}")
    rng = np.random.default_rng(seed)
    summaries = {}

    def keep(name, value):
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
            record(summaries.setdefault(name, new_summary()), value.astype(np.float32), rng)

    run_coreml(program, images, record=keep)
    read_by = readers(program)
    stats = {name: {"min": s["min"], "max": s["max"], "size": s["size"],
                    "sample": np.concatenate(s["samples"]),
                    "consumers": sorted(kind.upper() for kind in read_by.get(name, ()))}
             for name, s in summaries.items()}
    ranges = {name: {"rmin": float(low), "rmax": float(high)}
              for name, (low, high) in choose_ranges(stats, method).items()}
    ranges[INPUT_NAME] = {"rmin": float(images.min()), "rmax": float(images.max())}
    return ranges


def calibrated_program(model, compression, images, convert, image_size=None):
    """The uncompressed in-memory ``MLModel`` that `compression.compress_coreml` turns into a
    calibrated `compression` (a `converters.formats.CoreMLCompression` rounded by GPTQ)
    package: written from `rounded_graph`, and for ``w8a8`` converted again with quantize /
    dequantize pairs at `calibrated_ranges` around the convolutions and the linear layer
    (`compression.INT8_OPS`) but `float16_ops`, none after `float16_outputs`.

    Args:
        images: (N, H, W, 3) RGB calibration photos in [0, 255] at the export size.
        convert: ``convert(graph, pass_pipeline)`` -> ``MLModel``: the export's
            `converters.coreml.export.convert_to_coreml` of a graph with its options, float16
            at the compression's deployment target.
        image_size: (H, W) of the export, default the model's.
    """
    from converters.coreml.compression import activation_pipeline, evaluated_program

    if compression is None or compression.rounding != "gptq":
        raise ValueError(f"{compression} is not a compression rounded on calibration photos")
    graph = rounded_graph(model, images, compression, image_size)
    mlmodel = convert(graph=graph, pass_pipeline=None)
    if not compression.calibrated:
        return mlmodel
    program = evaluated_program(mlmodel)
    pipeline = activation_pipeline(calibrated_ranges(program, images), "linear",
                                   float16_ops(program), float16_outputs(program))
    return convert(graph=graph, pass_pipeline=pipeline)
