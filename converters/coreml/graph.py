"""The Core ML program of a SwiftFormer classifier, written from its folded inference graph.

`coreml_graph(model)` folds the model as the LiteRT files are folded
(`converters.fold.fold_swiftformer`, `converters.inference_graph.build_inference_model`, with
the attention's L2 normalisations written as such) and moves the input normalisation to the
image input: the image type subtracts the mean pixel (its bias), the ``1 / (255 std)`` scale
is in the first convolution's kernel. That is exact, borders included: the zero padding is the
mean pixel in both.

`build_program` translates that Keras graph layer by layer into a MIL program in Core ML's
channel-first layout (convolutions, 1x1 convolutions for the attention's projections, reductions
over the channel or token axes), so the program needs no transposes and no reshapes. The
attention's L2 normalisations are made float16-safe (`safe_l2_normalize`, `token_weights`).
"""

import dataclasses
import re

import numpy as np

from converters.coreml.formats import INPUT_NAME, PROBABILITIES_NAME

#: Smallest divisor of the vectors in `safe_l2_normalize` (float16's smallest normal number),
#: and the least norm of the rescaled vectors (below it, the vector is treated as zero).
PEAK_FLOOR = 2.0**-14
#: Largest sum of squares the token normalisation may reach (a quarter of float16's largest
#: value, 65504, for rounding headroom); `token_weights` scales ``w_g`` to stay below it.
TOKEN_ENERGY_LIMIT = 2.0**14


@dataclasses.dataclass
class CoreMLGraph:
    """What a Core ML program of a SwiftFormer classifier is written from.

    Attributes:
        folded: the folded Keras model (`build_inference_model`), taking the mean-centred
            (1, H, W, 3) image, ``pixel - mean_pixel``, in [0, 255] units.
        mean_pixel: (3,) the image type subtracts it (its bias).
        logits: the folded model's (1, classes) logits tensor.
        image_size: (H, W).
        source: the SwiftFormer model it was folded from (its variant and token weighting
            go into the package's metadata).
    """

    folded: object
    mean_pixel: np.ndarray
    logits: object
    image_size: tuple
    source: object = None


def _image_size(geometry, image_size):
    from converters.coreml.formats import DEFAULT_IMAGE_SIZE

    static = tuple(geometry.input_shape[:2])
    if image_size is None:
        return static if None not in static else DEFAULT_IMAGE_SIZE
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"image_size must be (height, width) of at least 32, got {image_size}")
    if None not in static and static != size:
        raise ValueError(f"{geometry.name} takes {static} images; image_size {size} differs")
    return size


def coreml_graph(model, image_size=None):
    """The folded graph of a SwiftFormer classifier that `build_program` writes as Core ML.

    Args:
        model: a `keras_swiftformer.SwiftFormer` classifier (``include_top=True``), with or
            without its ImageNet ``preprocessing`` layer (without: the package applies the
            ImageNet normalisation, as `keras_swiftformer.imagenet.preprocess_input`).
        image_size: (H, W); default the model's static input size, else 224 x 224.

    Returns:
        a `CoreMLGraph`. Raises ValueError for a model that is not a SwiftFormer classifier.
    """
    from converters.fold import fold_affine_before, fold_swiftformer
    from converters.inference_graph import build_inference_model
    from keras_swiftformer.config import (IMAGENET_MEAN, IMAGENET_STD, PREPROCESSING,
                                          STEM_PATHS)

    if len(model.inputs) != 1 or model.inputs[0].shape[-1] != 3:
        raise ValueError(f"{model.name}: expected one (B, H, W, 3) image input, got "
                         f"{[tuple(t.shape) for t in model.inputs]}")
    geometry, weights = fold_swiftformer(model)
    if geometry.top != "logits":
        raise ValueError(f"{model.name}: expected a classifier with (B, classes) logits "
                         "(include_top=True)")
    if geometry.include_preprocessing:
        (mean_pixel,) = weights.pop(PREPROCESSING)
    else:  # the model takes normalised images: (pixel - 255 mean) / (255 std)
        mean_pixel = 255.0 * np.asarray(IMAGENET_MEAN)
        weights[STEM_PATHS[0]] = list(fold_affine_before(
            *weights[STEM_PATHS[0]], 1.0 / (255.0 * np.asarray(IMAGENET_STD))))
    height, width = _image_size(geometry, image_size)
    geometry = dataclasses.replace(geometry, input_shape=(height, width, 3),
                                   include_preprocessing=False, classifier_activation=None)
    folded = build_inference_model(geometry, weights, l2_form="l2_normalization",
                                   name=f"{model.name}_coreml")
    return CoreMLGraph(folded, np.asarray(mean_pixel, np.float64), folded.output,
                       (height, width), model)


