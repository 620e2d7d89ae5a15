"""Post-training int8 calibration with chosen activation ranges.

The TFLite converter calibrates by running the float model on the calibration images and
recording each activation tensor's min and max; its quantiser then gives every tensor the
int8 grid spanning that range. Long-tailed tensors (GELU outputs, the residual stream, the
attention's products) waste most of their 256 levels on a few extreme values that way.

This module splits the converter's path in its two documented halves and chooses the ranges in
between:

1. `calibrate`: the float model with min/max statistics recorded in its tensors
   (``_experimental_calibrate_only``, what `tf.lite.experimental.QuantizationDebugger` uses);
2. `activation_statistics`: runs that float model on the calibration images with every
   intermediate tensor kept and gathers, per recorded tensor, its min, max and a sample;
3. `choose_ranges`: per tensor, the range minimising the mean squared quantisation error
   (clipping plus rounding) on its sample (`mse_range`), instead of min/max; for a tensor that
   only a GELU consumes, the error after the GELU (`CONSUMER_FUNCTIONS`): GELU flattens the
   negative side to zero, so the range spends its levels where GELU keeps the differences;
4. `with_ranges`: writes the ranges into the calibrated model's flatbuffer;
5. `quantize`: the converter's MLIR quantiser on it (``mlir_quantize``), with chosen ops kept
   in float and int8 or float input and output.
"""

import numpy as np

#: How activation ranges are chosen (`choose_ranges`): "minmax" keeps the converter's,
#: "mse" minimises the int8 quantisation error per tensor.
RANGE_METHODS = ("minmax", "mse")
#: Tensors with fewer values per image than this keep their min/max range (`choose_ranges`).
SUMMARY_SIZE = 4096


def gelu(x):
    """GELU in its tanh form (within 1e-3 of the exact erf form; for range search only)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


#: Elementwise function of each op type whose input range is chosen for the error after it
#: (`choose_ranges`; its gain is a row of `benchmarks/int8_report.py`).
CONSUMER_FUNCTIONS = {"GELU": gelu}


def calibrate(converter):
    """Runs the converter's calibration only: returns the float `.tflite` bytes whose activation
    tensors carry the observed min/max. `converter` must be configured for an integer format
    (`converters.litert.tflite.configure`)."""
    converter.experimental_new_quantizer = True
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    return converter.convert()


def _model_object(content):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(content))


def recorded_tensors(content):
    """{tensor index: (name, min, max)} of the calibrated model's tensors with a range."""
    model = _model_object(content)
    found = {}
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        quantization = tensor.quantization
        if quantization is not None and quantization.min is not None and len(quantization.min):
            found[index] = (tensor.name.decode(), float(quantization.min[0]),
                            float(quantization.max[0]))
    return found


