"""``swiftformer-eval``: top-1 / top-5 accuracy of SwiftFormer models on an image folder.

A model is a ``.tflite`` file (run through `converters.litert.runtime.TFLiteRunner`), a saved
``.keras`` model, or a checkpoint in any format `keras_swiftformer.checkpoints` reads (imported on the
fly). Images go through the evaluation transform of the weights' source
(`keras_swiftformer.imagenet.eval_transform`: bicubic resize of the shorter side to
``size / crop_pct``, centre crop), with ``crop_pct`` from, in order: ``--crop-pct``, a JSON
sidecar (``model.json`` beside a trained ``model.keras``, or ``<model stem>.json``), the
checkpoint format's default (official and Hugging Face 0.875, timm 0.95), else 0.875.

Labels come from the folder: ``<folder>/<class>/*.jpg`` (class folders named by ImageNet synset
ids map to the 1000 ImageNet classes; other names map to the model's class list from its
sidecar, else to their sorted order), or a flat folder of files named ``<class index>_...``
(as ``imagenet_samples``).

Prints a table and writes JSON (``--json``): per model the accuracies, the settings, and every
image's top-5 class indices, so that a fidelity report can compare a converted model with its
source image by image.
"""

import argparse
import json
import os
import re
import sys
import time

import numpy as np

from converters import arguments
from keras_swiftformer.config import PREPROCESSING
from keras_swiftformer.files import atomic_output, sidecar

FLAT_LABEL = re.compile(r"^(\d+)_")


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
    from keras_swiftformer.imagenet import class_index
    from keras_swiftformer.images import list_images

    if not os.path.isdir(folder):
        raise ValueError(f"Image folder {folder} does not exist")
    subdirs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not subdirs:
        paths = list_images(folder)
        matches = [FLAT_LABEL.match(os.path.basename(p)) for p in paths]
        if not all(matches):
            bad = [os.path.basename(p) for p, m in zip(paths, matches) if not m][:3]
            raise ValueError(f"{folder} has no class sub-folders and files not named "
                             f"'<class index>_...' (e.g. {bad})")
        labels, scheme = np.array([int(m[1]) for m in matches]), "file-name index"
    else:
        paths, folder_of = [], []
        for name in subdirs:
            found = list_images(os.path.join(folder, name))
            paths += found
            folder_of += [name] * len(found)
        synsets = {synset: i for i, (synset, _) in enumerate(class_index())}
        if classes is not None:
            index = {name: i for i, name in enumerate(classes)}
            unknown = sorted(set(subdirs) - set(index))
            if unknown:
                raise ValueError(f"Class folders not among the model's classes: {unknown[:5]}")
            scheme = "model classes"
        elif all(name in synsets for name in subdirs) and num_outputs in (None, 1000):
            index, scheme = synsets, "ImageNet synsets"
        else:
            index, scheme = {name: i for i, name in enumerate(subdirs)}, "sorted folders"
        labels = np.array([index[name] for name in folder_of])
    if num_outputs is not None and labels.max() >= num_outputs:
        raise ValueError(f"Labels reach {labels.max()} but the model has {num_outputs} outputs "
                         f"(labels from {scheme}); give --classes")
    return paths, labels, scheme


def file_labels(path):
    """The class names a ``.tflite`` file carries in its metadata (its label file), or None."""
    from converters.litert.metadata import LABEL_FILE, read

    _, files = read(path)
    text = files.get(LABEL_FILE)
    return text.decode("utf-8").rstrip("\n").split("\n") if text else None


class Evaluated:
    """A model to evaluate: `predict(images) -> scores`, its kind and transform defaults."""

    def __init__(self, path, threads=None):
        self.path, self.info = path, sidecar(path)
        self.crop_pct = self.info.get("crop_pct")
        self.crop_mode, self.interpolation = "center", "bicubic"
        self.classes = self.info.get("classes")
        self.normalize = False
        if path.endswith(".tflite"):
            from converters.litert.runtime import TFLiteRunner

            self.kind, self.runner = "tflite", TFLiteRunner(path, num_threads=threads)
            self.classes = self.classes or file_labels(path)
            shape = self.runner.input_shape
            self.size = (shape[1], shape[2]) if min(shape[1:3]) > 0 else None
            self.num_outputs = None
            return
        import keras

        import keras_swiftformer.layers  # noqa: F401  (registers the custom layers)

        if path.endswith(".keras"):
            self.kind = "keras"
            self.model = keras.saving.load_model(path, compile=False)
        else:
            from keras_swiftformer.checkpoints import read_checkpoint
            from converters.importer import import_checkpoint

            checkpoint = read_checkpoint(path)
            self.kind = f"checkpoint ({checkpoint.format})"
            self.crop_pct = self.crop_pct or checkpoint.crop_pct
            self.crop_mode = checkpoint.preprocessing.crop_mode
            self.interpolation = checkpoint.preprocessing.interpolation
            self.model = import_checkpoint(checkpoint.path)
        shape = self.model.inputs[0].shape
        self.size = (shape[1], shape[2]) if shape[1] and shape[2] else None
        self.num_outputs = int(self.model.outputs[0].shape[-1])
        self.normalize = not any(layer.name == PREPROCESSING for layer in self.model.layers)

    def predict(self, images, batch_size):
        from keras_swiftformer.imagenet import preprocess_input

        images = preprocess_input(images, normalize=self.normalize)
        if self.kind == "tflite":
            return self.runner.predict(images, batch_size=batch_size)
        return np.asarray(self.model.predict(images, batch_size=batch_size, verbose=0))


