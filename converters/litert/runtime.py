"""Running `.tflite` models: one helper for the tests, the fidelity report and the benchmarks.

The interpreter comes from ``ai_edge_litert`` (LiteRT, the maintained runtime), falling back to
``tflite_runtime`` and then to ``tf.lite``. Integer models are fed and read in float: inputs are
quantised and outputs dequantised with the tensors' own scale and zero point.
"""

import os

import numpy as np


def interpreter_class():
    """(Interpreter class, module name, OpResolverType or None) of the best runtime installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, "ai_edge_litert", OpResolverType
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType

        return Interpreter, "tflite_runtime", OpResolverType
    except ImportError:
        pass
    import tensorflow as tf

    return tf.lite.Interpreter, "tensorflow", tf.lite.experimental.OpResolverType


def make_interpreter(content, num_threads=None, use_xnnpack=True, preserve_all_tensors=False,
                     allocate=True, **options):
    """A LiteRT interpreter of the `.tflite` bytes `content`: the one place interpreters are made.

    Args:
        num_threads: CPU threads (None: the runtime's default).
        use_xnnpack: False runs LiteRT's builtin kernels only (no default delegate), e.g. to
            read the graph as converted.
        preserve_all_tensors: keep every intermediate tensor readable (calibration, debugging).
        allocate: allocate the tensors (False to resize inputs first).
        options: further keyword arguments of the Interpreter (e.g.
            ``experimental_disable_delegate_node_fusion``).

    Raises:
        ValueError: `content` is not a loadable model.
    """
    Interpreter, _, resolver = interpreter_class()
    kwargs = dict(model_content=bytes(content), num_threads=num_threads, **options)
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = (
            resolver.AUTO if use_xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter = Interpreter(**kwargs)
    if allocate:
        interpreter.allocate_tensors()
    return interpreter


def quantize(x, dtype, scale, zero_point):
    """float -> integer tensor with the given affine parameters (round half to even, clipped)."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q, scale, zero_point):
    return (np.asarray(q, np.float32) - zero_point) * scale


class TFLiteRunner:
    """A `.tflite` model ready to run on float NHWC arrays.

    Args:
        path: the model file (or `content`: its bytes).
        num_threads: interpreter threads (None: the runtime's default).
        use_xnnpack: False runs the built-in kernels without the default XNNPACK delegate.
        preserve_all_tensors: keep intermediate tensors readable (layer-by-layer debugging).

    Attributes:
        input_shape: the model's input shape; a leading -1/None batch means dynamic.
        runtime: which package the interpreter came from.
    """

    def __init__(self, path=None, content=None, num_threads=None, use_xnnpack=True,
                 preserve_all_tensors=False):
        if content is None:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"No such model: {path}")
            with open(path, "rb") as f:
                content = f.read()
        self.path, self._content = path, content
        self.runtime = interpreter_class()[1]
        try:
            self.interpreter = make_interpreter(content, num_threads, use_xnnpack,
                                                preserve_all_tensors)
        except ValueError as err:
            raise ValueError(f"{path or 'model'} is not a loadable .tflite model: {err}") from err
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"Expected one input, the model has {len(inputs)}")
        self._input = inputs[0]
        self._outputs = self.interpreter.get_output_details()
        signature = self._input.get("shape_signature", self._input["shape"])
        self.input_shape = tuple(int(d) for d in signature)
        self.input_dtype = np.dtype(self._input["dtype"])
        self.dynamic_batch = self.input_shape[0] == -1

    @property
    def input_quantization(self):
        """(scale, zero point) of the input, (0.0, 0) for a float input."""
        return self._input["quantization"]

    def _set_batch(self, batch):
        shape = list(self.interpreter.get_input_details()[0]["shape"])
        if shape[0] != batch:
            self.interpreter.resize_tensor_input(self._input["index"], [batch] + shape[1:])
            self.interpreter.allocate_tensors()
            self._outputs = self.interpreter.get_output_details()

    def run(self, x):
        """One invocation on a batch the model accepts -> list of float32 outputs."""
        scale, zero_point = self.input_quantization
        if self.input_dtype.kind in "iu":
            x = quantize(x, self.input_dtype, scale, zero_point)
        else:
            x = np.asarray(x, self.input_dtype)
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        outputs = []
        for detail in self._outputs:
            y = self.interpreter.get_tensor(detail["index"])
            if np.dtype(detail["dtype"]).kind in "iu":
                y = dequantize(y, *detail["quantization"])
            outputs.append(np.asarray(y, np.float32))
        return outputs

    def predict(self, x, batch_size=32):
        """(N, H, W, C) float -> (N, ...) float32 first output, in batches.

        A fixed-batch model runs in chunks of its own batch size; a dynamic one in chunks of
        `batch_size`.
        """
        x = np.asarray(x, np.float32)
        expected = self.input_shape[1:]
        if tuple(x.shape[1:]) != tuple(expected):
            raise ValueError(f"Input of shape {x.shape[1:]} given to a model taking {expected}")
        step = batch_size if self.dynamic_batch else self.input_shape[0]
        outputs = []
        for start in range(0, len(x), step):
            chunk = x[start:start + step]
            if self.dynamic_batch:
                self._set_batch(len(chunk))
            elif len(chunk) < step:  # pad the last chunk of a fixed-batch model
                pad = np.repeat(chunk[-1:], step - len(chunk), axis=0)
                outputs.append(self.run(np.concatenate([chunk, pad]))[0][: len(chunk)])
                continue
            outputs.append(self.run(chunk)[0])
        return np.concatenate(outputs)

    __call__ = predict

    def op_types(self):
        """Sorted distinct builtin op names of the graph as converted, before any delegate
        takes nodes (e.g. ['ADD', 'CONV_2D', ...])."""
        plain = make_interpreter(self._content, use_xnnpack=False)
        return sorted({op["op_name"] for op in plain._get_ops_details()})
