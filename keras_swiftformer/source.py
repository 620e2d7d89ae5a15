"""One model source: what a user types, resolved once into a typed record.

    src = resolve_source("hf://timm/swiftformer_xs.dist_in1k")
    model = src.build(input_shape=(224, 224, 3))  # logits by default
    src.labels, src.input_size, src.preprocessing, src.info()

A spec is None (random weights: the caller says so loudly), a checkpoint file or folder in any
format `keras_swiftformer.checkpoints` reads (official, timm, Hugging Face), a SwiftFormer
``.keras`` file (its ``model.json`` beside it gives class names, trained input size and
evaluation crop), a weight tag of `keras_swiftformer.sources` (``imagenet``, ``imagenet-hf``),
or ``hf://ORG/REPO[@REVISION]``. Every command (convert, import, train ``--finetune`` /
``--teacher``, eval, bench flow) resolves its model here; ``weights=`` reads the same sources
through `keras_swiftformer.weights.resolve_weights`, which this module builds on.

Class names are data: whatever names them (``labels=``, ``model.json``) is checked to be
non-empty, free of control characters, unique and as many as the head's outputs.
"""

import dataclasses
import os

from keras_swiftformer.commands import UserError
from keras_swiftformer.config import INPUT_SIDES
from keras_swiftformer.images import control_characters
from keras_swiftformer.preprocessing import CROP_MODES, DEFAULT_PREPROCESSING

KINDS = ("random", "checkpoint", "keras", "tag", "hub")
DEFAULT_INPUT_SIZE = (224, 224)
_RANDOM = "none (random weights)"


class SourceError(UserError):
    """A model source that cannot be used: one line naming the problem and the fix (a
    `keras_swiftformer.commands.UserError`, so a ValueError)."""


def _one_line(text):
    return " ".join(str(text).split())


