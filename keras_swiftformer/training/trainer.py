"""The training loop of the recipe: models, teacher, `fit`, checkpoints and the saved model.

`train(config)` runs one training or fine-tuning job end to end on whatever engine the
configuration names (`keras_swiftformer.training.distribute`), resuming from the newest
checkpoint of an interrupted run, and saves ``<output>/model.keras`` (a plain
`keras_swiftformer.SwiftFormer` model: any input size, RGB 0-255, softmax over the averaged
heads, the input of the conversion pipeline) with ``model.json`` (classes, evaluation transform,
configuration, history).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import time

import keras
import numpy as np
from keras import ops

from keras_swiftformer.config import HEADS, SwiftFormerConfig, module_path
from keras_swiftformer.files import atomic_output
from keras_swiftformer.mapping import copy_weights
from keras_swiftformer.model import SwiftFormer
from keras_swiftformer.training import checkpoint as ckpt
from keras_swiftformer.training import data as data_lib
from keras_swiftformer.training import distribute
from keras_swiftformer.training.augment import MixUpCutMix, SampleAugment
from keras_swiftformer.training.config import RESUME_FIELDS
from keras_swiftformer.training.losses import distillation_loss, soft_target_cross_entropy
from keras_swiftformer.training.optim import lr_schedule, make_optimizer

MODEL_FILE, INFO_FILE = "model.keras", "model.json"


class TrainingModel(keras.Model):
    """The student's two heads, the batch augmentation and the teacher, trained by `fit`.

    Inputs (a dict of batches): ``image`` (B, S, S, 3) RGB 0-255; ``label`` (B, K) one-hot;
    optional ``teacher_logits`` (B, K) saved logits; optional ``weight`` (B,) (0 for padding).

    Outputs: ``head``, ``head_dist`` (B, K) logits, ``label`` (the possibly mixed targets) and,
    when distilling in training, ``teacher`` (B, K) logits.

    Args:
        network: functional model image -> [head logits, head_dist logits].
        mix: a `MixUpCutMix` applied in training, or None.
        teacher: a Keras model image -> logits (frozen), or None (saved logits or none).
        teacher_index: (K,) indices selecting the teacher outputs of the K classes, or None.
        distillation, alpha, tau, smoothing: see `losses.distillation_loss`.
    """

    def __init__(self, network, mix=None, teacher=None, teacher_index=None, distillation="none",
                 alpha=0.5, tau=1.0, smoothing=0.1, **kwargs):
        super().__init__(**kwargs)
        self.network, self.mix, self.teacher = network, mix, teacher
        if teacher is not None:
            teacher.trainable = False
        self.teacher_index = None if teacher_index is None else np.asarray(teacher_index, "int32")
        self.distillation, self.alpha, self.tau = distillation, alpha, tau
        self.smoothing = smoothing
        self.top1 = keras.metrics.TopKCategoricalAccuracy(k=1, name="top1")
        self.top5 = keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")
        self.xent = keras.metrics.Mean(name="xent")

    def build(self, input_shape=None):
        self.built = True  # The network and the teacher are built functional models.

    def call(self, inputs, training=False):
        images, labels = inputs["image"], inputs["label"]
        saved = inputs.get("teacher_logits")
        if training and self.mix is not None:
            images, labels, saved = self.mix(images, labels, saved)
        head, head_dist = self.network(images, training=training)
        outputs = {"head": head, "head_dist": head_dist, "label": labels}
        if training and self.distillation != "none":
            if self.teacher is not None:
                logits = self.teacher(images, training=False)
                if self.teacher_index is not None:
                    logits = ops.take(logits, self.teacher_index, axis=-1)
                saved = ops.stop_gradient(logits)
            outputs["teacher"] = saved
        return outputs

    def _weights(self, x, like):
        weight = x.get("weight") if isinstance(x, dict) else None
        return ops.ones_like(like) if weight is None else ops.cast(weight, like.dtype)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training:
            per_sample = distillation_loss(
                y_pred["label"], y_pred["head"], y_pred["head_dist"], y_pred.get("teacher"),
                self.distillation, self.alpha, self.tau, self.smoothing)
        else:
            per_sample = soft_target_cross_entropy(y_pred["label"], _average(y_pred))
        weight = self._weights(x, per_sample)
        loss = ops.sum(per_sample * weight) / ops.maximum(ops.sum(weight), 1.0)
        return distribute.replica_mean(loss)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logits, labels = _average(y_pred), ops.cast(y_pred["label"], "float32")
        weight = self._weights(x, logits[:, 0])
        self.xent.update_state(soft_target_cross_entropy(labels, logits), sample_weight=weight)
        self.top1.update_state(labels, logits, sample_weight=weight)
        self.top5.update_state(labels, logits, sample_weight=weight)
        return self.get_metrics_result()


def _average(y_pred):
    return (ops.cast(y_pred["head"], "float32") + ops.cast(y_pred["head_dist"], "float32")) / 2


def heads_model(student):
    """image -> [head logits, head_dist logits], sharing `student`'s layers."""
    return keras.Model(student.inputs, [student.get_layer(n).output for n in HEADS],
                       name=f"{student.name}_heads")


