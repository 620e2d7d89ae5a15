"""Reading SwiftFormer checkpoints in the formats users hold, into one canonical layout.

The canonical layout is timm's (``stem.0.weight``, ``stages.1.downsample.proj.weight``,
``stages.0.blocks.2.attn.w_g``, ``...layer_scale.gamma``, ``head_dist.weight``), as NumPy float32
arrays in PyTorch's shapes. The format is recognised from the keys, never from the file name:

- ``official``: the official repository (``patch_embed.``, ``network.N.``), a bare state dict
  or one under ``model`` / ``state_dict`` / ``model_ema``;
- ``timm``: timm's model and hub repositories (``stem.``, ``stages.N.``);
- ``hf``: Hugging Face ``transformers`` (``swiftformer.patch_embed.``, ``swiftformer.encoder.``).

A path may also be ``hf://ORG/REPO[@REVISION]``, a Hugging Face Hub repository fetched through
its cache (`keras_swiftformer.hub`); its weights file then goes through the same detection.

``.safetensors`` is read without torch; ``.pth``/``.pt``/``.bin`` with
``torch.load(weights_only=True)``, so that a hostile pickle cannot run code.
"""

import dataclasses
import json
import os
import re
import zipfile

import numpy as np

from keras_swiftformer import hub
from keras_swiftformer.config import variant_of
from keras_swiftformer.preprocessing import FORMAT_DEFAULTS

FORMATS = ("official", "timm", "hf")

WRAPPER_KEYS = ("model", "state_dict", "model_ema")
FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
IGNORED_SUFFIXES = ("num_batches_tracked",)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit: the message names the problem."""


def _stage(network_index):
    """Official ``network.N``: even N is stage N/2's blocks, odd N the downsample of (N+1)/2."""
    n = int(network_index)
    return n // 2 if n % 2 == 0 else (n + 1) // 2


#: Renaming rules to the canonical (timm) layout, applied in order: (pattern, replacement).
#: This is the whole correspondence; compare timm's ``checkpoint_filter_fn``.
RENAMES = {
    "official": [
        (r"^patch_embed\.", "stem."),
        (r"^network\.(\d*[02468])\.(\d+)\.", lambda m: f"stages.{_stage(m[1])}.blocks.{m[2]}."),
        (r"^network\.(\d*[13579])\.", lambda m: f"stages.{_stage(m[1])}.downsample."),
        (r"\.attn\.Proj\.", ".attn.proj."),
        (r"\.(layer_scale(?:_[12])?)$", r".\1.gamma"),
        (r"^dist_head\.", "head_dist."),
    ],
    "hf": [
        (r"^swiftformer\.patch_embed\.patch_embedding\.", "stem."),
        (r"^swiftformer\.encoder\.network\.(\d*[02468])\.blocks\.",
         lambda m: f"stages.{_stage(m[1])}.blocks."),
        (r"^swiftformer\.encoder\.network\.(\d*[13579])\.",
         lambda m: f"stages.{_stage(m[1])}.downsample."),
        (r"\.depth_wise_conv\.", ".dwconv."),
        (r"\.point_wise_conv([12])\.", r".pwconv\1."),
        (r"\.(layer_scale(?:_[12])?)$", r".\1.gamma"),
        (r"^dist_head\.", "head_dist."),
    ],
    "timm": [],
}


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint in the canonical layout.

    Attributes:
        tensors: canonical name -> float32 array in PyTorch's shape.
        format: "official", "timm" or "hf".
        path: the file read.
        variant: "XS", "S", "L1" or "L3", from the shapes; None for a custom configuration.
        depths, widths: the configuration read from the shapes.
        classes: the heads' class count, or None for a headless checkpoint.
        config: the ``config.json`` beside the file, if any (informational).
        source: where it came from: the ``hf://ORG/REPO@<commit>`` address of a hub checkpoint,
            else `path`.
    """

    tensors: dict
    format: str
    path: str
    variant: str
    depths: tuple
    widths: tuple
    classes: int = None
    config: dict = None
    source: str = None

    def __post_init__(self):
        self.source = self.source or self.path

    @property
    def preprocessing(self):
        """Its format's `keras_swiftformer.preprocessing.Preprocessing` (token weighting, crop...)."""
        return FORMAT_DEFAULTS[self.format]

    @property
    def token_weighting(self):
        return self.preprocessing.token_weighting

    @property
    def crop_pct(self):
        return self.preprocessing.crop_pct


def find_weights_file(path):
    """A folder -> its ``model.safetensors`` or ``pytorch_model.bin``; a file -> itself; an
    ``hf://`` address -> that file of the repository, in the Hugging Face cache."""
    path = os.fspath(path)
    if hub.is_hub_uri(path):
        try:
            return hub.fetch(path, FILE_NAMES)
        except hub.HubError as err:
            raise CheckpointError(str(err)) from err
    if not os.path.exists(path):
        raise CheckpointError(f"No such checkpoint: {path}")
    if not os.path.isdir(path):
        return path
    for name in FILE_NAMES:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    found = [n for n in sorted(os.listdir(path)) if n.endswith((".pth", ".pt", ".safetensors"))]
    if len(found) == 1:
        return os.path.join(path, found[0])
    raise CheckpointError(
        f"{path} is a folder without {' or '.join(FILE_NAMES)} (found: {found or 'nothing'})"
    )


