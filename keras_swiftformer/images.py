"""Image folders: listing, checking and loading the photos that calibration, evaluation and
training read.

`list_images` and `load_images` serve a flat folder of photos (calibration, evaluation);
`read_image_folder` an ImageNet-style tree of class folders (training, labelled evaluation);
`check_images` finds corrupt files in either before any work starts.

Work is bounded for any input: `open_image` refuses images over `MAX_IMAGE_PIXELS` from their
header, before decoding (a few hundred bytes of PNG can declare gigapixels), and
`keras_swiftformer.resize.resize_and_crop` (under `eval_transform`) resizes only the crop when
the full resize would be huge (a 1x40000 strip resized to a 256 shorter side is ten million
rows).
"""

import contextlib
import dataclasses
import os
import re
import unicodedata
import warnings

import numpy as np

from keras_swiftformer.commands import UserError
from keras_swiftformer.config import INPUT_SIDES
from keras_swiftformer.imagenet import DEFAULT_CROP_PCT, eval_transform

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Largest image decoded (width x height), about a 12000 x 8000 photo; larger is refused.
MAX_IMAGE_PIXELS = 100_000_000
#: Unicode categories no class name may hold (newline, tab, NUL, line separators): each would
#: split a label file's lines and shift every later class.
CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")
#: Largest model input side (``size``) the loaders accept.
MAX_INPUT_SIZE = INPUT_SIDES[1]


def control_characters(name):
    """The characters of `name` no class name may hold (`CONTROL_CATEGORIES`), in order."""
    return [c for c in name if unicodedata.category(c) in CONTROL_CATEGORIES]


class BadImageError(UserError):
    """An image file that cannot be used; `reason` says why (``check_images`` lists it)."""

    def __init__(self, path, reason, fix="remove it or replace it"):
        super().__init__(f"{path} {reason}: {fix}")
        self.path, self.reason = path, reason


@contextlib.contextmanager
def open_image(path):
    """Yields the PIL image of `path`, not yet decoded; `BadImageError` naming the file if it
    is not an image or its header declares more than `MAX_IMAGE_PIXELS`."""
    from PIL import Image

    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadImageError(path, "declares too many pixels (a decompression bomb?)") from err
    except Image.UnidentifiedImageError as err:
        raise BadImageError(path, "is not an image PIL can read") from err
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise BadImageError(path, f"is {width}x{height} pixels, over the "
                                      f"{MAX_IMAGE_PIXELS // 1_000_000} megapixel cap (a "
                                      "decompression bomb?)", "downscale it or remove it")
        yield image


def check_size(size, name="size"):
    """`size` (an int or (H, W)) -> (H, W); `UserError` unless each side is 1..MAX_INPUT_SIZE."""
    sides = (size, size) if np.ndim(size) == 0 else tuple(size)
    if len(sides) != 2 or not all(1 <= int(s) <= MAX_INPUT_SIZE for s in sides):
        raise UserError(f"{name} must be 1 to {MAX_INPUT_SIZE} pixels a side, got {size}: "
                        "pass a smaller size")
    return tuple(int(s) for s in sides)


def list_images(folder):
    """Sorted image files of `folder` (recursively); ValueError if there are none."""
    if not os.path.isdir(folder):
        raise ValueError(f"Image folder {folder} does not exist")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise ValueError(f"Image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def load_images(paths, size=224, crop_pct=DEFAULT_CROP_PCT, crop_mode="center",
                interpolation="bicubic"):
    """Image files -> (N, H, W, 3) float32 RGB in [0, 255] through `eval_transform`
    (`size`: an int or (H, W); `crop_mode`, `interpolation`: the weights' evaluation
    transform, `keras_swiftformer.preprocessing.Preprocessing`)."""
    check_size(size)
    batch = []
    for path in paths:
        with open_image(path) as image:
            try:
                batch.append(eval_transform(image, size, crop_pct, crop_mode, interpolation))
            except (OSError, SyntaxError) as err:  # PIL's errors for a corrupt body
                raise BadImageError(path, f"cannot be decoded ({err})") from err
    return np.stack(batch)


JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
OTHER_STARTS = (b"GIF87a", b"GIF89a", b"BM", b"RIFF")


