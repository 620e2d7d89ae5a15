"""The optimiser of the recipe: AdamW with adaptive gradient clipping, cosine schedule with
warm-up, and weight decay on the tensors the official code decays.

Adaptive gradient clipping (Brock et al., 2021; timm's ``adaptive_clip_grad``, which the
official training calls with ``clip_factor=0.01``): per *unit* of a parameter,
``g <- g * max(||w||, eps) * clip / ||g||`` where ``||g|| >= max(||w||, eps) * clip``
(``||g||`` floored at 1e-6), eps 1e-3. timm's unit is each slice along a PyTorch tensor's first
axis (an output channel of a convolution or linear layer; the whole tensor for 1-D ones), so
the units depend on the PyTorch layout. `agc_unit_axes` states them for our Keras layouts:

==========================  ==============  =========================================
Keras weight                PyTorch shape   norm over (Keras axes)
==========================  ==============  =========================================
Conv2D kernel (kh,kw,i,o)   (o,i,kh,kw)     0, 1, 2  -- one norm per output channel
DepthwiseConv2D (kh,kw,c,1) (c,1,kh,kw)     0, 1, 3  -- one per channel
Dense kernel (i, o)         (o, i)          0        -- one per output
LayerScale gamma (c,)       (c, 1, 1)       none     -- every element its own unit
AdditiveTokenMixing w_g     (d, 1)          none     -- every element its own unit
bias, BatchNorm gamma/beta  (c,)            all      -- one norm for the whole tensor
==========================  ==============  =========================================
"""

import keras
from keras import ops

from keras_swiftformer.config import default_clip_axes, parameter_roles

AGC_EPS = 1e-3
GRAD_NORM_FLOOR = 1e-6


def unitwise_norm(x, axes):
    """L2 norm of `x` per unit: `axes` None -> whole tensor (scalar); () -> ``|x|``; else over
    `axes`, kept for broadcasting."""
    if axes is None:
        return ops.sqrt(ops.sum(ops.square(x)))
    if len(axes) == 0:
        return ops.abs(x)
    return ops.sqrt(ops.sum(ops.square(x), axis=axes, keepdims=True))


def adaptive_clip(grad, param, axes, clip_factor=0.01, eps=AGC_EPS):
    """One gradient clipped adaptively against its parameter (same shapes)."""
    grad = ops.cast(grad, "float32")
    param = ops.cast(param, "float32")
    max_norm = ops.maximum(unitwise_norm(param, axes), eps) * clip_factor
    grad_norm = unitwise_norm(grad, axes)
    clipped = grad * (max_norm / ops.maximum(grad_norm, GRAD_NORM_FLOOR))
    return ops.where(grad_norm < max_norm, grad, clipped)


def agc_unit_axes(model):
    """{variable path: unit axes} for the trainable weights of `model` (see the module table;
    `keras_swiftformer.config.parameter_roles` states them)."""
    return {path: role.clip_axes for path, role in parameter_roles(model).items()}


def no_decay_variables(model):
    """Biases and BatchNorm scales/offsets: the tensors timm's optimiser factory leaves
    undecayed in the official code (1-D there). Layer scales (C, 1, 1) and ``w_g`` (D, 1) are
    2-D or 3-D in PyTorch and are decayed."""
    roles = parameter_roles(model)
    return [v for v in model.trainable_weights if not roles[v.path].decay]


def _global_gradients(grads):
    """Under `tf.distribute` with several replicas: the all-reduced gradients, and how many
    replicas will sum them again (the optimiser all-reduces after clipping). Else (grads, 1)."""
    if keras.backend.backend() != "tensorflow":
        return grads, 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads, 1
    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads)), context.num_replicas_in_sync


