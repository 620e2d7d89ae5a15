"""The export formats: one typed record per format, the only place that says what a format is.

The pipeline, ``swiftformer-convert --help``, the targets (`converters.targets`: LiteRT and
Core ML), and `android_bench` read this table; the README's formats table is
`markdown_table()`. A format's settings are typed (`LiteRTRecipe`, `CoreMLRecipe` with a
`CoreMLCompression`): code reads fields, never a format's name. Names are unique across
targets, so a name alone says which file it is. Pure Python: importing it loads neither
TensorFlow nor coremltools.

The fine-tuned formats of `converters.compress` (``qat_int8``, ``pruned2of4_float32``...) are
made by `fine_tuned_format`, not chosen with ``--formats``; `compressed_format` recognises
their names.
"""

import dataclasses
import os
import re

LITERT, COREML = "litert", "coreml"
#: Target (`converters.targets`) -> the suffix of its files; `converters.targets` tests it.
SUFFIXES = {LITERT: ".tflite", COREML: ".mlpackage"}
#: What LiteRT formats may be converted from: the folded inference graph
#: (`converters.inference_graph.for_inference`) or the Keras model as built.
GRAPHS = ("folded", "keras")


@dataclasses.dataclass(frozen=True)
class LiteRTRecipe:
    """How ``TFLiteConverter`` (or the project's calibration) makes a LiteRT file.

    Attributes:
        optimize: ``tf.lite.Optimize.DEFAULT`` (weights quantised or stored in float16).
        weights: "float32", "float16" or "int8".
        activations: the calibrated activation type, "int8" (the project's calibration,
            `converters.calibration`); None: float.
        float_ops: keeps the graph's float ops (`converters.inference_graph.FOLDED_FLOAT_OPS`)
            in float; int8 only where it pays.
        graph: the graph it is converted from (`GRAPHS`).
    """

    optimize: bool = False
    weights: str = "float32"
    activations: str = None
    float_ops: bool = False
    graph: str = "folded"

    @property
    def calibrated(self):
        return self.activations is not None


@dataclasses.dataclass(frozen=True)
class CoreMLCompression:
    """A Core ML weight (and activation) compression, in ``coremltools.optimize.coreml`` terms.

    Attributes:
        name: the id the package's metadata states (``keras_swiftformer.compression``).
        kind: "linear" (linear symmetric int weights), "palettize" (a look-up table of
            ``2**nbits`` values) or "w8a8" (linear int8 weights and calibrated int8
            activations).
        nbits: bits per weight.
        granularity: "per_tensor", "per_channel", "per_grouped_channel" or "per_block".
        group_size: channels per palette (``per_grouped_channel``).
        block_size: weights per scale (``per_block``).
        minimum_os: the oldest iOS the program runs on ("iOS16", "iOS17", "iOS18").
        rounding: "nearest", or "gptq": the kernels rounded on the calibration
            photos (`converters.coreml.calibrated`, the LiteRT int8's GPTQ) when they are given.
        min_weight_sqnr_db: the least SQNR a compressed weight must keep against the folded
            Keras weight (the verifier's floor for look-up tables and GPTQ-moved int8 weights;
            None: the int step).
    """

    name: str
    kind: str
    nbits: int = 8
    granularity: str = "per_channel"
    group_size: int = None
    block_size: int = None
    minimum_os: str = "iOS16"
    rounding: str = "nearest"
    min_weight_sqnr_db: float = None

    @property
    def calibrated(self):
        """Whether activations are quantised (calibration images needed)."""
        return self.kind == "w8a8"

    @property
    def reads_photos(self):
        """Whether calibration photos shape the file (activation ranges or GPTQ rounding)."""
        return self.calibrated or self.rounding == "gptq"


@dataclasses.dataclass(frozen=True)
class CoreMLRecipe:
    """How `converters.coreml.export_coreml` makes an ML program: the compute precision and
    a compression applied to the float16 program (None: none)."""

    precision: str = "float16"
    compression: CoreMLCompression = None

    @property
    def minimum_os(self):
        return self.compression.minimum_os if self.compression else "iOS16"


#: The Core ML compressions, by their metadata id.
COMPRESSIONS = {c.name: c for c in (
    CoreMLCompression("int8", "linear", 8, "per_channel"),
    # GPTQ trades weight error for output error: the floors sit below nearest rounding's
    # palettes, far above a wrong tensor's (about 0 dB)
    CoreMLCompression("palettize6", "palettize", 6, "per_tensor", rounding="gptq",
                      min_weight_sqnr_db=20.0),
    CoreMLCompression("palettize4", "palettize", 4, "per_tensor", rounding="gptq",
                      min_weight_sqnr_db=10.0),
    CoreMLCompression("w8a8", "w8a8", 8, "per_channel", minimum_os="iOS17", rounding="gptq",
                      min_weight_sqnr_db=30.0),
)}