def official_init(model, seed, layers=None):
    """The official initialisation, drawn with NumPy so that every process and backend starts
    from the same weights: conv and linear weights N(0, 0.02) (timm's trunc_normal_ at +-2,
    i.e. untruncated), biases 0, ``w_g`` N(0, 1) (``torch.randn``); `layers` restricts it."""
    rng = np.random.default_rng([seed, 0x5F0])
    for layer in model.layers:
        if layers is not None and layer.name not in layers:
            continue
        kind = type(layer).__name__
        for variable in layer.weights:
            short = variable.path.rsplit("/", 1)[-1]
            if kind in ("Conv2D", "DepthwiseConv2D", "Dense") and short == "kernel":
                variable.assign(rng.normal(0.0, 0.02, variable.shape).astype("float32"))
            elif kind in ("Conv2D", "DepthwiseConv2D", "Dense") and short == "bias":
                variable.assign(np.zeros(variable.shape, "float32"))
            elif kind == "AdditiveTokenMixing" and short == "w_g":
                variable.assign(rng.normal(0.0, 1.0, variable.shape).astype("float32"))


def apply_freeze(student, spec):
    """Freezes the layers named by `spec`: "body" (all but the heads), or comma-separated
    module-path prefixes ("stem,stages.0")."""
    if not spec:
        return []
    if spec == "body":
        frozen = [layer for layer in student.layers if layer.name not in HEADS]
    else:
        frozen = []
        for prefix in [p.strip() for p in spec.split(",") if p.strip()]:
            prefix = module_path(prefix)
            matched = [layer for layer in student.layers
                       if module_path(layer.name) == prefix
                       or module_path(layer.name).startswith(prefix + ".")]
            if not matched:
                raise ValueError(f"freeze: no layer is named {prefix!r} or {prefix}.*")
            frozen += matched
    for layer in frozen:
        layer.trainable = False
    return [layer.name for layer in frozen]


@dataclasses.dataclass
class Models:
    student: object
    architecture: SwiftFormerConfig
    teacher: object = None
    teacher_index: object = None
    source: dict = None  # what the student started from


def _source(spec, config):
    """The `keras_swiftformer.source.ModelSource` of ``--finetune`` / ``--teacher``: a weight
    tag (of ``--variant``), ``hf://``, a checkpoint or a ``.keras`` model (their own variant)."""
    from keras_swiftformer.source import resolve_source
    from keras_swiftformer.sources import TAGS

    source = resolve_source(spec, config.variant if spec in TAGS else None)
    if source.weights is not None:  # a .keras model's variables may be replicated
        source.weights.read = distribute.to_numpy
    return source


