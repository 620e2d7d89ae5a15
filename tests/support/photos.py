"""Labelled photos for the tests: the 200 shared ImageNet samples when present, else views of the
seven committed photos (tests/data/photos, README.md there has their sources and licences).

File names follow the samples' scheme, `<class index>_<synset>_<class>...`, so the tests that read
labels from names work on either set.
"""

import os
import pathlib

from tests.support.cache import build_once

PHOTO_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "photos"
#: Bump when the views change: it names the cache folder.
VIEWS_VERSION = "1"
#: (left, top, right, bottom) as fractions of the photo: the whole photo, four corner crops and
#: two centre crops; each also mirrored, so 14 views of a photo.
BOXES = ((0, 0, 1, 1), (0, 0, .75, .75), (.25, 0, 1, .75), (0, .25, .75, 1), (.25, .25, 1, 1),
         (.1, .1, .9, .9), (.2, .2, .8, .8))


def _write_views(folder):
    from PIL import Image, ImageOps

    for path in sorted(PHOTO_DIR.glob("*.jpg")):
        with Image.open(path) as photo:
            photo = photo.convert("RGB")
            w, h = photo.size
            for mirror in (False, True):
                for i, (left, top, right, bottom) in enumerate(BOXES):
                    view = photo.crop((round(left * w), round(top * h),
                                       round(right * w), round(bottom * h)))
                    if mirror:
                        view = ImageOps.mirror(view)
                    view.save(folder / f"{path.stem}_v{i + 7 * mirror:02d}.jpg", quality=90)


def ensure_views(cache):
    """cache/photo-views-v<N>: 14 views (crops, mirror images) of each committed photo, 98 in all,
    made once."""
    return build_once(pathlib.Path(cache) / f"photo-views-v{VIEWS_VERSION}", _write_views)


def one_per_class(folder, count=None):
    """Sorted photo paths of `folder`, the first of each class (synset), at most `count`."""
    seen, paths = set(), []
    for name in sorted(os.listdir(folder)):
        synset = name.split("_")[1]
        if synset not in seen:
            seen.add(synset)
            paths.append(pathlib.Path(folder) / name)
    return paths[:count]


def labelled_tree(root, folder, classes=10, splits=None):
    """Folders named by synset (under root/<split>/ for each of `splits`, else under root) with
    a symlink to the first photo of each of the first `classes` classes of `folder`. Returns
    root; fewer classes where `folder` has fewer."""
    root = pathlib.Path(root)
    for split in splits or ("",):
        for path in one_per_class(folder, classes):
            target = root / split / path.name.split("_")[1]
            target.mkdir(parents=True)
            os.symlink(path, target / path.name)
    return root
