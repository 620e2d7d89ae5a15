"""Random weights at a trained model's scale, for tests and benchmarks without real weights.

A fresh model has layer scales of 1e-5, so its attention and MLP branches barely touch the
output, and BatchNorm statistics of 0 / 1, so folding them changes nothing: checks on it prove
little. `realistic_weights` draws every weight as the reference fixtures were drawn (see the
fixtures' README): conv and dense kernels N(0, 1/fan_in), biases N(0, 0.05²), BatchNorm gamma
U(0.5, 1.5), beta N(0, 0.05²), mean N(0, 0.1²), variance U(0.5, 2), layer scales U(0.5, 1),
``w_g`` N(0, 1).
"""

import numpy as np


def realistic_weights(model, seed=0):
    """Draws every weight of `model` (a SwiftFormer model) in place; returns `model`.

    Raises:
        ValueError: a weight with no rule (not a SwiftFormer layer).
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kind = type(layer).__name__
        values = []
        for variable in layer.weights:
            name, shape = variable.path.rsplit("/", 1)[-1], tuple(variable.shape)
            if name == "kernel":
                fan_in = int(np.prod(shape[:2] if kind == "DepthwiseConv2D" else shape[:-1]))
                values.append(rng.normal(0, fan_in**-0.5, shape))
            elif name in ("bias", "beta"):
                values.append(rng.normal(0, 0.05, shape))
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.0 if kind == "LayerScale" else 1.5, shape))
            elif name == "moving_mean":
                values.append(rng.normal(0, 0.1, shape))
            elif name == "moving_variance":
                values.append(rng.uniform(0.5, 2.0, shape))
            elif name == "w_g":
                values.append(rng.normal(0, 1.0, shape))
            else:
                raise ValueError(f"No rule for weight {variable.path}")
        if values:
            layer.set_weights([v.astype(np.float32) for v in values])
    return model
