"""The conversion pipeline: a model in; phone-ready files and a fidelity report out.

    checkpoint, .keras model or weight tag (or random weights) -> Keras model (.keras) ->
    each format of `converters.formats` -> run it -> metrics against the Keras float model ->
    report.md / report.json / report.png

LiteRT formats are converted from the graph their `converters.formats.Format` names: the folded
inference graph (`converters.inference_graph.for_inference`: BatchNorm, layer scales and the two
heads folded, one XNNPACK partition in float) unless ``graph="keras"``; every format is compared
with the unfolded Keras float model. Every classifier file carries the class names
(`resolve_labels`).

Everything the user asked for is checked before any work starts (formats, input size, image
folder, labels, compression options). A format that fails is reported and the others go on;
files appear whole or not at all. With compression options (`converters.compress`), the
fine-tuned formats add their rows to the same report.
"""

import dataclasses
import os
import time
import warnings

import numpy as np

from converters import tflite
from converters.compress import CompressionOptions
from converters.formats import COREML, FORMATS, file_name, get_format, parse_formats
from converters.metrics import fidelity
from converters.model_card import write_model_card
from converters.report import write_report
from keras_swiftformer.config import SwiftFormerConfig
from keras_swiftformer.preprocessing import DEFAULT_PREPROCESSING

#: Images the numpy evaluator of Core ML programs runs (it is slower than LiteRT).
COREML_EVALUATION_IMAGES = 8
MIN_INPUT_SIZE = 32  # four stride-2 stages below the stem: smaller inputs leave no pixels
#: The graph LiteRT formats are converted from: "folded" (`for_inference`) or "keras" (the
#: model as built).
GRAPHS = ("folded", "keras")
#: What `ImageOptions.on_bad_image` may say: "error" stops before any work, "skip" warns and
#: leaves the file out.
BAD_IMAGE_POLICIES = ("error", "skip")


class PipelineError(ValueError):
    """Bad pipeline input, found before any work was done."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """The photos the pipeline calibrates on and evaluates with.

    Attributes:
        folder: a folder of photos; even-indexed files calibrate, odd-indexed ones evaluate.
            None: synthetic images (the offline default; integer fidelity is then optimistic).
        num_calibration, num_evaluation: how many of each.
        on_bad_image: a corrupt or non-image file in `folder` (`BAD_IMAGE_POLICIES`).
    """

    folder: str = None
    num_calibration: int = 100
    num_evaluation: int = 64
    on_bad_image: str = "error"

    def check(self):
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise PipelineError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got "
                                f"{self.on_bad_image!r}")
        if self.num_calibration < 1 or self.num_evaluation < 1:
            raise PipelineError("num_calibration and num_evaluation must be at least 1, got "
                                f"{self.num_calibration} and {self.num_evaluation}")


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """What `run_pipeline` converts, how, and where to.

    Attributes:
        checkpoint: an official / timm / Hugging Face checkpoint, a SwiftFormer ``.keras``
            model (its ``model.json`` beside it is read), a weight tag of
            `keras_swiftformer.sources` (``imagenet``...) or ``hf://ORG/REPO[@REV]``; None:
            random weights.
        variant: "XS", "S", "L1", "L3"; None: the checkpoint's (XS without one).
        formats: "all", "float32,int8" or a list of `converters.formats.FORMATS` names.
        input_size: 224, "256x320"...: the exported files' fixed input.
        output_dir: where the files and the report go; created only once the model and the
            images are ready, so a run that fails before its first format leaves nothing.
        token_weighting: override the checkpoint format's default ("l2" or "ones").
        softmax: export probabilities instead of logits.
        graph: what LiteRT formats are converted from (`GRAPHS`; "keras" for comparison).
        labels: a text file of class names, one a line, in output order (default: the
            ``.keras`` model's ``model.json``, else ImageNet's for 1000 classes).
        license: the licence text written into each file's metadata.
        latency_runs: interleaved timed runs of each LiteRT file on this host (0: off).
        gpu_images: evaluation images each LiteRT file runs on LiteRT's GPU engine
            (`converters.litert_gpu`; 0: off); with no Vulkan device the report says so.
        images: the calibration and evaluation photos (`ImageOptions`).
        compression: QAT, pruning and clustering (`converters.compress.CompressionOptions`).
    """

    checkpoint: str = None
    variant: str = None
    formats: object = "all"
    input_size: object = 224
    output_dir: str = "converted"
    token_weighting: str = None
    softmax: bool = False
    graph: str = "folded"
    labels: str = None
    license: str = None
    latency_runs: int = 30
    gpu_images: int = 4
    images: ImageOptions = ImageOptions()
    compression: CompressionOptions = CompressionOptions()


def parse_input_size(size):
    """224, "224" or "256x320" -> (H, W); PipelineError if the model cannot take it."""
    from converters.arguments import input_size

    try:
        dims = (tuple(int(s) for s in size) if isinstance(size, (tuple, list))
                else input_size(size))
    except ValueError as err:
        raise PipelineError(str(err)) from None
    if len(dims) != 2 or min(dims) < MIN_INPUT_SIZE:
        raise PipelineError(
            f"Input size {size!r}: the model needs height and width of at least "
            f"{MIN_INPUT_SIZE} pixels (it downsamples by 32)"
        )
    return dims


def synthetic_images(count, size, seed):
    """Deterministic photo-like RGB images (smooth gradients, blobs and noise), (N, H, W, 3)
    float32 in [0, 255], for an offline run without an image folder."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(count):
        image = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            a, b, phase = rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(0, 6.3)
            image[..., c] = 128 + 80 * np.sin(a * xx / w * 3.14 + b * yy / h * 3.14 + phase)
        for _ in range(4):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(h / 10, h / 3)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
            image[mask] = rng.uniform(0, 255, 3)
        image += rng.normal(0, 8, image.shape)
        images.append(np.clip(image, 0, 255))
    return np.stack(images)


