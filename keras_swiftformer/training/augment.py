"""Training augmentation: Keras 3's layers, plus the random-resized crop that Keras lacks.

Per image, in `tf.data` (TensorFlow ops whatever the Keras backend):

1. `decode_random_resized_crop`: timm's ``RandomResizedCrop`` (area 8-100 %, aspect 3/4-4/3,
   ten tries, else the whole image; bicubic), decoding only the crop of a JPEG;
2. a horizontal flip;
3. `keras.layers.RandAugment`, or `keras.layers.RandomColorJitter` when RandAugment is off (timm
   applies colour jitter only without an auto-augment policy);
4. `keras.layers.RandomErasing`.

Per batch, on the accelerator inside the training model: `MixUpCutMix` (`keras.layers.MixUp` or
`keras.layers.CutMix`, one of the two per batch, as timm's ``Mixup`` with ``switch_prob``).

Determinism: every random draw for an image is a function of ``(seed, the image's position in
the data stream)``, so a resumed run and a run on any number of workers see exactly the images
of an uninterrupted single-process run. Keras's layers draw from a shared `SeedGenerator` whose
state parallel `tf.data` calls advance in no fixed order; `ElementSeeds` gives them a stateless
seed per image instead.

Where Keras's layers differ from timm's (documented, not hidden): Keras's RandAugment picks from
its own eleven operations, each at a strength drawn uniformly in ``factor`` and reaching its
maximum at 1 (translation by the whole image, rotation by a full turn); we map timm's magnitude
``M`` of 10 (std ``S``) to ``factor = ((M - S) / 20, (M + S) / 20)``, a judgment, not a measured
equivalence. Keras's RandomErasing erases with per-pixel noise clipped to [0, 255].
"""

import keras
import tensorflow as tf
from keras import ops

from keras_swiftformer.preprocessing import DEFAULT_PREPROCESSING
from keras_swiftformer.training.config import parse_rand_augment


def crop_window(image_shape, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random-resized-crop window ``[top, left, height, width]`` (int32) inside `image_shape`
    (H, W, C), drawn statelessly from `seed` (a (2,) int tensor)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_image(encoded):
    """Encoded JPEG/PNG/BMP/GIF/WebP bytes -> (H, W, 3) uint8."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def resize(image, size):
    """(H, W, 3) -> (size[0], size[1], 3) float32 in [0, 255], bicubic with antialiasing."""
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bicubic", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_random_resized_crop(encoded, seed, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Encoded image -> (size, size, 3) float32 RGB in [0, 255]: a random crop of `scale` of the
    area and `ratio` aspect, resized bicubically. JPEGs decode only the crop."""

    def jpeg():
        window = crop_window(tf.image.extract_jpeg_shape(encoded), seed, scale, ratio)
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def other():
        image = decode_image(encoded)
        window = crop_window(tf.shape(image), seed, scale, ratio)
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    crop = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    crop.set_shape((None, None, 3))
    return resize(crop, (size, size))


def decode_center_crop(encoded, size, crop_pct=DEFAULT_PREPROCESSING.crop_pct):
    """Encoded image -> (size, size, 3) float32: the evaluation transform in TensorFlow (shorter
    side to ``int(size / crop_pct)``, bicubic, centre crop), as `keras_swiftformer.imagenet.
    eval_transform` does with PIL (the two resamplers differ by a few grey levels)."""
    image = decode_image(encoded)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    short = float(int(size / crop_pct))
    scaled = tf.cast(shape * short / tf.reduce_min(shape), tf.int32)
    scaled = tf.maximum(scaled, size)
    image = resize(image, scaled)
    top = (scaled[0] - size + 1) // 2
    left = (scaled[1] - size + 1) // 2
    return image[top:top + size, left:left + size, :]


class ElementSeeds(keras.random.SeedGenerator):
    """A stateless stand-in for a Keras layer's `SeedGenerator` inside a `tf.data` map.

    Set `base` to a per-image seed ((2,) int64 tensor) before calling the layers; each draw then
    folds a fresh counter into it, so the draws of one image are distinct and depend on nothing
    but `base`. It holds no variable and is valid only in the TensorFlow graph being traced.
    """

    def __init__(self):  # Deliberately no super().__init__: no state variable.
        self.name = "element_seeds"
        self._initial_seed = None
        self.backend = None
        self.base = None
        self.count = 0

    def reset(self, base):
        self.base = base
        self.count = 0

    def next(self, ordered=True):
        if self.base is None:
            raise RuntimeError("ElementSeeds.reset(seed) must be called before drawing")
        self.count += 1
        return tf.random.experimental.stateless_fold_in(self.base, self.count)


def use_element_seeds(layer, seeds):
    """Makes `layer` and all its sub-layers draw from `seeds` (an `ElementSeeds`)."""
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if hasattr(sub, "generator"):
            sub.generator = seeds
            sub._backend_generators = {"tensorflow": seeds}
    return layer


class SampleAugment:
    """The per-image Keras augmentations of the recipe, deterministic per image.

    Call inside a `tf.data` map: ``augment(image, seed)`` with `image` (H, W, 3) float32 in
    [0, 255] and `seed` a (2,) int64 tensor unique to the image. The layers compute in float32
    whatever the global mixed-precision policy.

    Args:
        rand_augment: timm-style spec ("rand-m9-mstd0.5") or ''/None.
        color_jitter: jitter strength used when `rand_augment` is off (0: none).
        reprob: random erasing probability.
    """

    def __init__(self, rand_augment="rand-m9-mstd0.5", color_jitter=0.4, reprob=0.25):
        self.seeds = ElementSeeds()
        self.layers = []
        spec = parse_rand_augment(rand_augment)
        if spec is not None:
            ops, magnitude, std = spec
            factor = (max(0.0, (magnitude - std) / 20), min(1.0, (magnitude + std) / 20))
            self.layers.append(keras.layers.RandAugment(value_range=(0, 255), num_ops=ops,
                                                        factor=factor, dtype="float32"))
        elif color_jitter > 0:
            # timm multiplies brightness, contrast and saturation by U(1 - j, 1 + j). Keras adds
            # brightness as a fraction of the range (j/2 matches a mid-grey pixel), scales
            # contrast by U(1 - j, 1 + j), and saturation by f / (1 - f).
            saturation = ((1 - color_jitter) / (2 - color_jitter),
                          (1 + color_jitter) / (2 + color_jitter))
            self.layers.append(keras.layers.RandomColorJitter(
                value_range=(0, 255), brightness_factor=color_jitter / 2,
                contrast_factor=color_jitter, saturation_factor=saturation, dtype="float32"))
        if reprob > 0:
            self.layers.append(keras.layers.RandomErasing(factor=(reprob, reprob),
                                                          value_range=(0, 255), dtype="float32"))
        for layer in self.layers:
            use_element_seeds(layer, self.seeds)

    def __bool__(self):
        return bool(self.layers)

    def __call__(self, image, seed):
        self.seeds.reset(seed)
        for layer in self.layers:
            image = layer(image, training=True)
        return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)


