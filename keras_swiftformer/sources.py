"""What each weight source implies, in one table (timm's ``pretrained_cfg`` in spirit).

Two levels:

- `FORMAT_DEFAULTS`: per checkpoint *format* (official, timm, Hugging Face), how its weights
  were trained and evaluated: token weighting, evaluation crop and resize, mean/std. A
  checkpoint file brings its format's defaults (`keras_swiftformer.checkpoints.Checkpoint`).
- `SOURCES`: per downloadable *tag* and variant (``weights="imagenet"`` ...), the hub repository,
  file and SHA-256, plus its format. `weights=`, the evaluation transform, training defaults and
  ``swiftformer-eval`` read this table; nothing else states these facts.

SHA-256: None where not known here. These machines cannot reach the hub, so no published hash
was copied into this table; a download with no known hash is recorded on first use and checked
on every load after that (`keras_swiftformer.weights`).
"""

import dataclasses

from keras_swiftformer.config import IMAGENET_MEAN, IMAGENET_STD, MODEL_CONFIGS


#: Resize modes, in timm's words (`timm.data.transforms_factory.transforms_imagenet_eval`):
#: "center" resizes the shorter side to ``size / crop_pct`` keeping the aspect ratio, "squash"
#: resizes both sides to ``size / crop_pct`` (aspect ratio not kept); both then centre-crop
#: ``size``, so "squash" with ``crop_pct=1.0`` is a plain resize to ``size`` with no crop.
CROP_MODES = ("center", "squash")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint's weights expect images and attention.

    Attributes:
        token_weighting: the attention math it was trained with ("l2" or "ones").
        crop_pct: evaluation crop fraction (resize to ``size / crop_pct``, then centre-crop
            ``size``).
        interpolation: resampling of that resize.
        crop_mode: how that resize treats the aspect ratio (a `CROP_MODES` entry).
        mean, std: the RGB normalisation (of pixels scaled to [0, 1]) the weights were trained
            with; the models apply it inside.
    """

    token_weighting: str
    crop_pct: float
    interpolation: str = "bicubic"
    crop_mode: str = "center"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def describe(self):
        """The evaluation transform in words, for metadata and model cards."""
        if self.crop_mode == "squash":
            return (f"{self.interpolation} resize of the whole image to size / {self.crop_pct:g} "
                    "(aspect ratio not kept), then a centre crop")
        return (f"{self.interpolation} resize of the shorter side to size / {self.crop_pct:g}, "
                "then a centre crop")


#: Checkpoint format -> its `Preprocessing`. The current official code and timm normalise the
#: token weights over the tokens; Hugging Face's port (and the official code before July 2023)
#: weights every token 1. Evaluation transforms, each as its publisher's code runs it:
#: official (util/datasets.py build_transform): bicubic resize of the shorter side to
#: int(256 / 224 * size), centre crop; timm (swiftformer.py _cfg): crop_pct 0.95, bicubic, centre;
#: transformers (the auto mapping gives SwiftFormer the ViTImageProcessor): a resize of the whole
#: image to size x size, no crop, bilinear by that class's default (a hub repository's
#: preprocessor_config.json may set another resample). All train with ImageNet's mean/std.
FORMAT_DEFAULTS = {
    "official": Preprocessing("l2", 0.875),
    "timm": Preprocessing("l2", 0.95),
    "hf": Preprocessing("ones", 1.0, interpolation="bilinear", crop_mode="squash"),
}

#: What a model with no checkpoint (random weights, or an unknown origin) assumes.
DEFAULT_PREPROCESSING = FORMAT_DEFAULTS["official"]

HUB_URL = "https://huggingface.co/{repo}/resolve/main/{file}"


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """One downloadable checkpoint.

    Attributes:
        tag: the ``weights=`` name ("imagenet", "imagenet-hf").
        variant: "XS", "S", "L1" or "L3".
        repo: hub repository.
        file: file in it.
        format: its checkpoint format (a `FORMAT_DEFAULTS` key).
        sha256: published SHA-256, or None where unknown (then trust on first use).
        top1: ImageNet top-1 % its publisher measured, where known.
    """

    tag: str
    variant: str
    repo: str
    file: str
    format: str
    sha256: str = None
    top1: float = None

    @property
    def url(self):
        return HUB_URL.format(repo=self.repo, file=self.file)

    @property
    def preprocessing(self):
        return FORMAT_DEFAULTS[self.format]


#: timm's top-1 of its hub checkpoints (crop 0.95), from timm's results tables.
_TIMM_TOP1 = {"XS": 75.60, "S": 78.46, "L1": 80.91, "L3": 82.99}

#: (tag, variant) -> `WeightSource`. "imagenet": timm's hub repositories, the current official
#: weights at the paper's accuracy; "imagenet-hf": Hugging Face's, converted from the first
#: release's weights (all-ones token weighting).
SOURCES = {
    **{("imagenet", v): WeightSource("imagenet", v, f"timm/swiftformer_{v.lower()}.dist_in1k",
                                     "model.safetensors", "timm", top1=_TIMM_TOP1[v])
       for v in MODEL_CONFIGS},
    **{("imagenet-hf", v): WeightSource("imagenet-hf", v, f"MBZUAI/swiftformer-{v.lower()}",
                                        "pytorch_model.bin", "hf")
       for v in MODEL_CONFIGS},
}
TAGS = tuple(dict.fromkeys(tag for tag, _ in SOURCES))


def weight_source(tag, variant):
    """The `WeightSource` of `tag` for `variant`; ValueError naming the known ones."""
    if tag not in TAGS:
        raise ValueError(f"Unknown weights source {tag!r}; known: {', '.join(TAGS)}")
    if variant is None:
        raise ValueError(f"weights={tag!r} needs a variant ('XS', 'S', 'L1', 'L3')")
    key = (tag, str(variant).upper())
    if key not in SOURCES:
        raise ValueError(f"{tag!r} has no weights for variant {variant!r}; known: "
                         f"{sorted(v for t, v in SOURCES if t == tag)}")
    return SOURCES[key]