def image_paths(images):
    """The files of ``images.folder`` (`ImageOptions`) the pipeline will read, each fully
    decoded once to check it (`keras_swiftformer.images.check_images`), before any work.

    The split takes even-indexed files to calibrate and odd-indexed ones to evaluate, so the
    first ``2 * max(num_calibration, num_evaluation)`` readable files are enough.

    Returns:
        (paths, skipped): readable files in order, and for the bad ones left out ("skip") the
        check's messages, which name each file and what is wrong with it.

    Raises:
        PipelineError: a bad file with ``on_bad_image="error"`` (naming every bad file), or
        fewer than two readable images.
    """
    from keras_swiftformer.images import ImageSet, check_images, list_images

    folder = images.folder
    try:
        candidates = [os.path.relpath(p, folder) for p in list_images(folder)]
    except ValueError as err:
        raise PipelineError(str(err)) from None
    needed = 2 * max(images.num_calibration, images.num_evaluation, 1)
    good, skipped, start = [], [], 0
    while len(good) < needed and start < len(candidates):
        window = candidates[start:start + needed - len(good)]
        start += len(window)
        batch = ImageSet(keys=window, labels=np.zeros(len(window), np.int32), classes=[],
                         root=folder)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                kept = check_images(batch, check="decode", on_bad=images.on_bad_image).keys
        except ValueError as err:
            raise PipelineError(str(err)) from None
        skipped += [str(w.message) for w in caught]
        good += kept
    if len(good) < 2:
        raise PipelineError(f"{folder} has {len(good)} readable image(s): at least 2 are "
                            "needed (one to calibrate, one to evaluate)")
    return [os.path.join(folder, key) for key in good], skipped