@dataclasses.dataclass
class ImageSet:
    """Images with integer labels.

    Attributes:
        keys: each image's path relative to `root` (for matching saved teacher logits).
        labels: (N,) int32 class indices into `classes`.
        classes: class names (folder names) in index order.
        root: the folder the keys are relative to.
        blobs: encoded images held in memory (TFDS), else None (the files are read).
    """

    keys: list
    labels: np.ndarray
    classes: list
    root: str = ""
    blobs: list = None

    def __len__(self):
        return len(self.keys)

    @property
    def paths(self):
        return [os.path.join(self.root, key) for key in self.keys]


def _bad_reason(path, check, decode=None):
    """Why `path` is not a readable image under `check` ('header' or 'decode'), or None
    (`decode`: the decoder the images will go through, path -> anything; default PIL)."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if head.startswith(JPEG_START):
        if JPEG_END not in tail:
            return "truncated JPEG (no end-of-image marker)"
    elif head.startswith(PNG_START):
        if PNG_END not in tail:
            return "truncated PNG (no IEND chunk)"
    elif not head.startswith(OTHER_STARTS):
        return "not a JPEG, PNG, GIF, BMP or WebP file"
    try:
        with open_image(path) as image:
            if check == "decode":
                image.convert("RGB").load()
        if check == "decode" and decode is not None:
            decode(path)
    except BadImageError as err:
        return err.reason
    except Exception as err:  # PIL and TensorFlow raise many types for corrupt data
        text = " ".join(str(err).split())
        text = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*$", "", text)  # TF's node and op names
        return f"cannot be decoded ({type(err).__name__}: {text[:160]})"
    return None


def check_images(image_set, check="header", on_bad="error", workers=8, decode=None):
    """Checks every image of `image_set`; returns it without the bad ones.

    Args:
        check: "header" (magic bytes and JPEG/PNG end markers: fast), "decode" (full decode with
            PIL: thorough), or "none".
        on_bad: "error" raises ValueError listing the bad files; "skip" warns and drops them.
        decode: with "decode", also the decoder the images will go through (path -> anything,
            raising on a bad file): TensorFlow's is stricter than PIL's for a garbled JPEG.
    """
    if check == "none" or image_set.blobs is not None:
        return image_set
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        reasons = list(pool.map(lambda p: _bad_reason(p, check, decode), image_set.paths))
    bad = [(key, why) for key, why in zip(image_set.keys, reasons) if why]
    if not bad:
        return image_set
    listing = "; ".join(f"{key}: {why}" for key, why in bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    if on_bad == "error":
        raise ValueError(f"{len(bad)} bad image(s) under {image_set.root}: {listing}{more}. "
                         "Remove them, or pass --on-bad-image skip to leave them out.")
    warnings.warn(f"Skipping {len(bad)} bad image(s) under {image_set.root}: {listing}{more}")
    keep = np.array([why is None for why in reasons])
    return dataclasses.replace(image_set, keys=[k for k, ok in zip(image_set.keys, keep) if ok],
                               labels=image_set.labels[keep])


def read_image_folder(root, classes=None):
    """An ImageNet-style folder (``root/<class>/*.jpg``) -> `ImageSet`, files sorted.

    Args:
        classes: the class list to label with (the training set's, when reading validation);
            default: the sorted sub-folders of `root`.

    Raises:
        ValueError: `root` missing or without class folders, an empty class folder, or (with
        `classes`) a folder that is not one of them.
    """
    if not os.path.isdir(root):
        raise ValueError(f"Dataset folder {root} does not exist")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not folders:
        raise ValueError(f"{root} has no class sub-folders (expected {root}/<class>/*.jpg)")
    for folder in folders:
        bad = control_characters(folder)
        if bad or not folder.strip():
            raise UserError(f"class folder {os.path.join(root, folder)!r} has "
                            f"{'the control character ' + repr(bad[0]) if bad else 'a blank name'}"
                            " in its name: rename it (class names are one line of text)")
    if classes is None:
        classes = folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise ValueError(f"{root} has class folders the training set lacks: {unknown[:10]}")
    index = {name: i for i, name in enumerate(classes)}
    keys, labels, empty = [], [], []
    for folder in folders:
        found = sorted(
            os.path.relpath(os.path.join(dirpath, name), root)
            for dirpath, _, names in os.walk(os.path.join(root, folder), followlinks=True)
            for name in names if name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not found:
            empty.append(folder)
        keys += found
        labels += [index[folder]] * len(found)
    if empty:
        raise ValueError(f"Empty class folder(s) under {root}: {', '.join(empty[:10])} (no "
                         f"{', '.join(IMAGE_EXTENSIONS)} files); remove them or add images")
    return ImageSet(keys, np.asarray(labels, np.int32), list(classes), root)
