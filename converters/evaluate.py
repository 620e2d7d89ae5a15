"""``swiftformer-eval``: top-1 / top-5 accuracy of SwiftFormer models on an image folder.

A model is a ``.tflite`` file (run through `converters.litert.runtime.TFLiteRunner`), a Core ML
``.mlpackage`` (run through the numpy MIL evaluator, `converters.coreml.mil_eval`, so it works
off macOS), or anything `keras_swiftformer.source.resolve_source` takes: a SwiftFormer
``.keras`` model, a checkpoint file or folder (official, timm, Hugging Face), a weight tag
(with ``--variant``) or ``hf://ORG/REPO[@REV]``. Images go through the evaluation transform of
the weights' source (`keras_swiftformer.imagenet.eval_transform`: bicubic resize of the shorter
side to ``size / crop_pct``, centre crop), with ``crop_pct`` from, in order: ``--crop-pct``, a
JSON sidecar (``model.json`` beside a trained ``model.keras``, or ``<model stem>.json``), the
checkpoint format's default (official 0.875, timm 0.95, Hugging Face 1.0), else 0.875.

Labels come from the folder: ``<folder>/<class>/*.jpg`` (class folders named by ImageNet synset
ids, ``n01440764``..., map to the 1000 ImageNet classes; other names map to the model's class
list, else to their sorted order), or a flat folder of files named ``<class index>_...`` (as
``imagenet_samples``). Every photo is decoded once before any model runs.

Prints a table and writes JSON (``--json``): per model the accuracies, the settings, and every
image's top-5 class indices, so that a fidelity report can compare a converted model with its
source image by image.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import time

import numpy as np

from converters import arguments
from converters.targets import target_of_file
from keras_swiftformer.commands import UserError, add_verbose, run_command
from keras_swiftformer.config import PREPROCESSING
from keras_swiftformer.files import atomic_output, sidecar
from keras_swiftformer.config import INPUT_SIDES

FLAT_LABEL = re.compile(r"^(\d+)_")
BAD_IMAGE_POLICIES = ("error", "skip")


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """How `evaluate` runs a model.

    Attributes:
        size: (H, W) or a side, for a model that accepts any size (default: its trained size
            from model.json, else 224).
        crop_pct: evaluation crop fraction (default: see the module doc).
        batch_size: images per model call (at least 1).
        limit: evaluate the first `limit` images only (None: all).
        threads: LiteRT interpreter threads (None: the runtime's default).
        normalised_input: feed ImageNet-normalised input (default: only to a Keras model
            without its own preprocessing layer).
        classes: the model's class names in output order (overrides the model's own).
        variant: the variant of a weight tag (``imagenet``), or the one a checkpoint must be.
        on_bad_image: a corrupt or non-image file among the photos (`BAD_IMAGE_POLICIES`).
    """

    size: object = None
    crop_pct: float = None
    batch_size: int = 32
    limit: int = None
    threads: int = None
    normalised_input: bool = None
    classes: tuple = None
    variant: str = None
    on_bad_image: str = "error"

    def check(self):
        """UserError naming the option and the fix, before any work."""
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise UserError(f"--crop-pct {self.crop_pct} is not in (0, 1]: give e.g. 0.875")
        for flag, value in (("--batch-size", self.batch_size), ("--limit", self.limit),
                            ("--threads", self.threads)):
            if value is not None and value < 1:
                raise UserError(f"{flag} {value} must be at least 1")
        sides = (self.size, self.size) if isinstance(self.size, int) else self.size or ()
        low, high = INPUT_SIDES
        if any(not low <= side <= high for side in sides):
            raise UserError(f"--input-size {'x'.join(map(str, sides))}: each side must be "
                            f"{low} to {high}")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise UserError(f"--on-bad-image {self.on_bad_image!r}: give one of "
                            f"{', '.join(BAD_IMAGE_POLICIES)}")


def _class_folders(subdirs, classes, num_outputs):
    """{folder name: label} and the scheme's name, for class sub-folders."""
    from keras_swiftformer.imagenet import class_index

    synsets = {synset: i for i, (synset, _) in enumerate(class_index())}
    outputs = num_outputs or (len(classes) if classes is not None else None)
    if classes is not None and set(subdirs) <= set(classes):
        return {name: i for i, name in enumerate(classes)}, "model classes"
    if all(name in synsets for name in subdirs) and outputs in (None, 1000):
        return synsets, "ImageNet synsets"
    if classes is not None:
        unknown = sorted(set(subdirs) - set(classes))
        raise UserError(f"Class folders not among the model's classes: {unknown[:5]} (name "
                        "the folders as the model's classes, or ImageNet synsets for a "
                        "1000-class model)")
    return {name: i for i, name in enumerate(subdirs)}, "sorted folders"


