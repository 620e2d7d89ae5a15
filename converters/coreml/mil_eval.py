"""A small numpy interpreter of Core ML ML programs, to run a saved `.mlpackage` where Core ML
cannot run (Linux).

It reads the package itself: the program from ``model.mlmodel`` (protobuf, parsed with the
generated classes that ship with coremltools) and the weights from ``weights/weight.bin`` (read
here, not by coremltools). It implements the MIL operations that the SwiftFormer programs of
`converters.coreml` use, and a few common ones (`OPS`); any other operation is an error naming
it.

Each operation is computed in float32 from its inputs and its result is rounded to the data type
the program declares for it. A FLOAT16 program is therefore evaluated with float16 tensors
between operations (weights, activations) and float32 arithmetic inside each operation, as GPUs
do; the Neural Engine may accumulate differently. Results are close to Core ML's, not
bit-equal. Compressed weights (iOS 16 and iOS 18 ``constexpr_*`` ops,
`converters.coreml.mil_constexpr`) are decompressed once when the package is loaded; int8
activations (iOS 17 ``quantize`` / ``dequantize``) are rounded half to even.

Example::

    program = MLProgram("swiftformer_xs_float16.mlpackage")
    out = program.run({"image": pixels_nchw})  # (1, 3, 224, 224) RGB in [0, 255]
    out["classLabel"], out["probabilities"]
"""

import json
import os

import numpy as np

from converters.coreml.mil_constexpr import CONSTEXPR, SUB_BYTE, packed_bytes, unpack_sub_byte

#: MIL data type (``MIL_pb2.DataType``) -> numpy dtype, for the types these programs hold.
_DTYPES = {1: np.bool_, 10: np.float16, 11: np.float32, 12: np.float64, 21: np.int8,
           22: np.int16, 23: np.int32, 24: np.int64, 31: np.uint8, 32: np.uint16,
           33: np.uint32, 34: np.uint64}
_STRING = 2
_BLOB_SENTINEL = 0xDEADBEEF


class MILError(ValueError):
    """The package cannot be read or evaluated (an unknown operation, a damaged weight file)."""


def load_spec(path):
    """The ``Model`` protobuf of a ``.mlpackage`` folder (or a ``.mlmodel`` file)."""
    from coremltools.proto import Model_pb2

    path = os.fspath(path)
    if os.path.isdir(path):
        manifest_path = os.path.join(path, "Manifest.json")
        if not os.path.isfile(manifest_path):
            raise MILError(f"{path} is not an .mlpackage (no Manifest.json)")
        with open(manifest_path) as f:
            manifest = json.load(f)
        entry = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
        model_file = os.path.join(path, "Data", entry["path"])
    else:
        model_file = path
    spec = Model_pb2.Model()
    with open(model_file, "rb") as f:
        spec.ParseFromString(f.read())
    return spec


def weights_dir(path):
    """The folder of a package's weight files (``Data/com.apple.CoreML/weights``)."""
    return os.path.join(os.fspath(path), "Data", "com.apple.CoreML", "weights")


