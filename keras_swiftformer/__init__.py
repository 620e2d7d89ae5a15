"""SwiftFormer in Keras 3: layers, `keras.applications`-style builders and ImageNet helpers."""

from keras_swiftformer.config import MODEL_CONFIGS, SwiftFormerConfig
from keras_swiftformer.layers import (
    TOKEN_WEIGHTINGS,
    AdditiveTokenMixing,
    LayerScale,
    StochasticDepth,
)
from keras_swiftformer.model import (
    SwiftFormer,
    SwiftFormerBackbone,
    SwiftFormerL1,
    SwiftFormerL3,
    SwiftFormerS,
    SwiftFormerXS,
)

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