def dataset_labels(folder, classes=None, num_outputs=None):
    """Images and labels of `folder`.

    Args:
        classes: the model's class names (index order), if known.
        num_outputs: the model's output count, to check the labels against.

    Returns:
        (paths, labels (N,) int64, scheme): scheme says how labels were found.

    Raises:
        ValueError: no images, or classes that cannot be matched to the model's outputs.
    """
    from keras_swiftformer.images import list_images

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--images {folder} is a file: give a folder of photos")
    if not os.path.isdir(folder):
        raise UserError(f"Image folder {folder} does not exist: give --images DIR")
    subdirs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not subdirs:
        paths = list_images(folder)
        matches = [FLAT_LABEL.match(os.path.basename(p)) for p in paths]
        if not all(matches):
            bad = [os.path.basename(p) for p, m in zip(paths, matches) if not m][:3]
            raise UserError(f"{folder} has no class sub-folders and files not named "
                            f"'<class index>_...' (e.g. {bad})")
        labels, scheme = np.array([int(m[1]) for m in matches]), "file-name index"
    else:
        paths, folder_of = [], []
        for name in subdirs:
            found = list_images(os.path.join(folder, name))
            paths += found
            folder_of += [name] * len(found)
        index, scheme = _class_folders(subdirs, classes, num_outputs)
        labels = np.array([index[name] for name in folder_of])
    if num_outputs is not None and labels.max() >= num_outputs:
        raise UserError(f"Labels reach {labels.max()} but the model has {num_outputs} outputs "
                        f"(labels from {scheme}): give --classes")
    return paths, labels, scheme


def checked_images(paths, folder, on_bad="error"):
    """`paths` after a full decode of each (`keras_swiftformer.images.check_images`): a bad
    file is a UserError naming it ("error") or left out with a warning ("skip")."""
    from keras_swiftformer.images import ImageSet, check_images

    keys = [os.path.relpath(p, folder) for p in paths]
    image_set = ImageSet(keys=keys, labels=np.arange(len(keys)), classes=[], root=folder)
    try:
        kept = check_images(image_set, check="decode", on_bad=on_bad)
    except ValueError as err:
        raise UserError(str(err)) from None
    return [paths[i] for i in kept.labels]


def file_labels(path):
    """The class names a ``.tflite`` file carries in its metadata (its label file), or None."""
    from converters.litert.metadata import LABEL_FILE, read

    _, files = read(path)
    text = files.get(LABEL_FILE)
    return text.decode("utf-8").rstrip("\n").split("\n") if text else None


