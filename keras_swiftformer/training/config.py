"""The training recipe as one flat, validated configuration.

`TrainConfig`'s defaults are the official SwiftFormer ImageNet recipe (``main.py`` of
github.com/Amshaker/SwiftFormer): AdamW, lr 2e-3 at a global batch of 2048 (16 GPUs x 128),
weight decay 0.025, cosine schedule with 5 warm-up epochs from 1e-6 and a 1e-5 floor, adaptive
gradient clipping 0.01, label smoothing 0.1, RandAugment m9/mstd0.5, random erasing 0.25, MixUp
0.8 / CutMix 1.0 (switch probability 0.5), hard distillation through ``head_dist`` with weight
0.5, 300 epochs. As in the official README, SwiftFormer-XS trains without RandAugment, MixUp and
CutMix, and -S without MixUp and CutMix (`VARIANT_OVERRIDES`); the ``finetune`` recipe is a short
schedule for a new head (`RECIPES`).

A configuration is built in layers: recipe defaults, then the variant's changes, then a YAML or
JSON file, then command-line options; a value set explicitly in a file or on the command line is
never replaced by a variant default.
"""

import dataclasses
import json
import os
import re
import typing
import warnings

from keras_swiftformer.commands import UserError
from keras_swiftformer.config import INPUT_SIDES, MODEL_CONFIGS
from keras_swiftformer.preprocessing import DEFAULT_PREPROCESSING

DISTRIBUTIONS = ("auto", "none", "jax", "mirrored")
DISTILLATIONS = ("auto", "none", "hard", "soft")
CLIP_MODES = ("agc", "norm", "none")
CHECKPOINT_MODES = ("chief", "worker", "none")
BAD_IMAGE_POLICIES = ("error", "skip")
IMAGE_CHECKS = ("header", "decode", "none")
MIXED_PRECISION = (None, "mixed_bfloat16", "mixed_float16")


