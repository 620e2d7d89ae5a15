"""Core ML export options per format and the names a package's features carry.

Pure Python: `android_bench` and the pipeline read the format names from here without importing
coremltools or TensorFlow.
"""

from converters.formats import COREML_FORMATS as _NAMES, FORMATS

#: Format name (`converters.formats`) -> `converters.coreml.export_coreml` options. Compression
#: is applied to the float16 program. ``w8a8``: int8 activations (calibrated) and int8
#: weights, iOS 17+.
COREML_FORMATS = {name: FORMATS[name].coreml for name in _NAMES}
PRECISIONS = ("float16", "float32")
COMPRESSIONS = (None, "int8", "palettize6", "palettize4", "w8a8")
#: Compressions that need calibration images (activation ranges).
CALIBRATED_COMPRESSIONS = ("w8a8",)

#: Core ML specification version of the minimum deployment target: iOS 16 / macOS 13, and
#: iOS 17 / macOS 14 for int8 activations (the ``quantize`` / ``dequantize`` ops).
SPECIFICATION_VERSIONS = {"iOS16": 7, "iOS17": 8}
DEFAULT_IMAGE_SIZE = (224, 224)
INPUT_NAME = "image"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"
LABEL_NAME = "classLabel"
METADATA_PREFIX = "keras_swiftformer."


class CoreMLVerificationError(AssertionError):
    """A saved package does not have the expected spec, weights or outputs."""


def deployment_target(compression):
    """"iOS16", or "iOS17" for a compression that quantises activations."""
    return "iOS17" if compression == "w8a8" else "iOS16"


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
    check_choice("compression", compression, COMPRESSIONS)
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