def split_images(images, size, preprocessing, paths=None):
    """Calibration and evaluation images (`ImageOptions`): from the folder (disjoint:
    even-indexed files calibrate, odd-indexed ones evaluate), or synthetic without one.

    Args:
        preprocessing: the weights' evaluation transform
            (`keras_swiftformer.preprocessing.Preprocessing`).
        paths: the folder's files to use (`image_paths`); default: all its images.

    Returns:
        (calibration (N, H, W, 3), evaluation (M, H, W, 3), description, synthetic?)
    """
    from keras_swiftformer.images import list_images, load_images

    if images.folder is None:
        return (synthetic_images(images.num_calibration, size, seed=0),
                synthetic_images(images.num_evaluation, size, seed=1), "synthetic", True)
    paths = list_images(images.folder) if paths is None else paths
    if len(paths) < 2:
        raise PipelineError(f"{images.folder} has {len(paths)} image(s): at least 2 are "
                            "needed (one to calibrate, one to evaluate)")
    calibration = paths[0::2][:images.num_calibration]
    evaluation = paths[1::2][:images.num_evaluation]
    transform = (preprocessing.crop_pct, preprocessing.crop_mode, preprocessing.interpolation)
    return (load_images(calibration, size, *transform), load_images(evaluation, size, *transform),
            f"{images.folder} ({len(calibration)} calibration / {len(evaluation)} evaluation "
            "files)", False)


def _is_keras_file(checkpoint):
    return checkpoint is not None and str(checkpoint).endswith(".keras")


def check_source(checkpoint):
    """PipelineError unless `checkpoint` is None, a weight tag, an ``hf://`` address or an
    existing path."""
    from keras_swiftformer.hub import is_hub_uri
    from keras_swiftformer.sources import TAGS

    if checkpoint is None or checkpoint in TAGS or is_hub_uri(checkpoint):
        return
    if not os.path.exists(checkpoint):
        raise PipelineError(f"No such checkpoint: {checkpoint} (give a checkpoint file or "
                            f"folder, a .keras model, hf://ORG/REPO, or one of the weight "
                            f"tags: {', '.join(TAGS)})")


def _keras_model(path, variant, input_shape, token_weighting, activation):
    """A SwiftFormer ``.keras`` file rebuilt at `input_shape` with the pipeline's classifier
    activation: (model, info)."""
    import keras

    import keras_swiftformer  # noqa: F401  (registers the custom layers)
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.files import sidecar

    try:
        loaded = keras.saving.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds for a foreign or corrupt archive
        raise PipelineError(f"{path} could not be loaded as a Keras model: {err}") from None
    try:
        config = SwiftFormerConfig.from_model(loaded)
    except ValueError as err:
        raise PipelineError(f"{path} is not a keras_swiftformer SwiftFormer model: {err}") \
            from None
    if config.top != "logits":
        raise PipelineError(f"{path} has no classifier heads (include_top=False): there is "
                            "nothing to classify with")
    if variant is not None and config.variant != str(variant).upper():
        raise PipelineError(f"{path} is SwiftFormer-{config.variant or 'custom'}, not {variant}")
    kwargs = config.builder_kwargs()
    kwargs.update(input_shape=input_shape, classifier_activation=activation,
                  token_weighting=token_weighting or config.token_weighting)
    model = SwiftFormer(**kwargs)
    model.set_weights(loaded.get_weights())
    info = sidecar(path)
    crop = info.get("crop_pct") or DEFAULT_PREPROCESSING.crop_pct
    return model, {"checkpoint": os.fspath(path), "format_in": "keras", "random_weights": False,
                   "source": os.fspath(path), "trained_from": info.get("source"),
                   "classes": info.get("classes"),
                   **_transform(dataclasses.replace(DEFAULT_PREPROCESSING, crop_pct=crop))}


def _transform(preprocessing):
    """The evaluation transform of a `keras_swiftformer.preprocessing.Preprocessing` as report fields."""
    return {"crop_pct": preprocessing.crop_pct, "crop_mode": preprocessing.crop_mode,
            "interpolation": preprocessing.interpolation}


def preprocessing_of(info):
    """The `keras_swiftformer.preprocessing.Preprocessing` a run's `info` (`build_model`) records."""
    from keras_swiftformer.preprocessing import Preprocessing

    return Preprocessing(info["token_weighting"], info["crop_pct"], info["interpolation"],
                         info["crop_mode"])