def build_models(config, classes):
    """The student (and teacher) of `config` for the data's `classes` (names)."""
    size = (config.input_size, config.input_size, 3)
    common = dict(classes=len(classes), input_shape=size, drop_path_rate=config.drop_path,
                  drop_rate=config.drop_rate)
    source, original = {"from": "scratch"}, None
    if config.finetune is None:
        variant = None if config.depths else config.variant
        student = SwiftFormer(variant, depths=config.depths, widths=config.widths,
                              token_weighting=config.token_weighting or "l2", **common)
        official_init(student, config.seed)
    else:
        start = _source(config.finetune, config)
        reset = bool(config.new_head or start.classes != len(classes))
        student = start.build(classifier_activation="softmax", include_top=True,
                              new_head=reset, token_weighting=config.token_weighting
                              or start.token_weighting, **common)
        if reset:
            official_init(student, config.seed, layers=HEADS)
        source = {"from": config.finetune, "format": start.provenance.get("format_in"),
                  "new_head": reset}
        if config.teacher == "original":  # the same model at the training size, logits out
            start.require_heads("--teacher original needs the --finetune model's own heads")
            original = start.build(input_shape=size)
    arch = SwiftFormerConfig.from_model(student)
    teacher = index = None
    if config.teacher and not config.teacher.endswith(".npz"):
        teacher = original if config.teacher == "original" else _teacher(config, size)
        teacher = _logits_model(teacher)
        side = tuple(teacher.inputs[0].shape[1:3])
        if side != (None, None) and side != size[:2]:
            raise ValueError(f"The teacher takes {side[0]}x{side[1]} images, training uses "
                             f"{config.input_size}x{config.input_size}: give --input-size "
                             f"{side[0]} or a teacher that accepts any size")
        index = teacher_class_index(config, classes, int(teacher.outputs[0].shape[-1]))
    return Models(student, arch, teacher, index, source)


def _teacher(config, size):
    """The ``--teacher`` model: any Keras classifier saved as ``.keras`` (as it is), or a
    SwiftFormer source (checkpoint, tag, ``hf://``) built at the training size, logits out."""
    if config.teacher.endswith(".keras"):
        import keras_swiftformer.layers  # noqa: F401  (registers the custom layers)

        try:
            return keras.saving.load_model(config.teacher, compile=False)
        except Exception as err:  # Keras raises many kinds for a foreign or corrupt archive
            raise ValueError(f"--teacher {config.teacher} could not be loaded as a Keras model "
                             f"({' '.join(str(err).split())}): give a .keras classifier") from None
    source = _source(config.teacher, config)
    source.require_heads("a teacher needs classifier heads")
    return source.build(input_shape=size, name=f"teacher_{source.variant.lower()}")


def _logits_model(model):
    """`model` without a final softmax (soft distillation needs logits)."""
    last = model.layers[-1]
    if (isinstance(last, keras.layers.Activation)
            and getattr(last.activation, "__name__", "") == "softmax"):
        return keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    return model


def teacher_class_index(config, classes, teacher_classes):
    """Indices of the teacher outputs for the data's `classes`, or None when they coincide.

    Raises:
        ValueError: a teacher with another class count and no mapping.
    """
    if config.teacher_classes:
        with open(config.teacher_classes) as f:
            index = json.load(f)
        if len(index) != len(classes) or max(index) >= teacher_classes or min(index) < 0:
            raise ValueError(f"{config.teacher_classes} must list {len(classes)} teacher class "
                             f"indices in [0, {teacher_classes})")
        return index
    if teacher_classes == len(classes):
        return None
    index = data_lib.imagenet_class_indices(classes) if teacher_classes == 1000 else None
    if index is None:
        raise ValueError(f"The teacher predicts {teacher_classes} classes but the data has "
                         f"{len(classes)}: give --teacher-classes (a JSON list of the teacher's "
                         "class index for each data class)")
    return index


def export_model(student, architecture, classes):
    """A fresh float32 `SwiftFormer` (any input size, softmax) with `student`'s weights, built on
    this process alone: the model that is saved and converted."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        with distribute.local():
            model = SwiftFormer(architecture.variant, depths=architecture.depths,
                                widths=architecture.widths,
                                token_weighting=architecture.token_weighting,
                                classes=len(classes), input_shape=(None, None, 3),
                                name=student.name)
            copy_weights(student, model, read=distribute.to_numpy)
    finally:
        keras.config.set_dtype_policy(policy)
    return model


def weights_digest(model):
    """SHA-256 of all of `model`'s weights (bitwise identity of replicas)."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(distribute.to_numpy(variable).astype("float32").tobytes())
    return digest.hexdigest()