def consumers(content):
    """{tensor index: sorted op type names of the ops that take it as an input}."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(content)
    found = {}
    for op in model.subgraphs[0].operators:
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        for index in op.inputs:
            if index >= 0:
                found.setdefault(int(index), set()).add(name)
    return {index: sorted(names) for index, names in found.items()}


#: Values per image `record` keeps for the range search.
SAMPLE_SIZE = 2048


def new_summary(**fields):
    """An empty per-tensor summary for `record` (extra `fields` kept as they are)."""
    return {"min": np.inf, "max": -np.inf, "samples": [], "size": 0, **fields}


def record(summary, values, rng, sample_size=SAMPLE_SIZE):
    """Adds one image's values of a tensor to its `new_summary`: extremes, per-image size and a
    random sample of `sample_size` values (all of them if fewer)."""
    values = np.asarray(values).ravel()
    summary["size"] = values.size
    summary["min"] = min(summary["min"], float(values.min()))
    summary["max"] = max(summary["max"], float(values.max()))
    if values.size > sample_size:
        values = rng.choice(values, sample_size, replace=False)
    summary["samples"].append(np.asarray(values, np.float32))


def activation_statistics(content, images, sample_size=SAMPLE_SIZE, seed=0):
    """Runs the calibrated float model on `images` (N, H, W, C) and gathers, per recorded
    tensor, {"name", "min", "max", "size", "sample", "consumers"}: the extremes over all
    images, the values per image, a random sample of ``sample_size`` values per image (for
    `mse_range`) and the op types that consume the tensor (`consumers`)."""
    from converters.litert.runtime import make_interpreter

    interpreter = make_interpreter(content, use_xnnpack=False, preserve_all_tensors=True)
    tensors = recorded_tensors(content)
    rng = np.random.default_rng(seed)
    stats = {i: new_summary() for i in tensors}
    source = interpreter.get_input_details()[0]["index"]
    for image in np.asarray(images, np.float32):
        interpreter.set_tensor(source, image[None])
        interpreter.invoke()
        for index, entry in stats.items():
            record(entry, interpreter.get_tensor(index), rng, sample_size)
    used_by = consumers(content)
    return {i: {"name": tensors[i][0], "min": e["min"], "max": e["max"], "size": e["size"],
                "sample": np.concatenate(e["samples"]), "consumers": used_by.get(i, [])}
            for i, e in stats.items()}


def quantization_mse(values, low, high, levels=256, after=None, target=None):
    """Mean squared error of `values` on the affine grid of `levels` steps spanning
    [low, high] (zero exactly representable, as TFLite nudges it), clipping included.

    With ``after`` (an elementwise function, e.g. the consuming op's), the error of
    ``after(quantised)`` against ``target`` (``after(values)``; pass it when calling often).
    """
    low, high = min(low, 0.0), max(high, 0.0)
    if after is None:
        after, target = (lambda x: x), values
    elif target is None:
        target = after(values)
    if high - low <= 0:
        return float(np.mean(np.square(after(np.zeros_like(values)) - target)))
    scale = (high - low) / (levels - 1)
    zero = np.round(-low / scale)
    codes = np.clip(np.round(values / scale) + zero, 0, levels - 1).astype(np.intp)
    grid = after((np.arange(levels) - zero) * scale)  # the `levels` values, then `after`
    return float(np.mean(np.square(grid[codes] - target)))


def mse_range(values, low, high, levels=256, steps=40, after=None):
    """(low, high) within the observed [low, high] minimising `quantization_mse` of `values`
    (after the elementwise function ``after``, when given): a search over a common shrink
    factor, then over each side alone (the low side twice: ``after`` may flatten it)."""
    values = np.asarray(values, np.float64)
    target = None if after is None else after(values)

    def error(a, b):
        return quantization_mse(values, a, b, levels, after, target)

    shrink = np.geomspace(1.0, 0.05, steps)
    errors = [error(low * s, high * s) for s in shrink]
    best = shrink[int(np.argmin(errors))]
    lo, hi = low * best, high * best
    for side in (0, 1) if after is None else (0, 1, 0):
        if side == 0:
            deepest = 0.4 if after is None else 0.05
            options = [(max(low, lo * c), hi) for c in np.geomspace(1.6, deepest, steps)]
        else:
            options = [(lo, min(high, hi * c)) for c in np.geomspace(1.6, 0.4, steps)]
        errors = [error(a, b) for a, b in options]
        lo, hi = options[int(np.argmin(errors))]
    return float(lo), float(hi)


def choose_ranges(stats, method="mse", min_size=SUMMARY_SIZE, margin=1.0):
    """{tensor index: (low, high)} from `activation_statistics`.

    Args:
        method: one of `RANGE_METHODS`.
        min_size: tensors with fewer values per image keep min/max, widened by `margin`:
            per-image summaries (the attention's token sums and norms, the pooled features,
            the logits) vary from photo to photo as a whole, so clipping them to the
            calibration photos' bulk clips all of an unusual photo.
        margin: factor on the min/max range of those small tensors.

    With "mse", a tensor whose only consumers are of one op type in `CONSUMER_FUNCTIONS` (the
    ``"consumers"`` of its statistics) gets the range minimising the error after that op.
    """
    if method not in RANGE_METHODS:
        raise ValueError(f"Range method must be one of {RANGE_METHODS}, got {method!r}")
    ranges = {}
    for index, entry in stats.items():
        low, high = entry["min"], entry["max"]
        if entry.get("size", min_size) < min_size:
            low, high = low * (margin if low < 0 else 1), high * (margin if high > 0 else 1)
        elif method == "mse":
            used_by = set(entry.get("consumers", ()))
            after = (CONSUMER_FUNCTIONS[next(iter(used_by))]
                     if len(used_by) == 1 and used_by <= set(CONSUMER_FUNCTIONS) else None)
            low, high = mse_range(entry["sample"], low, high, after=after)
        ranges[index] = (low, high)
    return ranges


def with_ranges(content, ranges):
    """The calibrated model `content` with the recorded range of each tensor index in `ranges`
    replaced by (low, high); returns new bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(content)
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        if not 0 <= index < len(tensors):
            raise ValueError(f"Tensor {index} has no recorded range: the model has "
                             f"{len(tensors)} tensors")
        quantization = tensors[index].quantization
        if quantization is None or quantization.min is None:
            raise ValueError(f"Tensor {index} ({tensors[index].name}) has no recorded range")
        quantization.min = np.array([low], np.float32)
        quantization.max = np.array([high], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def head_nodes(content):
    """Output tensor names of the classifier head of a calibrated model: the op producing the
    model's output when it is a FULLY_CONNECTED (or 1x1 CONV_2D) and, when it is fed by one,
    the MEAN that pools its input. [] for other graphs."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(content)
    graph = model.subgraphs[0]
    producers = {out: op for op in graph.operators for out in op.outputs}
    head = producers.get(graph.outputs[0])
    if head is None or flatbuffer_utils.opcode_to_name(model, head.opcodeIndex) not in (
            "FULLY_CONNECTED", "CONV_2D"):
        return []
    found = [graph.tensors[graph.outputs[0]].name.decode()]
    pool = producers.get(head.inputs[0])
    if pool is not None and flatbuffer_utils.opcode_to_name(model, pool.opcodeIndex) == "MEAN":
        found.insert(0, graph.tensors[pool.outputs[0]].name.decode())
    return found


def quantized_output(content, low, high, dtype="int8"):
    """`content` whose float output is quantised by an appended QUANTIZE op to the int8 (or
    uint8) grid spanning [low, high]; returns new bytes."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(content)
    graph = model.subgraphs[0]
    source = graph.tensors[graph.outputs[0]]
    if source.type != schema.TensorType.FLOAT32:
        raise ValueError(f"The output {source.name} is not float")
    levels = (-128, 127) if dtype == "int8" else (0, 255)
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255
    tensor = schema.TensorT()
    tensor.name, tensor.shape = source.name + b"_quantized", source.shape
    tensor.shapeSignature = source.shapeSignature
    tensor.type = schema.TensorType.INT8 if dtype == "int8" else schema.TensorType.UINT8
    tensor.buffer = 0
    tensor.quantization = schema.QuantizationParametersT()
    tensor.quantization.scale = [scale]
    tensor.quantization.zeroPoint = [int(np.clip(round(levels[0] - low / scale), *levels))]
    graph.tensors.append(tensor)
    codes = [code.builtinCode for code in model.operatorCodes]
    if schema.BuiltinOperator.QUANTIZE not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.QUANTIZE
        code.version = 1
        model.operatorCodes.append(code)
        codes.append(code.builtinCode)
    op = schema.OperatorT()
    op.opcodeIndex = codes.index(schema.BuiltinOperator.QUANTIZE)
    op.inputs, op.outputs = [graph.outputs[0]], [len(graph.tensors) - 1]
    graph.operators.append(op)
    graph.outputs = [len(graph.tensors) - 1]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def quantize(calibrated, io_type="float32", float_ops=(), float_nodes=(),
             per_channel_dense=True):
    """The converter's int8 quantiser on a calibrated model.

    Args:
        calibrated: bytes from `calibrate` (or `with_ranges`).
        io_type: "float32", "int8" or "uint8": the input and output type.
        float_ops: op type names left in float (between DEQUANTIZE and QUANTIZE).
        float_nodes: output tensor names of single ops left in float (e.g. `head_nodes`); a
            float output of an int8 / uint8 model is quantised at the end to its recorded
            range.
        per_channel_dense: per-output-channel int8 kernels for FULLY_CONNECTED too.
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.python.util import modify_model_io_type

    types = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
    if io_type not in types:
        raise ValueError(f"io_type must be one of {tuple(types)}, got {io_type!r}")
    content = mlir_quantize(calibrated, denylisted_ops=list(float_ops) or None,
                            denylisted_nodes=list(float_nodes) or None,
                            disable_per_channel_for_dense_layers=not per_channel_dense)
    if io_type == "float32":
        return content
    # As the converter does: the float input and output's QUANTIZE/DEQUANTIZE removed.
    content = modify_model_io_type(content, types[io_type], types[io_type])
    graph = _model_object(content).subgraphs[0]
    if graph.tensors[graph.outputs[0]].type == 0:  # a float op computes the output
        name = graph.tensors[graph.outputs[0]].name.decode()
        ranges = {n: (low, high) for n, low, high in recorded_tensors(calibrated).values()}
        if name not in ranges:
            raise ValueError(f"No recorded range for the float output {name}")
        content = quantized_output(content, *ranges[name], dtype=io_type)
    return _retarget_signature_outputs(content)


def _retarget_signature_outputs(content):
    """`content` whose SignatureDef outputs name the subgraph's actual output tensors.

    An output QUANTIZE appended after conversion (`quantized_output`) leaves the signature
    naming the float tensor before it; signature runners (and LiteRT's `CompiledModel`) then
    read a tensor that is no longer an output. Each such output is followed through the
    QUANTIZE / DEQUANTIZE ops consuming it to the graph output they produce (or, for a single
    stale output, the single graph output no signature names). Returns new bytes, or
    `content` when nothing is stale.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = _model_object(content)
    changed = False
    for signature in model.signatureDefs or ():
        graph = model.subgraphs[signature.subgraphIndex]
        outputs = list(graph.outputs)
        stale = [t for t in signature.outputs or () if t.tensorIndex not in outputs]
        if not stale:
            continue
        casts = {}  # tensor -> output of the QUANTIZE / DEQUANTIZE consuming it
        for op in graph.operators:
            if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) in ("QUANTIZE",
                                                                          "DEQUANTIZE"):
                casts[int(op.inputs[0])] = int(op.outputs[0])
        unnamed = [i for i in outputs
                   if i not in {t.tensorIndex for t in signature.outputs}]
        for entry in stale:
            index, seen = entry.tensorIndex, set()
            while index not in outputs and index in casts and index not in seen:
                seen.add(index)
                index = casts[index]
            if index not in outputs and len(stale) == 1 and len(unnamed) == 1:
                index = unnamed[0]
            if index not in outputs:
                raise ValueError(f"Signature output {entry.name.decode()} names tensor "
                                 f"{entry.tensorIndex}, which leads to no graph output")
            entry.tensorIndex, changed = index, True
    if not changed:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def ranged(converter, images, method="mse"):
    """The converter's calibrated float model (bytes) with the activation ranges `method`
    chooses (`RANGE_METHODS`), ready for `quantize`.

    Args:
        converter: a `tf.lite.TFLiteConverter` configured for an integer format
            (`converters.litert.tflite.configure`); its representative dataset calibrates.
        images: the calibration images (N, H, W, C) float32, for the range statistics.
        method: "mse" (per-tensor error-minimising ranges) or "minmax" (the converter's).
    """
    calibrated = calibrate(converter)
    if method == "minmax":
        return calibrated
    stats = activation_statistics(calibrated, images)
    return with_ranges(calibrated, choose_ranges(stats, method))
