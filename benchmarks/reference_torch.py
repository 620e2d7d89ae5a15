"""A minimal PyTorch SwiftFormer, the comparator of the LiteRT benchmark.

The same network as timm's ``swiftformer.py`` and the official code, written out so that the
benchmark can convert "the PyTorch model" with ``litert-torch`` without installing timm. Module
names equal timm's, so its ``state_dict`` keys are the canonical keys of `keras_swiftformer.mapping`
(weights move over with `load_canonical`). Tensors are NCHW; the input is ImageNet-normalised
(no built-in preprocessing), the output the mean of the two heads' logits (eval mode).

Checked against the golden fixtures in ``tests/test_reference_torch.py``.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keras_swiftformer.layers import check_token_weighting
from keras_swiftformer.config import BN_EPSILON, MLP_RATIO, variant_config


class LayerScale2d(nn.Module):
    """(B, C, H, W) * gamma, gamma of shape (C, 1, 1)."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1))

    def forward(self, x):
        return x * self.gamma


def batch_norm(dim):
    return nn.BatchNorm2d(dim, eps=BN_EPSILON)


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> same: 3x3 depthwise, BN, 1x1, GELU, 1x1, scaled residual. Also the
    attention block's ``local_representation`` (``hidden_dim = dim``)."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = batch_norm(dim)
        self.pwconv1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(hidden_dim, dim, 1)
        self.layer_scale = LayerScale2d(dim)

    def forward(self, x):
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.layer_scale(y)


class EfficientAdditiveAttention(nn.Module):
    """(B, C, H, W) -> same: ``final(proj(G * k) + q)``, G the global query (see
    `keras_swiftformer.layers.AdditiveTokenMixing`)."""

    def __init__(self, dim, token_weighting="l2"):
        super().__init__()
        self.token_weighting = check_token_weighting(token_weighting)
        self.to_query = nn.Linear(dim, dim)
        self.to_key = nn.Linear(dim, dim)
        self.w_g = nn.Parameter(torch.randn(dim, 1))
        self.scale_factor = dim**-0.5
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)

    def forward(self, x):
        batch, _, height, width = x.shape
        x = x.flatten(2).permute(0, 2, 1)  # (B, N, C)
        query = F.normalize(self.to_query(x), dim=-1)
        key = F.normalize(self.to_key(x), dim=-1)
        if self.token_weighting == "l2":
            weights = F.normalize(query @ self.w_g * self.scale_factor, dim=1)
            global_query = torch.sum(weights * query, dim=1, keepdim=True)
        else:
            global_query = torch.sum(query, dim=1, keepdim=True)
        out = self.final(self.proj(global_query * key) + query)
        return out.permute(0, 2, 1).reshape(batch, -1, height, width)


class Mlp(nn.Module):
    """(B, C, H, W) -> same: BN, 1x1 to `hidden_dim`, GELU, 1x1 back."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.norm1 = batch_norm(dim)
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.norm1(x))))


class SwiftFormerBlock(nn.Module):
    """(B, C, H, W) -> same: local representation, then attention and MLP residuals."""

    def __init__(self, dim, token_weighting="l2"):
        super().__init__()
        self.local_representation = ConvEncoder(dim, dim)
        self.attn = EfficientAdditiveAttention(dim, token_weighting)
        self.linear = Mlp(dim, MLP_RATIO * dim)
        self.layer_scale_1 = LayerScale2d(dim)
        self.layer_scale_2 = LayerScale2d(dim)

    def forward(self, x):
        x = self.local_representation(x)
        x = x + self.layer_scale_1(self.attn(x))
        return x + self.layer_scale_2(self.linear(x))


class Embedding(nn.Module):
    """(B, C, H, W) -> (B, out, H/2, W/2): 3x3 stride-2 conv padded by 1, BN."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = batch_norm(out_dim)

    def forward(self, x):
        return self.norm(self.proj(x))


class Stage(nn.Module):
    """Downsampling (all stages but the first), conv blocks, one attention block."""

    def __init__(self, in_dim, dim, depth, token_weighting, downsample=True):
        super().__init__()
        self.downsample = Embedding(in_dim, dim) if downsample else nn.Identity()
        blocks = [ConvEncoder(dim, MLP_RATIO * dim) for _ in range(depth - 1)]
        self.blocks = nn.Sequential(*blocks, SwiftFormerBlock(dim, token_weighting))

    def forward(self, x):
        return self.blocks(self.downsample(x))


class SwiftFormer(nn.Module):
    """(B, 3, H, W) ImageNet-normalised -> (B, classes) logits, the mean of both heads.

    Args:
        variant: "XS", "S", "L1" or "L3".
        token_weighting: "l2" (official since July 2023, timm) or "ones" (Hugging Face).
    """

    def __init__(self, variant, token_weighting="l2", classes=1000):
        super().__init__()
        config = variant_config(variant)
        depths, widths = config["depths"], config["widths"]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0] // 2, 3, stride=2, padding=1), batch_norm(widths[0] // 2),
            nn.ReLU(), nn.Conv2d(widths[0] // 2, widths[0], 3, stride=2, padding=1),
            batch_norm(widths[0]), nn.ReLU())
        in_dims = (widths[0],) + tuple(widths[:-1])
        self.stages = nn.Sequential(*[
            Stage(in_dim, dim, depth, token_weighting, downsample=i > 0)
            for i, (in_dim, dim, depth) in enumerate(zip(in_dims, widths, depths))])
        self.norm = batch_norm(widths[-1])
        self.head = nn.Linear(widths[-1], classes)
        self.head_dist = nn.Linear(widths[-1], classes)

    def forward(self, x):
        x = self.norm(self.stages(self.stem(x))).mean((2, 3))
        return (self.head(x) + self.head_dist(x)) / 2


def load_canonical(model, tensors):
    """Copies canonical (timm-layout) arrays into `model`, in place; returns `model` in eval mode.

    Args:
        tensors: {canonical key: array in PyTorch's shape} (`keras_swiftformer.checkpoints`,
            `keras_swiftformer.mapping.model_tensors`, or a state dict of this module).

    Raises:
        ValueError: keys missing or left over, or a shape that differs (the message lists them).
    """
    counters = "num_batches_tracked"  # BatchNorm's training counters: no weights
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(counters)}
    tensors = {k: v for k, v in tensors.items() if not k.endswith(counters)}
    missing, unexpected = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    wrong = sorted(k for k in set(state) & set(tensors)
                   if tuple(state[k].shape) != tuple(np.shape(tensors[k])))
    if missing or unexpected or wrong:
        raise ValueError(f"Tensors do not fit the PyTorch SwiftFormer: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}, wrong shape {wrong[:8]}")
    with torch.no_grad():
        for key, value in state.items():
            value.copy_(torch.as_tensor(np.asarray(tensors[key]), dtype=value.dtype))
    return model.eval()


def from_keras(keras_model, variant, token_weighting="l2"):
    """The PyTorch SwiftFormer with the weights of a Keras SwiftFormer (with top)."""
    from keras_swiftformer.mapping import model_tensors

    classes = keras_model.get_layer("head").units
    module = SwiftFormer(variant, token_weighting, classes)
    return load_canonical(module, model_tensors(keras_model))