@keras.saving.register_keras_serializable(package="keras_swiftformer")
class AdamWAGC(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that clips gradients adaptively before the update.

    Clipping sees the global gradient: under `tf.distribute` the gradients are all-reduced
    first (Keras itself clips per replica). Under JAX `DataParallel` the gradient of the global
    batch is already global.

    Args:
        agc_clip_factor: clip factor (0.01 in the recipe); 0 disables clipping.
        agc_eps: floor of the parameter norm.
        agc_unit_axes: {variable path: unit axes} from `agc_unit_axes`; other variables use
            `keras_swiftformer.config.default_clip_axes`.
        kwargs: `keras.optimizers.AdamW` arguments.
    """

    def __init__(self, *args, agc_clip_factor=0.01, agc_eps=AGC_EPS, agc_unit_axes=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.agc_clip_factor = float(agc_clip_factor)
        self.agc_eps = float(agc_eps)
        self.agc_unit_axes = {k: (None if v is None else tuple(v))
                              for k, v in (agc_unit_axes or {}).items()}

    def clip(self, grads, variables):
        """The adaptively clipped `grads` of `variables` (None gradients pass through)."""
        clipped = []
        for grad, variable in zip(grads, variables):
            if grad is None:
                clipped.append(None)
                continue
            axes = self.agc_unit_axes.get(variable.path, default_clip_axes(variable.shape))
            clipped.append(ops.cast(adaptive_clip(grad, variable, axes, self.agc_clip_factor,
                                                  self.agc_eps), grad.dtype))
        return clipped

    def apply(self, grads, trainable_variables=None):
        if self.agc_clip_factor > 0 and len(grads):
            variables = (list(trainable_variables) if trainable_variables is not None
                         else self._trainable_variables)
            grads, replicas = _global_gradients(grads)
            grads = self.clip(grads, variables)
            if replicas > 1:  # Keras sums the replicas' gradients again after this.
                grads = [None if g is None else g / replicas for g in grads]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "agc_clip_factor": self.agc_clip_factor,
                "agc_eps": self.agc_eps,
                "agc_unit_axes": {k: (None if v is None else list(v))
                                  for k, v in self.agc_unit_axes.items()}}


def lr_schedule(peak_lr, total_steps, warmup_steps=0, warmup_lr=1e-6, min_lr=1e-5):
    """Linear warm-up from `warmup_lr` to `peak_lr`, then cosine decay to `min_lr` at
    `total_steps` (`keras.optimizers.schedules.CosineDecay`)."""
    alpha = min(1.0, min_lr / peak_lr) if peak_lr > 0 else 0.0
    decay_steps = max(1, total_steps - warmup_steps)
    if warmup_steps <= 0:
        return keras.optimizers.schedules.CosineDecay(peak_lr, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        min(warmup_lr, peak_lr), decay_steps, alpha=alpha, warmup_target=peak_lr,
        warmup_steps=warmup_steps)


def make_optimizer(model, learning_rate, weight_decay=0.025, epsilon=1e-8, clip_mode="agc",
                   clip_grad=0.01, ema_decay=None):
    """The recipe's AdamW for the trainable weights of `model`.

    Args:
        model: the network being trained (for AGC's units and the undecayed tensors).
        learning_rate: float or schedule.
        clip_mode: "agc", "norm" (global norm `clip_grad`) or "none".
        ema_decay: keep an exponential moving average of the weights with this decay (Keras's
            ``use_ema``; `fit` swaps the average in at the end).
    """
    if clip_mode not in ("agc", "norm", "none"):
        raise ValueError(f"clip_mode must be 'agc', 'norm' or 'none', got {clip_mode!r}")
    kwargs = dict(learning_rate=learning_rate, weight_decay=weight_decay, epsilon=epsilon,
                  beta_1=0.9, beta_2=0.999)
    if ema_decay:
        kwargs.update(use_ema=True, ema_momentum=ema_decay)
    if clip_mode == "norm" and clip_grad > 0:
        kwargs["global_clipnorm"] = clip_grad
    agc = clip_grad if clip_mode == "agc" else 0.0
    optimizer = AdamWAGC(agc_clip_factor=agc, agc_unit_axes=agc_unit_axes(model), **kwargs)
    optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
    return optimizer
