"""The conversion pipeline: a model in; phone-ready files and a fidelity report out.

    a model source (`keras_swiftformer.source.resolve_source`: checkpoint, .keras, tag,
    hf://, or random weights) -> Keras model (.keras) -> for each format of
    `converters.formats`: its target (`converters.targets`) exports, runs and inspects it ->
    metrics against the Keras float model -> typed rows (`converters.results`) ->
    report.md / report.json / report.png / MODEL_CARD.md

One loop over the chosen formats' targets: the pipeline knows no runtime. Everything the user
asked for is checked before any work starts (formats, source and labels, input size, image
folder, output folder, compression options). A format that fails is reported, leaves no file,
and the others go on; the output folder holds this run's files only (`converters.output`).
With compression options (`converters.compress`), the fine-tuned formats add their rows to the
same report.
"""

import dataclasses
import os
import time
import warnings

import numpy as np

from converters.compress import CompressionOptions
from converters.formats import (GRAPHS, POST_TRAINING_INT8, file_name, get_format,
                                parse_formats)
from converters.metrics import fidelity
from keras_swiftformer.config import INPUT_SIDES

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
            None: synthetic images (random weights only, unless `synthetic` opts in).
        num_calibration, num_evaluation: how many of each.
        on_bad_image: a corrupt or non-image file in `folder` (`BAD_IMAGE_POLICIES`).
        synthetic: calibrate a real checkpoint on synthetic images without `folder` (its
            integer files are then calibrated on images unlike the user's).
    """

    folder: str = None
    num_calibration: int = 100
    num_evaluation: int = 64
    on_bad_image: str = "error"
    synthetic: bool = False

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
        checkpoint: anything `keras_swiftformer.source.resolve_source` takes: an official /
            timm / Hugging Face checkpoint, a SwiftFormer ``.keras`` model (its
            ``model.json`` beside it is read), a weight tag (``imagenet``...) or
            ``hf://ORG/REPO[@REV]``; None: random weights.
        variant: "XS", "S", "L1", "L3"; None: the checkpoint's (XS without one).
        formats: "road" (`converters.formats.ROAD_FORMATS`, the default), "all",
            "float32,int8" or a list of `converters.formats.FORMATS` names.
        input_size: 224, "256x320"...: the exported files' fixed input; None: the size the
            model was trained at (a ``.keras`` model's ``model.json``), else 224.
        output_dir: where the files and the report go (`converters.output.OutputFolder`:
            checked before any work, one run's files only).
        token_weighting: override the checkpoint format's default ("l2" or "ones").
        softmax: export probabilities instead of logits.
        graph: what LiteRT formats are converted from (`GRAPHS`; "keras" for comparison).
        labels: a text file of class names, one a line, in output order (default: the
            ``.keras`` model's ``model.json``, else ImageNet's for 1000 classes).
        license: the licence text written into each file's metadata.
        latency_runs: interleaved timed runs of each LiteRT file on this host (0: off).
        gpu_images: evaluation images each LiteRT file runs on LiteRT's GPU engine
            (`converters.litert.gpu`; 0: off); with no Vulkan device the report says so.
        images: the calibration and evaluation photos (`ImageOptions`).
        compression: QAT, pruning and clustering (`converters.compress.CompressionOptions`).
    """

    checkpoint: str = None
    variant: str = None
    formats: object = "road"
    input_size: object = None
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
    if len(dims) != 2 or min(dims) < INPUT_SIDES[0] or max(dims) > INPUT_SIDES[1]:
        raise PipelineError(
            f"Input size {size!r}: give a height and width from {INPUT_SIDES[0]} (the model "
            f"downsamples by 32) to {INPUT_SIDES[1]} pixels, e.g. --input-size 224")
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


def _versions():
    import keras
    import tensorflow as tf

    from converters.litert.runtime import interpreter_class

    runtime = interpreter_class()[1]
    return f"keras {keras.__version__}, tensorflow {tf.__version__}, runtime {runtime}"


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything `_check` found before any work: the formats, the model source, the input
    size, the image files and the ones left out."""

    formats: list
    source: object
    size: tuple
    paths: list
    skipped: list


def _check(options):
    """Every option checked before any work (`_Plan`)."""
    from keras_swiftformer.source import resolve_source

    try:
        formats = [get_format(f) for f in parse_formats(options.formats)]
    except ValueError as err:
        raise PipelineError(str(err)) from None
    if options.input_size is not None:
        parse_input_size(options.input_size)
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
    source = resolve_source(options.checkpoint, options.variant, options.token_weighting,
                            options.labels)
    source.require_heads()
    size = parse_input_size(options.input_size or source.input_size or 224)
    calibrated = [f.name for f in formats if f.calibrated]
    if (options.images.folder is None and not source.random_weights
            and not options.images.synthetic and (calibrated or options.compression.enabled())):
        raise PipelineError(
            f"{', '.join(calibrated) or 'compression'} calibrate(s) on photos: give --images DIR "
            "(photos like the ones the model will see), or --synthetic-calibration to accept "
            "synthetic images (integer fidelity is then unknown)")
    from converters.output import OutputFolder

    OutputFolder(options.output_dir).check()
    paths, skipped = (image_paths(options.images) if options.images.folder is not None
                      else (None, []))
    return _Plan(formats, source, size, paths, skipped)


def _prepare(options, plan, step):
    """Model, info, images and reference outputs: everything before the first file."""
    source = plan.source
    step(1, "building the Keras model" + (f" from {options.checkpoint}" if options.checkpoint
                                          else " with RANDOM weights (no checkpoint given)"))
    model = source.build(plan.size + (3,), "softmax" if options.softmax else None)
    info = source.info(plan.size + (3,))
    step(2, "preparing calibration and evaluation images")
    try:
        calibration, evaluation, where, synthetic = split_images(
            options.images, plan.size, source.preprocessing, plan.paths)
    except OSError as err:  # checked before, but a file can change under us
        raise PipelineError(f"Cannot read an image of {options.images.folder}: {err}") from None
    reference = model.predict(evaluation, verbose=0, batch_size=16)
    info.update(calibration_images=len(calibration), evaluation_images=len(evaluation),
                image_source=where, synthetic_images=synthetic, versions=_versions(),
                tflite_graph=options.graph)
    return model, info, calibration, evaluation, reference


def _job(model, source, options, calibration):
    """The `converters.targets.ExportJob` every target reads."""
    from converters.targets import ClassifierInfo, ExportJob

    about = ClassifierInfo(
        variant=source.variant, labels=source.labels, labels_source=source.labels_source,
        probabilities=options.softmax, source=str(options.checkpoint or "none (random "
                                                   "weights)"),
        license=options.license or source.license, preprocessing=source.preprocessing,
        token_weighting=source.token_weighting)
    return ExportJob(model, about, calibration, options.graph)


def convert_format(fmt, job, path, evaluation, reference):
    """One format through its target: exported to `path`, run on the evaluation images and
    compared with the Keras model's outputs. Returns the row (a dict of
    `converters.results.FLAT_KEYS`); a failure is the row's ``error`` and leaves no file."""
    from converters.targets import discard, target_of

    target = target_of(fmt)
    row = {"format": fmt.name, "file": os.path.basename(path), "runtime": target.name}
    try:
        row.update(target.export(fmt, job, path))
        images = evaluation[:target.evaluation_images or len(evaluation)]
        expected = target.reference(job, images, reference[:len(images)])
        row.update(size_bytes=target.size(path), evaluation_images=len(images),
                   **fidelity(expected, target.run(path, images)))
    except Exception as err:  # one format's failure must not lose the others
        discard(path)
        row["error"] = f"{type(err).__name__}: {err}"
    return row