def _field(default, help, **kwargs):
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class TrainConfig:
    """Every option of `keras_swiftformer.training.train`; see each field's help."""

    # Data and output.
    data: str = _field(None, "dataset root with train/<class>/*.jpg and val/<class>/*.jpg, or "
                             "tfds:<name> (needs tensorflow-datasets)")
    output_dir: str = _field(None, "output folder: model.keras, model.json, checkpoints/, workers/")
    train_split: str = _field("train", "training sub-folder (or TFDS split)")
    val_split: str = _field("val", "validation sub-folder (or TFDS split); '' for none")
    overwrite: bool = _field(False, "replace a finished model in --output-dir and start afresh")
    on_bad_image: str = _field("error", "a corrupt image: 'error' stops before training, "
                                        "'skip' warns and leaves it out",
                               choices=BAD_IMAGE_POLICIES)
    check_images: str = _field("decode", "image check before training: 'decode' (full decode, "
                                         "as convert does), 'header' (magic bytes and JPEG/PNG "
                                         "end markers: fast, for ImageNet-scale trees), 'none'",
                               choices=IMAGE_CHECKS)
    seed: int = _field(0, "seed of the initial weights, the data order and every augmentation")

    # Model.
    variant: str = _field("XS", "XS, S, L1 or L3 (ignored with --depths/--widths or --finetune)")
    depths: tuple = _field(None, "custom blocks per stage, e.g. 1 1 1 1", nargs=4, type=int)
    widths: tuple = _field(None, "custom channels per stage, e.g. 16 16 32 32", nargs=4, type=int)
    input_size: int = _field(224, "training and validation input size (square side)")
    token_weighting: str = _field(None, "'l2' or 'ones'; default: the checkpoint's, else 'l2'")
    drop_path: float = _field(0.0, "stochastic depth rate of the last block (official: 0)")
    drop_rate: float = _field(0.0, "dropout in the MLPs and before the heads")

    # Fine-tuning.
    finetune: str = _field(None, "start from this checkpoint (any format the importer reads, a "
                                 ".keras file, a weight tag such as imagenet (of --variant) or "
                                 "hf://ORG/REPO); new heads when the class count differs")
    new_head: bool = _field(None, "start new heads even when the class count matches")
    freeze: str = _field("", "comma-separated layer-name prefixes to freeze ('stem,stages.0'), or "
                             "'body' for everything but the heads")

    # Distillation (DeiT).
    distillation: str = _field("auto", "'hard' (official), 'soft' or 'none'; 'auto': hard with a "
                                       "teacher, else none", choices=DISTILLATIONS)
    teacher: str = _field(None, "a Keras teacher (.keras file), 'original' (the --finetune model "
                                "with its own heads), or saved logits (.npz with 'files' and "
                                "'logits')")
    teacher_classes: str = _field(None, "JSON list: the teacher's class index of each data class "
                                        "(default: ImageNet synset folders map themselves)")
    distillation_alpha: float = _field(0.5, "weight of the distillation term")
    distillation_tau: float = _field(1.0, "temperature of soft distillation")

    # Schedule and optimiser.
    epochs: int = _field(300, "epochs")
    steps_per_epoch: int = _field(None, "steps per epoch (default: training images // batch)")
    batch_size: int = _field(2048, "global batch size, over all workers and devices")
    lr: float = _field(2e-3, "peak learning rate at a global batch of --lr-batch")
    lr_batch: int = _field(2048, "the lr is scaled linearly by batch_size / lr_batch")
    warmup_epochs: float = _field(5, "linear warm-up epochs")
    warmup_lr: float = _field(1e-6, "learning rate at the start of the warm-up")
    min_lr: float = _field(1e-5, "floor of the cosine schedule")
    weight_decay: float = _field(0.025, "AdamW decoupled weight decay (not on biases and norms)")
    opt_eps: float = _field(1e-8, "AdamW epsilon")
    clip_mode: str = _field("agc", "'agc' (adaptive, the official), 'norm' or 'none'",
                            choices=CLIP_MODES)
    clip_grad: float = _field(0.01, "AGC clip factor, or the max norm with --clip-mode norm")
    ema_decay: float = _field(None, "keep an EMA of the weights (official: 0.99996); the saved "
                                    "model then holds the average")

    # Augmentation.
    label_smoothing: float = _field(0.1, "label smoothing")
    rand_augment: str = _field("rand-m9-mstd0.5", "timm-style 'rand-m<M>-mstd<S>[-n<N>]', or '' "
                                                  "for none")
    color_jitter: float = _field(0.4, "brightness/contrast/saturation jitter, used only without "
                                      "RandAugment (as timm)")
    reprob: float = _field(0.25, "random erasing probability")
    mixup: float = _field(0.8, "MixUp alpha (0: off)")
    cutmix: float = _field(1.0, "CutMix alpha (0: off)")
    mixup_switch_prob: float = _field(0.5, "chance of CutMix rather than MixUp when both are on")
    hflip: float = _field(0.5, "horizontal flip probability")
    crop_scale: tuple = _field((0.08, 1.0), "random-resized-crop area range", nargs=2, type=float)
    crop_ratio: tuple = _field((3 / 4, 4 / 3), "random-resized-crop aspect range", nargs=2,
                               type=float)
    crop_pct: float = _field(DEFAULT_PREPROCESSING.crop_pct, "validation: resize to size / crop_pct, centre crop")

    # Engine.
    distribution: str = _field("auto", "'jax' (keras.distribution.DataParallel, multi-process), "
                                       "'mirrored' (tf.distribute, one machine), 'none', 'auto'",
                               choices=DISTRIBUTIONS)
    coordinator: str = _field(None, "JAX multi-process: host:port of process 0 (or "
                                    "KERAS_DISTRIBUTION_JOB_ADDRESSES, or Slurm's environment)")
    num_processes: int = _field(None, "JAX multi-process: number of processes")
    process_id: int = _field(None, "JAX multi-process: this process's index")
    cpu_devices: int = _field(None, "split the CPU into this many devices (tests without GPUs)")
    mixed_precision: str = _field(None, "'mixed_bfloat16' or 'mixed_float16'",
                                  choices=MIXED_PRECISION)
    checkpoint: str = _field("chief", "'chief' (process 0 writes, shared output folder), 'worker' "
                                      "(each process its own folder), 'none'",
                             choices=CHECKPOINT_MODES)
    keep_checkpoints: int = _field(2, "checkpoints kept")
    val_every: int = _field(1, "validate every N epochs")
    data_workers: int = _field(None, "parallel image decoding calls (default: AUTOTUNE)")
    jit_compile: str = _field("auto", "TensorFlow backend: XLA-compile the step ('auto', "
                                      "'true', 'false'); JAX always compiles",
                              choices=("auto", "true", "false"))
    verbose: int = _field(1, "Keras fit verbosity on process 0 (0, 1, 2)", flag="--fit-verbose")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def peak_lr(self):
        """The learning rate after warm-up, scaled linearly with the global batch."""
        return self.lr * self.batch_size / self.lr_batch

    @property
    def rand_augment_spec(self):
        """(num_ops, magnitude, magnitude_std) of `rand_augment`, or None."""
        return parse_rand_augment(self.rand_augment)

    def resolved_distillation(self):
        if self.distillation == "auto":
            return "hard" if self.teacher else "none"
        return self.distillation


#: Recipe name -> field defaults that differ from the official ImageNet recipe.
RECIPES = {
    "official": {},
    # A short schedule for a new head on a small dataset (our choice, not the paper's).
    "finetune": dict(epochs=30, warmup_epochs=1, lr=1e-3, lr_batch=512, min_lr=1e-6,
                     rand_augment="", mixup=0.0, cutmix=0.0, reprob=0.0, drop_path=0.0),
}

