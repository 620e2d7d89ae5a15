"""The evaluation transform of SwiftFormer weights: how images are resized, cropped and
normalised, per checkpoint format.

Export code (metadata, model cards) reads these without importing the weights package
(`keras_swiftformer.sources`, `weights`, `hub`, `checkpoints`).
"""

import dataclasses

from keras_swiftformer.config import IMAGENET_MEAN, IMAGENET_STD


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
