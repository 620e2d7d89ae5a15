"""Reference checkpoints and golden outputs, made by timm and transformers (never by our code).

`ensure(folder)` writes, once, the layout of ../shared/fixtures (see its README.md) for
SwiftFormer-XS and -L1 with seeded "realistic random" weights:

    original/swiftformer_{xs,l1}_random.pth      torch.save({"model": official state dict})
    original/golden_{xs,l1}.npz                  timm's model in float64
    timm/swiftformer_xs_random/                  timm's save_for_hf: config.json, model.safetensors,
                                                 golden_timm.npz
    hf/swiftformer_xs_random/                    transformers' save_pretrained, golden_hf.npz

timm (pytorch-image-models) has the current official attention (L2 over the tokens) and reads the
official layout with its `checkpoint_filter_fn`; transformers' `SwiftFormerForImageClassification`
has the earlier one (all-ones token weights). Golden keys: `inputs_nchw` (4, 3, 224, 224) float32
(two N(0, 1) tensors, then two committed photos with the official evaluation transform),
`logits` (4, 1000) float64, `pooled` (4, C) (not for hf), and `_odd` versions for one
(1, 3, 256, 320) N(0, 1) input.
"""

import pathlib
import re
import sys

import numpy as np

from tests.support.cache import build_once, default_cache

#: Bump when the drawing, the inputs or the layout change: the cache key includes it.
GENERATOR_VERSION = "1"
VARIANTS = {"XS": ("swiftformer_xs", 0), "L1": ("swiftformer_l1", 1)}  # timm name, seed
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: The two photos in the golden inputs (tests/data/photos), as in ../shared: a cat and a cup.
GOLDEN_PHOTOS = ("0281_n02123045_tabby.jpg", "0967_n07920052_espresso.jpg")
PHOTO_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "photos"


def import_timm():
    """timm, also where torchvision's C++ ops cannot load beside this torch.

    PyPI's torchvision wheels link CUDA libraries, so beside a CPU-only torch (the +cpu wheel)
    its `_C` extension does not load and `import torchvision` stops at an unconditional
    `register_fake("torchvision::nms")` (pytorch/vision#9337). timm imports torchvision for
    FrozenBatchNorm2d and its transforms but SwiftFormer uses no torchvision op, so the two op
    schemas are declared here first; nms/qnms then fail if called, as torchvision intends."""
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is not None and "torchvision" not in sys.modules:
        folder = pathlib.Path(spec.origin).parent
        libraries = sorted(folder.glob("_C.*so")) + sorted(folder.glob("_C.pyd"))
        try:
            for library in libraries[:1]:
                torch.ops.load_library(str(library))
        except (OSError, RuntimeError):
            if not hasattr(torch.ops.torchvision, "nms"):
                fragment = torch.library.Library("torchvision", "FRAGMENT")
                fragment.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                fragment.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                import_timm.fragment = fragment  # the definitions live as long as this object
    import timm

    return timm


def cache_key():
    """A folder name that changes with the generator and the reference packages' versions."""
    from importlib.metadata import version

    return "-".join([f"v{GENERATOR_VERSION}", f"torch{version('torch')}",
                     f"timm{version('timm')}", f"transformers{version('transformers')}"])


def draw_realistic(model, seed):
    """Overwrites every parameter and BatchNorm statistic of `model` in place, seeded: conv and
    linear weights N(0, 1/fan_in), biases N(0, 0.05²), BatchNorm gamma U(0.5, 1.5), beta
    N(0, 0.05²), running mean N(0, 0.1²), running var U(0.5, 2), layer scales U(0.5, 1), w_g
    N(0, 1). Fails if a tensor of the state dict is left undrawn."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    drawn = set()

    def put(name, tensor, kind, *args):
        if kind == "normal":
            value = torch.randn(tensor.shape, generator=generator, dtype=torch.float64) * args[0]
        else:
            low, high = args
            value = low + (high - low) * torch.rand(tensor.shape, generator=generator,
                                                    dtype=torch.float64)
        tensor.copy_(value.to(tensor.dtype))
        drawn.add(name)

    with torch.no_grad():
        for prefix, module in model.named_modules():
            p = f"{prefix}." if prefix else ""
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                put(p + "weight", module.weight, "uniform", 0.5, 1.5)
                put(p + "bias", module.bias, "normal", 0.05)
                put(p + "running_mean", module.running_mean, "normal", 0.1)
                put(p + "running_var", module.running_var, "uniform", 0.5, 2.0)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                put(p + "weight", module.weight, "normal", module.weight[0].numel() ** -0.5)
                if module.bias is not None:
                    put(p + "bias", module.bias, "normal", 0.05)
        for name, param in model.named_parameters():
            if name.endswith("w_g"):
                put(name, param, "normal", 1.0)
            elif "layer_scale" in name:
                put(name, param, "uniform", 0.5, 1.0)
    left = [k for k in model.state_dict() if k not in drawn and "num_batches_tracked" not in k]
    if left:
        raise RuntimeError(f"draw_realistic left {len(left)} tensors undrawn: {left[:5]}")


def timm_to_official(state):
    """timm keys -> the official repository's keys: the inverse of timm's
    `swiftformer.checkpoint_filter_fn` (which `ensure` checks maps them back)."""
    out = {}
    for key, value in state.items():
        key = key.replace("stem.", "patch_embed.", 1) if key.startswith("stem.") else key
        key = key.replace("head_dist.", "dist_head.") if key.startswith("head_dist.") else key
        key = key.replace("attn.proj.", "attn.Proj.")
        key = re.sub(r"\.(layer_scale(?:_1|_2)?)\.gamma$", r".\1", key)
        match = re.match(r"^stages\.(\d+)\.(blocks|downsample)\.(.*)$", key)
        if match:
            stage, part, rest = int(match.group(1)), match.group(2), match.group(3)
            key = (f"network.{2 * stage}.{rest}" if part == "blocks"
                   else f"network.{2 * stage - 1}.{rest}")
        out[key] = value
    return out


_HF_BLOCK_NAMES = (("dwconv", "depth_wise_conv"), ("pwconv1", "point_wise_conv1"),
                   ("pwconv2", "point_wise_conv2"), ("attn.Proj.", "attn.proj."))


def official_to_hf(state):
    """Official keys -> transformers' SwiftFormerForImageClassification keys."""
    out = {}
    for key, value in state.items():
        if key.startswith("patch_embed."):
            key = "swiftformer.patch_embed.patch_embedding." + key[len("patch_embed."):]
        elif key.startswith("network."):
            index, rest = key[len("network."):].split(".", 1)
            if int(index) % 2 == 0:
                block, rest = rest.split(".", 1)
                for old, new in _HF_BLOCK_NAMES:
                    rest = rest.replace(old, new)
                rest = f"blocks.{block}.{rest}"
            key = f"swiftformer.encoder.network.{index}.{rest}"
        out[key] = value
    return out