class _BlobFile:
    """A MIL weight file: a 64-byte header, then per blob 64 bytes of metadata (sentinel,
    storage type, size, data offset) and the data, 64-byte aligned."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        self.path = path

    def read(self, offset, dtype, count):
        sentinel, _, size, data_offset = np.frombuffer(self.data, "<u4,<u4,<u8,<u8", 1,
                                                       offset)[0]
        if sentinel != _BLOB_SENTINEL:
            raise MILError(f"{self.path}: no blob at offset {offset}")
        dtype = np.dtype(dtype)
        if size != count * dtype.itemsize:
            raise MILError(f"{self.path}: blob at {offset} has {size} bytes, expected "
                           f"{count} x {dtype.itemsize}")
        return np.frombuffer(self.data, dtype.newbyteorder("<"), count, int(data_offset))


def _tensor_type(value_type):
    """ValueType -> (numpy dtype or "str", shape tuple)."""
    tensor = value_type.tensorType
    shape = tuple(d.constant.size for d in tensor.dimensions)
    if tensor.dataType == _STRING:
        return "str", shape
    if tensor.dataType not in _DTYPES:
        raise MILError(f"Unsupported MIL data type {tensor.dataType}")
    return _DTYPES[tensor.dataType], shape


class MLProgram:
    """A saved ML program, loaded for evaluation and inspection.

    Attributes:
        spec: the ``Model`` protobuf.
        inputs: {name: (dtype, shape)} of the main function.
        outputs: names of the main function's outputs.
        operations: list of `Operation`, in program order.
        constants: {variable name: numpy array} of every ``const`` and ``constexpr_*`` output
            (compressed weights decompressed).
        compressed: {variable name: (operation type, {input: array})} for the outputs of
            ``constexpr_*`` operations: how each compressed weight is stored.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.spec = load_spec(path)
        if self.spec.WhichOneof("Type") != "mlProgram":
            raise MILError(f"{path} holds a {self.spec.WhichOneof('Type')}, not an ML program")
        function = self.spec.mlProgram.functions["main"]
        self.opset = function.opset
        block = function.block_specializations[function.opset]
        self.inputs = {v.name: _tensor_type(v.type) for v in function.inputs}
        self.outputs = list(block.outputs)
        self.overflows = {}
        self._blobs = {}
        self.operations = [Operation(self, op) for op in block.operations]
        self.constants, self.compressed = {}, {}
        for op in self.operations:
            if op.type == "const":
                self.constants[op.outputs[0][0]] = op.attributes["val"]
            elif op.type.startswith("constexpr_"):  # iOS16: attributes; iOS18: inputs
                if op.type not in CONSTEXPR:
                    raise MILError(f"The evaluator does not implement MIL op {op.type!r}")
                args = {k: v for k, v in op.attributes.items() if k != "name"}
                args.update({key: self.constant(op, key) for key in op.inputs})
                self.constants[op.outputs[0][0]] = CONSTEXPR[op.type](**args)
                self.compressed[op.outputs[0][0]] = (op.type, args)

    def value(self, value):
        """A ``Value`` protobuf -> numpy array (or list, or str)."""
        kind = value.type.WhichOneof("type")
        if kind == "listType":
            return [self.value(v) for v in value.immediateValue.list.values]
        data_type = value.type.tensorType.dataType
        if data_type in SUB_BYTE:  # packed bits
            shape = tuple(d.constant.size for d in value.type.tensorType.dimensions)
            count = int(np.prod(shape))
            packed = (self._blob(value, np.uint8, packed_bytes(data_type, count))
                      if value.WhichOneof("value") == "blobFileValue"
                      else np.frombuffer(value.immediateValue.tensor.bytes.values, np.uint8))
            return unpack_sub_byte(packed, data_type, count).reshape(shape)
        dtype, shape = _tensor_type(value.type)
        if value.WhichOneof("value") == "blobFileValue":
            return self._blob(value, dtype, int(np.prod(shape))).reshape(shape)
        tensor = value.immediateValue.tensor
        field = tensor.WhichOneof("value")
        if dtype == "str":
            values = list(tensor.strings.values)
            return values[0] if shape == () else np.array(values, dtype=object).reshape(shape)
        if field == "bytes":
            return np.frombuffer(tensor.bytes.values, dtype).reshape(shape).copy()
        return np.array(list(getattr(tensor, field).values), dtype).reshape(shape)

    def _blob(self, value, dtype, count):
        name = value.blobFileValue.fileName.split("/")[-1]
        if name not in self._blobs:
            self._blobs[name] = _BlobFile(os.path.join(weights_dir(self.path), name))
        return self._blobs[name].read(value.blobFileValue.offset, dtype, count)

    def constant(self, op, key):
        """The value of `op`'s constant input `key`: inline, or a const op's output."""
        bindings = op.inputs[key]
        if len(bindings) == 1:
            kind, value = bindings[0]
            if kind == "value":
                return value
            if value in self.constants:
                return self.constants[value]
        raise MILError(f"Expected one constant argument, got {bindings}")

    def op_types(self):
        """{operation type: count} of the program."""
        counts = {}
        for op in self.operations:
            counts[op.type] = counts.get(op.type, 0) + 1
        return counts

    def run(self, feeds, keep=(), record=None):
        """Evaluates the program.

        Args:
            feeds: {input name: array} (for an image input: (1, 3, H, W) float pixels, RGB).
            keep: names of intermediate variables to return as well (e.g. a softmax's input).
            record: if given, called as ``record(name, array)`` with every tensor an operation
                computes (e.g. to collect activation ranges).

        Returns:
            {name: value} of the outputs and of the `keep` variables. Afterwards `overflows`
            is {variable: count} of finite values that exceeded their data type's range (became
            inf when rounded to float16).
        """
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise MILError(f"Missing inputs {sorted(missing)}; the program takes {self.inputs}")
        env = dict(self.constants)
        for name, (dtype, shape) in self.inputs.items():
            value = np.asarray(feeds[name])
            if value.shape != shape:
                raise MILError(f"Input {name!r} must have shape {shape}, got {value.shape}")
            env[name] = value.astype(dtype)
        last_use = {}
        for index, op in enumerate(self.operations):
            for bindings in op.inputs.values():
                for kind, name in bindings:
                    if kind == "name":
                        last_use[name] = index
        wanted = set(self.outputs) | set(keep)
        overflows = self.overflows = {}
        for index, op in enumerate(self.operations):
            if op.type == "const" or op.type.startswith("constexpr_"):
                continue
            if op.type not in OPS:
                raise MILError(f"The evaluator does not implement MIL op {op.type!r}")
            args = {}
            for key, bindings in op.inputs.items():
                if len(bindings) != 1:
                    raise MILError(f"{op.type}: variadic input {key!r} is not implemented")
                kind, value = bindings[0]
                args[key] = env[value] if kind == "name" else value
            results = OPS[op.type](**args)
            if not isinstance(results, tuple):
                results = (results,)
            for (name, dtype, shape), result in zip(op.outputs, results):
                if dtype not in ("str", None) and isinstance(result, np.ndarray):
                    result = _round(result, dtype, name, overflows)
                    if shape is not None and result.shape != shape:
                        raise MILError(f"{op.type} {name!r}: computed shape {result.shape}, "
                                       f"the program declares {shape}")
                    if record is not None:
                        record(name, result)
                env[name] = result
            for bindings in op.inputs.values():
                for kind, name in bindings:
                    if (kind == "name" and last_use.get(name) == index and name not in wanted
                            and name not in self.constants):
                        env.pop(name, None)
        return {name: env[name] for name in wanted}


