"""Which model a benchmarked file is: its SwiftFormer variant and export format, and the
paper's numbers for that variant (the x axis of the plots).

A model is named on the command line either by its path alone, when the file name says it
(``swiftformer_xs_int8.tflite``, as `converters.formats.file_name` writes them, or
``l1/float16.tflite``), or explicitly as ``VARIANT/FORMAT=PATH`` (``XS/int8=models/a.tflite``).
"""

import os
import re

from converters.formats import format_of_file
from keras_swiftformer.config import MODEL_CONFIGS

#: Variants in the paper's order (smallest first).
VARIANT_ORDER = tuple(MODEL_CONFIGS)


def guess_variant_and_format(path):
    """(variant or None, format or None) read from the file name and its folder names: the
    format a name ends with (`converters.formats.format_of_file`), the variant a name token.

    >>> guess_variant_and_format("converted/swiftformer_l1_int8_float_io.tflite")
    ('L1', 'int8_float_io')
    """
    fmt = format_of_file(path)
    parts = [p.lower() for p in os.path.normpath(os.fspath(path)).split(os.sep)[-3:]]
    name = re.sub(r"\.(tflite|mlpackage|mlmodelc|mlmodel)$", "", "/".join(parts))
    if fmt is not None:
        name = name[: -len(fmt)]
    tokens = re.split(r"[^a-z0-9]+", name)
    variants = [v for v in VARIANT_ORDER if v.lower() in tokens]
    return (variants[0] if len(variants) == 1 else None), fmt


#: A LiteRT flatbuffer's file identifier, at bytes 4-8 (``schema.fbs``: file_identifier).
LITERT_IDENTIFIER = b"TFL3"


def check_litert_file(path):
    """Raises ValueError unless `path` is a LiteRT model file (by its content, not its name):
    a missing path, a folder (a Core ML ``.mlpackage``), any other file."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a LiteRT model: give a .tflite file (Core ML "
                         "packages run in the iOS app, see the README)")
    if not os.path.isfile(path):
        raise ValueError(f"No such model file: {path}: give the path of a .tflite file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != LITERT_IDENTIFIER:
        raise ValueError(f"{path} is not a LiteRT model (no TFL3 identifier): give a .tflite "
                         "file, e.g. one swiftformer-convert wrote")


def parse_model_spec(spec):
    """``PATH`` or ``VARIANT/FORMAT=PATH`` -> {"path", "variant", "format"}.

    Raises:
        ValueError: the file does not exist or is not a LiteRT model, or the variant is
            unknown.
    """
    spec = os.fspath(spec)
    variant = fmt = None
    if "=" in spec and not os.path.exists(spec):
        label, spec = spec.split("=", 1)
        variant, _, fmt = label.partition("/")
        variant, fmt = variant.strip() or None, fmt.strip() or None
    check_litert_file(spec)
    guessed_variant, guessed_format = guess_variant_and_format(spec)
    variant = variant or guessed_variant
    if variant is not None:
        variant = variant.upper()
        if variant not in MODEL_CONFIGS:
            raise ValueError(f"Unknown SwiftFormer variant {variant!r} for {spec}; known: "
                             f"{', '.join(VARIANT_ORDER)}")
    return {"path": spec, "variant": variant, "format": fmt or guessed_format}


def paper_value(variant, key):
    """The paper's `key` ("gmacs", "top1", "params_m", "iphone_ms") for `variant`, or None."""
    config = MODEL_CONFIGS.get(str(variant).upper()) if variant else None
    return None if config is None else config[key]
