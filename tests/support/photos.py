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


def photos_by_class(folder, classes=None, per_class=1):
    """Sorted photo paths of `folder`: the first `per_class` of each of its first `classes`
    classes (synsets); fewer where `folder` has fewer."""
    counts, paths = {}, []
    for name in sorted(os.listdir(folder)):
        synset = name.split("_")[1]
        if synset not in counts and classes is not None and len(counts) == classes:
            continue
        if counts.get(synset, 0) < per_class:
            counts[synset] = counts.get(synset, 0) + 1
            paths.append(pathlib.Path(folder) / name)
    return paths


def labelled_tree(root, folder, classes=10, splits=None, per_class=1):
    """Folders named by synset (under root/<split>/ for each of `splits`, else under root) with
    symlinks to `photos_by_class(folder, classes, per_class)`. Returns root."""
    root = pathlib.Path(root)
    for split in splits or ("",):
        for path in photos_by_class(folder, classes, per_class):
            target = root / split / path.name.split("_")[1]
            target.mkdir(parents=True, exist_ok=True)
            os.symlink(path, target / path.name)
    return root
