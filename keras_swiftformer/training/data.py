"""Training and validation input: an ImageNet-style folder tree (or a TFDS dataset) through
`tf.data`, deterministic, and sharded across workers without overlap.

Order. The training stream is the concatenation of one permutation of the images per data epoch,
each drawn statelessly from ``(seed, epoch)``. Global batch ``g`` is stream items
``[g * B, (g + 1) * B)``; worker ``p`` of ``P`` reads the ``p``-th contiguous slice of it, so
the ``P`` local batches concatenated in worker order are exactly the single-process global batch
(the order `jax.make_array_from_process_local_data` assembles). Each worker decodes only its
images. Resuming at step ``s`` skips ``s * B`` stream items before any image is read.

Every random draw of an image is seeded by ``(seed, stream position)`` (see
`keras_swiftformer.training.augment`), so the batches do not depend on the number of workers,
on `tf.data` parallelism, or on interruptions.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_swiftformer.imagenet import DEFAULT_CROP_PCT, class_index
from keras_swiftformer.images import ImageSet, check_images, read_image_folder
from keras_swiftformer.training import augment as augment_lib

def read_tfds(name, split, classes=None):
    """A TFDS image classification dataset, held encoded in memory (small datasets only; for
    ImageNet-scale data use a folder tree). Needs ``tensorflow-datasets``."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(f"data=tfds:{name} needs tensorflow-datasets (pip install "
                          "tensorflow-datasets), or use a folder tree") from err
    dataset, info = tfds.load(name, split=split, with_info=True, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()})
    names = info.features["label"].names
    if classes is not None and list(classes) != list(names):
        raise ValueError(f"tfds:{name} split {split} has other classes than the training split")
    blobs, labels = [], []
    for example in dataset.as_numpy_iterator():
        blobs.append(example["image"])
        labels.append(example["label"])
    keys = [f"{split}/{i}" for i in range(len(blobs))]
    return ImageSet(keys, np.asarray(labels, np.int32), list(names), f"tfds:{name}", blobs)


def read_split(data, split, classes=None, check="header", on_bad="error"):
    """The `split` of `data` (a folder tree root or ``tfds:<name>``), checked."""
    if data.startswith("tfds:"):
        return read_tfds(data[len("tfds:"):], split, classes)
    image_set = read_image_folder(os.path.join(data, split), classes)
    return check_images(image_set, check, on_bad, decode=_tf_decode)


def _tf_decode(path):
    """Decodes `path` as training will (TensorFlow's decoders); raises on a bad file."""
    augment_lib.decode_image(tf.io.read_file(path))


def imagenet_class_indices(classes):
    """ImageNet-1k indices of `classes` if they are all synset ids ("n01440764"), else None."""
    synsets = {synset: i for i, (synset, _) in enumerate(class_index())}
    if all(name in synsets for name in classes):
        return [synsets[name] for name in classes]
    return None


def read_teacher_logits(path, image_set):
    """Saved teacher logits aligned to `image_set`: (N, K) float32.

    The file is an ``.npz`` with ``files`` (each image's path relative to the training folder,
    as `ImageSet.keys`) and ``logits`` (N', K); extra images are ignored, missing ones are an
    error.
    """
    with np.load(path, allow_pickle=False) as data:
        if "files" not in data or "logits" not in data:
            raise ValueError(f"{path} must hold 'files' and 'logits' arrays, has {data.files}")
        files, logits = [str(f) for f in data["files"]], np.asarray(data["logits"], np.float32)
    if logits.ndim != 2 or len(files) != len(logits):
        raise ValueError(f"{path}: 'logits' must be (len(files), classes), got {logits.shape} "
                         f"for {len(files)} files")
    row = {name: i for i, name in enumerate(files)}
    missing = [key for key in image_set.keys if key not in row]
    if missing:
        raise ValueError(f"{path} has no logits for {len(missing)} training image(s), e.g. "
                         f"{missing[:5]}")
    return logits[[row[key] for key in image_set.keys]]


def _encoded(image_set):
    """A function index -> encoded bytes (reads the file, or takes the in-memory blob)."""
    if image_set.blobs is not None:
        blobs = tf.constant(image_set.blobs)
        return lambda i: tf.gather(blobs, i)
    paths = tf.constant(image_set.paths)
    return lambda i: tf.io.read_file(tf.gather(paths, i))


