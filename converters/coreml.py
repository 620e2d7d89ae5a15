"""Keras SwiftFormer -> Core ML ML program (``.mlpackage``) for iPhone, and its verification on
Linux, where Core ML cannot run.

Conversion goes through coremltools' TensorFlow 2 frontend (the Keras model's ``tf.function``;
coremltools 9.0 is tested up to TensorFlow 2.12 and works with 2.21 here, after two fixes made
at conversion time: `_register_erfc` (TF 2.21's exact ``tf.nn.gelu`` uses ``Erfc``, which
coremltools 9.0 cannot convert; it is rewritten as ``1 + erf`` in the form that coremltools
fuses into one ``gelu`` op) and, for float16, `SCALE_SAFE_L2_PASS` (the attention's L2
normalisations overflow float16 otherwise).

The package takes an RGB image (a camera ``CVPixelBuffer`` works). The ImageNet normalisation is
exact: the image type's scale and bias give ``x / 255 - mean`` (one scalar scale, per-channel
bias is all an image type holds), and one per-channel multiply by ``1 / std`` follows in the
program. (``scale = 1 / (255 * mean(std))`` would be off by up to 1.3 % in one channel.)

The package's weights are then compared with the Keras weights they came from, after the folds
coremltools makes (BatchNorm and layer scales into the preceding convolution), and the program is
run by `converters.mil_eval` on numpy and compared with Keras: `verify_coreml`.

This module does not import PyTorch (coremltools itself may).
"""

import os

import numpy as np

from keras_swiftformer.files import atomic_output
from converters.report import fidelity, sqnr_db

#: Format name -> `export_coreml` options. Compression is applied to the float16 program.
COREML_FORMATS = {
    "float32": {"precision": "float32", "compression": None},
    "float16": {"precision": "float16", "compression": None},
    "int8": {"precision": "float16", "compression": "int8"},
    "palettize6": {"precision": "float16", "compression": "palettize6"},
    "palettize4": {"precision": "float16", "compression": "palettize4"},
}
PRECISIONS = ("float16", "float32")
COMPRESSIONS = (None, "int8", "palettize6", "palettize4")

#: Weights with at most this many elements stay uncompressed (coremltools' default threshold).
WEIGHT_THRESHOLD = 2048
#: Core ML specification version of iOS 16 / macOS 13, the minimum deployment target.
SPECIFICATION_VERSION = 7
DEFAULT_IMAGE_SIZE = (224, 224)
INPUT_NAME = "image"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"
LABEL_NAME = "classLabel"
PIXEL_SCALE = 1.0 / 255.0
IMAGENET_STD_LAYER = "imagenet_std"
METADATA_PREFIX = "keras_swiftformer."

# Per package tensor, the largest error allowed against its Keras source, relative to the
# source's largest magnitude: float32 (coremltools folds in float32), float16 (rounding,
# 2**-11), int8 (half a step of the per-channel symmetric scale, max / 127, plus float16).
WEIGHT_RTOL = {"float32": 1e-5, "float16": 1e-3, "int8": 0.5 / 127 + 1e-3}
#: Palettized tensors: least signal-to-quantisation-noise ratio (dB) against their source.
PALETTE_MIN_SQNR_DB = {"palettize6": 25.0, "palettize4": 15.0}


class CoreMLVerificationError(AssertionError):
    """A saved package does not have the expected spec, weights or outputs."""


def _coremltools():
    try:
        import coremltools
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("Core ML export needs coremltools: pip install "
                          "'keras-swiftformer[coreml]'") from err
    return coremltools


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_options(precision, compression, classifier=True, class_labels=None, classes=None):
    """Raises ValueError for an unknown precision or compression, or labels that do not fit."""
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("compression", compression, COMPRESSIONS)
    if classifier and class_labels is None and classes not in (None, 1000):
        raise ValueError(f"The model has {classes} classes: give class_labels for a classifier, "
                         "or classifier=False for raw logits")
    if class_labels is not None:
        if classes is not None and len(class_labels) != classes:
            raise ValueError(f"{len(class_labels)} class labels for {classes} classes")
        if len(set(class_labels)) != len(class_labels):
            raise ValueError("class_labels must be unique")


def imagenet_labels():
    """The 1000 ImageNet class names (`keras_swiftformer.imagenet.class_names`), made unique:
    the two names that occur twice ("crane", "maillot") get their synset id appended."""
    from keras_swiftformer.imagenet import class_index, class_names

    names = class_names()
    counts = {name: names.count(name) for name in names}
    return [name if counts[name] == 1 else f"{name} ({synset})"
            for name, (synset, _) in zip(names, class_index())]


# --- the Keras graph that is converted -----------------------------------------------------------

