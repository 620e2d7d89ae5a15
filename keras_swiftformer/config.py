"""The model contract: the variant table, PyTorch's constants, the layer names, and
`SwiftFormerConfig`, the one object a built model, a ``.keras`` file and a checkpoint all answer
with.

Layer names mirror timm's module paths with ``-`` for ``.`` (``stem-0``,
``stages-1-downsample-proj``, ``stages-2-blocks-5-attn-to_query``, ``head_dist``...); this module
defines them (`model.py` builds with them) and is the only place that reads them back
(`SwiftFormerConfig.from_model`). Everything downstream (folding, export, training, the pipeline,
the backbone) asks the config for roles instead of parsing names.
"""

import dataclasses
import re

#: Depths and widths of the four stages, and what the paper reports (ImageNet-1k, 224x224):
#: top-1 %, parameters (millions, both heads), GMACs, iPhone 14 latency (ms).
MODEL_CONFIGS = {
    "XS": dict(depths=(3, 3, 6, 4), widths=(48, 56, 112, 220),
               top1=75.7, params_m=3.5, gmacs=0.6, iphone_ms=0.7),
    "S": dict(depths=(3, 3, 9, 6), widths=(48, 64, 168, 224),
              top1=78.5, params_m=6.1, gmacs=1.0, iphone_ms=0.8),
    "L1": dict(depths=(4, 3, 10, 5), widths=(48, 96, 192, 384),
               top1=80.9, params_m=12.1, gmacs=1.6, iphone_ms=1.1),
    "L3": dict(depths=(4, 4, 12, 6), widths=(64, 128, 320, 512),
               top1=83.0, params_m=28.5, gmacs=4.0, iphone_ms=1.9),
}

# PyTorch's constants, stated once.
BN_EPSILON = 1e-5  # nn.BatchNorm2d default
BN_MOMENTUM = 0.9  # = 1 - PyTorch's momentum 0.1
MLP_RATIO = 4
#: The input sides a model may be built, trained or exported at: below 32 four stride-2 stages
#: leave no pixels; above 4096 a size is a typo, not an image (memory grows with its square).
INPUT_SIDES = (32, 4096)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Role layer names (the rest are `block`, `downsample` and their sub-paths).
PREPROCESSING = "preprocessing"
STEM = ("stem-0", "stem-1", "stem-2", "stem-3", "stem-4", "stem-5")
NORM = "norm"
POOL = "pool"
HEADS = ("head", "head_dist")
HEAD_AVERAGE = "head_avg"
PREDICTIONS = "predictions"
TOP_KINDS = ("logits", "pool", "none")


def layer_name(path):
    """timm module path -> Keras layer name: ``stages.0.blocks.2.attn`` -> ``stages-0-blocks-2-attn``."""
    return path.replace(".", "-")


def module_path(name):
    """Keras layer name -> timm module path (the inverse of `layer_name`)."""
    return name.replace("-", ".")


def block_name(stage, index):
    """Layer-name prefix of block `index` of `stage`: ``stages-{stage}-blocks-{index}``."""
    return f"stages-{stage}-blocks-{index}"


def downsample_name(stage):
    """Layer-name prefix of the patch embedding that opens `stage` (1..3)."""
    return f"stages-{stage}-downsample"


#: timm module paths of the stem's layers (conv, norm, ReLU, conv, norm, ReLU): the keys of
#: folded weights and checkpoints.
STEM_PATHS = tuple(module_path(name) for name in STEM)


def block_path(stage, index):
    """timm module path of block `index` of `stage`: ``stages.{stage}.blocks.{index}``."""
    return module_path(block_name(stage, index))


def downsample_path(stage):
    """timm module path of the patch embedding that opens `stage` (1..3)."""
    return module_path(downsample_name(stage))


