"""Synthetic image folders for the training tests."""

import numpy as np


def make_tree(root, classes=3, per_class=4, size=(36, 44)):
    """train/ and val/ folders (class0, class1, ...) of small noisy JPEG and PNG images:
    `per_class` per class in train/, 2 in val/. Returns root."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / (f"{i}.jpg" if i % 2 else f"{i}.png"))
    return root
