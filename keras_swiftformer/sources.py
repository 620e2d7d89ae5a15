"""What each weight source implies, in one table (timm's ``pretrained_cfg`` in spirit).

Two levels:

- `keras_swiftformer.preprocessing.FORMAT_DEFAULTS`: per checkpoint *format* (official, timm,
  Hugging Face), how its weights were trained and evaluated: token weighting, evaluation crop
  and resize, mean/std. A checkpoint file brings its format's defaults
  (`keras_swiftformer.checkpoints.Checkpoint`).
- `SOURCES`: per downloadable *tag* and variant (``weights="imagenet"`` ...), the hub repository,
  file and SHA-256, plus its format. `weights=`, the evaluation transform, training defaults and
  ``swiftformer-eval`` read this table; nothing else states these facts.

SHA-256: None where not known here. These machines cannot reach the hub, so no published hash
was copied into this table; a download with no known hash is recorded on first use and checked
on every load after that (`keras_swiftformer.weights`).
"""

import dataclasses

from keras_swiftformer.config import MODEL_CONFIGS
from keras_swiftformer.preprocessing import FORMAT_DEFAULTS


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
