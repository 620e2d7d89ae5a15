"""What a `.tflite` file holds, read from its flatbuffer: the types each op computes in, and the
sparsity and distinct values of its kernels. Compression is measured on the exported file, not on
the Keras model it came from.
"""

import numpy as np

from converters.litert.inspection import flatbuffer_utils

#: Ops whose second input is a kernel: (op type, axis of the output channels in TFLite's layout).
#: TFLite lays kernels out as (out, h, w, in) for CONV_2D, (1, h, w, out) for DEPTHWISE_CONV_2D
#: and (out, in) for FULLY_CONNECTED.
KERNEL_OPS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": -1}


def _graph(content):
    fb = flatbuffer_utils()
    model = fb.read_model_from_bytearray(bytearray(content))
    return fb, model, model.subgraphs[0]


def _buffer(model, tensor):
    buffer = model.buffers[tensor.buffer]
    return None if buffer.data is None or len(buffer.data) == 0 else buffer.data


def activation_types(content):
    """{op type: sorted names of the types of its non-constant input and output tensors} of a
    `.tflite` model's main graph, e.g. ``{"CONV_2D": ["INT8"], "QUANTIZE": ["FLOAT32", "INT8"]}``.
    """
    fb, model, graph = _graph(content)
    found = {}
    for op in graph.operators:
        types = found.setdefault(fb.opcode_to_name(model, op.opcodeIndex), set())
        for index in list(op.inputs) + list(op.outputs):
            if index >= 0 and _buffer(model, graph.tensors[index]) is None:
                types.add(fb.type_to_name(graph.tensors[index].type))
    return {name: sorted(types) for name, types in sorted(found.items())}


def float_ops(content):
    """Op types of a `.tflite` model that read or write a float32 activation, other than the
    QUANTIZE / DEQUANTIZE at a float input and output: empty for a model integer end to end."""
    return sorted(op for op, types in activation_types(content).items()
                  if "FLOAT32" in types and op not in ("QUANTIZE", "DEQUANTIZE"))


def kernels(content):
    """[(op type, tensor name, kernel array in TFLite's layout)] of the convolutions and
    fully connected ops of a `.tflite` model (int8 or float32 as stored)."""
    fb, model, graph = _graph(content)
    dtypes = {"FLOAT32": np.float32, "INT8": np.int8, "FLOAT16": np.float16}
    found = []
    for op in graph.operators:
        name = fb.opcode_to_name(model, op.opcodeIndex)
        if name not in KERNEL_OPS or len(op.inputs) < 2:
            continue
        tensor = graph.tensors[op.inputs[1]]
        data = _buffer(model, tensor)
        kind = fb.type_to_name(tensor.type)
        if data is None or kind not in dtypes:
            continue
        array = np.frombuffer(bytes(data), dtypes[kind]).reshape(tensor.shape)
        found.append((name, tensor.name.decode(), array))
    return found


def left_alone(op, kernel):
    """Whether a kernel of the file is one that pruning and clustering leave dense here: the
    first convolution (3 input channels, `converters.tfmot.sparsity.SKIP`) or the attention's
    ``w_g`` (a FULLY_CONNECTED kernel with one output), which no TFMOT wrapper reaches."""
    return (op == "CONV_2D" and kernel.shape[-1] == 3) or \
        (op == "FULLY_CONNECTED" and kernel.shape[0] == 1)


def kernel_stats(content, m_by_n=(2, 4)):
    """Sparsity and distinct values of the kernels of a `.tflite` model.

    Returns:
        dict over the CONV_2D and FULLY_CONNECTED kernels but those `left_alone`:
        ``kernel_sparsity`` (zeros / values), ``kernels`` (how many), ``m_by_n_kernels`` (how
        many have at least m zeros in every n consecutive input-channel values),
        ``max_unique_per_channel`` (most distinct values in one output channel: what clustering
        bounds); and ``depthwise_sparsity`` (zeros / values of the DEPTHWISE_CONV_2D kernels).
    """
    zeros = values = dw_zeros = dw_values = unique = patterned = count = 0
    for op, _, kernel in kernels(content):
        if op == "DEPTHWISE_CONV_2D":
            dw_zeros, dw_values = dw_zeros + int(np.sum(kernel == 0)), dw_values + kernel.size
            continue
        if left_alone(op, kernel):
            continue
        count += 1
        zeros, values = zeros + int(np.sum(kernel == 0)), values + kernel.size
        unique = max(unique, max(np.unique(row).size
                                 for row in kernel.reshape(kernel.shape[0], -1)))
        patterned += is_m_by_n(kernel.reshape(-1, kernel.shape[-1]), *m_by_n)
    return {"kernel_sparsity": zeros / max(values, 1),
            "depthwise_sparsity": dw_zeros / max(dw_values, 1), "kernels": count,
            "m_by_n_kernels": patterned, "max_unique_per_channel": unique}


def is_m_by_n(rows, m, n):
    """At least `m` zeros in every `n` consecutive values of each row (zero-padded to a
    multiple of `n`)."""
    rows = np.pad(rows, ((0, 0), (0, (-rows.shape[1]) % n)), constant_values=0)
    return bool(np.all(np.sum(rows.reshape(rows.shape[0], -1, n) == 0, axis=-1) >= m))