class Operation:
    """One MIL operation: ``type``, ``inputs`` {name: [("name", var) | ("value", array)]},
    ``outputs`` [(name, dtype, shape)], ``attributes`` {name: value}."""

    def __init__(self, program, proto):
        self.program = program
        self.type = proto.type
        if len(proto.blocks):
            raise MILError(f"Operation {proto.type} has nested blocks, which are not supported")
        self.inputs = {
            key: [("name", b.name) if b.WhichOneof("binding") == "name"
                  else ("value", program.value(b.value)) for b in argument.arguments]
            for key, argument in proto.inputs.items()
        }
        self.outputs = []
        for out in proto.outputs:
            kind = out.type.WhichOneof("type")
            if kind == "tensorType":
                self.outputs.append((out.name, *_tensor_type(out.type)))
            else:  # the dictionary of a classifier's probabilities
                self.outputs.append((out.name, None, None))
        self.attributes = {k: program.value(v) for k, v in proto.attributes.items()}

    @property
    def name(self):
        return self.outputs[0][0]

    def input_names(self, key):
        """Variable names bound to input `key` (empty for an inline value)."""
        return [name for kind, name in self.inputs.get(key, []) if kind == "name"]


def _round(result, dtype, name, overflows):
    """`result` in `dtype`; finite values beyond its range are counted in `overflows`."""
    if dtype == np.float16 and result.dtype != np.float16:
        with np.errstate(over="ignore"):
            rounded = result.astype(np.float16)
        count = int(np.count_nonzero(np.isinf(rounded) & np.isfinite(result)))
        if count:
            overflows[name] = count
        return rounded
    return result.astype(dtype, copy=False)


# --- the operations -------------------------------------------------------------------------

def _f32(x):
    return np.asarray(x, np.float32)


def _conv(x, weight, strides, pad_type, pad, dilations, groups, bias=None):
    """MIL ``conv``, 2-D, NCHW input and (C_out, C_in / groups, KH, KW) weight."""
    x, weight = _f32(x), _f32(weight)
    (kh, kw), (sh, sw), (dh, dw) = weight.shape[2:], strides, dilations
    groups = int(groups)
    pads = _conv_padding(x.shape[2:], (kh, kw), (sh, sw), (dh, dw), str(pad_type), pad)
    x = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    n, c, h, w = x.shape
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
    cout = weight.shape[0]
    out = np.zeros((n, cout, oh, ow), np.float32)
    if groups == c and weight.shape[1] == 1 and cout == c:  # depthwise
        for i in range(kh):
            for j in range(kw):
                patch = x[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                          j * dw: j * dw + sw * (ow - 1) + 1: sw]
                out += patch * weight[None, :, 0, i, j, None, None]
    else:  # im2col: (C_in/g * KH * KW) columns per output pixel, one matrix product per group
        cin_g, cout_g = c // groups, cout // groups
        for g in range(groups):
            xg = x[:, g * cin_g:(g + 1) * cin_g]
            if (kh, kw, sh, sw) == (1, 1, 1, 1):
                cols = xg.reshape(n, cin_g, oh * ow)
            else:
                cols = np.stack([xg[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                    j * dw: j * dw + sw * (ow - 1) + 1: sw]
                                 for i in range(kh) for j in range(kw)], axis=2)
                cols = cols.reshape(n, cin_g * kh * kw, oh * ow)
            wg = weight[g * cout_g:(g + 1) * cout_g].reshape(cout_g, -1)
            out[:, g * cout_g:(g + 1) * cout_g] = np.matmul(wg, cols).reshape(n, cout_g, oh, ow)
    if bias is not None:
        out += _f32(bias)[None, :, None, None]
    return out