def build_model(checkpoint, variant, input_shape, token_weighting=None, softmax=False):
    """The Keras float model the formats are made from and compared with.

    Returns:
        (model, info dict: checkpoint, source (an ``hf://`` address pinned to its commit),
        format_in, variant, token_weighting, the evaluation transform (crop_pct, crop_mode,
        interpolation), random?, and for a ``.keras`` model its ``model.json`` class names)
    """
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.weights import resolve_weights

    activation = "softmax" if softmax else None
    if checkpoint is None:
        # Layer scales of 1 rather than a fresh model's 1e-5, so that the attention and MLP
        # branches matter as in a trained model (1e-5 branches vanish in float16 subnormals).
        model = SwiftFormer(variant or "XS", input_shape=input_shape,
                            classifier_activation=activation, token_weighting=token_weighting,
                            layer_scale_init_value=1.0)
        info = {"checkpoint": "none (random weights)", "random_weights": True,
                **_transform(DEFAULT_PREPROCESSING)}
    elif _is_keras_file(checkpoint):
        model, info = _keras_model(checkpoint, variant, input_shape, token_weighting, activation)
    else:
        source = resolve_weights(checkpoint, variant)
        ckpt = source.checkpoint
        model = SwiftFormer(variant or ckpt.variant, weights=ckpt, input_shape=input_shape,
                            classes=ckpt.classes or 1000, classifier_activation=activation,
                            token_weighting=token_weighting or source.token_weighting)
        info = {"checkpoint": os.fspath(checkpoint), "format_in": ckpt.format,
                "random_weights": False, "source": ckpt.source,
                **_transform(ckpt.preprocessing)}
    config = SwiftFormerConfig.from_model(model)
    info.update(variant=config.variant or "CUSTOM", token_weighting=config.token_weighting,
                input_shape=list(config.input_shape), num_classes=config.classes)
    return model, info