def evaluate(model_path, folder, size=None, crop_pct=None, batch_size=32, limit=None,
             threads=None, normalised_input=None, classes=None):
    """Top-1/top-5 of one model on `folder`; returns a JSON-able dict (see the module doc).

    Args:
        size: (H, W) or a side, for a model that accepts any size (default: its sidecar's,
            else 224).
        crop_pct: evaluation crop fraction (default: see the module doc).
        limit: evaluate the first `limit` images only.
        normalised_input: feed ImageNet-normalised input (default: only to a Keras model without its
            own preprocessing layer).
        classes: the model's class names (overrides the sidecar).
    """
    from keras_swiftformer.imagenet import DEFAULT_CROP_PCT
    from keras_swiftformer.images import load_images

    model = Evaluated(model_path, threads)
    if normalised_input is not None:
        model.normalize = normalised_input
    crop = crop_pct or model.crop_pct or DEFAULT_CROP_PCT
    side = model.size or ((size, size) if isinstance(size, int) else size)
    if side is None:
        input_size = model.info.get("input_size", 224)
        side = (input_size, input_size)
    paths, labels, scheme = dataset_labels(folder, classes or model.classes, model.num_outputs)
    if limit:
        paths, labels = paths[:limit], labels[:limit]
    started, top5 = time.time(), []
    for start in range(0, len(paths), batch_size):
        images = load_images(paths[start:start + batch_size], side, crop, model.crop_mode,
                             model.interpolation)
        scores = model.predict(images, batch_size)
        if model.num_outputs is None:
            model.num_outputs = scores.shape[-1]
            if labels.max() >= model.num_outputs:
                raise ValueError(f"Labels reach {labels.max()} but {model_path} has "
                                 f"{model.num_outputs} outputs")
        top5.append(np.argsort(-scores, axis=-1, kind="stable")[:, :5])
    top5 = np.concatenate(top5)
    hit1 = top5[:, 0] == labels
    hit5 = (top5 == labels[:, None]).any(axis=1)
    return {
        "model": model_path, "kind": model.kind, "images": len(paths),
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

    rows = [{**r, "format": os.path.basename(r["model"]),
             "input": f"{r['size'][0]}x{r['size'][1]}"} for r in results]
    return markdown_table(rows, TABLE_COLUMNS)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="swiftformer-eval", description=__doc__.split("\n\n")[0],
        epilog="Example: swiftformer-eval model.keras model_int8.tflite --images "
               "/data/imagenet/val --json accuracy.json")
    parser.add_argument("models", nargs="+", help=".tflite, .keras or checkpoint paths")
    arguments.add_images(parser, "image folder (class sub-folders, or files named "
                         "<index>_...)", required=True)
    arguments.add_input_size(parser, default=None,
                             help="N or HxW for models of any input size (default: the "
                             "model.json's, else 224)")
    parser.add_argument("--crop-pct", type=float, help="evaluation crop fraction")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--threads", type=int, help="TFLite interpreter threads")
    arguments.add_normalised_input(parser, optional=True)
    parser.add_argument("--classes", help="JSON file: the models' class names in output order "
                                          "(a list, or a training model.json)")
    parser.add_argument("--json", help="write the results here")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    classes = None
    if args.classes:
        with open(args.classes) as f:
            classes = json.load(f)
        classes = classes.get("classes") if isinstance(classes, dict) else classes
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        print("swiftformer-eval: error: --crop-pct must be in (0, 1]", file=sys.stderr)
        return 2
    results = []
    try:
        for path in args.models:
            if not os.path.exists(path):
                raise ValueError(f"No such model: {path}")
            size = arguments.input_size(args.input_size) if args.input_size else None
            results.append(evaluate(path, args.images, size, args.crop_pct, args.batch_size,
                                    args.limit, args.threads, args.normalised_input, classes))
    except (ValueError, FileNotFoundError) as err:
        print(f"swiftformer-eval: error: {err}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.json:
        with atomic_output(args.json) as tmp:
            with open(tmp, "w") as f:
                json.dump({"dataset": args.images, "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
