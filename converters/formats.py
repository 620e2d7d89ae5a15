"""The export formats: one record per format, the only place that says what a format is.

The pipeline, ``swiftformer-convert --help``, `converters.litert.tflite`, `converters.coreml` and
`android_bench` read this table; the README's formats table is `markdown_table()`. Names are
unique across runtimes, so a name alone says which file it is. Pure Python: importing it loads
neither TensorFlow nor coremltools.

The compressed formats of `converters.compress` (``qat_int8``, ``pruned50_float32``...) are made
by fine-tuning, not chosen with ``--formats``; `compressed_format` recognises their names.
"""

import dataclasses
import os
import re

LITERT, COREML = "litert", "coreml"
SUFFIXES = {LITERT: ".tflite", COREML: ".mlpackage"}


@dataclasses.dataclass(frozen=True)
class Format:
    """What one export format is.

    Attributes:
        name: the format's name in ``--formats``, file names and reports.
        runtime: "litert" (a ``.tflite`` file) or "coreml" (an ``.mlpackage``).
        weights: how weights are stored ("float32", "float16", "int8", "palette6", ...).
        activations: what the inner computation runs in ("float32", "int8", "int8+float",
            "int16", ...).
        io: the input and output type ("float32", "uint8").
        calibrated: needs calibration images (activation ranges).
        graph: the graph it is converted from: "folded" (`converters.inference_graph`) or
            "keras" (the model as built).
        float_ops: keeps the graph's float ops in float (int8 only where it pays).
        description: one line for the help and the README.
        coreml: `converters.coreml.export_coreml` options (Core ML formats only).
    """

    name: str
    runtime: str
    weights: str
    activations: str
    io: str
    calibrated: bool
    description: str
    graph: str = "folded"
    float_ops: bool = False
    coreml: dict = None

    @property
    def suffix(self):
        return SUFFIXES[self.runtime]

    @property
    def integer_io(self):
        return self.io != "float32"


def _coreml(name, precision, compression, weights, activations, description):
    return Format(f"coreml_{name}", COREML, weights, activations, "float32",
                  compression == "w8a8", description,
                  coreml={"precision": precision, "compression": compression})


FORMATS = {f.name: f for f in (
    Format("float32", LITERT, "float32", "float32", "float32", False,
           "float weights and activations: the reference file"),
    Format("float16", LITERT, "float16", "float32", "float32", False,
           "float16 weights, dequantised at load; half the size, float speed"),
    Format("dynamic_int8", LITERT, "int8", "float32", "float32", False,
           "int8 weights, float activations (dynamic-range quantisation)"),
    Format("int8", LITERT, "int8", "int8+float", "float32", True,
           "int8 convolutions and projections, float elsewhere, float32 I/O: the int8 file "
           "MediaPipe opens", float_ops=True),
    Format("uint8", LITERT, "int8", "int8+float", "uint8", True,
           "as int8 with uint8 input and output (camera pixels as they are)", float_ops=True),
    Format("int8_float_io", LITERT, "int8", "int8", "float32", True,
           "integer everywhere inside, float32 I/O (integer-only accelerators)"),
    Format("int16x8", LITERT, "int8", "int16", "float32", True,
           "16-bit activations, 8-bit weights (LiteRT reference kernels: slow on CPU)",
           graph="keras"),
    _coreml("float32", "float32", None, "float32", "float32", "Core ML program, float32"),
    _coreml("float16", "float16", None, "float16", "float16",
            "Core ML program, float16 (what the Neural Engine runs)"),
    _coreml("int8", "float16", "int8", "int8", "float16", "Core ML, int8 weights"),
    _coreml("palettize6", "float16", "palettize6", "palette6", "float16",
            "Core ML, 6-bit k-means palettes of the weights"),
    _coreml("palettize4", "float16", "palettize4", "palette4", "float16",
            "Core ML, 4-bit k-means palettes of the weights"),
    _coreml("w8a8", "float16", "w8a8", "int8", "int8", "Core ML, int8 weights and calibrated "
            "int8 activations (iOS 17)"),
)}
LITERT_FORMATS = tuple(n for n, f in FORMATS.items() if f.runtime == LITERT)
COREML_FORMATS = tuple(n for n, f in FORMATS.items() if f.runtime == COREML)

#: Names of the formats `converters.compress` makes (`compressed_format`).
_COMPRESSED = re.compile(r"^(qat_int8|pruned(\d+|2of4)_(float32|pqat_int8)|"
                         r"clustered(\d+)_(float32|cqat_int8))$")


def get_format(name):
    """The `Format` of `name`; ValueError listing the known names."""
    if isinstance(name, Format):
        return name
    if name not in FORMATS:
        raise ValueError(f"Unknown format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]


def compressed_format(name):
    """The `Format` of a `converters.compress` name (``qat_int8``, ``pruned2of4_float32``,
    ``clustered16_cqat_int8``...), or None."""
    if not _COMPRESSED.match(str(name)):
        return None
    integer = name.endswith("int8")
    return Format(name, LITERT, "int8" if integer else "float32",
                  "int8+float" if integer else "float32", "float32", False,
                  "fine-tuned by converters.compress", float_ops=integer)


def parse_formats(formats, known=tuple(FORMATS)):
    """"all", a comma-separated string or a list -> list of format names (each once).

    Raises:
        ValueError: an unknown name (all are listed) or no name at all.
    """
    if isinstance(formats, str):
        formats = list(known) if formats == "all" else [f.strip() for f in formats.split(",")]
    formats = [f for f in formats if f]
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise ValueError(f"Unknown format(s) {unknown or formats}; known: {', '.join(known)} "
                         "(or 'all')")
    return list(dict.fromkeys(formats))


def file_name(stem, fmt):
    """The file a format is written to: ``{stem}_{format}{suffix}``
    (``swiftformer_xs_int8.tflite``, ``swiftformer_xs_coreml_float16.mlpackage``)."""
    fmt = get_format(fmt) if not isinstance(fmt, Format) else fmt
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