def _layer_or_none(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def logits_graph(model):
    """Splits a SwiftFormer classifier into ``(input, logits, takes_pixels)``: the tensor the
    network body starts from (the output of the ``preprocessing`` layer, if the model has one,
    else the model input), the (B, classes) logits before the ``predictions`` activation, and
    whether the model itself takes RGB pixels in [0, 255]."""
    if len(model.inputs) != 1 or model.inputs[0].shape[-1] != 3:
        raise ValueError(f"{model.name}: expected one (B, H, W, 3) image input, got "
                         f"{[tuple(t.shape) for t in model.inputs]}")
    predictions = _layer_or_none(model, "predictions")
    logits = predictions.input if predictions is not None else model.outputs[0]
    if len(model.outputs) != 1 or len(logits.shape) != 2:
        raise ValueError(f"{model.name}: expected a classifier with (B, classes) logits "
                         "(include_top=True)")
    preprocessing = _layer_or_none(model, "preprocessing")
    if preprocessing is not None:
        _check_imagenet_normalisation(model, preprocessing)
    start = preprocessing.output if preprocessing is not None else model.inputs[0]
    return start, logits, preprocessing is not None


def _check_imagenet_normalisation(model, layer):
    """The ``preprocessing`` layer must be `keras_swiftformer.model.preprocessing`, which the
    package replaces; anything else (a folded inference graph's pixel centring) would be
    normalised twice."""
    import keras

    from keras_swiftformer.model import IMAGENET_MEAN, IMAGENET_STD

    std, mean = np.asarray(IMAGENET_STD), np.asarray(IMAGENET_MEAN)
    if not (isinstance(layer, keras.layers.Rescaling)
            and np.allclose(np.broadcast_to(layer.scale, (3,)), 1 / (255 * std), rtol=1e-6)
            and np.allclose(np.broadcast_to(layer.offset, (3,)), -mean / std, rtol=1e-6)):
        raise ValueError(
            f"{model.name}: its 'preprocessing' layer is not the ImageNet normalisation that the "
            "Core ML image input replaces. Export the SwiftFormer model itself (with or without "
            "include_preprocessing), not a folded inference graph: coremltools folds BatchNorm "
            "and layer scales itself.")


def _image_size(model, image_size):
    static = tuple(model.inputs[0].shape[1:3])
    if image_size is None:
        return static if None not in static else DEFAULT_IMAGE_SIZE
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"image_size must be (height, width) of at least 32, got {image_size}")
    if None not in static and static != size:
        raise ValueError(f"{model.name} takes {static} images; image_size {size} differs")
    return size


def conversion_model(model, image_size=None, classifier=True):
    """The Keras model that is converted: (1, H, W, 3) ``x / 255 - mean`` (what the image
    type's scale and bias give) -> logits or softmax probabilities.

    The input is multiplied by ``1 / std`` per channel (`IMAGENET_STD_LAYER`) and goes to the
    network body; the model's own ``preprocessing`` layer, if any, is left out.

    Args:
        model: a SwiftFormer classifier (any ``include_preprocessing``, any activation).
        image_size: (H, W); default the model's static input size, else 224 x 224.
        classifier: end with a softmax (the classifier's probabilities) instead of logits.
    """
    import keras

    from keras_swiftformer.model import IMAGENET_STD

    start, logits, _ = logits_graph(model)
    height, width = _image_size(model, image_size)
    image = keras.Input((height, width, 3), batch_size=1, name=INPUT_NAME)
    body = keras.Model(start, logits, name=f"{model.name}_body")
    x = keras.layers.Rescaling([1.0 / s for s in IMAGENET_STD], name=IMAGENET_STD_LAYER)(image)
    x = body(x)
    if classifier:
        x = keras.layers.Softmax(name=PROBABILITIES_NAME)(x)
    return keras.Model(image, x, name=model.name)


# --- conversion -------------------------------------------------------------------------------

