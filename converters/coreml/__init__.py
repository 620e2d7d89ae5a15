"""Keras SwiftFormer -> Core ML ML program (``.mlpackage``) for iPhone, and its verification on
Linux, where Core ML cannot run.

Modules by concern:

- `converters.coreml.formats`: export settings, feature names (pure Python).
- `converters.coreml.graph`: the MIL program written from the folded inference graph.
- `converters.coreml.export`: conversion, metadata, saving (`export_coreml`).
- `converters.coreml.compression`: int8 weights, k-means palettes, W8A8.
- `converters.coreml.inspection`: what a package holds; `op_histogram`.
- `converters.coreml.verification`: spec, weight and numeric checks (`verify_coreml`).
- `converters.coreml.mil_eval`: the numpy evaluator of ML programs.
- `converters.coreml.target`: the `converters.targets` target of this runtime.

Importing this package imports neither coremltools nor TensorFlow; the functions below are
loaded from their modules on first use.
"""

import importlib

from converters.coreml.formats import (
    COMPRESSIONS,
    PRECISIONS,
    CoreMLVerificationError,
    check_options,
    compression_of,
    imagenet_labels,
)

_LAZY = {
    "export": ("convert_to_coreml", "export_coreml", "export_coreml_formats", "save_coreml"),
    "compression": ("activation_ranges", "compress_coreml", "kmeans_palette",
                    "activation_pipeline"),
    "graph": ("build_program", "coreml_graph"),
    "inspection": ("inspect_coreml", "op_histogram", "op_summary", "package_size"),
    "verification": ("check_spec", "check_weights", "expected_weights", "keras_logits",
                     "run_coreml", "verify_coreml"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["COMPRESSIONS", "PRECISIONS", "CoreMLVerificationError", "check_options",
           "compression_of", "imagenet_labels", *sorted(_MODULE_OF)]


def __getattr__(name):
    if name in _MODULE_OF:
        module = importlib.import_module(f"converters.coreml.{_MODULE_OF[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'converters.coreml' has no attribute {name!r}")