#: The official README's changes per variant (dist_train.sh: --aa "" for XS, --mixup 0
#: --cutmix 0 for XS and S).
VARIANT_OVERRIDES = {
    "XS": dict(rand_augment="", mixup=0.0, cutmix=0.0),
    "S": dict(mixup=0.0, cutmix=0.0),
}

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

#: Fields that change what a checkpoint contains or how training proceeds; a resumed run must
#: match them.
RESUME_FIELDS = ("variant", "depths", "widths", "input_size", "token_weighting", "finetune",
                 "freeze", "distillation", "teacher", "epochs", "steps_per_epoch", "batch_size",
                 "lr", "lr_batch", "warmup_epochs", "min_lr", "weight_decay", "clip_mode",
                 "clip_grad", "ema_decay", "mixup", "cutmix", "seed", "mixed_precision")


def parse_rand_augment(spec):
    """timm's ``"rand-m9-mstd0.5[-n2][-inc1]"`` -> (num_ops, magnitude, std); '' or None -> None."""
    if not spec:
        return None
    if not spec.startswith("rand"):
        raise ValueError(f"rand_augment must look like 'rand-m9-mstd0.5', got {spec!r}")
    ops, magnitude, std = 2, 10.0, 0.0
    for part in spec.split("-")[1:]:
        match = re.fullmatch(r"(mstd|m|n|inc|mmax)([0-9.]+)", part)
        if not match:
            raise ValueError(f"Unknown RandAugment option {part!r} in {spec!r}")
        key, value = match[1], float(match[2])
        if key == "m":
            magnitude = value
        elif key == "mstd":
            std = value
        elif key == "n":
            ops = int(value)
    if not 0 <= magnitude <= 10:
        raise ValueError(f"RandAugment magnitude must be in [0, 10], got {magnitude}")
    return ops, magnitude, std