@dataclasses.dataclass(frozen=True)
class Format:
    """What one export format is.

    Attributes:
        name: the format's name in ``--formats``, file names and reports.
        target: the `converters.targets` target that writes it ("litert": a ``.tflite``
            file; "coreml": an ``.mlpackage``).
        weights, activations: how weights are stored and what the inner computation runs in,
            as the formats table says it ("int8+float", "palette6", ...).
        io: the input and output type ("float32", "uint8").
        description: one line for the help and the README.
        litert: the `LiteRTRecipe` (LiteRT formats).
        coreml: the `CoreMLRecipe` (Core ML formats).
    """

    name: str
    target: str
    weights: str
    activations: str
    io: str
    description: str
    litert: LiteRTRecipe = None
    coreml: CoreMLRecipe = None

    @property
    def runtime(self):
        return self.target

    @property
    def suffix(self):
        return SUFFIXES[self.target]

    @property
    def recipe(self):
        return self.litert if self.target == LITERT else self.coreml

    @property
    def calibrated(self):
        """Needs calibration images (activation ranges)."""
        if self.litert is not None:
            return self.litert.calibrated
        return bool(self.coreml.compression and self.coreml.compression.calibrated)

    @property
    def graph(self):
        return self.litert.graph if self.litert is not None else "folded"

    @property
    def float_ops(self):
        return bool(self.litert and self.litert.float_ops)

    @property
    def integer_io(self):
        return self.io != "float32"


def _litert(name, shown, io, description, **recipe):
    """A LiteRT `Format`; `shown`: (weights, activations) as the table says them."""
    return Format(name, LITERT, *shown, io, description, litert=LiteRTRecipe(**recipe))


def _coreml(name, precision, compression, weights, activations, description):
    return Format(f"coreml_{name}", COREML, weights, activations, "float32", description,
                  coreml=CoreMLRecipe(precision, COMPRESSIONS.get(compression)))


FORMATS = {f.name: f for f in (
    _litert("float32", ("float32", "float32"), "float32",
            "float weights and activations: the reference file"),
    _litert("float16", ("float16", "float32"), "float32",
            "float16 weights, dequantised at load; half the size, float speed",
            optimize=True, weights="float16"),
    _litert("dynamic_int8", ("int8", "float32"), "float32",
            "int8 weights, float activations (dynamic-range quantisation)",
            optimize=True, weights="int8"),
    _litert("int8", ("int8", "int8+float"), "float32",
            "int8 convolutions and projections, float elsewhere, float32 I/O: the int8 file "
            "MediaPipe opens", optimize=True, weights="int8", activations="int8",
            float_ops=True),
    _litert("uint8", ("int8", "int8+float"), "uint8",
            "as int8 with uint8 input and output (camera pixels as they are)",
            optimize=True, weights="int8", activations="int8", float_ops=True),
    _litert("int8_float_io", ("int8", "int8"), "float32",
            "integer everywhere inside, float32 I/O (integer-only accelerators)",
            optimize=True, weights="int8", activations="int8"),
    _coreml("float32", "float32", None, "float32", "float32", "Core ML program, float32"),
    _coreml("float16", "float16", None, "float16", "float16",
            "Core ML program, float16 (what the Neural Engine runs)"),
    _coreml("int8", "float16", "int8", "int8", "float16", "Core ML, int8 weights"),
    _coreml("palettize6", "float16", "palettize6", "palette6", "float16",
            "Core ML, 6-bit k-means palettes per tensor, pointwise, stem and "
            "downsampling kernels GPTQ-rounded on the calibration photos"),
    _coreml("palettize4", "float16", "palettize4", "palette4", "float16",
            "Core ML, 4-bit k-means palettes per tensor, pointwise, stem and "
            "downsampling kernels GPTQ-rounded on the calibration photos"),
    _coreml("w8a8", "float16", "w8a8", "int8", "int8+float16", "Core ML, int8 weights GPTQ-"
            "rounded as the palettes'; int8 activations into the convolutions at the LiteRT int8's calibrated "
            "ranges; adds, GELU, depthwise convolutions, residual-branch outputs and the head in "
            "float16 (iOS 17)"),
)}
LITERT_FORMATS = tuple(n for n, f in FORMATS.items() if f.target == LITERT)
COREML_FORMATS = tuple(n for n, f in FORMATS.items() if f.target == COREML)
#: The LiteRT file the others' speed and GPU runs are compared with (float weights and
#: activations), and the post-training file QAT (`converters.compress`) is measured against.
REFERENCE_FORMAT, POST_TRAINING_INT8 = "float32", "int8"
#: The formats of the user's road, converted when ``--formats`` is not given: what to ship for
#: MediaPipe (float32, int8), LiteRT's GPU engine (float16, uint8 camera input) and an iPhone.
ROAD_FORMATS = ("float32", "float16", "int8", "uint8", "coreml_float16")