def _is_safetensors(path):
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except (SafetensorError, ValueError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable .safetensors file: {err}") from err


def _read_torch(path):
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(
            f"Reading {path} (a PyTorch pickle) needs torch: pip install 'keras-swiftformer[torch]'"
            " (or convert it to .safetensors elsewhere)"
        ) from err
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (not a zip archive: truncated or corrupt?)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path} was refused: it is a pickle that needs more than plain tensors to load "
                "(it may try to run code), and it is read with torch.load(weights_only=True)."
            ) from err
        raise CheckpointError(f"{path} could not be read (corrupt or truncated?): {err}") from err
    return obj


def _unwrap(obj, path, ema=False):
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    order = ("model_ema",) + WRAPPER_KEYS if ema else WRAPPER_KEYS
    for key in order:
        if isinstance(obj.get(key), dict):
            return _unwrap(obj[key], path)
    if ema:
        raise CheckpointError(f"{path} has no 'model_ema' entry")
    return obj


def _to_numpy(value, key, path):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")


def load_state_dict(path, ema=False):
    """Reads a checkpoint file or folder -> (file path, {name: np.ndarray}) with its own keys.

    Args:
        ema: take the ``model_ema`` weights of an official training checkpoint.
    """
    path = find_weights_file(path)
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty")
    if _is_safetensors(path):
        state = _read_safetensors(path)
    else:
        state = _unwrap(_read_torch(path), path, ema)
    state = {
        k[len("module."):] if k.startswith("module.") else k: _to_numpy(v, k, path)
        for k, v in state.items()
    }
    return path, state


def detect_format(keys):
    """The format of a state dict, from its keys: "official", "timm" or "hf"."""
    keys = list(keys)
    if any(k.startswith("swiftformer.") for k in keys):
        return "hf"
    if any(k.startswith(("network.", "patch_embed.")) for k in keys):
        return "official"
    if any(k.startswith(("stem.", "stages.")) for k in keys):
        return "timm"
    raise CheckpointError(
        f"Not a SwiftFormer checkpoint: none of its keys look like the official, timm or "
        f"Hugging Face layout (first keys: {keys[:5]})"
    )


def to_canonical(state, fmt):
    """Renames a state dict of format `fmt` to the canonical layout; drops BN step counters."""
    out = {}
    for key, value in state.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        new = key
        for pattern, replacement in RENAMES[fmt]:
            new = re.sub(pattern, replacement, new)
        if new in out:
            raise CheckpointError(f"Two checkpoint entries map to {new!r} (one is {key!r})")
        out[new] = np.asarray(value, dtype=np.float32)
    return out


def infer_architecture(tensors):
    """(depths, widths, classes) from canonical tensors; classes is None without heads."""
    depths, widths = [], []
    for i in range(4):
        blocks = {int(m[1]) for k in tensors if (m := re.match(rf"stages\.{i}\.blocks\.(\d+)\.", k))}
        w_g = tensors.get(f"stages.{i}.blocks.{max(blocks, default=-1)}.attn.w_g")
        if not blocks or w_g is None:
            raise CheckpointError(
                f"The checkpoint has no complete stage {i} (no stages.{i}.blocks.N.attn.w_g): "
                "is it a SwiftFormer checkpoint, and complete?"
            )
        depths.append(max(blocks) + 1)
        widths.append(int(w_g.shape[0]))
    head = tensors.get("head.weight")
    return tuple(depths), tuple(widths), (int(head.shape[0]) if head is not None else None)


def _read_config(path):
    config_path = os.path.join(os.path.dirname(path), "config.json")
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_checkpoint(path, variant=None, ema=False):
    """Reads any supported checkpoint into a `Checkpoint` in the canonical layout.

    Args:
        path: a file, a hub-style folder, or ``hf://ORG/REPO[@REVISION]``.
        variant: if given, the checkpoint must be this variant (else CheckpointError naming the
            variant that fits).
        ema: take ``model_ema`` from an official training checkpoint.
    """
    source = os.fspath(path)
    path, state = load_state_dict(path, ema)
    source = hub.pinned(path, source) if hub.is_hub_uri(source) else path
    try:
        fmt = detect_format(state)
    except CheckpointError as err:  # name the file (or hub repository) it came from
        raise CheckpointError(f"{source}: {err}") from err
    tensors = to_canonical(state, fmt)
    depths, widths, classes = infer_architecture(tensors)
    found = variant_of(depths, widths)
    if variant is not None and found != str(variant).upper():
        fits = f"SwiftFormer-{found}" if found else "no known variant"
        raise CheckpointError(
            f"{path} is a {fits} checkpoint (depths {depths}, widths {widths}), not "
            f"{str(variant).upper()}" + (f": use SwiftFormer{found}(...) or variant='{found}'"
                                         if found else "")
        )
    return Checkpoint(tensors, fmt, path, found, depths, widths, classes, _read_config(path),
                      source)
