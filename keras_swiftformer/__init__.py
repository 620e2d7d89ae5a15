"""SwiftFormer in Keras 3: layers, `keras.applications`-style builders and ImageNet helpers."""

import importlib

#: Public name -> the module it lives in, imported on first use so that ``import
#: keras_swiftformer`` (and every command's ``--help``) loads no Keras or TensorFlow. Code that
#: loads a ``.keras`` file imports `keras_swiftformer.layers` to register the custom layers.
_LAZY = {"MODEL_CONFIGS": "config", "SwiftFormerConfig": "config",
         "TOKEN_WEIGHTINGS": "layers", "AdditiveTokenMixing": "layers", "LayerScale": "layers",
         "StochasticDepth": "layers", "SwiftFormer": "model", "SwiftFormerBackbone": "model",
         "SwiftFormerL1": "model", "SwiftFormerL3": "model", "SwiftFormerS": "model",
         "SwiftFormerXS": "model"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"keras_swiftformer.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'keras_swiftformer' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "MODEL_CONFIGS",
    "TOKEN_WEIGHTINGS",
    "AdditiveTokenMixing",
    "LayerScale",
    "StochasticDepth",
    "SwiftFormer",
    "SwiftFormerConfig",
    "SwiftFormerBackbone",
    "SwiftFormerL1",
    "SwiftFormerL3",
    "SwiftFormerS",
    "SwiftFormerXS",
]
