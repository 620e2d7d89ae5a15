"""Fine-tuning a compressed twin by distillation from the float model's logits.

The teacher is the Keras 3 float model (the product); the student is a tf_keras model that TFMOT
has wrapped (QAT, pruning, clustering). The student learns to reproduce the teacher's logits on
unlabeled images, randomly flipped and cropped, so a folder of photos is all it needs:

====  ======================================================================================
mse   ``mean((s - t)^2) / mean(t^2)``: the inverse signal-to-noise ratio of the logits, i.e.
      what the fidelity report's SQNR measures
kl    DeiT's soft distillation at temperature `tau` (`keras_swiftformer.training.losses`),
      times the class count (so that it does not shrink with it)
mse+kl  the sum (the default): MSE follows the logits' values, KL their ranking
====  ======================================================================================
"""

import math

import numpy as np
import tensorflow as tf
import tf_keras

from converters.tfmot.twin import freeze_batch_norm
from keras_swiftformer.training.losses import soft_distillation

LOSSES = ("mse", "kl", "mse+kl")


def augment(images, seed, min_area=0.5):
    """Random horizontal flip and random crop (area `min_area`-1, aspect kept) resized back.

    Args:
        images: (B, H, W, C) float32.
        seed: (2,) int32 stateless seed.

    Returns:
        (B, H, W, C) float32.
    """
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    side = tf.sqrt(tf.random.stateless_uniform([batch], seeds[0], min_area, 1.0))
    corner = tf.random.stateless_uniform([batch, 2], seeds[1]) * (1.0 - side[:, None])
    boxes = tf.concat([corner, corner + side[:, None]], axis=1)
    crops = tf.image.crop_and_resize(images, boxes, tf.range(batch), tf.shape(images)[1:3])
    flip = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[2]) < 0.5
    return tf.where(flip, tf.reverse(crops, axis=[2]), crops)


def distillation_loss(student_logits, teacher_logits, loss="mse+kl", tau=1.0):
    """Scalar loss of `student_logits` (B, K) against `teacher_logits` (B, K) (see module)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    total = 0.0
    if "mse" in loss:
        error = tf.reduce_mean(tf.square(student_logits - teacher_logits))
        total += error / (tf.reduce_mean(tf.square(teacher_logits)) + 1e-12)
    if "kl" in loss:
        classes = tf.cast(tf.shape(teacher_logits)[-1], tf.float32)
        total += tf.reduce_mean(soft_distillation(student_logits, teacher_logits, tau)) * classes
    return total


def distill(student, teacher, images, steps, batch_size=16, learning_rate=3e-5, loss="mse+kl",
            tau=1.0, seed=0, callbacks=(), progress=None):
    """Fine-tunes `student` so that its logits follow `teacher`'s on augmented `images`.

    Adam with a cosine decay of the learning rate to zero over `steps`; BatchNorm frozen
    (`converters.tfmot.twin.freeze_batch_norm`). TFMOT's pruning
    callback (`tfmot.sparsity.keras.UpdatePruningStep`) and other Keras callbacks get their
    ``on_train_begin`` / ``on_train_batch_begin`` / ``on_train_batch_end`` / ``on_epoch_end``
    calls as ``fit`` would make them (the custom loop of TFMOT's guide).

    Args:
        student: tf_keras model to train, logits out.
        teacher: callable (Keras 3 float model or tf_keras model), same input, logits out.
        images: (N, H, W, C) float32 in the models' input domain.
        steps: optimiser steps.
        batch_size: images per step (drawn without replacement, reshuffled every epoch).
        learning_rate: peak learning rate.
        loss: one of `LOSSES`.
        tau: temperature of "kl".
        seed: of the shuffling and the augmentation.
        callbacks: Keras callbacks for the student.
        progress: callable taking one line of text, called about ten times; or None.

    Returns:
        The loss of each step (list of float).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if steps < 1 or len(images) < 1:
        raise ValueError(f"Need steps >= 1 and images, got steps={steps}, {len(images)} images")
    batch_size = min(batch_size, len(images))
    freeze_batch_norm(student)
    schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    optimizer = tf_keras.optimizers.Adam(schedule)
    variables = student.trainable_variables

    @tf.function
    def train_step(x, step_seed):
        x = augment(x, step_seed)
        target = tf.stop_gradient(tf.convert_to_tensor(teacher(x, training=False)))
        with tf.GradientTape() as tape:
            value = distillation_loss(student(x, training=True), target, loss, tau)
        optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
        return value

    rng = np.random.default_rng(seed)
    callbacks = tf_keras.callbacks.CallbackList(list(callbacks), model=student)
    callbacks.on_train_begin()
    losses, order = [], []
    for step in range(steps):
        if len(order) < batch_size:
            order = list(rng.permutation(len(images)))
        batch, order = order[:batch_size], order[batch_size:]
        callbacks.on_train_batch_begin(step)
        value = float(train_step(tf.constant(images[batch], tf.float32),
                                 tf.constant([seed, step], tf.int32)))
        callbacks.on_train_batch_end(step, {"loss": value})
        losses.append(value)
        if progress and (step + 1) % max(1, math.ceil(steps / 10)) == 0:
            progress(f"    step {step + 1}/{steps}: loss {np.mean(losses[-10:]):.4g}")
    callbacks.on_epoch_end(0, {"loss": losses[-1]})
    callbacks.on_train_end()
    return losses