#: Names `fine_tuned_format` makes.
_COMPRESSED = re.compile(r"^(qat_int8|pruned(\d+|2of4)_(float32|pqat_int8)|"
                         r"clustered(\d+)_(float32|cqat_int8))$")


def get_format(name):
    """The `Format` of `name`; ValueError listing the known names."""
    if isinstance(name, Format):
        return name
    if name not in FORMATS:
        raise ValueError(f"Unknown format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def fine_tuned_format(prune=None, cluster=None, qat=False):
    """The `Format` of a `converters.compress` file: pruned (`prune`: a label such as "2of4"
    or "50"), clustered (`cluster`: values per kernel) and/or quantisation-aware trained.

    ``fine_tuned_format(qat=True)`` is ``qat_int8``; ``fine_tuned_format(prune="2of4",
    qat=True)`` is ``pruned2of4_pqat_int8``; ``fine_tuned_format(cluster=16)``
    ``clustered16_float32``.
    """
    if prune is not None and cluster is not None:
        raise ValueError("a fine-tuned format is pruned or clustered, not both")
    method = (f"pruned{prune}" if prune is not None
              else f"clustered{int(cluster)}" if cluster is not None else None)
    if method is None and not qat:
        raise ValueError("a fine-tuned format needs pruning, clustering or QAT")
    tail = ("pqat_int8" if prune is not None else "cqat_int8") if method and qat else (
        "int8" if qat else "float32")
    name = f"{method}_{tail}" if method else "qat_int8"
    what = "fine-tuned by converters.compress"
    if qat:
        return _litert(name, ("int8", "int8+float"), "float32", what, optimize=True,
                       weights="int8", activations="int8", float_ops=True)
    return _litert(name, ("float32", "float32"), "float32", what)


def compressed_format(name):
    """The `Format` of a `fine_tuned_format` name (``qat_int8``, ``pruned2of4_float32``,
    ``clustered16_cqat_int8``...), or None."""
    match = _COMPRESSED.match(str(name))
    if not match:
        return None
    qat = name.endswith("int8")
    if match.group(2) is not None:
        return fine_tuned_format(prune=match.group(2), qat=qat)
    if match.group(4) is not None:
        return fine_tuned_format(cluster=int(match.group(4)), qat=qat)
    return fine_tuned_format(qat=True)


def parse_formats(formats, known=tuple(FORMATS)):
    """"all", "road", a comma-separated string or a list -> list of format names (each once).

    Raises:
        ValueError: an unknown name (all are listed) or no name at all.
    """
    if isinstance(formats, str):
        formats = (list(known) if formats == "all" else list(ROAD_FORMATS)
                   if formats == "road" else [f.strip() for f in formats.split(",")])
    formats = [f for f in formats if f]
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise ValueError(f"Unknown format(s) {unknown or formats}: choose from "
                         f"{', '.join(known)} (or 'all', or 'road')")
    return list(dict.fromkeys(formats))


def file_name(stem, fmt):
    """The file a format is written to: ``{stem}_{format}{suffix}``
    (``swiftformer_xs_int8.tflite``, ``swiftformer_xs_coreml_float16.mlpackage``)."""
    fmt = get_format(fmt)
    return f"{stem}_{fmt.name}{fmt.suffix}"


def format_of_file(path):
    """The format name a file name ends with (as `file_name` writes it), or the file's own stem
    when that is a format name (``l1/float16.tflite``); None if neither."""
    base = os.path.basename(os.path.normpath(os.fspath(path)))
    stem, suffix = os.path.splitext(base)
    tokens = stem.lower().split("_")
    for start in range(len(tokens)):  # the longest tail of the name that is a format
        name = "_".join(tokens[start:])
        fmt = FORMATS.get(name) or compressed_format(name)
        if fmt is not None and fmt.suffix == suffix:
            return name
    return None


def markdown_table():
    """The formats as a Markdown table (the README's)."""
    lines = ["| format | file | weights | activations | I/O | calibrated | what |",
             "|---|---|---|---|---|---|---|"]
    for f in FORMATS.values():
        lines.append(f"| `{f.name}` | {f.suffix} | {f.weights} | {f.activations} | {f.io} | "
                     f"{'yes' if f.calibrated else 'no'} | {f.description} |")
    return "\n".join(lines)