def _register_erfc():
    """Teaches coremltools 9.0's TensorFlow frontend ``Erfc`` (used by TF's exact GELU).

    ``erfc(c * x) = 1 + erf(-c * x)``; the scalar factors in front of ``x`` are multiplied
    out so that coremltools' ``fuse_gelu_exact`` pass recognises ``0.5 x (1 + erf(x / sqrt 2))``.
    Registered only if coremltools has no ``Erfc`` converter of its own.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import (
        _TF_OPS_REGISTRY,
        register_tf_op,
    )

    if "Erfc" in _TF_OPS_REGISTRY:
        return

    def scalar(var):
        return var.val is not None and np.size(var.val) == 1

    @register_tf_op(tf_alias=["Erfc"])
    def _keras_swiftformer_erfc(context, node):
        root, factor = context[node.inputs[0]], 1.0
        while root.op is not None and root.op.op_type == "mul":
            x, y = root.op.x, root.op.y
            if scalar(y) and not scalar(x):
                factor, root = factor * float(y.val), x
            elif scalar(x) and not scalar(y):
                factor, root = factor * float(x.val), y
            else:
                break
        arg = mb.mul(x=root, y=np.float32(-factor), name=f"{node.name}_arg")
        erf = mb.erf(x=arg, name=f"{node.name}_erf")
        context.add(node.name, mb.add(x=erf, y=np.float32(1.0), name=node.name))


SCALE_SAFE_L2_PASS = "keras_swiftformer::scale_safe_l2_normalize"


def _register_scale_safe_l2_pass():
    """Registers `SCALE_SAFE_L2_PASS`, which makes the L2 normalisations float16-safe.

    ``x * rsqrt(max(sum(x * x), eps))`` (`keras_swiftformer.layers.l2_normalize`) overflows
    float16 once ``||x|| > 256`` (the sum of squares passes 65504): rsqrt(inf) = 0 zeroes the
    vector. Measured on the L1 golden checkpoint and two sample photos: 33 of the 196 query and
    key vectors of the last attention block. The pass
    divides ``x`` by ``max(|x|)`` over the same axes first (``x / ||x||`` does not change), so
    the sum of squares lies in [1, D]. It runs before the float16 cast; float32 programs keep
    the Keras form.
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.helper import block_context_manager
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    if SCALE_SAFE_L2_PASS in PASS_REGISTRY:
        return

    def single_child(var, op_type):
        children = list(var.child_ops)
        return children[0] if len(children) == 1 and children[0].op_type == op_type else None

    def match(rsqrt):
        """rsqrt(max(sum(x * x), c)) used once, by x * rsqrt -> the ops, else None."""
        maximum = rsqrt.x.op
        if maximum is None or maximum.op_type != "maximum" or maximum.y.val is None:
            return None
        reduce = maximum.x.op
        if reduce is None or reduce.op_type != "reduce_sum" or not reduce.keep_dims.val:
            return None
        square = reduce.x.op
        if square is None or square.op_type != "mul" or square.x is not square.y:
            return None
        scale = single_child(rsqrt.outputs[0], "mul")
        x = square.x
        if scale is None or {scale.x, scale.y} != {x, rsqrt.outputs[0]}:
            return None
        return x, square, reduce, maximum, scale

    @register_pass(namespace="keras_swiftformer")
    class scale_safe_l2_normalize(AbstractGraphPass):
        def apply(self, prog):
            for function in prog.functions.values():
                self._apply(function)

        @block_context_manager
        def _apply(self, block):
            for rsqrt in [op for op in block.operations if op.op_type == "rsqrt"]:
                found = match(rsqrt)
                if found is None:
                    continue
                x, square, reduce, maximum, scale = found
                name, axes = rsqrt.name, reduce.axes.val
                peak = mb.reduce_max(x=mb.abs(x=x, before_op=square, name=f"{name}_abs"),
                                     axes=axes, keep_dims=True, before_op=square,
                                     name=f"{name}_peak")
                peak = mb.maximum(x=peak, y=np.float32(2.0**-14), before_op=square,
                                  name=f"{name}_peak_floor")
                y = mb.real_div(x=x, y=peak, before_op=square, name=f"{name}_scaled")
                sum_sq = mb.reduce_sum(x=mb.mul(x=y, y=y, before_op=square, name=f"{name}_sq"),
                                       axes=axes, keep_dims=True, before_op=square,
                                       name=f"{name}_sum")
                sum_sq = mb.maximum(x=sum_sq, y=maximum.y.val, before_op=square,
                                    name=f"{name}_max")
                inverse = mb.rsqrt(x=sum_sq, epsilon=rsqrt.epsilon.val, before_op=square,
                                   name=f"{name}_rsqrt")
                out = mb.mul(x=y, y=inverse, before_op=square, name=f"{name}_normalized")
                block.replace_uses_of_var_after_op(anchor_op=scale, old_var=scale.outputs[0],
                                                   new_var=out)
                block.remove_ops([scale, rsqrt, maximum, reduce, square])


def pass_pipeline(precision):
    """coremltools' default pass pipeline; for float16, with `SCALE_SAFE_L2_PASS` before the
    float16 cast."""
    ct = _coremltools()
    _check_choice("precision", precision, PRECISIONS)
    pipeline = ct.PassPipeline.DEFAULT
    if precision == "float16":
        _register_scale_safe_l2_pass()
        pipeline.insert_pass(pipeline.passes.index("common::dedup_op_and_var_names"),
                             SCALE_SAFE_L2_PASS)
    return pipeline


def _model_metadata(model):
    """Variant and token weighting read from a SwiftFormer model."""
    from keras_swiftformer.layers import AdditiveTokenMixing

    weightings = sorted({layer.token_weighting for layer in model.layers
                         if isinstance(layer, AdditiveTokenMixing)})
    name = model.name
    variant = name.split("_", 1)[1].upper() if name.startswith("swiftformer_") else name
    return {"variant": variant, "token_weighting": ",".join(weightings)}


def _check_tf_keras_is_keras_3():
    """coremltools takes a Keras model only if it is a ``tf.keras.Model``; raises a clear error
    when this process resolved ``tf.keras`` to tf_keras (``TF_USE_LEGACY_KERAS=1``, e.g. set by
    importing tensorflow-model-optimization directly, before `converters.tfmot`)."""
    import keras
    import tensorflow as tf

    if tf.keras.Model is not keras.Model:
        raise RuntimeError(
            "tf.keras is tf_keras (Keras 2) in this process (TF_USE_LEGACY_KERAS="
            f"{os.environ.get('TF_USE_LEGACY_KERAS')!r}), so coremltools cannot take a Keras 3 "
            "model: unset TF_USE_LEGACY_KERAS, and import tensorflow-model-optimization only "
            "through converters.tfmot")