def check_labels(names, classes, where):
    """Validated class names: a tuple of `classes` unique, non-empty strings without control
    characters; SourceError naming `where` they came from otherwise."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise SourceError(f"class names from {where} must be a list of strings, got "
                          f"{type(names).__name__}")
    names = tuple(names)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise SourceError(f"class {i} in {where} is {name!r}: every class needs a name "
                              "(a non-empty string)")
        bad = control_characters(name)
        if bad:
            raise SourceError(f"class {i} in {where} ({name!r}) holds the control character "
                              f"{bad[0]!r}: rename it (class names are one line of text)")
    if classes is not None and len(names) != classes:
        raise SourceError(f"{len(names)} class names in {where} but the model has {classes} "
                          "outputs: give one name per output, in output order")
    seen = set()
    for name in names:
        if name in seen:
            raise SourceError(f"{where} names the class {name!r} twice: class names must be "
                              "unique")
        seen.add(name)
    return names


def read_labels(path):
    """Class names from a text file, one a line (blank lines at the end ignored); unchecked
    against a head (see `check_labels`)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise SourceError(f"Cannot read the labels file {path} ({_one_line(err)}): give a UTF-8 "
                          "text file, one class name a line") from None
    names = [line.strip() for line in text.rstrip("\n").split("\n")]
    if not names or any(not name for name in names):
        raise SourceError(f"{path}: one class name a line, none empty")
    return names


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A resolved model source (see the module doc); `build` makes its Keras model.

    Attributes:
        spec: what was given (None for random weights).
        kind: "random", "checkpoint", "keras", "tag" or "hub" (`KINDS`).
        variant: "XS", "S", "L1", "L3" or "CUSTOM".
        token_weighting: "l2" or "ones".
        classes: head outputs, None for a model without heads.
        labels: validated class names (len == classes), None without heads.
        labels_source: the labels file's path, "labels" (a list given), "model.json" (a
            ``.keras`` model's), "config.json" (a Hugging Face checkpoint's ``id2label``),
            "ImageNet" or "generated"; None without heads.
        input_size: (H, W) the model was trained at, or None where unknown.
        preprocessing: the evaluation transform (`keras_swiftformer.preprocessing.Preprocessing`).
        license: licence text or id of the weights, or None where unknown.
        provenance: spec, path (the file read), format_in, source (an ``hf://`` address pinned
            to its commit, else the path), hub_repo / hub_revision, tag, trained_from.
        weights: the `keras_swiftformer.weights.WeightsSource` (None for random weights).
    """

    spec: object
    kind: str
    variant: str
    token_weighting: str
    classes: int
    labels: tuple
    labels_source: str
    input_size: tuple
    preprocessing: object
    license: str = None
    provenance: dict = dataclasses.field(default_factory=dict, compare=False)
    weights: object = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def random_weights(self):
        return self.kind == "random"

    @property
    def has_heads(self):
        return self.classes is not None

    def default_input_shape(self):
        """(H, W, 3): the trained input size where known, else 224 x 224."""
        return (*(self.input_size or DEFAULT_INPUT_SIZE), 3)

    def require_heads(self, why="there is nothing to classify with"):
        """SourceError unless the model has classifier heads."""
        if not self.has_heads:
            raise SourceError(f"{self.spec} has no classifier heads (include_top=False): {why}; "
                              "give a model with heads")

    def build(self, input_shape=None, classifier_activation=None, **overrides):
        """The Keras model with this source's weights.

        Args:
            input_shape: (H, W, 3); default `default_input_shape` (``(None, None, 3)``: any).
            classifier_activation: None for logits, "softmax" for probabilities.
            overrides: further `keras_swiftformer.SwiftFormer` arguments (``new_head``,
                ``classes``, ``drop_path_rate``, ``include_preprocessing``, ``name``...).
        """
        from keras_swiftformer.model import SwiftFormer

        kwargs = dict(input_shape=input_shape or self.default_input_shape(),
                      classifier_activation=classifier_activation,
                      token_weighting=self.token_weighting)
        variant = None if self.variant == "CUSTOM" else self.variant
        if self.kind == "random":
            # Layer scales of 1 rather than a fresh model's 1e-5, so that the attention and MLP
            # branches matter as in a trained model (1e-5 branches vanish in float16 subnormals).
            kwargs.update(classes=self.classes, layer_scale_init_value=1.0)
            return SwiftFormer(variant, **{**kwargs, **overrides})
        if self.kind == "keras":
            kwargs = {**self.weights.config.builder_kwargs(), **kwargs}
        else:
            kwargs.update(classes=self.classes or 1000)
        kwargs.update(overrides)
        if (kwargs.get("include_top", True) and not kwargs.get("new_head")
                and not self.has_heads):
            self.require_heads("the model asked for needs them (new_head=True starts new ones)")
        if self.kind == "keras":
            variant = None  # depths and widths come with the builder arguments
        try:
            return SwiftFormer(variant, weights=self.weights, **kwargs)
        except (ValueError, OSError) as err:  # weights that do not fit the model asked for
            raise SourceError(_one_line(err)) from None

    def info(self, input_shape=None):
        """The report fields of this source for a model built at `input_shape` (default
        `default_input_shape`): checkpoint, source, format_in, random_weights, variant,
        token_weighting, crop_pct, crop_mode, interpolation, num_classes, input_shape,
        labels_source, and trained_from / hub_repo / hub_revision / license where known."""
        p = self.preprocessing
        info = {"checkpoint": _RANDOM if self.random_weights else os.fspath(self.spec),
                "random_weights": self.random_weights, "variant": self.variant,
                "token_weighting": self.token_weighting, "crop_pct": p.crop_pct,
                "crop_mode": p.crop_mode, "interpolation": p.interpolation,
                "num_classes": self.classes,
                "input_shape": list(input_shape or self.default_input_shape()),
                "labels_source": self.labels_source}
        if not self.random_weights:
            info.update(source=self.provenance.get("source"),
                        format_in=self.provenance.get("format_in"))
        for key in ("trained_from", "hub_repo", "hub_revision"):
            if self.provenance.get(key) is not None:
                info[key] = self.provenance[key]
        if self.license is not None:
            info["license"] = self.license
        return info


def _check_token_weighting(token_weighting):
    from keras_swiftformer.layers import TOKEN_WEIGHTINGS

    if token_weighting is not None and token_weighting not in TOKEN_WEIGHTINGS:
        raise SourceError(f"token weighting {token_weighting!r} is not one of "
                          f"{', '.join(TOKEN_WEIGHTINGS)}: give l2 (current official and timm "
                          "weights) or ones (Hugging Face's)")


def _trained_size(info, config, path):
    """(H, W) from model.json's ``input_size`` (a side or [H, W]), else the model's fixed input
    shape, else None."""
    size = info.get("input_size")
    if size is None:
        h, w = config.input_shape[:2]
        return (int(h), int(w)) if h and w else None
    sides = [size, size] if isinstance(size, int) else size
    if (not isinstance(sides, (list, tuple)) or len(sides) != 2
            or not all(isinstance(s, int) and INPUT_SIDES[0] <= s <= INPUT_SIDES[1]
                       for s in sides)):
        raise SourceError(f"model.json beside {path} has input_size {size!r}: expected a side "
                          f"or [H, W] in {INPUT_SIDES[0]}..{INPUT_SIDES[1]}; fix or remove it")
    return tuple(sides)


def _keras_transform(info, token_weighting, path):
    """The evaluation transform a ``.keras`` model's model.json records (crop_pct, crop_mode,
    interpolation), over the default one."""
    crop = info.get("crop_pct") or DEFAULT_PREPROCESSING.crop_pct
    mode = info.get("crop_mode") or DEFAULT_PREPROCESSING.crop_mode
    if not isinstance(crop, (int, float)) or not 0 < crop <= 1 or mode not in CROP_MODES:
        raise SourceError(f"model.json beside {path} has crop_pct {crop!r} / crop_mode "
                          f"{mode!r}: expected a crop in (0, 1] and one of {CROP_MODES}")
    return dataclasses.replace(
        DEFAULT_PREPROCESSING, token_weighting=token_weighting, crop_pct=float(crop),
        crop_mode=mode, interpolation=info.get("interpolation")
        or DEFAULT_PREPROCESSING.interpolation)


def _labels(classes, labels, model_classes, keras=True):
    """(names, labels_source): `labels` (a file or a list), then the model's own names
    (a ``.keras`` model's model.json, a checkpoint's config.json), then ImageNet's for 1000
    outputs, else generated ``class_i``."""
    from keras_swiftformer.imagenet import class_names

    if classes is None:
        if labels is not None:
            raise SourceError("class names were given but the model has no classifier heads: "
                              "leave out the labels, or give a model with heads")
        return None, None
    if labels is not None:
        if isinstance(labels, (str, os.PathLike)):
            where = os.fspath(labels)
            return check_labels(read_labels(where), classes, where), where
        return check_labels(labels, classes, "labels"), "labels"
    if model_classes is not None:
        where = "model.json" if keras else "config.json"
        return check_labels(model_classes, classes, where), where
    if classes == 1000:
        return tuple(class_names()), "ImageNet"
    return tuple(f"class_{i}" for i in range(classes)), "generated"


def _config_names(config, classes):
    """The class names of a Hugging Face ``config.json`` (``id2label``) beside a checkpoint
    whose heads are not ImageNet's, else None (1000-class heads keep ImageNet's short names)."""
    id2label = (config or {}).get("id2label")
    if classes in (None, 1000) or not isinstance(id2label, dict):
        return None
    try:
        return [id2label.get(str(i), id2label.get(i)) for i in range(classes)]
    except AttributeError:
        return None


def _hub_fields(source):
    """hub_repo and hub_revision of a pinned ``hf://ORG/REPO@REV`` address."""
    from keras_swiftformer.hub import is_hub_uri, parse

    if not is_hub_uri(source):
        return {}
    repo, revision = parse(source)
    return {"hub_repo": repo, "hub_revision": revision}


