"""SwiftFormer (Shaker et al., ICCV 2023) in Keras 3, in the `keras.applications` style.

    SwiftFormer: Efficient Additive Attention for Transformer-based Real-time Mobile Vision
    Applications. Abdelrahman Shaker, Muhammad Maaz, Hanoona Rasheed, Salman Khan, Ming-Hsuan
    Yang, Fahad Shahbaz Khan. ICCV 2023. https://arxiv.org/abs/2303.15446

    @InProceedings{Shaker_2023_ICCV,
      author    = {Shaker, Abdelrahman and Maaz, Muhammad and Rasheed, Hanoona and Khan, Salman
                   and Yang, Ming-Hsuan and Khan, Fahad Shahbaz},
      title     = {SwiftFormer: Efficient Additive Attention for Transformer-based Real-time
                   Mobile Vision Applications},
      booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision},
      year      = {2023},
    }

The model is built functionally from `MODEL_CONFIGS`. Every layer is named after the module path
of timm's `swiftformer.py` with ``-`` for ``.`` (``stem-0``, ``stages-1-downsample-proj``,
``stages-2-blocks-5-attn-to_query``, ``head_dist``...; PyTorch-backend parameter names cannot
contain dots), so that mapping PyTorch weights is a table lookup (`keras_swiftformer.mapping`). The
names and the variant table are defined in `keras_swiftformer.config`, which reads a built model
back as a `SwiftFormerConfig`. Tensors are NHWC.
"""

import keras
from keras import layers

from keras_swiftformer.config import (
    BN_EPSILON,
    BN_MOMENTUM,
    HEAD_AVERAGE,
    HEADS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MLP_RATIO,
    MODEL_CONFIGS,
    NORM,
    POOL,
    PREDICTIONS,
    PREPROCESSING,
    STEM,
    SwiftFormerConfig,
    block_name,
    downsample_name,
    variant_config,
)
from keras_swiftformer.layers import (
    AdditiveTokenMixing,
    LayerScale,
    StochasticDepth,
    check_token_weighting,
)

def batch_norm(name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def strided_conv(filters, name):
    """3x3 stride-2 convolution padded by 1 on every side, as PyTorch's ``padding=1``.

    TF's ``"same"`` pads stride-2 convolutions asymmetrically, hence the explicit padding.
    """

    def apply(x):
        x = layers.ZeroPadding2D(1, name=f"{name}-pad")(x)
        return layers.Conv2D(filters, 3, strides=2, padding="valid", name=name)(x)

    return apply


def stem(width):
    """(B, H, W, 3) -> (B, H/4, W/4, width): two conv-BN-ReLU, stride 2 each."""

    def apply(x):
        x = strided_conv(width // 2, STEM[0])(x)
        x = batch_norm(STEM[1])(x)
        x = layers.ReLU(name=STEM[2])(x)
        x = strided_conv(width, STEM[3])(x)
        x = batch_norm(STEM[4])(x)
        return layers.ReLU(name=STEM[5])(x)

    return apply


def downsample(width, name):
    """(B, H, W, C) -> (B, H/2, W/2, width): the patch embedding between stages."""

    def apply(x):
        x = strided_conv(width, f"{name}-proj")(x)
        return batch_norm(f"{name}-norm")(x)

    return apply


def scaled_residual(x, y, name, layer_scale_init, drop_path_rate):
    """``x + drop_path(gamma * y)``; the scale is the layer ``name``."""
    y = LayerScale(layer_scale_init, name=name)(y)
    if drop_path_rate > 0:
        y = StochasticDepth(drop_path_rate, name=f"{name}-drop_path")(y)
    return layers.Add(name=f"{name}-add")([x, y])


def conv_encoder(dim, hidden_dim, name, drop_path_rate=0.0):
    """(B, H, W, dim) -> same: 3x3 depthwise, BN, 1x1 to `hidden_dim`, GELU, 1x1 back, scaled
    residual. The reference's ``ConvEncoder`` (``hidden_dim = 4 * dim``) and the
    ``LocalRepresentation`` of the attention blocks (``hidden_dim = dim``)."""

    def apply(x):
        y = layers.DepthwiseConv2D(3, padding="same", name=f"{name}-dwconv")(x)
        y = batch_norm(f"{name}-norm")(y)
        y = layers.Conv2D(hidden_dim, 1, name=f"{name}-pwconv1")(y)
        y = layers.Activation("gelu", name=f"{name}-act")(y)
        y = layers.Conv2D(dim, 1, name=f"{name}-pwconv2")(y)
        return scaled_residual(x, y, f"{name}-layer_scale", 1.0, drop_path_rate)

    return apply


def efficient_additive_attention(dim, name, token_weighting="l2"):
    """(B, H, W, dim) -> same: ``final(proj(G * k) + q)`` with the global query ``G`` of
    `AdditiveTokenMixing`. The projections are Dense layers over channels (``nn.Linear``)."""

    def apply(x):
        query = layers.Dense(dim, name=f"{name}-to_query")(x)
        key = layers.Dense(dim, name=f"{name}-to_key")(x)
        mixed, query = AdditiveTokenMixing(token_weighting, name=name)([query, key])
        y = layers.Dense(dim, name=f"{name}-proj")(mixed)
        y = layers.Add(name=f"{name}-add")([y, query])
        return layers.Dense(dim, name=f"{name}-final")(y)

    return apply


def mlp(dim, hidden_dim, name, drop_rate=0.0):
    """(B, H, W, dim) -> same: BN, 1x1 conv to `hidden_dim`, GELU, 1x1 conv back."""

    def apply(x):
        x = batch_norm(f"{name}-norm1")(x)
        x = layers.Conv2D(hidden_dim, 1, name=f"{name}-fc1")(x)
        x = layers.Activation("gelu", name=f"{name}-act")(x)
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, name=f"{name}-drop1")(x)
        x = layers.Conv2D(dim, 1, name=f"{name}-fc2")(x)
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, name=f"{name}-drop2")(x)
        return x

    return apply