def _write_json(path, value):
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=1, default=str)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the saved model (in memory), its path, history and runtime."""

    model: object
    path: str
    history: dict
    initial_val: dict
    runtime: object
    resumed_from: int


def _read_data(config):
    """(train set, validation set or None, saved teacher logits or None, steps per epoch)."""
    train_set = data_lib.read_split(config.data, config.train_split, None,
                                    config.check_images, config.on_bad_image)
    val_set = (data_lib.read_split(config.data, config.val_split, train_set.classes,
                                   config.check_images, config.on_bad_image)
               if config.val_split else None)
    saved_logits = None
    if config.teacher and config.teacher.endswith(".npz"):
        saved_logits = data_lib.read_teacher_logits(config.teacher, train_set)
        index = teacher_class_index(config, train_set.classes, saved_logits.shape[1])
        if index is not None:
            saved_logits = saved_logits[:, index]
    steps = config.steps_per_epoch or len(train_set) // config.batch_size
    if steps < 1:
        raise ValueError(f"{len(train_set)} training images make no full batch of "
                         f"{config.batch_size}")
    return train_set, val_set, saved_logits, steps


def _compiled(config, runtime, models, steps, distillation):
    """The `TrainingModel` around `models`, compiled with the recipe's optimiser (in the
    runtime's scope); returns (model, optimizer)."""
    network = heads_model(models.student)
    mix = (MixUpCutMix(config.mixup, config.cutmix, config.mixup_switch_prob, config.seed)
           if config.mixup > 0 or config.cutmix > 0 else None)
    model = TrainingModel(network, mix, models.teacher, models.teacher_index, distillation,
                          config.distillation_alpha, config.distillation_tau,
                          config.label_smoothing, name="training")
    if runtime.engine == "mirrored" and runtime.replicas > 1:
        for layer in models.student.layers:  # BatchNorm statistics over the global batch
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    schedule = lr_schedule(config.peak_lr, steps * config.epochs,
                           int(round(config.warmup_epochs * steps)), config.warmup_lr,
                           config.min_lr)
    optimizer = make_optimizer(network, schedule, config.weight_decay, config.opt_eps,
                               config.clip_mode, config.clip_grad, config.ema_decay)
    jit = {"auto": "auto", "true": True, "false": False}[config.jit_compile]
    # compile() wraps the optimiser in a LossScaleOptimizer under mixed_float16.
    model.compile(optimizer=optimizer, jit_compile=jit)
    model.optimizer.build(model.trainable_variables)
    return model, model.optimizer


def _resumable(config, runtime, model, models, optimizer):
    """The training state, restored from the last checkpoint unless `config.overwrite`;
    returns (Checkpointer callback or None, initial epoch)."""
    skip = {id(v) for v in (models.teacher.variables if models.teacher is not None else [])}
    skip |= {id(v) for v in model.metrics_variables}
    state = ckpt.TrainingState([v for v in model.variables if id(v) not in skip], optimizer)
    record = {"config": {name: getattr(config, name) for name in RESUME_FIELDS}}
    directory = ckpt.checkpoint_dir(config.output_dir, config.checkpoint, runtime.process_id)
    writer = ckpt.is_writer(config.checkpoint, runtime.process_id)
    if config.overwrite and writer and directory and os.path.isdir(directory):
        shutil.rmtree(directory)
    found = [] if config.overwrite else ckpt.list_checkpoints(directory)
    epoch = ckpt.restore_newest_intact(state, found, expected=record["config"])
    initial_epoch = runtime.agree(epoch, "the checkpoint to resume from")
    callback = (ckpt.Checkpointer(state, directory, record, writer, config.keep_checkpoints)
                if directory is not None else None)
    return callback, initial_epoch