class Evaluated:
    """A model to evaluate: `predict(images) -> scores`, its kind and transform defaults."""

    def __init__(self, path, options):
        self.path, self.info = path, sidecar(path)
        self.crop_pct = self.info.get("crop_pct")
        self.crop_mode, self.interpolation = "center", "bicubic"
        self.classes = self.info.get("classes")
        self.normalize, self.num_outputs = False, None
        target = target_of_file(path)  # the file's runtime, by its suffix; None: a source
        if target == "litert":
            self._tflite(path, options.threads)
        elif target == "coreml":
            self._coreml(path)
        else:
            self._keras(path, options)

    def _tflite(self, path, threads):
        from converters.litert.runtime import TFLiteRunner

        self.kind, self.runner = "tflite", TFLiteRunner(path, num_threads=threads)
        outputs = self.runner.interpreter.get_output_details()
        shape = self.runner.input_shape
        if (len(outputs) != 1 or len(outputs[0]["shape"]) != 2 or len(shape) != 4
                or shape[3] != 3):
            raise UserError(f"{path} is not an image classifier (input {list(shape)}, outputs "
                            f"{[list(o['shape']) for o in outputs]}; expected one (1, H, W, 3) "
                            "image in and one (1, classes) score out): give a SwiftFormer "
                            "classifier .tflite")
        self.classes = self.classes or file_labels(path)
        self.size = (shape[1], shape[2]) if min(shape[1:3]) > 0 else None

    def _coreml(self, path):
        from converters.coreml.formats import INPUT_NAME
        from converters.coreml.mil_eval import MILError, MLProgram

        try:
            self.program = MLProgram(path)
        except (MILError, OSError) as err:
            raise UserError(f"{path} could not be read as a Core ML ML program ({err}): give "
                            "an .mlpackage written by swiftformer-convert") from None
        image = self.program.inputs.get(INPUT_NAME)
        if image is None or len(image[1]) != 4:
            raise UserError(f"{path} has no {INPUT_NAME!r} image input (inputs "
                            f"{list(self.program.inputs)}): give a SwiftFormer .mlpackage")
        self.kind = "coreml"
        self.size = tuple(int(d) for d in image[1][2:4])
        labels = [op for op in self.program.operations if op.type == "classify"]
        if labels:
            self.classes = self.classes or [str(c) for c in
                                            self.program.constant(labels[-1], "classes")]

    def _keras(self, path, options):
        from keras_swiftformer.source import resolve_source

        source = resolve_source(path, options.variant)
        source.require_heads("there is nothing to evaluate")
        self.kind = ("keras" if source.kind == "keras"
                     else f"{source.kind} ({source.provenance.get('format_in')})")
        self.crop_pct = self.crop_pct or source.preprocessing.crop_pct
        self.crop_mode = source.preprocessing.crop_mode
        self.interpolation = source.preprocessing.interpolation
        if source.labels_source not in ("ImageNet", "generated"):
            self.classes = self.classes or list(source.labels)
        size = options.size or source.input_size or 224
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.model = source.build(input_shape=(*self.size, 3))
        self.num_outputs = source.classes
        self.normalize = not any(layer.name == PREPROCESSING for layer in self.model.layers)

    def predict(self, images, batch_size):
        from keras_swiftformer.imagenet import preprocess_input

        images = preprocess_input(images, normalize=self.normalize)
        if self.kind == "tflite":
            return self.runner.predict(images, batch_size=batch_size)
        if self.kind == "coreml":
            from converters.coreml.verification import run_coreml

            return run_coreml(self.program, images)[0]
        return np.asarray(self.model.predict(images, batch_size=batch_size, verbose=0))


def evaluate(model_path, folder, options=None):
    """Top-1/top-5 of one model on `folder`; returns a JSON-able dict (see the module doc).

    Args:
        model_path: a ``.tflite``, ``.mlpackage`` or any `keras_swiftformer.source` spec.
        folder: the labelled photos.
        options: `EvalOptions` (default: its defaults).
    """
    from keras_swiftformer.imagenet import DEFAULT_CROP_PCT
    from keras_swiftformer.images import load_images

    options = options or EvalOptions()
    options.check()
    model = Evaluated(os.fspath(model_path), options)
    if options.normalised_input is not None:
        model.normalize = options.normalised_input
    crop = options.crop_pct or model.crop_pct or DEFAULT_CROP_PCT
    side = model.size or options.size
    side = (side, side) if isinstance(side, int) else side
    if side is None:
        input_size = model.info.get("input_size", 224)
        side = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    paths, labels, scheme = dataset_labels(folder, options.classes or model.classes,
                                           model.num_outputs)
    if options.limit:
        paths, labels = paths[:options.limit], labels[:options.limit]
    kept = set(checked_images(paths, folder, options.on_bad_image))
    keep = np.array([p in kept for p in paths], bool)
    paths, labels = [p for p in paths if p in kept], labels[keep]
    if not paths:
        raise UserError(f"{folder} has no readable image to evaluate on")
    started, top5 = time.time(), []
    for start in range(0, len(paths), options.batch_size):
        images = load_images(paths[start:start + options.batch_size], side, crop,
                             model.crop_mode, model.interpolation)
        scores = model.predict(images, options.batch_size)
        if model.num_outputs is None:
            model.num_outputs = scores.shape[-1]
            if labels.max() >= model.num_outputs:
                raise UserError(f"Labels reach {labels.max()} but {model_path} has "
                                f"{model.num_outputs} outputs: give --classes")
        top5.append(np.argsort(-scores, axis=-1, kind="stable")[:, :5])
    top5 = np.concatenate(top5)
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(axis=1)
    return {
        "model": os.fspath(model_path), "kind": model.kind, "images": len(paths),
        "top1": float(hit1.mean()), "top5": float(hit5.mean()),
        "correct1": int(hit1.sum()), "correct5": int(hit5.sum()),
        "size": list(side), "crop_pct": crop, "normalize": bool(model.normalize),
        "label_scheme": scheme, "seconds": round(time.time() - started, 2),
        "files": [os.path.relpath(p, folder) for p in paths], "labels": labels.tolist(),
        "top5_indices": top5.tolist(),
    }