def swiftformer_encoder(dim, name, token_weighting="l2", drop_path_rate=0.0, drop_rate=0.0,
                        layer_scale_init_value=1e-5):
    """(B, H, W, dim) -> same: local representation, then attention and MLP, each a scaled
    residual (the last block of every stage)."""

    def apply(x):
        x = conv_encoder(dim, dim, f"{name}-local_representation")(x)
        y = efficient_additive_attention(dim, f"{name}-attn", token_weighting)(x)
        x = scaled_residual(x, y, f"{name}-layer_scale_1", layer_scale_init_value, drop_path_rate)
        y = mlp(dim, MLP_RATIO * dim, f"{name}-linear", drop_rate)(x)
        return scaled_residual(x, y, f"{name}-layer_scale_2", layer_scale_init_value,
                               drop_path_rate)

    return apply


def drop_path_rates(depths, drop_path_rate):
    """Per-block stochastic depth rates, rising linearly over all blocks as in the reference."""
    total = sum(depths)
    rates, start = [], 0
    for depth in depths:
        rates.append([drop_path_rate * (start + j) / max(total - 1, 1) for j in range(depth)])
        start += depth
    return rates


def swiftformer_features(x, depths, widths, token_weighting="l2", drop_path_rate=0.0,
                         drop_rate=0.0, layer_scale_init_value=1e-5):
    """(B, H, W, 3) normalised -> list of the four stage outputs (strides 4, 8, 16, 32)."""
    x = stem(widths[0])(x)
    outputs = []
    for i, (depth, width, rates) in enumerate(
        zip(depths, widths, drop_path_rates(depths, drop_path_rate))
    ):
        if i > 0:
            x = downsample(width, downsample_name(i))(x)
        for j in range(depth - 1):
            x = conv_encoder(width, MLP_RATIO * width, block_name(i, j), rates[j])(x)
        x = swiftformer_encoder(width, block_name(i, depth - 1), token_weighting,
                                rates[-1], drop_rate, layer_scale_init_value)(x)
        outputs.append(x)
    return outputs


def preprocessing(name=PREPROCESSING):
    """RGB in [0, 255] -> ImageNet-normalised: ``x / (255 std) - mean / std`` per channel."""
    return layers.Rescaling(
        scale=[1.0 / (255.0 * s) for s in IMAGENET_STD],
        offset=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
        name=name,
    )


def _model_inputs(input_tensor, input_shape):
    if input_shape is None:
        input_shape = (224, 224, 3)
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="image"), None
    if not keras.backend.is_keras_tensor(input_tensor):
        return keras.Input(tensor=input_tensor, shape=input_shape, name="image"), None
    return input_tensor, keras.utils.get_source_inputs(input_tensor)


