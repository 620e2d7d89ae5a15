"""Test data shared by the Core ML tests and measurements (not a test module)."""

import numpy as np

from keras_swiftformer.model import IMAGENET_MEAN, IMAGENET_STD


def to_pixels(normalised):
    """ImageNet-normalised NHWC -> the RGB [0, 255] values the package's image input takes."""
    return ((normalised * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255).astype(
        np.float32)


def realistic_weights(model, seed=0):
    """Random weights at the fixtures' scale (BatchNorm statistics, layer scales of 0.5-1.5),
    so that every fold changes the numbers. Returns `model`."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        name, shape = w.path.rsplit("/", 1)[-1], w.shape
        if name in ("gamma", "moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, shape))
        elif name in ("beta", "bias", "moving_mean"):
            w.assign(rng.normal(0, 0.05, shape))
        elif name == "kernel":
            w.assign(rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape))
    return model