#: Columns of the accuracy table: (title, key of `_table_row`, format).
TABLE_COLUMNS = (("model", "format", "{}"), ("kind", "kind", "{}"), ("images", "images", "{}"),
                 ("top-1 %", "top1", "{:.2f}"), ("top-5 %", "top5", "{:.2f}"),
                 ("input", "input", "{}"), ("crop", "crop_pct", "{}"))


def format_table(results):
    """Markdown table of `evaluate` results (`converters.report.markdown_table`)."""
    from converters.report import markdown_table

    rows = [{**r, "format": os.path.basename(r["model"].rstrip("/")),
             "input": f"{r['size'][0]}x{r['size'][1]}"} for r in results]
    return markdown_table(rows, TABLE_COLUMNS)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="swiftformer-eval", description=__doc__.split("\n\n")[0],
        epilog="Example: swiftformer-eval model.keras model_int8.tflite model.mlpackage "
               "--images /data/imagenet/val --json accuracy.json")
    parser.add_argument("models", nargs="+", help=".tflite, .mlpackage, .keras, checkpoint "
                        "files or folders, weight tags (with --variant) or hf://ORG/REPO")
    arguments.add_images(parser, "image folder (class sub-folders, or files named "
                         "<index>_...)", required=True)
    arguments.add_input_size(parser, default=None,
                             help="N or HxW for models of any input size (default: the "
                             "model.json's, else 224)")
    parser.add_argument("--crop-pct", type=float, help="evaluation crop fraction")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--threads", type=int, help="TFLite interpreter threads")
    parser.add_argument("--variant", help="the variant of a weight tag (XS, S, L1, L3)")
    parser.add_argument("--on-bad-image", choices=BAD_IMAGE_POLICIES, default="error",
                        help="a corrupt photo: stop (default) or skip it with a warning")
    arguments.add_normalised_input(parser, optional=True)
    parser.add_argument("--classes", help="JSON file: the models' class names in output order "
                                          "(a list, or a training model.json)")
    parser.add_argument("--json", help="write the results here")
    add_verbose(parser)
    return parser


def read_classes(path):
    """The class names of a ``--classes`` JSON file (a list, or a dict with "classes")."""
    from keras_swiftformer.source import check_labels

    try:
        with open(path, encoding="utf-8") as f:
            classes = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"Cannot read --classes {path} ({err}): give a JSON list of class "
                        "names, or a training model.json") from None
    classes = classes.get("classes") if isinstance(classes, dict) else classes
    return check_labels(classes if classes is not None else "", None, path)


def check_json_output(path):
    """UserError unless `path` can take the JSON results (never a folder: it is left alone)."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UserError(f"--json {path} is a folder: give a file path (the folder is left as "
                        "it is)")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UserError(f"--json {path}: {parent} is a file, not a folder")


def _main(argv=None):
    args = build_parser().parse_args(argv)
    check_json_output(args.json)
    size = arguments.input_size(args.input_size) if args.input_size else None
    options = EvalOptions(size, args.crop_pct, args.batch_size, args.limit, args.threads,
                          args.normalised_input,
                          read_classes(args.classes) if args.classes else None, args.variant,
                          args.on_bad_image)
    options.check()
    results = [evaluate(path, args.images, options) for path in args.models]
    print(format_table(results))
    if args.json:
        with atomic_output(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump({"dataset": args.images, "results": results}, f)
    return 0


def main(argv=None):
    return run_command("swiftformer-eval", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
