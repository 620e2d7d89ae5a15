"""Core ML export settings and the names a package's features carry.

The formats and compressions themselves are the typed records of `converters.formats`
(`CoreMLRecipe`, `CoreMLCompression`, `COMPRESSIONS`). Pure Python: `android_bench` and the
pipeline read them without importing coremltools or TensorFlow.
"""

from converters.formats import COMPRESSIONS, CoreMLCompression

PRECISIONS = ("float16", "float32")

#: Core ML specification version of the minimum deployment target: iOS 16 / macOS 13, iOS 17 /
#: macOS 14 for int8 activations (the ``quantize`` / ``dequantize`` ops), iOS 18 / macOS 15.
SPECIFICATION_VERSIONS = {"iOS16": 7, "iOS17": 8, "iOS18": 9}
DEFAULT_IMAGE_SIZE = (224, 224)
INPUT_NAME = "image"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"
LABEL_NAME = "classLabel"
METADATA_PREFIX = "keras_swiftformer."


class CoreMLVerificationError(AssertionError):
    """A saved package does not have the expected spec, weights or outputs."""


def compression_of(compression):
    """The `converters.formats.CoreMLCompression` of a record, its name (a package's metadata
    says it) or None (no compression: None); ValueError naming the known ones."""
    if compression is None or isinstance(compression, CoreMLCompression):
        return compression
    if compression not in COMPRESSIONS:
        raise ValueError(f"Unknown Core ML compression {compression!r}: choose from "
                         f"{', '.join(COMPRESSIONS)} or None")
    return COMPRESSIONS[compression]


def deployment_target(compression):
    """The minimum OS of a compression (a record, a name or None): "iOS16" without one."""
    compression = compression_of(compression)
    return compression.minimum_os if compression is not None else "iOS16"


def coremltools():
    """The coremltools module, or an ImportError saying how to install it."""
    try:
        import coremltools as ct
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("Core ML export needs coremltools: pip install "
                          "'keras-swiftformer[coreml]'") from err
    return ct


def check_choice(name, value, choices):
    """Raises ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_options(precision, compression, classifier=True, class_labels=None, classes=None):
    """Raises ValueError for an unknown precision or compression, or labels that do not fit."""
    check_choice("precision", precision, PRECISIONS)
    compression_of(compression)
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
