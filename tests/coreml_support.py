"""Test data shared by the Core ML tests and measurements (not a test module)."""

import numpy as np

from keras_swiftformer.model import IMAGENET_MEAN, IMAGENET_STD


def to_pixels(normalised):
    """ImageNet-normalised NHWC -> the RGB [0, 255] values the package's image input takes."""
    return ((normalised * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255).astype(
        np.float32)