def run_pipeline(options=None, progress=print, **fields):
    """Converts a model to every requested format and writes the fidelity report.

    Args:
        options: a `PipelineOptions`; `fields` override its attributes
            (``run_pipeline(checkpoint="x.pth", formats="int8")``).
        progress: callable taking one line of text.

    Returns:
        dict: ``models`` (format -> path), ``rows`` (flat row dicts), ``report`` (paths,
        ``model_card`` included), ``keras`` (path of the .keras reference model), ``info``,
        ``labels``.
    """
    from converters.output import OutputFolder
    from converters.targets import Inspection, get_target
    from keras_swiftformer.files import atomic_output

    options = dataclasses.replace(options or PipelineOptions(), **fields)
    plan = _check(options)
    for message in plan.skipped:
        progress(f"WARNING: {message}")
    compress = options.compression.enabled()
    steps = len(plan.formats) + 2 + compress
    start = time.time()

    def step(i, text):
        progress(f"[{i}/{steps}] {text} ({time.time() - start:.0f} s)")

    model, info, calibration, evaluation, reference = _prepare(options, plan, step)
    labels = plan.source.labels
    if plan.source.labels_source == "generated":
        progress(f"WARNING: {info['num_classes']} classes and no names: the files carry "
                 "class_0, class_1, ...; give --labels FILE (one name a line)")
    if info["synthetic_images"] and not plan.source.random_weights:
        progress("WARNING: calibrating on synthetic images (--synthetic-calibration): the "
                 "integer files' fidelity on real photos is unknown")
    if plan.skipped:
        info["skipped_images"] = " ".join(plan.skipped)
    folder = OutputFolder(options.output_dir)
    info["run_id"] = folder.start("swiftformer-convert run")
    stem = os.path.join(options.output_dir, f"swiftformer_{info['variant'].lower()}")
    keras_path = stem + ".keras"
    with atomic_output(keras_path) as tmp:
        model.save(tmp)
    folder.record(keras_path)
    job = _job(model, plan.source, options, calibration)

    rows, models = [], {}
    for i, fmt in enumerate(plan.formats, start=3):
        path = file_name(stem, fmt)
        step(i, f"{fmt.name}: converting" + (f" (calibrating on {len(calibration)} images)"
                                             if fmt.calibrated else ""))
        row = convert_format(fmt, job, path, evaluation, reference)
        if row.get("error"):
            progress(f"    {fmt.name} FAILED: {row['error'][:300]}")
        else:
            models[fmt.name] = path
            folder.record(path)
        rows.append(row)
    if compress:
        rows += _compressed_rows(model, job, (calibration, evaluation, reference), options,
                                 lambda text: step(steps, text), progress, rows)
        models.update({r["format"]: os.path.join(options.output_dir, r["file"])
                       for r in rows[len(plan.formats):] if not r.get("error")})
        for name in models:
            folder.record(models[name])
    inspection = Inspection(options.output_dir, evaluation, options.latency_runs,
                            options.gpu_images)
    for name in dict.fromkeys(row.get("runtime") for row in rows if row.get("runtime")):
        info.update(get_target(name).inspect(
            [r for r in rows if r.get("runtime") == name and not r.get("error")], inspection,
            progress))
    report = _write(options.output_dir, info, rows, labels, folder)
    folder.finish()
    progress(f"done in {time.time() - start:.0f} s: report in {report['markdown']}, model "
             f"card in {report['model_card']}")
    return {"models": models, "rows": rows, "report": report, "keras": keras_path,
            "info": info, "labels": labels}


