"""Fine-tuning a compressed twin by distillation from the float model's logits.

The teacher is the Keras 3 float model (the product); the student is a tf_keras model that TFMOT
has wrapped (QAT, pruning, clustering). The student learns to reproduce the teacher's logits on
unlabeled images, randomly flipped and cropped, so a folder of photos is all it needs:

====  ======================================================================================
mse   ``mean((s - t)^2) / mean(t^2)``: the inverse signal-to-noise ratio of the logits, i.e.
      what the fidelity report's SQNR measures (the default: it gained the most over
      post-training int8; adding KL gained less, KL alone lost)
kl    DeiT's soft distillation at temperature `tau` (`keras_swiftformer.training.losses`),
      times the class count (so that it does not shrink with it)
mse+kl  the sum: MSE follows the logits' values, KL their ranking
====  ======================================================================================
"""

import math

import numpy as np
import tensorflow as tf
import tf_keras

from converters.tfmot.twin import freeze_batch_norm
from keras_swiftformer.training.losses import soft_distillation

LOSSES = ("mse", "kl", "mse+kl")
#: "relative": `RelativeAdam` (steps relative to each tensor's scale); "adam": plain Adam.
OPTIMIZERS = ("relative", "adam")
#: Peak learning rate of the "relative" optimizer (a larger one lost fidelity from the
#: calibrated start).
DEFAULT_LEARNING_RATE = 6e-4
#: Fraction of the steps spent warming the learning rate up from zero.
WARMUP = 0.1


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


def logit_matching_loss(student_logits, teacher_logits, loss="mse+kl", tau=1.0):
    """Scalar loss of `student_logits` (B, K) matching the float model's `teacher_logits` (B, K):
    relative MSE and/or soft KL (see module). Not the recipe's `keras_swiftformer.training.losses.
    distillation_loss`, which trains on labels with a teacher."""
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


#: The smallest scale `RelativeAdam` gives a variable.
MIN_SCALE = 1e-3


class RelativeAdam:
    """Adam whose step size for each variable is `learning_rate` times that variable's RMS at
    the start (a per-tensor trust ratio, as LAMB's, fixed at the start).

    Folding makes tensor scales differ by orders of magnitude (the first convolution carries
    the ImageNet normalisation, ``1 / (255 std)``: kernels around 1e-5), and plain Adam moves
    every element by about the learning rate, whatever its scale: a step that is harmless to
    one tensor rewrites another (plain Adam destroyed the folded QAT model in a few dozen steps
    where this optimizer improved it). The RMS is floored at `MIN_SCALE`, so
    that a tensor that is zero (or nearly) can still move.
    """

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.variables = list(variables)
        self.learning_rate = learning_rate  # float, or a callable of the step (a schedule)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.scales = [tf.constant(max(float(tf.sqrt(tf.reduce_mean(tf.square(v)))), MIN_SCALE),
                                   v.dtype) for v in self.variables]
        self.moments = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.squares = [tf.Variable(tf.zeros_like(v), trainable=False) for v in self.variables]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)

    def apply_gradients(self, gradients):
        """One step; `gradients` in the order of the variables (None: no gradient)."""
        lr = self.learning_rate
        lr = lr(self.iterations) if callable(lr) else lr
        step = tf.cast(self.iterations + 1, tf.float32)
        correction = tf.sqrt(1.0 - self.beta_2**step) / (1.0 - self.beta_1**step)
        for g, v, m, s, scale in zip(gradients, self.variables, self.moments, self.squares,
                                     self.scales):
            if g is None:
                continue
            g = tf.convert_to_tensor(g)  # clustering's centroids get IndexedSlices
            m.assign(self.beta_1 * m + (1.0 - self.beta_1) * g)
            s.assign(self.beta_2 * s + (1.0 - self.beta_2) * g * g)
            v.assign_sub(lr * scale * correction * m / (tf.sqrt(s) + self.epsilon))
        self.iterations.assign_add(1)


def distill(student, teacher, images, steps, tuning, callbacks=(), progress=None):
    """Fine-tunes `student` so that its logits follow `teacher`'s on augmented `images`.

    `RelativeAdam` (or plain Adam), the learning rate warmed up linearly over the first
    `WARMUP` of the steps, then a cosine decay to zero; BatchNorm frozen
    (`converters.tfmot.twin.freeze_batch_norm`). TFMOT's pruning
    callback (`tfmot.sparsity.keras.UpdatePruningStep`) and other Keras callbacks get their
    ``on_train_begin`` / ``on_train_batch_begin`` / ``on_train_batch_end`` / ``on_epoch_end``
    calls as ``fit`` would make them (the custom loop of TFMOT's guide).

    Args:
        student: tf_keras model to train, logits out.
        teacher: callable (Keras 3 float model or tf_keras model), same input, logits out.
        images: (N, H, W, C) float32 in the models' input domain.
        steps: optimiser steps.
        tuning: a `converters.compress.FineTuning`: images per step (drawn without
            replacement, reshuffled every epoch), peak learning rate (None:
            `DEFAULT_LEARNING_RATE`), loss (one of `LOSSES`), the temperature of "kl", the seed
            of the shuffling and the augmentation, the optimizer (one of `OPTIMIZERS`).
        callbacks: Keras callbacks for the student.
        progress: callable taking one line of text, called about ten times; or None.

    Returns:
        The loss of each step (list of float).
    """
    loss, tau, seed, optimizer = tuning.loss, tuning.tau, tuning.seed, tuning.optimizer
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if steps < 1 or len(images) < 1:
        raise ValueError(f"Need steps >= 1 and images, got steps={steps}, {len(images)} images")
    batch_size = min(tuning.batch_size, len(images))
    freeze_batch_norm(student)
    learning_rate = tuning.learning_rate or DEFAULT_LEARNING_RATE
    warmup = int(WARMUP * steps)
    schedule = tf_keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else learning_rate, max(steps - warmup, 1), warmup_target=learning_rate
        if warmup else None, warmup_steps=warmup)
    variables = student.trainable_variables
    if optimizer == "relative":
        optimizer = RelativeAdam(variables, schedule)
        apply = optimizer.apply_gradients
    elif optimizer == "adam":
        optimizer = tf_keras.optimizers.Adam(schedule)
        apply = lambda grads: optimizer.apply_gradients(zip(grads, variables))  # noqa: E731
    else:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")

    @tf.function
    def train_step(x, step_seed):
        x = augment(x, step_seed)
        target = tf.stop_gradient(tf.convert_to_tensor(teacher(x, training=False)))
        with tf.GradientTape() as tape:
            value = logit_matching_loss(student(x, training=True), target, loss, tau)
        apply(tape.gradient(value, variables))
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