def convert_to_coreml(model, *, precision="float16", classifier=True, class_labels=None,
                      image_size=None, metadata=None):
    """Converts a Keras SwiftFormer classifier to an uncompressed in-memory ``MLModel``.

    Arguments as `export_coreml`. Returns a ``coremltools.models.MLModel`` (ML program,
    iOS 16), with its input ``image``, outputs renamed and metadata set.
    """
    classes = logits_graph(model)[1].shape[-1]
    check_options(precision, None, classifier, class_labels, classes)
    ct = _coremltools()
    from keras_swiftformer.model import IMAGENET_MEAN

    _register_erfc()
    _check_tf_keras_is_keras_3()
    keras_model = conversion_model(model, image_size, classifier)
    height, width = keras_model.inputs[0].shape[1:3]
    labels = None
    if classifier:
        labels = list(class_labels) if class_labels is not None else imagenet_labels()
    mlmodel = ct.convert(
        keras_model,
        source="tensorflow",
        convert_to="mlprogram",
        inputs=[ct.ImageType(name=INPUT_NAME, shape=(1, height, width, 3), scale=PIXEL_SCALE,
                             bias=[-m for m in IMAGENET_MEAN], color_layout=ct.colorlayout.RGB,
                             channel_first=False)],
        classifier_config=ct.ClassifierConfig(labels) if classifier else None,
        compute_precision=(ct.precision.FLOAT16 if precision == "float16"
                           else ct.precision.FLOAT32),
        minimum_deployment_target=ct.target.iOS16,
        pass_pipeline=pass_pipeline(precision),
        skip_model_load=True,
    )
    spec = mlmodel.get_spec()
    tensor_outputs = [o.name for o in spec.description.output
                      if o.type.WhichOneof("Type") in ("multiArrayType", "dictionaryType")]
    new_name = PROBABILITIES_NAME if classifier else LOGITS_NAME
    for old in tensor_outputs:
        ct.utils.rename_feature(spec, old, new_name)
    mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir, skip_model_load=True)
    metadata = dict(metadata or {})
    info = {**_model_metadata(model),
            **{k: v for k, v in metadata.items() if k not in _MODEL_FIELDS}}
    info.update(precision=precision, compression="none", classifier=str(bool(classifier)),
                image_size=f"{height}x{width}", classes=str(classes))
    _set_metadata(mlmodel, info, metadata, classifier)
    return mlmodel


#: `metadata` keys stored in the model's own fields; the others become user metadata.
_MODEL_FIELDS = ("license", "author", "description", "version")


def _set_metadata(mlmodel, info, metadata, classifier):
    from keras_swiftformer import __version__

    mlmodel.author = str(metadata.get("author", "keras-swiftformer"))
    mlmodel.license = str(metadata.get("license", ""))
    mlmodel.version = str(metadata.get("version", __version__))
    mlmodel.short_description = str(metadata.get(
        "description",
        f"SwiftFormer-{info['variant']} ImageNet classifier (Shaker et al., ICCV 2023), "
        f"converted by keras-swiftformer {__version__}."))
    for key, value in info.items():
        mlmodel.user_defined_metadata[METADATA_PREFIX + key] = str(value)
    mlmodel.input_description[INPUT_NAME] = ("RGB image; the program applies the ImageNet "
                                             "mean and std to its [0, 255] pixels")
    if classifier:
        mlmodel.output_description[PROBABILITIES_NAME] = "softmax probability of each class"
        mlmodel.output_description[LABEL_NAME] = "most likely class"
    else:
        mlmodel.output_description[LOGITS_NAME] = "logits (mean of the two heads)"


def kmeans_palette(nbits):
    """A coremltools ``lut_function``: weight -> (palette of ``2**nbits`` values, uint8 indices)
    by optimal 1-D k-means, weighted by how often each value occurs.

    It is coremltools' own k-means palettization, with its bundled ``kmeans1d`` forced for every
    tensor: coremltools' "kmeans" mode takes that path only for float16 tensors of 10,000
    elements or more and needs scikit-learn (not installed with it) below.
    """

    def lut_function(weight):
        from coremltools.models.neural_network.quantization_utils import (
            _get_kmeans_lookup_table_and_weight,
        )

        lut, indices = _get_kmeans_lookup_table_and_weight(nbits, weight, force_kmeans1d=True)
        return lut.astype(weight.dtype), np.asarray(indices, np.uint8).reshape(-1)

    return lut_function


def compress_coreml(mlmodel, compression):
    """Compresses the weights of an ML program: ``"int8"`` (linear symmetric, per output
    channel), ``"palettize6"`` / ``"palettize4"`` (a k-means palette of 64 / 16 values per
    tensor, `kmeans_palette`). Tensors of at most `WEIGHT_THRESHOLD` elements stay as they
    are."""
    _check_choice("compression", compression, COMPRESSIONS)
    if compression is None:
        return mlmodel
    ct = _coremltools()
    import coremltools.optimize.coreml as cto

    if compression == "int8":
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                granularity="per_channel",
                                                weight_threshold=WEIGHT_THRESHOLD)
        compressed = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(op_config))
    else:
        nbits = int(compression[len("palettize"):])
        op_config = cto.OpPalettizerConfig(mode="custom", lut_function=kmeans_palette(nbits),
                                           granularity="per_tensor",
                                           weight_threshold=WEIGHT_THRESHOLD)
        compressed = cto.palettize_weights(mlmodel, cto.OptimizationConfig(op_config))
    spec = compressed.get_spec()
    spec.description.metadata.userDefined[METADATA_PREFIX + "compression"] = compression
    return ct.models.MLModel(spec, weights_dir=compressed.weights_dir, skip_model_load=True)


