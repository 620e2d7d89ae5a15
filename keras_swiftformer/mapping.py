"""The name table between canonical (timm-layout) PyTorch tensors and Keras weights.

Keras layers are named after timm's module paths (`keras_swiftformer.config.layer_name`: ``.``
written as ``-``), so a Keras weight ``<layer name>/<weight name>`` is the canonical tensor
``<module path>.<suffix>`` with the suffix
and the layout change given by `PARAMETERS`, keyed by the layer's class. Every Keras weight must
be assigned and every tensor used: a difference is an error that lists the keys.
"""

import numpy as np

from keras_swiftformer.checkpoints import CheckpointError
from keras_swiftformer.config import module_path

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


def load_tensors(model, tensors, new_head=False, source="checkpoint"):
    """Assigns canonical `tensors` to `model`'s weights, checking that they match exactly.

    Args:
        new_head: leave the model's heads as initialised and accept unused head tensors
            (fine-tuning with another class count).
        source: name of the checkpoint, for error messages.

    Raises:
        CheckpointError: keys missing from `tensors`, tensors the model has no place for, or a
        shape that differs; the message lists them.
    """
    table = [(k, v, t) for k, v, t in weight_table(model) if not (new_head and _is_head(k))]
    expected = {k for k, _, _ in table}
    has_head = any(_is_head(k) for k, _, _ in weight_table(model))
    missing = expected - set(tensors)
    unexpected = {
        k for k in set(tensors) - expected if not (_is_head(k) and (new_head or not has_head))
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


#: Weights named differently by the two Keras versions: tf_keras name -> Keras 3 name.
WEIGHT_ALIASES = {"depthwise_kernel": "kernel"}


def _weight_name(variable):
    """'stem-0/kernel:0' or 'kernel' -> 'kernel' (Keras 3's name for aliases)."""
    name = variable.name.split(":")[0].split("/")[-1]
    return WEIGHT_ALIASES.get(name, name)


def _layers_with_weights(model, skip=()):
    """{layer name: layer} of the layers that hold weights, except `skip`; a wrapper (TFMOT's
    QAT, pruning, clustering) counts as the layer it wraps (its own variables are not model
    weights)."""
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.weights and inner.name not in skip:
            found[inner.name] = inner
    return found


def copy_weights(source, target, skip=(), read=None):
    """Copies every weight of `source` into `target`, layer by layer (matched by name), each
    layer's weights by order, checking the layer sets, counts, names and shapes first.

    Works between models of the same architecture in Keras 3 or tf_keras, wrapped or not.

    Args:
        skip: names of layers left as they are in `target` (new heads).
        read: variable -> NumPy array (default ``keras.ops.convert_to_numpy``); training passes
            one that reads variables replicated across processes.

    Returns:
        Number of arrays copied.

    Raises:
        CheckpointError: the layers or weights do not correspond; nothing is copied.
    """
    import keras

    read = read or keras.ops.convert_to_numpy
    src, dst = _layers_with_weights(source, skip), _layers_with_weights(target, skip)
    if set(src) != set(dst):
        raise CheckpointError(f"Layers with weights differ: only in {source.name}: "
                              f"{sorted(set(src) - set(dst))[:8]}, only in {target.name}: "
                              f"{sorted(set(dst) - set(src))[:8]}")
    pairs = []
    for name, layer in src.items():
        a, b = layer.weights, dst[name].weights
        if len(a) != len(b):
            raise CheckpointError(f"Layer {name}: {len(a)} weights in {source.name}, {len(b)} "
                                  f"in {target.name}")
        for x, y in zip(a, b):
            if _weight_name(x) != _weight_name(y) or tuple(x.shape) != tuple(y.shape):
                raise CheckpointError(
                    f"Layer {name}: weight {_weight_name(x)} {tuple(x.shape)} does not match "
                    f"{_weight_name(y)} {tuple(y.shape)}")
            pairs.append((x, y))
    for x, y in pairs:
        y.assign(np.asarray(read(x)))
    return len(pairs)