def is_address(spec):
    """Whether `spec` names weights by a weight tag or an address (``hf://``) rather than a
    local path: the one test a command needs before it checks that a path exists."""
    from keras_swiftformer.hub import is_hub_uri
    from keras_swiftformer.sources import TAGS

    return isinstance(spec, str) and (spec in TAGS or is_hub_uri(spec))


def _check_spec(spec, variant):
    from keras_swiftformer.sources import TAGS

    if spec in TAGS and variant is None:
        raise SourceError(f"the weight tag {spec!r} needs a variant: give --variant (XS, S, "
                          "L1 or L3), or variant='XS'")
    if is_address(spec):
        return
    if spec.endswith(".weights.h5"):
        raise SourceError(f"{spec} holds weights without the architecture, class names or "
                          "input size: give the .keras model (or the checkpoint) instead")
    if not os.path.exists(spec):
        raise SourceError(f"No such checkpoint: {spec} (give a checkpoint file or folder, a "
                          f".keras model, hf://ORG/REPO, or one of the weight tags: "
                          f"{', '.join(TAGS)})")


def _random(variant, token_weighting, labels):
    from keras_swiftformer.config import variant_config

    variant = str(variant or "XS").upper()
    try:
        variant_config(variant)
    except (KeyError, ValueError) as err:
        raise SourceError(f"unknown variant {variant!r} ({_one_line(err)}): give XS, S, L1 "
                          "or L3") from None
    token_weighting = token_weighting or "l2"
    names, where = _labels(1000, labels, None)
    return ModelSource(None, "random", variant, token_weighting, 1000, names, where, None,
                       dataclasses.replace(DEFAULT_PREPROCESSING,
                                           token_weighting=token_weighting),
                       provenance={"spec": None})