def save_coreml(mlmodel, path):
    """Saves `mlmodel` to `path` (``.mlpackage``) atomically; returns `path`."""
    path = os.fspath(path)
    if not path.endswith(".mlpackage"):
        raise ValueError(f"A Core ML ML program is saved as a .mlpackage folder, got {path}")
    with atomic_output(path) as tmp:
        mlmodel.save(tmp)
    return path


def export_coreml(model, path, *, precision="float16", compression=None, classifier=True,
                  class_labels=None, image_size=None, metadata=None):
    """Exports a Keras SwiftFormer classifier to a Core ML ``.mlpackage`` (iOS 16+).

    Args:
        model: a SwiftFormer classifier (``include_top=True``; with or without its
            ``preprocessing`` layer and softmax, which are replaced).
        path: output folder, ending in ``.mlpackage``; written atomically.
        precision: compute precision, ``"float16"`` (default) or ``"float32"``.
        compression: None, ``"int8"``, ``"palettize6"`` or ``"palettize4"`` (weights only).
        classifier: outputs ``classLabel`` and ``probabilities`` (a label -> probability
            dictionary); False: one ``logits`` (1, classes) array.
        class_labels: class names; default the ImageNet names for 1000 classes.
        image_size: (H, W) of the image input; default the model's, else 224 x 224.
        metadata: ``license``, ``author``, ``description``, ``version`` and any other keys
            (``source_checkpoint``, ``variant``, ``token_weighting``...), stored as
            ``keras_swiftformer.<key>`` user metadata.

    Returns:
        `path`.
    """
    if not os.fspath(path).endswith(".mlpackage"):
        raise ValueError(f"A Core ML ML program is saved as a .mlpackage folder, got {path}")
    check_options(precision, compression, classifier, class_labels)
    mlmodel = convert_to_coreml(model, precision=precision, classifier=classifier,
                                class_labels=class_labels, image_size=image_size,
                                metadata=metadata)
    return save_coreml(compress_coreml(mlmodel, compression), path)


def export_coreml_formats(model, directory, formats=tuple(COREML_FORMATS), *,
                          name="swiftformer", **options):
    """Exports `model` in several `COREML_FORMATS`, converting once per precision.

    Returns:
        {format: path of ``<directory>/<name>_<format>.mlpackage``}.
    """
    unknown = [f for f in formats if f not in COREML_FORMATS]
    if unknown:
        raise ValueError(f"Unknown Core ML formats {unknown}; known: {list(COREML_FORMATS)}")
    converted, paths = {}, {}
    for fmt in formats:
        precision = COREML_FORMATS[fmt]["precision"]
        if precision not in converted:
            converted[precision] = convert_to_coreml(model, precision=precision, **options)
        mlmodel = compress_coreml(converted[precision], COREML_FORMATS[fmt]["compression"])
        paths[fmt] = save_coreml(mlmodel, os.path.join(directory, f"{name}_{fmt}.mlpackage"))
    return paths


# --- verification -------------------------------------------------------------------------------

def package_size(path):
    """Bytes of all files of a package folder."""
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


_MIL_DTYPE_NAMES = {np.float16: "float16", np.float32: "float32"}