def read_labels(path):
    """Class names from a text file, one a line (blank lines at the end ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f.read().rstrip("\n").split("\n")]
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"Cannot read the labels file {path}: {err}") from None
    if not names or any(not name for name in names):
        raise PipelineError(f"{path}: one class name a line, none empty")
    return names


def resolve_labels(classes, labels_file=None, model_classes=None):
    """The class names every classifier file carries, and where they came from.

    Args:
        classes: the head's output count.
        labels_file: `read_labels` file; wins over the rest.
        model_classes: the names a ``.keras`` model's ``model.json`` lists.

    Returns:
        (names, source): a `labels_file`, then ``model.json``, then ImageNet's for 1000
        outputs, else generated ``class_0``... names (source "generated": the caller warns).

    Raises:
        PipelineError: a count that differs from the head's, or duplicate names.
    """
    from keras_swiftformer.imagenet import class_names

    if labels_file is not None:
        names, source = read_labels(labels_file), labels_file
    elif model_classes:
        names, source = [str(c) for c in model_classes], "model.json"
    elif classes == 1000:
        names, source = class_names(), "ImageNet"
    else:
        return [f"class_{i}" for i in range(classes)], "generated"
    if len(names) != classes:
        raise PipelineError(f"{len(names)} class names in {source} but the model has {classes} "
                            "outputs")
    if labels_file is not None and len(set(names)) != len(names):
        raise PipelineError(f"{labels_file} names a class twice: class names must be unique")
    return names, source


def _versions():
    import keras
    import tensorflow as tf

    from converters.runtime import interpreter_class

    runtime = interpreter_class()[1]
    return f"keras {keras.__version__}, tensorflow {tf.__version__}, runtime {runtime}"


class _Graphs:
    """The graphs LiteRT formats are converted from: the Keras model, and its folded inference
    graph built once, on first use."""

    def __init__(self, model, graph):
        self.model, self.graph, self._folded = model, graph, None
        self._calibrated = {"keras": {}, "folded": {}}  # `tflite.convert`'s `shared`, per graph

    def for_format(self, fmt):
        """(name, model, the graph's float ops) to convert `fmt` (a `Format`) from."""
        if self.graph == "keras" or fmt.graph == "keras":
            return "keras", self.model, tflite.KERAS_FLOAT_OPS
        from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference

        if self._folded is None:
            self._folded = for_inference(self.model)
        return "folded", self._folded, FOLDED_FLOAT_OPS

    def export(self, fmt, path, calibration):
        """Writes `fmt`, converted from its graph, to `path`; returns the graph's name. The
        int8 formats of a graph share one weight rounding and calibration (`tflite.convert`'s
        `shared`), so the second of `int8` and `uint8` only quantises."""
        graph, model, float_ops = self.for_format(fmt)
        tflite.export_tflite(model, path, fmt, calibration=calibration, float_ops=float_ops,
                             shared=self._calibrated[graph])
        return graph


def _tflite_row(graphs, path, fmt, calibration, evaluation, reference, labeller):
    from converters.runtime import TFLiteRunner
    from keras_swiftformer.files import atomic_output

    with atomic_output(path) as tmp:  # the file appears with its metadata, or not at all
        graph = graphs.export(fmt, tmp, calibration)
        labeller(tmp, fmt.name, os.path.basename(path))
    actual = TFLiteRunner(path).predict(evaluation)
    return {"graph": graph, "size_bytes": os.path.getsize(path),
            "evaluation_images": len(evaluation), **fidelity(reference, actual)}


class _Labeller:
    """Adds classifier metadata (`converters.metadata`) with the class names to `.tflite` files
    in place. ``verdicts``: file name -> why MediaPipe cannot open it (None: it can)."""

    def __init__(self, labels, info, softmax, license):
        self.labels, self.info, self.softmax, self.license = labels, info, softmax, license
        self.verdicts = {}

    def __call__(self, path, fmt, name=None):
        """Rewrites `path` (the file `name`, default its base name) with metadata."""
        from keras_swiftformer.files import atomic_output
        from converters.metadata import add_classifier_metadata, mediapipe_ready

        with open(path, "rb") as f:
            content = f.read()
        content = add_classifier_metadata(
            content, self.info["variant"], fmt, self.labels, self.softmax,
            str(self.info.get("checkpoint")), self.license, preprocessing_of(self.info),
            extra={"token_weighting": self.info.get("token_weighting")})
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            f.write(content)
        self.verdicts[name or os.path.basename(path)] = mediapipe_ready(content)


def _coreml_row(model, path, fmt, evaluation, info, labels, calibration=None):
    """Exports one Core ML format, a classifier over `labels`, and verifies it on Linux (spec,
    every weight, and the program run by the numpy evaluator) against the Keras model.
    ``coreml_w8a8`` calibrates on `calibration`, default the evaluation images after the ones
    the evaluator runs."""
    from converters.coreml import export_coreml, verify_coreml

    images = evaluation[:COREML_EVALUATION_IMAGES]
    options = dict(fmt.coreml)
    if fmt.calibrated:
        if calibration is None:
            calibration = evaluation[COREML_EVALUATION_IMAGES:][:COREML_EVALUATION_IMAGES]
        if len(calibration) == 0:
            raise ValueError(f"{fmt.name} needs calibration images beyond the "
                             f"{COREML_EVALUATION_IMAGES} it is evaluated on")
        options["calibration"] = calibration[:COREML_EVALUATION_IMAGES]
    # ImageNet's names: the Core ML default, made unique by their synsets.
    labels = None if info["labels_source"] == "ImageNet" else _unique(labels)
    export_coreml(model, path, classifier=True, class_labels=labels,
                  metadata={"source_checkpoint": str(info.get("checkpoint"))}, **options)
    report = verify_coreml(path, model, images, class_labels=labels)
    return {"graph": "folded", "size_bytes": report["size_bytes"],
            "evaluation_images": len(images), **report["logits"], "coreml_ops": report["ops"]}


def _unique(labels):
    """`labels` with repeated names made unique by their index (a Core ML classifier's labels
    are dictionary keys; ImageNet names "crane" and "maillot" twice)."""
    seen = {name: labels.count(name) for name in labels}
    return [name if seen[name] == 1 else f"{name} ({i})" for i, name in enumerate(labels)]


def _check(options):
    """Every option checked before any work: (formats, (H, W), image paths, skipped files)."""
    formats = [get_format(f) for f in _formats(options.formats)]
    size = parse_input_size(options.input_size)
    options.images.check()
    try:
        options.compression.check()  # also ImportError naming the extra TFMOT needs
    except ValueError as err:
        raise PipelineError(str(err)) from None
    if options.compression.enabled() and options.softmax:
        raise PipelineError("QAT, pruning and clustering distil the float model's logits; "
                            "drop --softmax")
    if options.graph not in GRAPHS:
        raise PipelineError(f"graph must be one of {GRAPHS}, got {options.graph!r}")
    for name in ("latency_runs", "gpu_images"):
        if int(getattr(options, name)) < 0:
            raise PipelineError(f"{name} must be 0 (off) or more, got {getattr(options, name)}")
    check_source(options.checkpoint)
    if options.labels is not None:
        read_labels(options.labels)
    paths, skipped = (image_paths(options.images) if options.images.folder is not None
                      else (None, []))
    return formats, size, paths, skipped


def _formats(formats):
    try:
        return parse_formats(formats)
    except ValueError as err:
        raise PipelineError(str(err)) from None


def _prepare(options, size, paths, step):
    """Model, labels, images and reference outputs: everything before the first file."""
    checkpoint = options.checkpoint
    step(1, "building the Keras model" + (f" from {checkpoint}" if checkpoint else
                                          " with RANDOM weights (no checkpoint given)"))
    model, info = build_model(checkpoint, options.variant, size + (3,), options.token_weighting,
                              options.softmax)
    labels, info["labels_source"] = resolve_labels(info["num_classes"], options.labels,
                                                   info.pop("classes", None))
    step(2, "preparing calibration and evaluation images")
    try:
        calibration, evaluation, source, synthetic = split_images(options.images, size,
                                                                  preprocessing_of(info), paths)
    except OSError as err:  # checked before, but a file can change under us
        raise PipelineError(f"Cannot read an image of {options.images.folder}: {err}") from None
    reference = model.predict(evaluation, verbose=0, batch_size=16)
    info.update(calibration_images=len(calibration), evaluation_images=len(evaluation),
                image_source=source, synthetic_images=synthetic, versions=_versions(),
                tflite_graph=options.graph)
    return model, info, labels, calibration, evaluation, reference


def run_pipeline(options=None, progress=print, **fields):
    """Converts a model to every requested format and writes the fidelity report.

    Args:
        options: a `PipelineOptions`; `fields` override its attributes
            (``run_pipeline(checkpoint="x.pth", formats="int8")``).
        progress: callable taking one line of text.

    Returns:
        dict: ``models`` (format -> path), ``rows`` (the report rows), ``report`` (paths),
        ``keras`` (path of the .keras reference model), ``info``, ``labels``.
    """
    from converters.litert_inspect import inspect_rows
    from keras_swiftformer.files import atomic_output

    options = dataclasses.replace(options or PipelineOptions(), **fields)
    formats, size, paths, skipped = _check(options)
    for message in skipped:
        progress(f"WARNING: {message}")
    compress = options.compression.enabled()
    steps = len(formats) + 2 + compress
    start = time.time()

    def step(i, text):
        progress(f"[{i}/{steps}] {text} ({time.time() - start:.0f} s)")

    model, info, labels, calibration, evaluation, reference = _prepare(options, size, paths,
                                                                       step)
    if info["labels_source"] == "generated":
        progress(f"WARNING: {info['num_classes']} classes and no names: the files carry "
                 "class_0, class_1, ...; give --labels FILE (one name a line)")
    if skipped:
        info["skipped_images"] = " ".join(skipped)
    output_dir = options.output_dir
    stem = os.path.join(output_dir, f"swiftformer_{info['variant'].lower()}")
    keras_path = stem + ".keras"
    created = not os.path.exists(output_dir)
    try:
        with atomic_output(keras_path) as tmp:  # the first file: the output folder appears here
            model.save(tmp)
    except BaseException:
        if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)
        raise
    graphs = _Graphs(model, options.graph)
    labeller = _Labeller(labels, info, options.softmax, options.license)

    rows, models = [], {}
    for i, fmt in enumerate(formats, start=3):
        path = file_name(stem, fmt)
        step(i, f"{fmt.name}: converting" + (f" (calibrating on {len(calibration)} images)"
                                             if fmt.calibrated else ""))
        row = {"format": fmt.name, "file": os.path.basename(path)}
        try:
            if fmt.runtime == COREML:
                row.update(_coreml_row(model, path, fmt, evaluation, info, labels, calibration))
            else:
                row.update(_tflite_row(graphs, path, fmt, calibration, evaluation, reference,
                                       labeller))
            models[fmt.name] = path
        except Exception as err:  # one format's failure must not lose the others
            row["error"] = f"{type(err).__name__}: {err}"
            progress(f"    {fmt.name} FAILED: {row['error'][:300]}")
        rows.append(row)
    if compress:
        rows += _compressed_rows(model, calibration, evaluation, reference, options,
                                 labeller, models, lambda text: step(steps, text), progress,
                                 rows)
    for row in rows:
        if not row.get("error") and row["file"].endswith(".tflite"):
            verdict = labeller.verdicts.get(row["file"], "no metadata written")
            row["mediapipe"] = verdict is None
            if verdict:
                row["mediapipe_reason"] = verdict
    inspect_rows(rows, output_dir, options.latency_runs, progress)
    info["latency"] = (f"LiteRT + XNNPACK, 1 thread, {options.latency_runs} runs per file "
                       "interleaved with the other files, median, on the converting machine"
                       if options.latency_runs else "not measured (latency_runs=0)")
    info["gpu_engine"] = _gpu_rows(rows, output_dir, evaluation[:options.gpu_images], progress)
    if options.license:
        info["license"] = options.license
    report = write_report(output_dir, info, rows)
    report["model_card"] = write_model_card(output_dir, info, rows, labels)
    progress(f"done in {time.time() - start:.0f} s: report in {report['markdown']}, model "
             f"card in {report['model_card']}")
    return {"models": models, "rows": rows, "report": report, "keras": keras_path,
            "info": info, "labels": labels}


