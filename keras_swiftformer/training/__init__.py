"""Training SwiftFormer at scale: the official recipe, fine-tuning with distillation, and
data-parallel runs on one or several machines.

Modules, one concern each: `config` (the recipe's options), `data` (folder trees / TFDS to
deterministic `tf.data`), `augment` (random-resized crop and Keras's augmentation layers),
`losses` (label smoothing, DeiT distillation), `optim` (AdamW with adaptive gradient clipping,
the schedule), `distribute` (JAX multi-process / TF mirrored), `checkpoint` (atomic,
single-writer checkpoints), `trainer` (`train`), `cli` (``swiftformer-train``).
"""

from keras_swiftformer.training.config import RECIPES, TrainConfig, make_config

__all__ = ["RECIPES", "TrainConfig", "make_config", "train"]


def train(config, shard=None):
    """Runs `config` (a `TrainConfig`); see `keras_swiftformer.training.trainer.train`."""
    from keras_swiftformer.training.trainer import train as run

    return run(config, shard=shard)