def inspect_coreml(path, program=None):
    """What a saved package holds: inputs, outputs, labels, compute precision, operations,
    metadata and size. `program` is its `converters.mil_eval.MLProgram` if already loaded."""
    from converters.mil_eval import MLProgram

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
        if (op.type in ("const", "cast", "classify") or op.type.startswith("constexpr_")
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


def _fail(problems, what):
    if problems:
        raise CoreMLVerificationError(f"{what}: " + "; ".join(problems))


def check_spec(info, *, precision, compression, classifier, class_labels=None, image_size=None):
    """Checks an `inspect_coreml` summary against the export options; raises
    CoreMLVerificationError listing every difference."""
    from converters.mil_eval import OPS
    from keras_swiftformer.model import IMAGENET_MEAN, IMAGENET_STD

    problems = []
    if info["specification_version"] != SPECIFICATION_VERSION:
        problems.append(f"specification version {info['specification_version']}, expected "
                        f"{SPECIFICATION_VERSION} (iOS 16)")
    image = info["inputs"].get(INPUT_NAME, {})
    if list(info["inputs"]) != [INPUT_NAME] or image.get("type") != "imageType":
        problems.append(f"inputs {info['inputs']}, expected one image {INPUT_NAME!r}")
    elif image["color_space"] != "RGB":
        problems.append(f"image colour space {image['color_space']}, expected RGB")
    elif image_size is not None and (image["height"], image["width"]) != tuple(image_size):
        problems.append(f"image {image['height']}x{image['width']}, expected {image_size}")
    if classifier:
        expected = {LABEL_NAME: "stringType", PROBABILITIES_NAME: "dictionaryType"}
        if (info["predicted_feature"], info["predicted_probabilities"]) != (
                LABEL_NAME, PROBABILITIES_NAME):
            problems.append("classifier outputs not declared as predicted feature/probabilities")
        if info["labels"] is None:
            problems.append("no class labels")
        elif class_labels is not None and info["labels"] != list(class_labels):
            problems.append("class labels differ from the expected ones")
    else:
        expected = {LOGITS_NAME: "multiArrayType"}
        if info["labels"] is not None:
            problems.append("a classify op in a logits program")
    actual = {name: entry["type"] for name, entry in info["outputs"].items()}
    if actual != expected:
        problems.append(f"outputs {actual}, expected {expected}")
    steps = [step for step in info["image_preprocessing"] if step[0] != "cast"][:3]
    expected_steps = [("mul", [PIXEL_SCALE]), ("add", [-m for m in IMAGENET_MEAN]),
                      ("mul", [1 / s for s in IMAGENET_STD])]
    tol = 1e-3 if precision == "float16" else 1e-6  # the 1/std constant is in the precision
    if [t for t, _ in steps] != [t for t, _ in expected_steps] or not all(
            np.allclose(v, e, rtol=tol, atol=0) for (_, v), (_, e) in zip(steps, expected_steps)):
        problems.append(f"image preprocessing {steps}, expected x * 1/255 - mean, then times "
                        "1/std per channel")
    if set(info["compute_dtypes"]) != {precision}:
        problems.append(f"compute dtypes {info['compute_dtypes']}, expected only {precision}")
    constexpr = {None: set(), "int8": {"constexpr_affine_dequantize"},
                 "palettize6": {"constexpr_lut_to_dense"},
                 "palettize4": {"constexpr_lut_to_dense"}}[compression]
    found = {op for op in info["ops"] if op.startswith("constexpr_")}
    if found != constexpr:
        problems.append(f"compressed-weight ops {sorted(found)}, expected {sorted(constexpr)}")
    unknown = set(info["ops"]) - set(OPS) - {"const"} - constexpr
    if unknown:
        problems.append(f"operations the evaluator does not know: {sorted(unknown)}")
    if info["metadata"].get("precision") != precision or info["metadata"].get(
            "compression") != (compression or "none"):
        problems.append(f"metadata {info['metadata']} does not state {precision}/{compression}")
    _fail(problems, "Core ML spec check failed")


# Weight check: the package's constant tensors against the Keras weights they came from. Each
# candidate is (label, form, array, Keras weight paths). Forms: "kernel" (a conv weight, OIHW,
# or a linear weight (out, in)), "matrix" (a matmul's (in, out) operand), "vector" (anything
# else, squeezed to 1-D).

def _affine(layer):
    """(scale, offset) of a per-channel affine inference layer, float64."""
    from keras_swiftformer.layers import LayerScale

    if isinstance(layer, LayerScale):
        gamma = np.asarray(layer.gamma, np.float64)
        return gamma, np.zeros_like(gamma), [layer.gamma.path]
    variables = [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in variables)
    scale = gamma / np.sqrt(var + layer.epsilon)
    return scale, beta - mean * scale, [v.path for v in variables]


def _is_affine(layer):
    import keras

    from keras_swiftformer.layers import LayerScale

    return isinstance(layer, (keras.layers.BatchNormalization, LayerScale))


def _transparent(layer):
    import keras

    from keras_swiftformer.layers import StochasticDepth

    return isinstance(layer, (keras.layers.Dropout, StochasticDepth))


def expected_weights(model):
    """The tensors a Core ML program of `model` may hold: every weight of `model` in Core ML's
    layout, and every fold coremltools may make of a convolution or Dense layer with the
    BatchNorm and layer scales that follow it (each prefix of that chain); plus the constants
    of the image normalisation. Returns a list of (label, form, float64 array, Keras weight
    paths)."""
    import keras

    from keras_swiftformer.layers import AdditiveTokenMixing
    from keras_swiftformer.model import IMAGENET_MEAN, IMAGENET_STD

    consumers = {}
    for layer in model.layers:
        for tensor in keras.tree.flatten(layer.input):
            consumers.setdefault(id(tensor), []).append(layer)
    candidates = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ValueError(f"Nested model {layer.name}: the weight check needs a flat model")
        if _is_affine(layer):
            scale, offset, paths = _affine(layer)
            candidates += [(f"{layer.name} scale", "vector", scale, paths),
                           (f"{layer.name} offset", "vector", offset, paths)]
        elif isinstance(layer, AdditiveTokenMixing):
            if layer.token_weighting == "ones":  # w_g unused: not in the program
                continue
            w_g = np.asarray(layer.w_g, np.float64)
            candidates.append((f"{layer.name}.w_g", "matrix", w_g, [layer.w_g.path]))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                keras.layers.Dense)):
            candidates += _linear_layer_candidates(layer, consumers)
        elif layer.weights:
            raise ValueError(f"No Core ML weight mapping for layer {layer.name} "
                             f"({type(layer).__name__})")
    candidates += [
        ("image bias (-mean)", "vector", -np.asarray(IMAGENET_MEAN, np.float64),
         ["image normalisation"]),
        ("1 / std", "vector", 1.0 / np.asarray(IMAGENET_STD, np.float64),
         ["image normalisation"]),
    ]
    return candidates