def check_shard(batch_size, shard):
    """(index, count) of this worker; raises ValueError if `batch_size` does not divide."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"Worker index {index} is not in [0, {count})")
    if batch_size % count:
        raise ValueError(f"The global batch size {batch_size} does not divide across {count} "
                         f"workers: use a multiple of {count}")
    return index, count


def _options(dataset):
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def stream_positions(size, seed, start=0):
    """Dataset of (image index, stream position) from stream position `start` on, forever."""
    first_epoch, offset = divmod(int(start), size)

    def epoch_items(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(size, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        positions = epoch * size + tf.range(size, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((order, positions))

    return tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_items).skip(offset)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The per-image training randomness: the seed of the order and of every draw, the random
    resized crop, the flip and the `SampleAugment` (RandAugment/jitter, erasing) or None."""

    seed: int = 0
    hflip: float = 0.5
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    sample_augment: object = None


def train_dataset(image_set, batch_size, image_size, augmentation=Augmentation(), *,
                  start_step=0, shard=(0, 1), teacher_logits=None, parallel=None):
    """The training batches of one worker, forever.

    Args:
        image_set: the training `ImageSet`.
        batch_size: the global batch size B.
        image_size: output side S.
        augmentation: an `Augmentation` (seed, crop, flip, sample augmentation).
        start_step: global step to start from (resuming).
        shard: (worker index, worker count); B must be a multiple of the count.
        teacher_logits: (N, K) saved logits, added to each element, or None.
        parallel: parallel decoding calls (default AUTOTUNE).

    Returns:
        `tf.data.Dataset` of dicts: ``image`` (B/P, S, S, 3) float32 RGB in [0, 255], ``label``
        (B/P, classes) float32 one-hot, and ``teacher_logits`` (B/P, K) if given.
    """
    seed, hflip = augmentation.seed, augmentation.hflip
    sample_augment = augmentation.sample_augment
    index, count = check_shard(batch_size, shard)
    if len(image_set) < batch_size:
        raise ValueError(f"The training set has {len(image_set)} images, fewer than one global "
                         f"batch ({batch_size})")
    local = batch_size // count
    encoded = _encoded(image_set)
    labels = tf.constant(image_set.labels)
    classes = len(image_set.classes)
    logits = None if teacher_logits is None else tf.constant(teacher_logits, tf.float32)
    parallel = parallel or tf.data.AUTOTUNE

    def load(i, position):
        base = tf.stack([tf.cast(seed, tf.int64), position])
        crop_seed, flip_seed, augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(base, 3))
        image = augment_lib.decode_random_resized_crop(encoded(i), crop_seed, image_size,
                                                       augmentation.crop_scale,
                                                       augmentation.crop_ratio)
        if hflip > 0:
            flip = tf.random.stateless_uniform((), flip_seed) < hflip
            image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        if sample_augment:
            image = sample_augment(image, augment_seed)
        image.set_shape((image_size, image_size, 3))
        element = {"image": image, "label": tf.one_hot(tf.gather(labels, i), classes)}
        if logits is not None:
            element["teacher_logits"] = tf.gather(logits, i)
        return element

    dataset = stream_positions(len(image_set), seed, start_step * batch_size)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda i, p: (i[index * local:(index + 1) * local],
                                        p[index * local:(index + 1) * local]))
    dataset = dataset.unbatch().map(load, num_parallel_calls=parallel, deterministic=True)
    dataset = dataset.batch(local, drop_remainder=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return _options(dataset.prefetch(tf.data.AUTOTUNE))


def eval_dataset(image_set, batch_size, image_size, crop_pct=DEFAULT_CROP_PCT, shard=(0, 1), parallel=None):
    """The validation batches of one worker, once, in file order.

    The set is padded to a multiple of the global batch with weight-0 copies of the first
    image, so every worker runs the same number of full batches.

    Returns:
        `tf.data.Dataset` of dicts: ``image`` (B/P, S, S, 3), ``label`` (B/P, classes) one-hot,
        ``weight`` (B/P,) float32, 1 for real images and 0 for padding.
    """
    index, count = check_shard(batch_size, shard)
    local = batch_size // count
    size = len(image_set)
    padded = -(-size // batch_size) * batch_size
    encoded = _encoded(image_set)
    labels = tf.constant(image_set.labels)
    classes = len(image_set.classes)

    def load(position):
        i = tf.where(position < size, position, 0)
        image = augment_lib.decode_center_crop(encoded(i), image_size, crop_pct)
        image.set_shape((image_size, image_size, 3))
        return {"image": image, "label": tf.one_hot(tf.gather(labels, i), classes),
                "weight": tf.cast(position < size, tf.float32)}

    dataset = tf.data.Dataset.range(padded).batch(batch_size)
    dataset = dataset.map(lambda p: p[index * local:(index + 1) * local]).unbatch()
    dataset = dataset.map(load, num_parallel_calls=parallel or tf.data.AUTOTUNE,
                          deterministic=True)
    dataset = dataset.batch(local).apply(
        tf.data.experimental.assert_cardinality(padded // batch_size))
    return _options(dataset.prefetch(tf.data.AUTOTUNE))