def _conv_padding(size, kernel, strides, dilations, pad_type, pad):
    if pad_type == "valid":
        return [(0, 0), (0, 0)]
    if pad_type == "custom":
        pad = [int(p) for p in pad]
        return [(pad[0], pad[1]), (pad[2], pad[3])]
    if pad_type not in ("same", "same_lower"):
        raise MILError(f"conv pad_type {pad_type!r} is not implemented")
    pads = []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        out = -(-n // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        small = total // 2
        pads.append((small, total - small) if pad_type == "same" else (total - small, small))
    return pads


def _pad(x, pad, mode, constant_val):
    if str(mode) != "constant":
        raise MILError(f"pad mode {mode!r} is not implemented")
    pad = [int(p) for p in pad]
    widths = [(0, 0)] * (x.ndim - len(pad) // 2) + list(zip(pad[::2], pad[1::2]))
    return np.pad(x, widths, constant_values=float(constant_val))


def _reshape(x, shape):
    shape = [int(s) for s in shape]
    if 0 in shape:
        raise MILError("reshape with a 0 (copied) dimension is not implemented")
    return np.reshape(x, shape)


def _matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _f32(x), _f32(y)
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _linear(x, weight, bias=None):
    out = np.matmul(_f32(x), _f32(weight).T)
    return out if bias is None else out + _f32(bias)


def _gelu(x, mode="EXACT"):
    from scipy.special import erf

    x = _f32(x)
    if mode == "EXACT":
        return 0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0))))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    raise MILError(f"gelu mode {mode!r} is not implemented")


def _reduce(function):
    def reduce(x, axes=None, keep_dims=False):
        axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return function(_f32(x), axis=axes, keepdims=bool(keep_dims))

    return reduce


def _softmax(x, axis=-1):
    x = _f32(x)
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


def _cast(x, dtype):
    names = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32}
    if str(dtype) not in names:
        raise MILError(f"cast to {dtype!r} is not implemented")
    return np.asarray(x).astype(names[str(dtype)])


def _classify(probabilities, classes):
    probabilities = np.asarray(probabilities, np.float32).reshape(-1)
    labels = [str(c) for c in classes]
    return labels[int(np.argmax(probabilities))], dict(zip(labels, probabilities.tolist()))


_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


def _channel_shape(value, ndim, axis):
    """`value` (scalar or per-channel along `axis`) shaped to broadcast against ndim dims."""
    value = np.asarray(value, np.float32)
    if value.ndim == 0:
        return value
    shape = [1] * ndim
    shape[int(axis)] = -1
    return value.reshape(shape)


def _quantize(input, scale, output_dtype, zero_point=None, axis=None):
    """iOS 17 ``quantize``: ``clip(round(x / scale) + zero_point)`` in int8 or uint8."""
    low, high = _INT_RANGES[str(output_dtype)]
    x = _f32(input)
    q = np.round(x / _channel_shape(scale, x.ndim, axis))
    if zero_point is not None:
        q = q + _channel_shape(zero_point, x.ndim, axis)
    return np.clip(q, low, high).astype(np.dtype(str(output_dtype)))


def _dequantize_op(input, scale, zero_point=None, axis=None):
    """iOS 17 ``dequantize``: ``(q - zero_point) * scale``."""
    q = np.asarray(input, np.float32)
    if zero_point is not None:
        q = q - _channel_shape(zero_point, q.ndim, axis)
    return q * _channel_shape(scale, q.ndim, axis)


#: MIL operation -> numpy implementation (keyword arguments as in the MIL specification).
OPS = {
    "add": lambda x, y: _f32(x) + _f32(y),
    "mul": lambda x, y: _f32(x) * _f32(y),
    "minimum": lambda x, y: np.minimum(_f32(x), _f32(y)),
    "maximum": lambda x, y: np.maximum(_f32(x), _f32(y)),
    "real_div": lambda x, y: _f32(x) / _f32(y),
    "abs": lambda x: np.abs(_f32(x)),
    "rsqrt": lambda x, epsilon=1e-12: 1.0 / np.sqrt(_f32(x) + np.float32(epsilon)),
    "relu": lambda x: np.maximum(_f32(x), 0),
    "gelu": _gelu,
    "conv": _conv,
    "pad": _pad,
    "linear": _linear,
    "matmul": _matmul,
    "reshape": _reshape,
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "reduce_sum": _reduce(np.sum),
    "reduce_mean": _reduce(np.mean),
    "reduce_max": _reduce(np.max),
    "reduce_l2_norm": _reduce(lambda x, axis, keepdims: np.sqrt(np.sum(
        x * x, axis=axis, keepdims=keepdims))),
    "softmax": _softmax,
    "cast": _cast,
    "classify": _classify,
    "quantize": _quantize,
    "dequantize": _dequantize_op,
}