def _linear_layer_candidates(layer, consumers):
    """Kernel and bias of a Conv2D, DepthwiseConv2D or Dense layer, folded with each prefix of
    the chain of per-channel affine layers after it."""
    import keras

    kernel = np.asarray(layer.kernel, np.float64)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = kernel.transpose(2, 3, 0, 1).reshape(-1, 1, *kernel.shape[:2])  # (C, 1, kh, kw)
    elif isinstance(layer, keras.layers.Conv2D):
        kernel = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    else:
        kernel = kernel.T  # Dense (in, out) -> a linear op's (out, in)
    bias = (np.asarray(layer.bias, np.float64) if layer.bias is not None
            else np.zeros(kernel.shape[0]))
    paths = [w.path for w in layer.weights]
    chain, tensor = [], layer.output
    while True:
        following = consumers.get(id(tensor), [])
        if len(following) != 1 or not (_is_affine(following[0])
                                        or _transparent(following[0])):
            break
        if _is_affine(following[0]):
            chain.append(following[0])
        tensor = following[0].output
    candidates = []
    scale_total = np.ones(kernel.shape[0])
    for k in range(len(chain) + 1):
        if k:
            scale, offset, more = _affine(chain[k - 1])
            scale_total, bias = scale_total * scale, bias * scale + offset
            paths = paths + more
        label = layer.name + "".join(f" x {c.name}" for c in chain[:k])
        folded = kernel * scale_total.reshape(-1, *([1] * (kernel.ndim - 1)))
        candidates.append((f"{label} kernel", "kernel", folded, paths))
        if isinstance(layer, keras.layers.Dense):  # also a matmul's (in, out) operand
            candidates.append((f"{label} kernel", "matrix", folded.T, paths))
        candidates.append((f"{label} bias", "vector", bias.copy(), paths))
    return candidates


def _package_weights(program):
    """[(description, form, array, compression kind or None)] for every non-scalar float
    constant that an operation of `program` takes."""
    found = []
    for op in program.operations:
        if op.type == "const" or op.type.startswith("constexpr_"):
            continue
        for key, bindings in op.inputs.items():
            for kind, ref in bindings:
                value = program.constants.get(ref) if kind == "name" else ref
                if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.size < 2:
                    continue
                compressed = program.compressed.get(ref, (None,))[0] if kind == "name" else None
                array = value.astype(np.float64)
                if (op.type, key) in (("conv", "weight"), ("linear", "weight")):
                    form = "kernel"
                elif op.type == "matmul" and key == "y":  # (in, out) unless transposed
                    form = "matrix"
                    if bool(program.constant(op, "transpose_y")):
                        array = np.swapaxes(array, -1, -2)
                else:
                    form = "vector"
                    array = array.reshape(-1)
                found.append((f"{op.type} {op.name!r} {key}", form, array, compressed))
    return found


def check_weights(program, model, *, precision, compression):
    """Compares every weight of the package with the Keras weight it came from.

    Each non-scalar float constant of the program must equal a tensor of `expected_weights`
    of the same form and shape: within `WEIGHT_RTOL` of the precision (int8: of the int8
    step), or for palettized tensors with at least `PALETTE_MIN_SQNR_DB`. Every Keras weight
    must be found, alone or in a fold; an all-zero offset or all-one scale may be absent
    (coremltools removes such identity operations).

    Returns:
        {"checked": tensors compared, "max_rel_error": largest error relative to its source's
        largest magnitude (non-palettized), "min_palette_sqnr_db": least SQNR of a palettized
        tensor or None}. Raises CoreMLVerificationError on a mismatch.
    """
    candidates = expected_weights(model)
    by_shape = {}
    for candidate in candidates:
        label, form, array, _ = candidate
        squeezed = np.squeeze(array) if form != "vector" else array
        by_shape.setdefault((form, squeezed.shape), []).append((label, squeezed, candidate))
    problems, used, max_rel, min_sqnr = [], set(), 0.0, None
    package = _package_weights(program)
    for where, form, array, compressed in package:
        array = np.squeeze(array) if form != "vector" else array
        options = by_shape.get((form, array.shape), [])
        palettized = compressed == "constexpr_lut_to_dense"
        best = None
        for label, reference, candidate in options:
            scale = max(float(np.max(np.abs(reference))), 1e-30)
            err = np.abs(array - reference)
            if precision == "float16" and not compressed:
                # Tiny weights (e.g. folds with fresh 1e-5 layer scales) are float16
                # subnormals, whose step (2**-24) is far above 2**-11 of their magnitude.
                err = np.maximum(err - 2.0**-24, 0.0)
            rel = float(np.max(err)) / scale
            sqnr = sqnr_db(reference, array)
            key = -sqnr if palettized else rel
            if best is None or key < best[0]:
                best = (key, rel, sqnr, label, candidate)
        if best is None:
            problems.append(f"{where} {array.shape}: no Keras weight of this shape")
            continue
        _, rel, sqnr, label, candidate = best
        if palettized:
            min_sqnr = sqnr if min_sqnr is None else min(min_sqnr, sqnr)
            if sqnr < PALETTE_MIN_SQNR_DB[compression]:
                problems.append(f"{where}: closest Keras weight {label} at {sqnr:.1f} dB "
                                f"(at least {PALETTE_MIN_SQNR_DB[compression]} dB expected)")
                continue
        else:
            bound = WEIGHT_RTOL["int8" if compressed else precision]
            if rel > bound:
                problems.append(f"{where}: closest Keras weight {label} differs by {rel:.2g} "
                                f"of its magnitude (allowed {bound:.2g})")
                continue
            max_rel = max(max_rel, rel)
        used.add(id(candidate))
    covered = set()
    for candidate in candidates:
        label, _, array, paths = candidate
        identity = np.all(array == 0) or ("scale" in label and np.all(array == 1))
        if id(candidate) in used or identity:
            covered.update(paths)
    all_paths = {p for c in candidates for p in c[3]}
    missing = sorted(all_paths - covered)
    if missing:
        problems.append(f"Keras weights not found in the package ({len(missing)}): "
                        + ", ".join(missing[:12]))
    _fail(problems, "Core ML weight check failed")
    return {"checked": len(package), "max_rel_error": max_rel, "min_palette_sqnr_db": min_sqnr}