def read_config_file(path):
    """A YAML (needs PyYAML; plain data only, no ``!!python`` tags) or JSON file -> dict of
    field values (dashes or underscores). `UserError` naming the file for anything else."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the config file {path} ({_reason(err)}): give a UTF-8 "
                        "YAML or JSON file") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as err:
            raise ImportError(f"Reading {path} needs PyYAML (pip install pyyaml); or use a "
                              ".json file") from err
        try:
            values = yaml.safe_load(text)  # safe_load: tags that build objects are refused
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not plain YAML ({_reason(err)}): write option: value "
                            "lines (no !!python tags)") from None
    else:
        try:
            values = json.loads(text)
        except ValueError as err:
            raise UserError(f"{path} is not valid JSON ({_reason(err)}): fix it, or use a "
                            ".yaml file") from None
    values = {} if values is None else values
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise UserError(f"{path} must hold a mapping of option names to values (got a "
                        f"{type(values).__name__}): write option: value lines, e.g. epochs: 30")
    return {key.replace("-", "_"): value for key, value in values.items()}


def _reason(err):
    return " ".join(str(getattr(err, "strerror", None) or err).split())


def _coerce(name, value):
    field = FIELDS[name]
    if value is None:
        return None
    if field.metadata.get("nargs"):
        if not isinstance(value, (list, tuple)) or len(value) != field.metadata["nargs"]:
            raise ValueError(f"{name} needs {field.metadata['nargs']} values, got {value!r}")
        return tuple(field.metadata["type"](v) for v in value)
    kind = typing.get_type_hints(TrainConfig)[name]
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    try:
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}") from err


def make_config(recipe="official", **values):
    """Builds and validates a `TrainConfig`.

    Args:
        recipe: a key of `RECIPES`.
        values: explicitly chosen fields (from a file, the command line or code); they win over
            the recipe and over `VARIANT_OVERRIDES`.

    Raises:
        ValueError: an unknown field or recipe, or a value out of range, named in the message.
    """
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; known: {sorted(RECIPES)}")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"Unknown training options: {', '.join(unknown)}")
    values = {name: _coerce(name, value) for name, value in values.items()}
    chosen = dict(RECIPES[recipe])
    variant = str(values.get("variant", TrainConfig.variant)).upper()
    custom = values.get("depths") is not None or values.get("finetune") is not None
    if not custom:
        chosen.update(VARIANT_OVERRIDES.get(variant, {}))
    chosen.update(values)
    _cap_warmup(chosen, explicit="warmup_epochs" in values)
    if "variant" in chosen:
        chosen["variant"] = str(chosen["variant"]).upper()
    config = TrainConfig(**chosen)
    validate(config)
    return config


#: A recipe's warm-up that is not below a short run's epochs becomes this share of them.
WARMUP_SHARE = 0.1


def _cap_warmup(chosen, explicit):
    """A recipe's default warm-up (not one the user chose) at or above `epochs` is cut to
    `WARMUP_SHARE` of the run, said once."""
    epochs = chosen.get("epochs", TrainConfig.epochs)
    warmup = chosen.get("warmup_epochs", TrainConfig.warmup_epochs)
    if explicit or not isinstance(epochs, int) or epochs < 1 or warmup < epochs:
        return
    chosen["warmup_epochs"] = round(epochs * WARMUP_SHARE, 3)
    warnings.warn(f"warming up for {chosen['warmup_epochs']} epochs (the recipe's {warmup} is "
                  f"not below --epochs {epochs}); pass --warmup-epochs to choose")


def validate(config):
    """Raises ValueError naming the first invalid field of `config`."""

    def need(ok, message):
        if not ok:
            raise ValueError(message)

    for name, field in FIELDS.items():
        choices = field.metadata.get("choices")
        if choices is not None:
            need(getattr(config, name) in choices,
                 f"{name} must be one of {choices}, got {getattr(config, name)!r}")
    need(config.data, "data is required: a folder with train/ and val/, or tfds:<name>")
    need(config.output_dir, "output_dir is required: the folder for the model and checkpoints")
    need((config.depths is None) == (config.widths is None), "give depths and widths together")
    if config.depths is None and config.finetune is None:
        need(config.variant in MODEL_CONFIGS,
             f"variant must be one of {sorted(MODEL_CONFIGS)}, got {config.variant!r}")
    for name in ("input_size", "epochs", "batch_size", "lr_batch", "keep_checkpoints",
                 "val_every"):
        need(getattr(config, name) >= 1, f"{name} must be >= 1, got {getattr(config, name)}")
    need(INPUT_SIDES[0] <= config.input_size <= INPUT_SIDES[1],
         f"input_size must be {INPUT_SIDES[0]} to {INPUT_SIDES[1]}, got {config.input_size}")
    for name in ("lr", "warmup_lr", "min_lr", "weight_decay", "opt_eps", "clip_grad"):
        need(getattr(config, name) >= 0, f"{name} must be >= 0, got {getattr(config, name)}")
    need(0 <= config.warmup_epochs < config.epochs or config.warmup_epochs == 0,
         f"warmup_epochs ({config.warmup_epochs}) must be below epochs ({config.epochs}): "
         f"pass a smaller warmup_epochs, e.g. {round(config.epochs * WARMUP_SHARE, 3)}")
    for name in ("label_smoothing", "reprob", "hflip", "mixup_switch_prob", "drop_path",
                 "drop_rate", "distillation_alpha", "color_jitter"):
        need(0 <= getattr(config, name) <= 1, f"{name} must be in [0, 1], "
                                               f"got {getattr(config, name)}")
    need(config.mixup >= 0, f"mixup must be >= 0, got {config.mixup}")
    need(0 <= config.cutmix <= 1, f"cutmix must be in [0, 1] (Keras's CutMix), got "
                                  f"{config.cutmix}")
    need(0 < config.crop_scale[0] <= config.crop_scale[1] <= 1,
         f"crop_scale must satisfy 0 < min <= max <= 1, got {config.crop_scale}")
    need(0 < config.crop_ratio[0] <= config.crop_ratio[1],
         f"crop_ratio must satisfy 0 < min <= max, got {config.crop_ratio}")
    need(0 < config.crop_pct <= 1, f"crop_pct must be in (0, 1], got {config.crop_pct}")
    need(config.distillation_tau > 0, "distillation_tau must be > 0")
    need(config.ema_decay is None or 0 < config.ema_decay < 1,
         f"ema_decay must be in (0, 1), got {config.ema_decay}")
    need(config.steps_per_epoch is None or config.steps_per_epoch >= 1,
         "steps_per_epoch must be >= 1")
    need(config.cpu_devices is None or config.cpu_devices >= 1, "cpu_devices must be >= 1")
    need(config.teacher != "original" or config.finetune,
         "teacher='original' needs --finetune (the model whose heads teach the new ones)")
    need(config.resolved_distillation() == "none" or config.teacher,
         f"distillation={config.distillation!r} needs a teacher (--teacher)")
    need(config.teacher_classes is None or config.teacher,
         "teacher_classes is set but there is no teacher")
    if config.token_weighting is not None:
        from keras_swiftformer.layers import check_token_weighting

        check_token_weighting(config.token_weighting)
    parse_rand_augment(config.rand_augment)
    from keras_swiftformer.source import is_address

    for flag, spec in (("finetune", config.finetune), ("teacher", config.teacher)):
        if spec not in (None, "original") and not is_address(spec):
            need(os.path.exists(spec), f"{flag} {spec} not found: give a checkpoint file or "
                 "folder, a .keras model, a weight tag (imagenet, imagenet-hf) or hf://ORG/REPO")