def _gpu_rows(rows, output_dir, images, progress):
    """Runs every LiteRT file on LiteRT's GPU engine (`converters.litert_gpu.gpu_rows`);
    returns the report's line on what ran it."""
    from converters.litert_gpu import NO_DEVICE, gpu_rows, is_software, vulkan_icd

    if not len(images):
        return "not run (gpu_images=0)"
    icd = vulkan_icd()
    gpu_rows(rows, output_dir, images, progress=progress)  # "not run" rows without a device
    if icd is None:
        return NO_DEVICE
    adapters = sorted({r["gpu_adapter"] for r in rows if r.get("gpu_adapter")})
    software = (" (a software Vulkan device: its times are not a GPU's)"
                if is_software(icd) else "")
    return (f"LiteRT's GPU accelerator (CompiledModel) on {', '.join(adapters) or icd}"
            f"{software}, {len(images)} evaluation images, against the CPU run of the "
            "float32 file")


def _compressed_rows(model, calibration, evaluation, reference, options, labeller, models,
                     step, progress, rows=()):
    """The rows of `converters.compress` (their LiteRT files given metadata too); `rows`: the
    post-training ones, whose ``int8`` QAT is measured against."""
    from converters.compress import compress_formats

    step(f"compression (QAT, pruning, clustering): fine-tuning on {len(calibration)} images")
    baseline = next((r for r in rows if r["format"] == "int8"), None)
    rows = compress_formats(model, calibration, evaluation, reference, options.output_dir,
                            options.compression, progress=progress, baseline=baseline)
    for row in rows:
        if row.get("error"):
            continue
        path = os.path.join(options.output_dir, row["file"])
        models[row["format"]] = path
        if path.endswith(".tflite"):
            labeller(path, row["format"])
            row["size_bytes"] = os.path.getsize(path)
    return rows
