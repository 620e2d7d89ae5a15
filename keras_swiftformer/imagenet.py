"""ImageNet helpers: the evaluation transform, `preprocess_input`, `decode_predictions`.

The evaluation transform is the reference one: resize to ``size / crop_pct`` (the shorter side,
or both sides for ``crop_mode="squash"``), then centre-crop ``size``. The official evaluation
uses ``crop_pct = 0.875`` (256 for 224), timm 0.95, transformers' processor a plain resize to
``size`` (`keras_swiftformer.preprocessing` holds the default of each checkpoint format).
"""

import functools
import os

import numpy as np

from keras_swiftformer.config import IMAGENET_MEAN, IMAGENET_STD
from keras_swiftformer.preprocessing import CROP_MODES, DEFAULT_PREPROCESSING
from keras_swiftformer.resize import resize_and_crop

DEFAULT_CROP_PCT = DEFAULT_PREPROCESSING.crop_pct


@functools.lru_cache(maxsize=1)
def class_index():
    """[(synset id, WordNet lemmas)] of the 1000 ImageNet-1k classes, in index order."""
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_classes.tsv")
    with open(path) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
    return [(synset, lemmas) for synset, lemmas in rows]


def class_names():
    """Short name of each ImageNet class (first lemma, spaces as underscores): "tench"..."""
    return [lemmas.split(",")[0].strip().replace(" ", "_") for _, lemmas in class_index()]


def preprocess_input(x, normalize=False):
    """RGB pixels in [0, 255], (..., H, W, 3) -> model input.

    SwiftFormer models built with ``include_preprocessing=True`` (the default) normalise
    inside, so this returns `x` as float32. With ``normalize=True`` it applies the ImageNet
    mean/std, for models built with ``include_preprocessing=False``.
    """
    x = np.asarray(x, dtype=np.float32)
    if normalize:
        x = (x / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD,
                                                                              np.float32)
    return x


def decode_predictions(preds, top=5):
    """(B, 1000) scores -> per sample a list of `top` (synset id, class name, score)."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(f"decode_predictions expects (batch, 1000) scores, got {preds.shape}")
    index, names = class_index(), class_names()
    results = []
    for row in preds:
        order = np.argsort(row)[::-1][:top]
        results.append([(index[i][0], names[i], float(row[i])) for i in order])
    return results


#: `Preprocessing.interpolation` names -> PIL resampling filters.
_RESAMPLING = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST"}


def eval_transform(image, size=224, crop_pct=DEFAULT_CROP_PCT, crop_mode="center",
                   interpolation="bicubic"):
    """PIL image -> (H, W, 3) float32 RGB in [0, 255], the reference evaluation transform.

    ``crop_mode="center"``, square `size` (an int): resize of the shorter side to ``int(size /
    crop_pct)``, then a centre crop (torchvision's Resize + CenterCrop); ``size=(H, W)``: the
    smallest aspect-preserving resize covering ``(H / crop_pct, W / crop_pct)``, then a centre
    crop. ``crop_mode="squash"``: a resize of the whole image to ``(int(H / crop_pct),
    int(W / crop_pct))``, then a centre crop (``crop_pct=1.0``: no crop).
    """
    from PIL import Image

    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
    if interpolation not in _RESAMPLING:
        raise ValueError(f"interpolation must be one of {tuple(_RESAMPLING)}, got "
                         f"{interpolation!r}")
    resample = getattr(Image.Resampling, _RESAMPLING[interpolation])
    height, width = (size, size) if np.ndim(size) == 0 else size
    image = image.convert("RGB")
    w, h = image.size
    if crop_mode == "squash":
        new_w, new_h = int(width / crop_pct), int(height / crop_pct)
    elif height == width:
        short = int(height / crop_pct)
        new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    else:
        scale = max(height / crop_pct / h, width / crop_pct / w)
        new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    left = int(round((new_w - width) / 2.0))
    top = int(round((new_h - height) / 2.0))
    image = resize_and_crop(image, (new_w, new_h), (left, top, left + width, top + height),
                            resample)
    return np.asarray(image, dtype=np.float32)
