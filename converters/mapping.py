"""The name table between canonical (timm-layout) PyTorch tensors and Keras weights.

Keras layers are named after timm's module paths (`keras_swiftformer.model.layer_name`: ``.``
written as ``-``), so a Keras weight ``<layer name>/<weight name>`` is the canonical tensor
``<module path>.<suffix>`` with the suffix
and the layout change given by `PARAMETERS`, keyed by the layer's class. Every Keras weight must
be assigned and every tensor used: a difference is an error that lists the keys.
"""

import numpy as np

from converters.checkpoints import CheckpointError
from keras_swiftformer.model import module_path

HEAD_LAYERS = ("head", "head_dist")


class Transform:
    """A layout change between PyTorch (``to_torch``) and Keras (``to_keras``)."""

    def __init__(self, name, to_keras, to_torch):
        self.name, self.to_keras, self.to_torch = name, to_keras, to_torch

    def __repr__(self):
        return self.name


SAME = Transform("same", lambda a: a, lambda a: a)
CONV = Transform("OIHW->HWIO", lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))
DEPTHWISE = Transform("C1HW->HWC1", lambda a: a.transpose(2, 3, 0, 1),
                      lambda a: a.transpose(2, 3, 0, 1))
LINEAR = Transform("(out,in)->(in,out)", lambda a: a.T, lambda a: a.T)
CHANNEL_SCALE = Transform("(C,1,1)->(C,)", lambda a: a.reshape(-1), lambda a: a.reshape(-1, 1, 1))

#: Keras layer class -> {Keras weight name: (PyTorch parameter name, transform)}.
PARAMETERS = {
    "Conv2D": {"kernel": ("weight", CONV), "bias": ("bias", SAME)},
    "DepthwiseConv2D": {"kernel": ("weight", DEPTHWISE), "bias": ("bias", SAME)},
    "Dense": {"kernel": ("weight", LINEAR), "bias": ("bias", SAME)},
    "BatchNormalization": {
        "gamma": ("weight", SAME),
        "beta": ("bias", SAME),
        "moving_mean": ("running_mean", SAME),
        "moving_variance": ("running_var", SAME),
    },
    "LayerScale": {"gamma": ("gamma", CHANNEL_SCALE)},
    "AdditiveTokenMixing": {"w_g": ("w_g", SAME)},
}


def weight_table(model):
    """[(canonical key, Keras variable, Transform)] for every weight of `model`."""
    table = []
    for layer in model.layers:
        if not layer.weights:
            continue
        kind = type(layer).__name__
        if kind not in PARAMETERS:
            raise TypeError(f"No weight mapping for layer {layer.name!r} of class {kind}")
        for variable in layer.weights:
            param, transform = PARAMETERS[kind][_short_name(variable)]
            table.append((f"{module_path(layer.name)}.{param}", variable, transform))
    return table


def _short_name(variable):
    return variable.path.rsplit("/", 1)[-1]


def _is_head(key):
    return key.split(".", 1)[0] in HEAD_LAYERS


def _listing(keys, limit=12):
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_tensors(model, tensors, ignore_head=False, source="checkpoint"):
    """Assigns canonical `tensors` to `model`'s weights, checking that they match exactly.

    Args:
        ignore_head: leave the model's heads as initialised and accept unused head tensors
            (fine-tuning with another class count).
        source: name of the checkpoint, for error messages.

    Raises:
        CheckpointError: keys missing from `tensors`, tensors the model has no place for, or a
        shape that differs; the message lists them.
    """
    table = [(k, v, t) for k, v, t in weight_table(model) if not (ignore_head and _is_head(k))]
    expected = {k for k, _, _ in table}
    has_head = any(_is_head(k) for k, _, _ in weight_table(model))
    missing = expected - set(tensors)
    unexpected = {
        k for k in set(tensors) - expected if not (_is_head(k) and (ignore_head or not has_head))
    }
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    values = []
    for key, variable, transform in table:
        if key in missing:
            continue
        value = transform.to_keras(np.asarray(tensors[key]))
        if tuple(value.shape) != tuple(variable.shape):
            problems.append(
                f"{key}: shape {tuple(tensors[key].shape)} gives {tuple(value.shape)} for "
                f"Keras weight {variable.path} of shape {tuple(variable.shape)}"
            )
        values.append((variable, value))
    if problems:
        raise CheckpointError(f"{source} does not fit {model.name}: " + "; ".join(problems))
    for variable, value in values:
        variable.assign(value.astype(variable.dtype))


def model_tensors(model):
    """The inverse of `load_tensors`: {canonical key: float32 array in PyTorch's shape}."""
    return {
        key: np.asarray(transform.to_torch(np.asarray(variable)), dtype=np.float32)
        for key, variable, transform in weight_table(model)
    }