def variant_config(variant):
    """Returns the `MODEL_CONFIGS` entry of `variant` (case-insensitive: "xs", "L1"...)."""
    key = str(variant).upper()
    if key not in MODEL_CONFIGS:
        raise ValueError(f"Unknown SwiftFormer variant {variant!r}; known: {sorted(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[key]


def variant_of(depths, widths):
    """The `MODEL_CONFIGS` key with these depths and widths, or None (a custom configuration)."""
    for name, config in MODEL_CONFIGS.items():
        if tuple(config["depths"]) == tuple(depths) and tuple(config["widths"]) == tuple(widths):
            return name
    return None


@dataclasses.dataclass(frozen=True)
class SwiftFormerConfig:
    """What a SwiftFormer model is, whatever it came from.

    Attributes:
        depths, widths: blocks and channels of the four stages.
        token_weighting: "l2" or "ones" (`keras_swiftformer.layers.TOKEN_WEIGHTINGS`).
        include_preprocessing: the model takes RGB in [0, 255] and normalises inside.
        classes: class count of the heads; None without heads.
        top: "logits" (the two heads, averaged), "pool" (average-pooled features after the final
            norm) or "none" (the last stage's map after the final norm).
        classifier_activation: activation after the averaged heads (None: logits).
        input_shape: (H, W, 3); None entries for any size.
        name: the model's name.
    """

    depths: tuple
    widths: tuple
    token_weighting: str = "l2"
    include_preprocessing: bool = True
    classes: int = 1000
    top: str = "logits"
    classifier_activation: object = "softmax"
    input_shape: tuple = (224, 224, 3)
    name: str = None

    @property
    def variant(self):
        """"XS", "S", "L1", "L3", or None for a custom configuration."""
        return variant_of(self.depths, self.widths)

    @property
    def stage_ends(self):
        """Names of the layers whose outputs end the stages (strides 4, 8, 16, 32): the last
        residual add of each stage's attention block."""
        return tuple(f"{block_name(i, d - 1)}-layer_scale_2-add" for i, d in enumerate(self.depths))

    @property
    def attention_layers(self):
        """Names of the `AdditiveTokenMixing` layers, one per stage."""
        return tuple(f"{block_name(i, d - 1)}-attn" for i, d in enumerate(self.depths))

    @property
    def head_layers(self):
        return HEADS if self.top == "logits" else ()

    def blocks(self, stage):
        """Layer-name prefixes of the blocks of `stage`, in order (the last has attention)."""
        return tuple(block_name(stage, j) for j in range(self.depths[stage]))

    def block_paths(self, stage):
        """timm module paths of the blocks of `stage`, in order (the last has attention)."""
        return tuple(block_path(stage, j) for j in range(self.depths[stage]))

    @classmethod
    def from_model(cls, model):
        """Reads the config of a model built by `keras_swiftformer.SwiftFormer` (or loaded from
        its ``.keras`` file) from its layers; ValueError for other models."""
        layers = {layer.name: layer for layer in model.layers}
        if len(model.inputs) != 1 or isinstance(model.output, dict):
            raise ValueError(f"{model.name}: not a single-input, single-output SwiftFormer model")
        blocks = {}
        for name in layers:
            match = re.match(r"stages-(\d+)-blocks-(\d+)-", name)
            if match:
                stage, index = int(match[1]), int(match[2])
                blocks[stage] = max(blocks.get(stage, 0), index + 1)
        if not blocks or sorted(blocks) != list(range(len(blocks))) or STEM[0] not in layers:
            raise ValueError(f"{model.name} is not a keras_swiftformer.SwiftFormer model")
        depths = tuple(blocks[i] for i in range(len(blocks)))
        try:
            attention = [layers[f"{block_name(i, d - 1)}-attn"] for i, d in enumerate(depths)]
            widths = tuple(int(layer.w_g.shape[0]) for layer in attention)
        except (KeyError, AttributeError) as err:
            raise ValueError(f"{model.name} is not a keras_swiftformer.SwiftFormer model: the "
                             f"last block of a stage has no attention ({err})") from None
        weightings = {layer.token_weighting for layer in attention}
        if len(weightings) != 1:
            raise ValueError(f"{model.name}: mixed token weightings {weightings}")
        classes, activation = None, None
        if HEADS[0] in layers:
            top = "logits"
            classes = int(layers[HEADS[0]].units)
            activation = layers[PREDICTIONS].get_config()["activation"]
            activation = None if activation == "linear" else activation
        elif POOL in layers:
            top = "pool"
        else:
            top = "none"
        return cls(depths, widths, weightings.pop(), PREPROCESSING in layers, classes, top,
                   activation, tuple(model.input_shape[1:]), model.name)

    @classmethod
    def from_checkpoint(cls, checkpoint):
        """The config of a `keras_swiftformer.checkpoints.Checkpoint` (its shapes and format)."""
        return cls(tuple(checkpoint.depths), tuple(checkpoint.widths),
                   checkpoint.token_weighting, classes=checkpoint.classes,
                   top="logits" if checkpoint.classes else "none")

    def builder_kwargs(self):
        """Keyword arguments of `keras_swiftformer.SwiftFormer` that rebuild this model."""
        return dict(depths=self.depths, widths=self.widths, token_weighting=self.token_weighting,
                    include_preprocessing=self.include_preprocessing,
                    include_top=self.top == "logits", pooling="avg" if self.top == "pool" else None,
                    classes=self.classes or 1000, classifier_activation=self.classifier_activation,
                    input_shape=self.input_shape, name=self.name)


@dataclasses.dataclass(frozen=True)
class ParameterRole:
    """How training treats one weight.

    Attributes:
        decay: weight decay applies (the official recipe leaves biases and BatchNorm scales and
            offsets undecayed: they are 1-D in PyTorch; layer scales and ``w_g`` are not).
        clip_axes: the Keras axes adaptive gradient clipping takes one norm over (timm's unit is
            a slice along the PyTorch tensor's first axis): None for the whole tensor, () for
            every element on its own.
    """

    decay: bool
    clip_axes: tuple


def default_clip_axes(shape):
    """Clipping units of a weight of unknown role: whole tensor if 1-D, else per last-axis slice."""
    return None if len(shape) <= 1 else tuple(range(len(shape) - 1))


#: (layer class, weight name) -> clipping axes in the Keras layout.
CLIP_AXES = {
    ("Conv2D", "kernel"): (0, 1, 2),  # (kh, kw, in, out): one norm per output channel
    ("DepthwiseConv2D", "kernel"): (0, 1, 3),  # (kh, kw, c, 1): one per channel
    ("Dense", "kernel"): (0,),  # (in, out): one per output
    ("LayerScale", "gamma"): (),
    ("AdditiveTokenMixing", "w_g"): (),
}


def parameter_roles(model):
    """{variable path: `ParameterRole`} for the trainable weights of `model` (any Keras model;
    layers of other classes get the defaults)."""
    roles = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kind = type(layer).__name__
        for variable in layer.trainable_weights:
            short = variable.path.rsplit("/", 1)[-1]
            decay = not (short in ("bias", "beta")
                         or (kind == "BatchNormalization" and short == "gamma"))
            axes = CLIP_AXES.get((kind, short), default_clip_axes(variable.shape))
            roles.setdefault(variable.path, ParameterRole(decay, axes))
    return roles