def _photo_nchw(path, size=224, resize=248):
    """The official evaluation transform, written here with PIL and numpy: shorter side to
    `resize` (bicubic), centre crop `size`, ImageNet mean/std; (3, size, size) float32."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = resize / min(w, h)
        image = image.resize((max(resize, round(w * scale)), max(resize, round(h * scale))),
                             Image.BICUBIC)
        left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
        pixels = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255
    return ((pixels - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)


def golden_inputs(seed=1234):
    """inputs_nchw (4, 3, 224, 224) and inputs_odd_nchw (1, 3, 256, 320), float32."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    photos = np.stack([_photo_nchw(PHOTO_DIR / name) for name in GOLDEN_PHOTOS])
    odd = rng.standard_normal((1, 3, 256, 320)).astype(np.float32)
    return np.concatenate([noise, photos]), odd


def _timm_outputs(model, x):
    import torch

    with torch.no_grad():
        features = model.forward_features(torch.from_numpy(x).double())
        pooled = model.forward_head(features, pre_logits=True)
        return model.forward_head(features).numpy(), pooled.numpy()


def _write_timm(root, timm, variant, name, seed, inputs, odd):
    """Draws the weights into timm's model; writes original/ (and timm/ for XS)."""
    import torch
    from timm.models.swiftformer import checkpoint_filter_fn

    model = timm.create_model(name, pretrained=False).eval()
    draw_realistic(model, seed)
    state = model.state_dict()
    official = timm_to_official(state)
    back = checkpoint_filter_fn({"model": official}, model)
    if sorted(back) != sorted(state) or any(not torch.equal(back[k], state[k]) for k in state):
        raise RuntimeError("timm's checkpoint_filter_fn does not map the official keys back")
    tag = variant.lower()
    (root / "original").mkdir(exist_ok=True)
    torch.save({"model": official}, root / "original" / f"swiftformer_{tag}_random.pth")
    model64 = model.double()
    logits, pooled = _timm_outputs(model64, inputs)
    logits_odd, pooled_odd = _timm_outputs(model64, odd)
    golden = dict(inputs_nchw=inputs, logits=logits, pooled=pooled, inputs_odd_nchw=odd,
                  logits_odd=logits_odd, pooled_odd=pooled_odd,
                  image_names=np.array(GOLDEN_PHOTOS), image_labels=np.array([281, 967]))
    np.savez(root / "original" / f"golden_{tag}.npz", **golden)
    if variant == "XS":
        from timm.models import save_for_hf

        folder = root / "timm" / "swiftformer_xs_random"
        save_for_hf(model.float(), str(folder), safe_serialization=True)
        np.savez(folder / "golden_timm.npz", **{k: v for k, v in golden.items()
                                                 if not k.startswith("image_")})
    return official


def _write_hf(root, official, inputs, odd):
    """transformers' model with the XS weights: save_pretrained and its float64 outputs."""
    import torch
    from transformers import SwiftFormerConfig, SwiftFormerForImageClassification
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = SwiftFormerForImageClassification(
        SwiftFormerConfig(depths=[3, 3, 6, 4], embed_dims=[48, 56, 112, 220],
                          num_labels=1000)).eval()
    model.load_state_dict(official_to_hf(official), strict=True)
    folder = root / "hf" / "swiftformer_xs_random"
    model.save_pretrained(str(folder))
    model = model.double()
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(inputs).double()).logits.numpy()
        logits_odd = model(pixel_values=torch.from_numpy(odd).double()).logits.numpy()
    np.savez(folder / "golden_hf.npz", inputs_nchw=inputs, logits=logits,
             inputs_odd_nchw=odd, logits_odd=logits_odd)


def generate(root):
    """Writes the whole layout into the empty folder `root` (about 90 MB, ~20 s on 2 cores)."""
    timm = import_timm()
    root = pathlib.Path(root)
    inputs, odd = golden_inputs()
    official = {}
    for variant, (name, seed) in VARIANTS.items():
        official[variant] = _write_timm(root, timm, variant, name, seed, inputs, odd)
    _write_hf(root, official["XS"], inputs, odd)
    (root / "README.md").write_text(
        f"Generated by tests/support/reference.py ({cache_key()}); safe to delete.\n")


def ensure(cache=None):
    """The folder of the generated references, cache/<cache_key()>, generated on first use
    (cache: default_cache(), $SWIFTFORMER_TEST_CACHE or ~/.cache/...)."""
    return build_once(pathlib.Path(cache or default_cache()) / cache_key(), generate)


if __name__ == "__main__":
    print(ensure(sys.argv[1] if len(sys.argv) > 1 else None))