def token_weights(w_g, tokens):
    """``w_g`` (D, 1) scaled by a power of two so that the token normalisation cannot overflow.

    The scores ``a = q @ w_g`` of unit-norm queries are at most ``||w_g||`` each, so their sum
    of squares over the tokens is at most ``tokens * ||w_g||^2``; ``w_g`` is halved until that
    lies below `TOKEN_ENERGY_LIMIT`. The normalised token weights ``a / ||a||`` do not change.
    The weighted sum ``sum(a * q)`` is then at most ``sqrt(tokens * TOKEN_ENERGY_LIMIT)`` per
    channel, within float16 up to 260,000 tokens. Returns float32 (D, 1).
    """
    w_g = np.asarray(w_g, np.float64)
    energy = tokens * float(np.sum(w_g**2))
    scale = 1.0
    while energy * scale**2 > TOKEN_ENERGY_LIMIT:
        scale /= 2.0
    return (w_g * scale).astype(np.float32)


def safe_l2_normalize(mb, x, axes, name):
    """``x / max(||x||, eps)`` over `axes` that float16 cannot overflow (7 MIL ops).

    ``sum(x^2)`` passes float16's 65504 once ``||x|| > 256`` (the evaluator found 33 of 196
    query vectors zeroed in L1 so). ``x`` is divided by its largest magnitude first, so the norm
    that follows lies in [1, sqrt(D)].
    """
    peak = mb.reduce_max(x=mb.abs(x=x, name=f"{name}_abs"), axes=axes, keep_dims=True,
                         name=f"{name}_peak")
    peak = mb.maximum(x=peak, y=np.float32(PEAK_FLOOR), name=f"{name}_peak_floor")
    y = mb.real_div(x=x, y=peak, name=f"{name}_scaled")
    norm = mb.reduce_l2_norm(x=y, axes=axes, keep_dims=True, name=f"{name}_norm")
    norm = mb.maximum(x=norm, y=np.float32(PEAK_FLOOR), name=f"{name}_norm_floor")
    return mb.real_div(x=y, y=norm, name=name)