def SwiftFormer(
    variant=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    token_weighting=None,
    drop_path_rate=0.0,
    drop_rate=0.0,
    layer_scale_init_value=1e-5,
    new_head=False,
    depths=None,
    widths=None,
    name=None,
):
    """Builds a SwiftFormer classifier or feature extractor (NHWC).

    Args:
        variant: "XS", "S", "L1" or "L3"; may be left out when `weights` is a checkpoint (the
            variant is read from its shapes) or when `depths` and `widths` are given.
        include_top: with the two classification heads (``head``, ``head_dist``), whose logits
            are averaged, as the reference does in eval mode.
        weights: None (random), ``"imagenet"`` (timm's hub checkpoints, current official
            weights), ``"imagenet-hf"`` (Hugging Face's earlier ones), ``"hf://ORG/REPO[@REV]"``,
            a SwiftFormer ``.keras`` file, or a path to a checkpoint in any format that
            `keras_swiftformer.checkpoints` reads (official ``.pth``, timm or Hugging Face
            folder / ``.safetensors`` / ``.bin``, Keras ``.weights.h5``).
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: (H, W, 3); default (224, 224, 3). ``(None, None, 3)`` accepts any size; the
            output equals the reference's for every size (PyTorch's padding arithmetic).
        pooling: with ``include_top=False``: None -> (B, H/32, W/32, C) after the final
            BatchNorm; "avg" -> (B, C), the heads' input; "max" -> (B, C).
        classes: number of classes of the heads.
        classifier_activation: activation of the averaged logits ("softmax", None for logits).
        include_preprocessing: the model takes RGB in [0, 255] and applies the ImageNet
            mean/std itself; False: it takes normalised input.
        token_weighting: "l2" or "ones" (see `keras_swiftformer.layers.TOKEN_WEIGHTINGS`);
            default: what the checkpoint in `weights` was trained with, "l2" without one.
        drop_path_rate: stochastic depth of the last block (rising linearly from 0); training.
        drop_rate: dropout in the MLPs and before the heads; training.
        layer_scale_init_value: initial layer scale of the attention blocks.
        new_head: load a checkpoint's body only and start new heads (another class count).
        depths, widths: a custom configuration instead of `variant`.
        name: model name; default ``swiftformer_{variant}``.

    Returns:
        A functional `keras.Model`.
    """
    from keras_swiftformer.weights import resolve_weights

    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    source = resolve_weights(weights, variant) if weights is not None else None
    if variant is None and source is not None and source.config is not None:
        variant = source.variant
        if variant is None and depths is None:
            depths, widths = source.config.depths, source.config.widths
    if depths is None or widths is None:
        if variant is None:
            raise ValueError("Give a variant ('XS', 'S', 'L1', 'L3'), or depths and widths.")
        config = variant_config(variant)
        depths, widths = config["depths"], config["widths"]
        variant = str(variant).upper()
    if token_weighting is None:
        token_weighting = source.token_weighting if source is not None else "l2"
    check_token_weighting(token_weighting)
    if source is not None and include_top and not new_head:
        source.check_classes(classes)

    image, source_inputs = _model_inputs(input_tensor, input_shape)
    x = preprocessing()(image) if include_preprocessing else image
    x = swiftformer_features(x, depths, widths, token_weighting, drop_path_rate, drop_rate,
                             layer_scale_init_value)[-1]
    x = batch_norm(NORM)(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name=POOL)(x)
        if drop_rate > 0:
            x = layers.Dropout(drop_rate, name="head_drop")(x)
        logits = layers.Average(name=HEAD_AVERAGE)(
            [layers.Dense(classes, name=head)(x) for head in HEADS]
        )
        x = layers.Activation(classifier_activation, name=PREDICTIONS)(logits)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name=POOL)(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name=POOL)(x)

    model = keras.Model(source_inputs or image, x,
                        name=name or f"swiftformer_{(variant or 'custom').lower()}")
    if source is not None:
        source.load_into(model, new_head=new_head)
    return model


def SwiftFormerBackbone(variant=None, weights=None, input_shape=(None, None, 3), **kwargs):
    """Multi-scale feature extractor: a model whose output is a dict of the four stage maps
    ``{"P2": (B, H/4, W/4, C0), "P3": stride 8, "P4": stride 16, "P5": stride 32}``, the
    features the official detection and segmentation code takes. `kwargs` go to `SwiftFormer`.
    """
    model = SwiftFormer(variant, include_top=False, weights=weights, input_shape=input_shape,
                        **kwargs)
    ends = SwiftFormerConfig.from_model(model).stage_ends
    outputs = {f"P{stage + 2}": model.get_layer(name).output for stage, name in enumerate(ends)}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_backbone")


def _variant_builder(variant):
    config = MODEL_CONFIGS[variant]

    def builder(include_top=True, weights=None, input_tensor=None, input_shape=None,
                pooling=None, classes=1000, classifier_activation="softmax",
                include_preprocessing=True, token_weighting=None, name=None, **kwargs):
        return SwiftFormer(variant, include_top=include_top, weights=weights,
                           input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                           classes=classes, classifier_activation=classifier_activation,
                           include_preprocessing=include_preprocessing,
                           token_weighting=token_weighting, name=name, **kwargs)

    builder.__name__ = builder.__qualname__ = f"SwiftFormer{variant}"
    builder.__doc__ = (
        f"SwiftFormer-{variant}: depths {config['depths']}, widths {config['widths']}; paper: "
        f"{config['top1']} % ImageNet top-1, {config['params_m']} M parameters, "
        f"{config['gmacs']} GMACs, {config['iphone_ms']} ms on iPhone 14.\n\n"
        "    Arguments as `keras_swiftformer.SwiftFormer` (``variant`` fixed; extra keyword\n"
        "    arguments such as ``drop_path_rate`` or ``new_head`` are passed through).\n"
    )
    return builder


SwiftFormerXS = _variant_builder("XS")
SwiftFormerS = _variant_builder("S")
SwiftFormerL1 = _variant_builder("L1")
SwiftFormerL3 = _variant_builder("L3")