def resolve_source(spec, variant=None, token_weighting=None, labels=None):
    """What a user typed -> `ModelSource` (see the module doc).

    Args:
        spec: None (random weights), a checkpoint file or folder, a SwiftFormer ``.keras``
            file, a weight tag or ``hf://ORG/REPO[@REV]`` (a `ModelSource` is returned as is).
        variant: the expected variant (a tag needs one; random weights default to XS).
        token_weighting: override the source's ("l2" or "ones").
        labels: a labels file (one name a line) or a list of names; wins over model.json.

    Raises:
        SourceError: one line naming the problem and the fix.
    """
    from keras_swiftformer.files import sidecar
    from keras_swiftformer.weights import resolve_weights

    if isinstance(spec, ModelSource):  # already resolved (a command passing it on)
        return spec
    _check_token_weighting(token_weighting)
    if spec is None:
        return _random(variant, token_weighting, labels)
    spec = os.fspath(spec)
    _check_spec(spec, variant)
    try:
        weights = resolve_weights(spec, variant)
        config = weights.config
    except (ValueError, OSError, ImportError) as err:  # checkpoint, hub and download errors
        raise SourceError(_one_line(err)) from None
    token_weighting = token_weighting or weights.token_weighting
    provenance = {"spec": spec, "path": weights.path}
    if weights.kind == "keras":
        info = sidecar(spec)
        preprocessing = _keras_transform(info, token_weighting, spec)
        input_size = _trained_size(info, config, spec)
        model_classes = info.get("classes")
        trained_from = info.get("source")
        provenance.update(format_in="keras", source=spec, trained_from=trained_from)
        license_ = info.get("license")
    else:
        checkpoint = weights.checkpoint
        preprocessing = dataclasses.replace(
            weights.tag.preprocessing if weights.tag else checkpoint.preprocessing,
            token_weighting=token_weighting)
        input_size, model_classes = None, _config_names(checkpoint.config, config.classes)
        provenance.update(format_in=checkpoint.format, source=checkpoint.source,
                          **_hub_fields(checkpoint.source))
        if weights.tag is not None:
            provenance.update(tag=weights.tag.tag, hub_repo=weights.tag.repo)
        license_ = (checkpoint.config or {}).get("license")
    names, where = _labels(config.classes, labels, model_classes, weights.kind == "keras")
    return ModelSource(spec, weights.kind, config.variant or "CUSTOM", token_weighting,
                       config.classes, names, where, input_size, preprocessing,
                       license_ if isinstance(license_, str) else None, provenance, weights)