def train(config, shard=None):
    """Trains (or fine-tunes) as `config` says; see the module docstring.

    Args:
        config: a `TrainConfig` (`make_config`).
        shard: override of this process's (index, count) data slice, for checks only.

    Returns:
        `TrainResult`.

    Raises:
        FileExistsError: ``<output>/model.keras`` exists and `config.overwrite` is off.
        ValueError: bad data, teacher, batch size or options, before any training step.
    """
    model_path = os.path.join(config.output_dir, MODEL_FILE)
    if os.path.exists(model_path) and not config.overwrite:
        raise FileExistsError(f"{model_path} exists (a finished run): choose another --output-dir, "
                              "or pass --overwrite to train afresh and replace it")
    runtime = distribute.setup(config)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.config.set_dtype_policy(config.mixed_precision)
    runtime.check_batch(config.batch_size)
    train_set, val_set, saved_logits, steps = _read_data(config)
    distillation = config.resolved_distillation()
    with runtime.scope():
        models = build_models(config, train_set.classes)
        frozen = apply_freeze(models.student, config.freeze)
        model, optimizer = _compiled(config, runtime, models, steps, distillation)
    checkpointer, initial_epoch = _resumable(config, runtime, model, models, optimizer)

    shard = shard or runtime.shard
    sample_augment = SampleAugment(config.rand_augment, config.color_jitter, config.reprob)
    augmentation = data_lib.Augmentation(config.seed, config.hflip, config.crop_scale,
                                         config.crop_ratio, sample_augment)
    train_ds = data_lib.train_dataset(
        train_set, config.batch_size, config.input_size, augmentation,
        start_step=initial_epoch * steps, shard=shard, teacher_logits=saved_logits,
        parallel=config.data_workers)
    val_ds = (data_lib.eval_dataset(val_set, config.batch_size, config.input_size,
                                    config.crop_pct, shard, config.data_workers)
              if val_set is not None else None)
    initial_val = {}
    if val_ds is not None and config.finetune and initial_epoch == 0:
        initial_val = model.evaluate(val_ds, verbose=0, return_dict=True)
    started = time.time()
    history = model.fit(train_ds, epochs=config.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps, validation_data=val_ds,
                        validation_freq=config.val_every,
                        callbacks=[checkpointer] if checkpointer else [], shuffle=False,
                        verbose=config.verbose if runtime.is_chief else 0)
    elapsed = time.time() - started

    exported = export_model(models.student, models.architecture, train_set.classes)
    step = int(distribute.to_numpy(optimizer.iterations))
    worker = {"process_id": runtime.process_id, "num_processes": runtime.num_processes,
              "engine": runtime.engine, "replicas": runtime.replicas, "step": step,
              "epochs": config.epochs, "resumed_from_epoch": initial_epoch,
              "weights_sha256": weights_digest(exported)}
    _write_json(os.path.join(config.output_dir, "workers", f"worker-{runtime.process_id}.json"),
                worker)
    if runtime.is_chief:
        arch = models.architecture
        info = {"classes": train_set.classes, "input_size": config.input_size,
                "crop_pct": config.crop_pct, "include_preprocessing": True,
                "depths": list(arch.depths), "widths": list(arch.widths),
                "token_weighting": arch.token_weighting, "variant": arch.variant,
                "source": models.source, "frozen_layers": len(frozen),
                "distillation": distillation, "engine": runtime.engine,
                "processes": runtime.num_processes, "replicas": runtime.replicas,
                "train_images": len(train_set),
                "val_images": len(val_set) if val_set is not None else 0,
                "steps": step, "seconds": round(elapsed, 1), "resumed_from_epoch": initial_epoch,
                "initial_val": initial_val, "history": history.history,
                "config": config.to_dict()}
        with atomic_output(model_path) as tmp:
            exported.save(tmp)
        _write_json(os.path.join(config.output_dir, INFO_FILE), info)
    return TrainResult(exported, model_path, history.history, initial_val, runtime,
                       initial_epoch)