def mil_name(name):
    """A Keras layer name as a MIL variable name (what coremltools' name sanitising keeps)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _conv_weight(layer):
    """Core ML (C_out, C_in / groups, KH, KW) weight of a Conv2D, DepthwiseConv2D or Dense."""
    import keras

    kernel = np.asarray(layer.kernel, np.float32)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel.transpose(2, 3, 0, 1).reshape(-1, 1, *kernel.shape[:2])
    if isinstance(layer, keras.layers.Dense):
        return kernel.T[:, :, None, None]
    return kernel.transpose(3, 2, 0, 1)


class _Writer:
    """Emits the MIL ops of the folded graph's layers; `values` maps Keras tensors (by id) to
    MIL variables, channel-first; `pads` the pending zero padding of a tensor."""

    def __init__(self, mb):
        self.mb = mb
        self.values = {}
        self.pads = {}

    def get(self, tensor):
        return self.values[id(tensor)]

    def write(self, layer):
        import keras

        from converters.inference_graph import FoldedTokenMixing

        mb, name = self.mb, mil_name(layer.name)
        inputs = keras.tree.flatten(layer.input)
        x = self.get(inputs[0])
        if isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = layer.padding
            self.pads[id(layer.output)] = [top, bottom, left, right]
            return x
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            return self.conv(layer, inputs[0])
        if any(id(tensor) in self.pads for tensor in inputs):
            raise ValueError(f"{layer.name}: zero padding is translated only before a "
                             "convolution")
        if isinstance(layer, keras.layers.Dense):
            if len(layer.input.shape) == 4:  # a channel projection: 1x1 convolution
                return mb.conv(x=x, weight=_conv_weight(layer), bias=self.bias(layer), name=name)
            return mb.linear(x=x, weight=np.asarray(layer.kernel, np.float32).T,
                             bias=self.bias(layer), name=name)
        if isinstance(layer, keras.layers.Add):
            y = self.get(inputs[1])
            return mb.add(x=x, y=y, name=name)
        if isinstance(layer, keras.layers.Activation):
            return self.activation(x, layer.get_config()["activation"], name)
        if isinstance(layer, keras.layers.GlobalAveragePooling2D) and not layer.keepdims:
            return mb.reduce_mean(x=x, axes=[2, 3], keep_dims=False, name=name)
        if isinstance(layer, FoldedTokenMixing):
            return self.token_mixing(layer, x, self.get(inputs[1]), inputs[0].shape)
        raise ValueError(f"No Core ML translation for layer {layer.name} "
                         f"({type(layer).__name__}) of the folded graph")

    @staticmethod
    def bias(layer):
        return None if layer.bias is None else np.asarray(layer.bias, np.float32)

    def conv(self, layer, tensor):
        import keras

        mb = self.mb
        if layer.get_config().get("dilation_rate", (1, 1)) not in ((1, 1), 1):
            raise ValueError(f"{layer.name}: dilated convolutions are not translated")
        pad = self.pads.get(id(tensor))
        weight = _conv_weight(layer)
        if pad is None and layer.padding == "same":
            pad_type, pad = "same", None
        elif layer.padding == "valid":
            pad_type, pad = "custom", pad or [0, 0, 0, 0]
        else:
            raise ValueError(f"{layer.name}: 'same' padding after a ZeroPadding2D")
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        groups = weight.shape[0] if depthwise else layer.groups
        kwargs = {"pad": pad} if pad is not None else {}
        name = mil_name(layer.name)
        linear = layer.activation.__name__ == "linear"
        out = mb.conv(x=self.get(tensor), weight=weight, bias=self.bias(layer),
                      strides=list(layer.strides), pad_type=pad_type, groups=groups,
                      name=name if linear else f"{name}_conv", **kwargs)
        return self.activation(out, layer.activation.__name__, name)

    def activation(self, x, activation, name):
        mb = self.mb
        if activation == "linear":
            return x
        if activation == "relu":
            return mb.relu(x=x, name=name)
        if activation == "gelu":
            return mb.gelu(x=x, mode="EXACT", name=name)
        raise ValueError(f"{name}: no Core ML translation for activation {activation!r}")

    def token_mixing(self, layer, query, key, shape):
        """`converters.inference_graph.FoldedTokenMixing` (l2_form "l2_normalization") on
        (1, D, H, W) query and key: [G * k, q] channel-first."""
        mb, name = self.mb, mil_name(layer.name)
        if layer.l2_form != "l2_normalization":
            raise ValueError(f"{name}: expected the l2_normalization form, got {layer.l2_form}")
        q = safe_l2_normalize(mb, query, [1], f"{name}_query")
        if layer.token_weighting == "l2":
            w_g = token_weights(np.asarray(layer.w_g), int(shape[1]) * int(shape[2]))
            scores = mb.conv(x=q, weight=w_g.T[:, :, None, None], name=f"{name}_scores")
            norm = mb.reduce_l2_norm(x=scores, axes=[2, 3], keep_dims=True,
                                     name=f"{name}_scores_norm")
            norm = mb.maximum(x=norm, y=np.float32(PEAK_FLOOR), name=f"{name}_scores_floor")
            weighted = mb.mul(x=scores, y=q, name=f"{name}_weighted")
            summed = mb.reduce_sum(x=weighted, axes=[2, 3], keep_dims=True,
                                   name=f"{name}_summed")
            g = mb.real_div(x=summed, y=norm, name=f"{name}_global_query")
        else:
            g = mb.reduce_sum(x=q, axes=[2, 3], keep_dims=True, name=f"{name}_global_query")
        k = safe_l2_normalize(mb, key, [1], f"{name}_key")
        return [mb.mul(x=k, y=g, name=f"{name}_mixed"), q]


def build_program(graph, *, classifier=True, opset="iOS16"):
    """The MIL program of a `CoreMLGraph`: (1, 3, H, W) mean-centred pixels -> (1, classes)
    logits or, with `classifier`, softmax probabilities
    (`PROBABILITIES_NAME`). The image type is set by `converters.coreml.export`."""
    import keras

    from converters.coreml.formats import coremltools

    ct = coremltools()
    from coremltools.converters.mil import Builder as mb

    height, width = graph.image_size
    folded = graph.folded
    layers = [layer for layer in folded.layers if not isinstance(layer, keras.layers.InputLayer)]

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, height, width))],
                opset_version=getattr(ct.target, opset))
    def program(image):
        writer = _Writer(mb)
        writer.values[id(folded.inputs[0])] = image
        for layer in layers:
            out = writer.write(layer)
            outputs = keras.tree.flatten(layer.output)
            for tensor, value in zip(outputs, out if isinstance(out, list) else [out]):
                writer.values[id(tensor)] = value
            if layer.output is graph.logits:
                break
        logits = writer.get(graph.logits)
        if classifier:
            return mb.softmax(x=logits, axis=-1, name=PROBABILITIES_NAME)
        return logits  # renamed LOGITS_NAME by the export

    program.functions["main"].input_types = [ct.ImageType(
        name=INPUT_NAME, shape=(1, 3, height, width), scale=1.0,
        bias=[-float(p) for p in graph.mean_pixel], color_layout=ct.colorlayout.RGB,
        channel_first=True)]
    return program
