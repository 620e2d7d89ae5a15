"""What a saved Core ML package holds: inputs, outputs, labels, precision, metadata, size and
its operations (`op_histogram`: the non-constant MIL operations by type)."""

import os

import numpy as np

from converters.coreml.formats import INPUT_NAME, METADATA_PREFIX

#: Operations that hold or decompress weights, not computation.
CONSTANT_OPS = ("const",)


def package_size(path):
    """Bytes of all files of a package folder."""
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


_MIL_DTYPE_NAMES = {np.float16: "float16", np.float32: "float32"}


def inspect_coreml(path, program=None):
    """What a saved package holds: inputs, outputs, labels, compute precision, operations,
    metadata and size. `program` is its `converters.coreml.mil_eval.MLProgram` if already loaded."""
    from converters.coreml.mil_eval import MLProgram

    program = program or MLProgram(path)
    spec = program.spec
    inputs = {}
    for feature in spec.description.input:
        kind = feature.type.WhichOneof("Type")
        entry = {"type": kind}
        if kind == "imageType":
            image = feature.type.imageType
            entry.update(width=image.width, height=image.height,
                         color_space=type(image).ColorSpace.Name(image.colorSpace))
        inputs[feature.name] = entry
    outputs = {}
    for feature in spec.description.output:
        kind = feature.type.WhichOneof("Type")
        entry = {"type": kind}
        if kind == "multiArrayType":
            entry["shape"] = list(feature.type.multiArrayType.shape)
        outputs[feature.name] = entry
    labels = None
    for op in program.operations:
        if op.type == "classify":
            labels = [str(c) for c in program.constant(op, "classes")]
    preprocessing = _image_chain(program)
    compute = {}
    for op in program.operations:
        if (op.type in ("const", "cast", "classify", "quantize") or op.type.startswith("constexpr_")
                or op.name in preprocessing):
            continue
        for _, dtype, _ in op.outputs:
            name = _MIL_DTYPE_NAMES.get(dtype, str(dtype))
            compute[name] = compute.get(name, 0) + 1
    meta = spec.description.metadata
    return {
        "specification_version": spec.specificationVersion,
        "opset": program.opset,
        "inputs": inputs,
        "outputs": outputs,
        "predicted_feature": spec.description.predictedFeatureName or None,
        "predicted_probabilities": spec.description.predictedProbabilitiesName or None,
        "labels": labels,
        "image_preprocessing": list(preprocessing.values()),
        "compute_dtypes": compute,
        "ops": program.op_types(),
        "metadata": {k[len(METADATA_PREFIX):]: v for k, v in meta.userDefined.items()
                     if k.startswith(METADATA_PREFIX)},
        "license": meta.license,
        "size_bytes": package_size(path),
    }


def _image_chain(program):
    """{op name: (op type, constant operand)} of the elementwise ops (mul, add, cast) that
    the image input goes through first: the image type's scale and bias, and what follows."""
    consumers = {}
    for op in program.operations:
        for key in op.inputs:
            for name in op.input_names(key):
                consumers.setdefault(name, []).append(op)
    chain, var = {}, INPUT_NAME
    while len(consumers.get(var, [])) == 1 and consumers[var][0].type in ("mul", "add", "cast"):
        op = consumers[var][0]
        operand = None
        if op.type != "cast":
            other = "y" if op.input_names("x") == [var] else "x"
            operand = program.constant(op, other)
            operand = np.asarray(operand, np.float64).reshape(-1).tolist()
        chain[op.name] = (op.type, operand)
        var = op.name
    return chain


def op_histogram(path_or_program):
    """{op type: count} of the non-constant operations of a package (a path) or a loaded
    `converters.coreml.mil_eval.MLProgram`, most frequent first: ``const`` and the
    ``constexpr_*`` weight decompressions are left out."""
    from converters.coreml.mil_eval import MLProgram

    program = path_or_program
    if not isinstance(program, MLProgram):
        program = MLProgram(path_or_program)
    counts = {op: n for op, n in program.op_types().items()
              if op not in CONSTANT_OPS and not op.startswith("constexpr_")}
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def op_summary(histogram):
    """{"count": non-constant ops, "transposes": transpose ops, "histogram": `histogram`}."""
    return {"count": sum(histogram.values()), "transposes": histogram.get("transpose", 0),
            "histogram": dict(histogram)}