def _write(output_dir, info, rows, labels, folder):
    """report.json / .md / .png and MODEL_CARD.md of the typed rows (`converters.results`)."""
    import dataclasses as dc

    from converters import results
    from converters.model_card import write_outputs

    known = {f.name: f.type for f in dc.fields(results.RunInfo)}
    info = {k: v for k, v in info.items() if k in known}
    for key, value in info.items():  # model.json's "source" of a trained model is a record
        if known[key] is str and isinstance(value, dict):
            info[key] = str(value.get("from") or value.get("spec") or value)
    return write_outputs(output_dir, results.as_report(info, rows, labels), folder)


def _compressed_rows(model, job, images, options, step, progress, rows=()):
    """The rows of `converters.compress` (their files given what their target's export
    gives: metadata); `images`: (calibration, evaluation, reference); `rows`: the
    post-training ones, whose ``int8`` QAT is measured against."""
    from converters.compress import compress_formats
    from converters.formats import compressed_format
    from converters.targets import discard, target_of

    calibration, evaluation, reference = images
    step(f"compression (QAT, pruning, clustering): fine-tuning on {len(calibration)} images")
    baseline = next((r for r in rows if r["format"] == POST_TRAINING_INT8), None)
    out = compress_formats(model, calibration, evaluation, reference, options.output_dir,
                           options.compression, progress=progress, baseline=baseline)
    for row in out:
        fmt = compressed_format(row["format"])
        if fmt is None or row.get("error"):
            continue
        target = target_of(fmt)
        path = os.path.join(options.output_dir, row["file"])
        row["runtime"] = target.name
        try:
            row.update(target.adopt(fmt, job, path), size_bytes=target.size(path))
        except Exception as err:  # the file without its metadata is not shipped
            discard(path)
            row["error"] = f"{type(err).__name__}: {err}"
    return out