@keras.saving.register_keras_serializable(package="keras_swiftformer")
class MixUpCutMix(keras.layers.Layer):
    """MixUp or CutMix of a batch and its soft labels (timm's ``Mixup``, per-sample weights).

    Call: ``images, labels, extra = layer(images, labels, extra)`` with images (B, H, W, 3),
    labels (B, K) one-hot or soft, and `extra` (B, K') mixed like the labels (saved teacher
    logits) or None. With both alphas set, each batch gets CutMix with probability
    `switch_prob`, else MixUp.
    """

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # mixes in float32 under mixed precision too
        super().__init__(**kwargs)
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("MixUpCutMix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.switch_prob, self.seed = float(switch_prob), seed
        self.mixup = (keras.layers.MixUp(alpha=mixup_alpha, seed=seed, dtype="float32")
                      if mixup_alpha > 0 else None)
        # CutMix draws its Beta parameter uniformly in `factor`: a pinned range is timm's alpha.
        self.cutmix = (keras.layers.CutMix(factor=(cutmix_alpha, cutmix_alpha), seed=seed,
                                           dtype="float32") if cutmix_alpha > 0 else None)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, *args, **kwargs):
        self.built = True  # No weights: only the seed generators made in __init__.

    def call(self, images, labels, extra=None):
        results = []
        for layer in (self.mixup, self.cutmix):
            if layer is None:
                continue
            t = layer.get_random_transformation({"images": images, "labels": labels})
            if layer is self.cutmix:
                # Keras weighs the labels by the real-valued box area; the pasted pixels are a
                # whole number, so use their share (timm's ``correct_lam``).
                pasted = ops.mean(ops.cast(t["batch_masks"], "float32"), axis=(1, 2, 3))
                t = {**t, "mix_weight": ops.cast(1.0 - pasted, t["mix_weight"].dtype)}
            results.append((
                layer.transform_images(images, t),
                layer.transform_labels(labels, t),
                None if extra is None else layer.transform_labels(extra, t),
            ))
        if len(results) == 1:
            return results[0]
        (mix_images, mix_labels, mix_extra), (cut_images, cut_labels, cut_extra) = results
        use_cutmix = keras.random.uniform((), seed=self.seed_generator) < self.switch_prob
        pick = lambda cut, mix: None if cut is None else ops.where(use_cutmix, cut, mix)
        return (pick(cut_images, mix_images), pick(cut_labels, mix_labels),
                pick(cut_extra, mix_extra))

    def get_config(self):
        return {**super().get_config(), "mixup_alpha": self.mixup_alpha,
                "cutmix_alpha": self.cutmix_alpha, "switch_prob": self.switch_prob,
                "seed": self.seed}