def keras_logits(model, images):
    """Logits of `model` (its own normalisation, or `preprocess_input`) for RGB `images`
    (N, H, W, 3) in [0, 255]."""
    import keras

    from keras_swiftformer.imagenet import preprocess_input

    _, logits, takes_pixels = logits_graph(model)
    logit_model = keras.Model(model.inputs, logits)
    x = preprocess_input(images, normalize=not takes_pixels)
    return logit_model.predict(x, verbose=0, batch_size=8)


def run_coreml(program, images):
    """Runs a loaded program on RGB `images` (N, H, W, 3) in [0, 255] with the numpy evaluator.

    Returns:
        (logits (N, classes), probabilities (N, classes) or None, overflows): a classifier's
        logits are the input of its final softmax; overflows is {variable: count} of values
        that exceeded float16's range, summed over the images.
    """
    softmax = [op for op in program.operations if op.type == "softmax"]
    classifier = any(op.type == "classify" for op in program.operations)
    keep = [softmax[-1].input_names("x")[0]] if classifier else []
    logits, probabilities, overflows = [], [], {}
    for image in np.asarray(images, np.float32):
        out = program.run({INPUT_NAME: image.transpose(2, 0, 1)[None]}, keep=keep)
        for name, count in program.overflows.items():
            overflows[name] = overflows.get(name, 0) + count
        if classifier:
            logits.append(out[keep[0]].reshape(-1))
            dictionary = out[PROBABILITIES_NAME]
            probabilities.append(np.array(list(dictionary.values()), np.float32))
        else:
            logits.append(out[LOGITS_NAME].reshape(-1))
    return np.stack(logits), (np.stack(probabilities) if classifier else None), overflows


def verify_coreml(path, model, images, *, rtol=None):
    """Verifies a saved package against the Keras model it was exported from.

    Checks the spec (`check_spec`, options read from the package metadata) and every weight
    (`check_weights`), then runs the program on `images` with the numpy evaluator and compares
    its logits with Keras's.

    Args:
        path: the ``.mlpackage``.
        model: the Keras model given to `export_coreml`.
        images: (N, H, W, 3) RGB in [0, 255] (any floats), H x W the package's image size.
        rtol: if given, the logits' max error relative to max |Keras logits| must be below it.

    Returns:
        {"size_bytes", "spec" (`inspect_coreml`), "weights" (`check_weights`), "logits"
        (`converters.report.fidelity` vs Keras), "float16_overflows" ({variable: values beyond float16's
        range, over all images}), "probabilities" (max abs error, classifiers only)}.
    """
    from converters.mil_eval import MLProgram

    program = MLProgram(path)
    info = inspect_coreml(path, program)
    meta = info["metadata"]
    precision, compression = meta.get("precision"), meta.get("compression")
    compression = None if compression == "none" else compression
    classifier = meta.get("classifier") == "True"
    images = np.asarray(images, np.float32)
    image = info["inputs"].get(INPUT_NAME, {})
    if images.ndim != 4 or images.shape[1:] != (image.get("height"), image.get("width"), 3):
        raise ValueError(f"images must be (N, {image.get('height')}, {image.get('width')}, 3) "
                         f"RGB, got {images.shape}")
    labels = None
    if classifier and logits_graph(model)[1].shape[-1] == 1000:
        labels = imagenet_labels()
    check_spec(info, precision=precision, compression=compression, classifier=classifier,
               class_labels=labels)
    weights = check_weights(program, model, precision=precision, compression=compression)
    reference = keras_logits(model, images)
    logits, probabilities, overflows = run_coreml(program, images)
    report = {"size_bytes": info["size_bytes"], "spec": info, "weights": weights,
              "logits": fidelity(reference, logits), "float16_overflows": overflows}
    if probabilities is not None:
        exp = np.exp(reference - reference.max(-1, keepdims=True))
        report["probabilities"] = {"max_abs": float(np.max(np.abs(
            probabilities - exp / exp.sum(-1, keepdims=True))))}
    if rtol is not None and report["logits"]["max_rel_error"] > rtol:
        raise CoreMLVerificationError(
            f"{path}: logits differ from Keras by {report['logits']['max_rel_error']:.3g} of their "
            f"magnitude, more than {rtol:.3g}")
    return report
