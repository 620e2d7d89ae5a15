"""The conversion pipeline: checkpoint in; phone-ready models and a fidelity report out.

    checkpoint (or random weights) -> Keras model (.keras) -> each format -> run it ->
    metrics against the Keras float model -> report.md / report.json / report.png

LiteRT formats are converted from the folded inference graph
(`converters.inference_graph.for_inference`: BatchNorm, layer scales and the two heads folded,
one XNNPACK partition in float) unless ``graph="keras"``; every format is compared with the
unfolded Keras float model.

Everything the user asked for is checked before any work starts (formats, input size, image
folder, compression specs). A format that fails is reported and the others go on; files appear
whole or not at all. With ``qat`` / ``prune`` / ``cluster``, the compressed formats of
`converters.compress` (fine-tuned on the calibration images) add their rows to the same report.
"""

import os
import time
import warnings

import numpy as np

from converters import tflite
from converters.coreml import COREML_FORMATS
from converters.metrics import fidelity
from converters.report import write_report
from keras_swiftformer.config import SwiftFormerConfig

COREML_PREFIX = "coreml_"
#: Core ML formats in the pipeline: ``coreml_`` + a `converters.coreml.COREML_FORMATS` name.
COREML_PIPELINE_FORMATS = tuple(COREML_PREFIX + f for f in COREML_FORMATS)
DEFAULT_FORMATS = tflite.TFLITE_FORMATS + COREML_PIPELINE_FORMATS
#: Images the numpy evaluator of Core ML programs runs (it is slower than LiteRT).
COREML_EVALUATION_IMAGES = 8
MIN_INPUT_SIZE = 32  # four stride-2 stages below the stem: smaller inputs leave no pixels
#: The graph LiteRT formats are converted from: "folded" (`for_inference`) or "keras" (the
#: model as built).
GRAPHS = ("folded", "keras")
#: Formats converted from the Keras graph even when "folded" is asked for: int16x8's SUM over
#: thousands of tokens saturates in the folded attention (measured on the XS fixture with the
#: sample photos: 7.6 dB SQNR folded, 28.7 dB from the Keras graph, which sums as a MEAN).
KERAS_GRAPH_FORMATS = ("int16x8",)


class PipelineError(ValueError):
    """Bad pipeline input, found before any work was done."""


def parse_input_size(size):
    """224, "224" or "256x320" -> (H, W); PipelineError if the model cannot take it."""
    if isinstance(size, (tuple, list)):
        dims = tuple(int(s) for s in size)
    else:
        try:
            dims = tuple(int(s) for s in str(size).lower().split("x"))
        except ValueError:
            raise PipelineError(f"Input size {size!r} is not N or HxW") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < MIN_INPUT_SIZE:
        raise PipelineError(
            f"Input size {size!r}: the model needs height and width of at least "
            f"{MIN_INPUT_SIZE} pixels (it downsamples by 32)"
        )
    return dims


def parse_formats(formats, known=DEFAULT_FORMATS):
    """"all", a comma-separated string or a list -> list of known format names."""
    if isinstance(formats, str):
        formats = list(known) if formats == "all" else [f.strip() for f in formats.split(",")]
    formats = [f for f in formats if f]
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise PipelineError(
            f"Unknown format(s) {unknown or formats}; known: {', '.join(known)} (or 'all')"
        )
    return list(dict.fromkeys(formats))


def check_compression(qat, prune, cluster, steps, softmax):
    """Validates the compression options (`converters.compress`) before any work; PipelineError
    naming the problem, or ImportError naming the extra to install."""
    from converters.compress import parse_prune

    if not (qat or prune or cluster):
        return
    try:
        for spec in prune:
            parse_prune(spec)
    except ValueError as err:
        raise PipelineError(str(err)) from None
    for k in cluster:
        if isinstance(k, bool) or not str(k).isdigit() or int(k) < 2:
            raise PipelineError(f"Cluster count {k!r}: give an integer of at least 2 "
                                "(values per kernel)")
    if int(steps) < 1:
        raise PipelineError(f"Fine-tuning steps must be at least 1, got {steps}")
    if softmax:
        raise PipelineError("QAT, pruning and clustering distil the float model's logits; "
                            "drop --softmax")
    import converters.tfmot  # noqa: F401 -- ImportError naming the extra if it is missing


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


#: What `--on-bad-image` may say: "error" stops before any work, "skip" warns and leaves the
#: file out (the training command's choice, `keras_swiftformer.training.config`).
BAD_IMAGE_POLICIES = ("error", "skip")


def image_paths(image_dir, num_calibration, num_evaluation, on_bad_image="error"):
    """The files of `image_dir` the pipeline will read, each fully decoded once to check it
    (`keras_swiftformer.training.data.check_images`), before any work.

    The split takes even-indexed files to calibrate and odd-indexed ones to evaluate, so the
    first ``2 * max(num_calibration, num_evaluation)`` readable files are enough.

    Returns:
        (paths, skipped): readable files in order, and for the bad ones left out ("skip") the
        check's messages, which name each file and what is wrong with it.

    Raises:
        PipelineError: a bad file with ``on_bad_image="error"`` (naming every bad file), or
        fewer than two readable images.
    """
    from keras_swiftformer.imagenet import list_images
    from keras_swiftformer.training.data import ImageSet, check_images

    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise PipelineError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got "
                            f"{on_bad_image!r}")
    try:
        candidates = [os.path.relpath(p, image_dir) for p in list_images(image_dir)]
    except ValueError as err:
        raise PipelineError(str(err)) from None
    needed = 2 * max(num_calibration, num_evaluation, 1)
    good, skipped, start = [], [], 0
    while len(good) < needed and start < len(candidates):
        window = candidates[start:start + needed - len(good)]
        start += len(window)
        images = ImageSet(keys=window, labels=np.zeros(len(window), np.int32), classes=[],
                          root=image_dir)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                kept = check_images(images, check="decode", on_bad=on_bad_image).keys
        except ValueError as err:
            raise PipelineError(str(err)) from None
        skipped += [str(w.message) for w in caught]
        good += kept
    if len(good) < 2:
        raise PipelineError(f"{image_dir} has {len(good)} readable image(s): at least 2 are "
                            "needed (one to calibrate, one to evaluate)")
    return [os.path.join(image_dir, key) for key in good], skipped


def split_images(image_dir, size, num_calibration, num_evaluation, crop_pct, paths=None):
    """Calibration and evaluation images from a folder (disjoint: even-indexed files calibrate,
    odd-indexed ones evaluate), or synthetic ones without a folder.

    Args:
        paths: the folder's files to use (`image_paths`); default: all its images.

    Returns:
        (calibration (N, H, W, 3), evaluation (M, H, W, 3), description, synthetic?)
    """
    from keras_swiftformer.imagenet import list_images, load_images

    if image_dir is None:
        return (synthetic_images(num_calibration, size, seed=0),
                synthetic_images(num_evaluation, size, seed=1), "synthetic", True)
    paths = list_images(image_dir) if paths is None else paths
    if len(paths) < 2:
        raise PipelineError(f"{image_dir} has {len(paths)} image(s): at least 2 are needed "
                            "(one to calibrate, one to evaluate)")
    calibration = paths[0::2][:num_calibration]
    evaluation = paths[1::2][:num_evaluation]
    return (load_images(calibration, size, crop_pct), load_images(evaluation, size, crop_pct),
            f"{image_dir} ({len(calibration)} calibration / {len(evaluation)} evaluation files)",
            False)


def build_model(checkpoint, variant, input_shape, token_weighting=None, softmax=False):
    """The Keras float model the formats are made from and compared with.

    Returns:
        (model, info dict: checkpoint, format_in, variant, token_weighting, crop_pct, random?)
    """
    from keras_swiftformer.checkpoints import read_checkpoint
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.imagenet import DEFAULT_CROP_PCT

    activation = "softmax" if softmax else None
    if checkpoint is None:
        # Layer scales of 1 rather than a fresh model's 1e-5, so that the attention and MLP
        # branches matter as in a trained model (1e-5 branches vanish in float16 subnormals).
        model = SwiftFormer(variant, input_shape=input_shape, classifier_activation=activation,
                            token_weighting=token_weighting, layer_scale_init_value=1.0)
        info = {"checkpoint": "none (random weights)", "random_weights": True,
                "crop_pct": DEFAULT_CROP_PCT}
    else:
        ckpt = read_checkpoint(checkpoint, variant)
        model = SwiftFormer(variant or ckpt.variant, weights=ckpt, input_shape=input_shape,
                            classes=ckpt.classes or 1000, classifier_activation=activation,
                            token_weighting=token_weighting)
        info = {"checkpoint": ckpt.path, "format_in": ckpt.format, "random_weights": False,
                "crop_pct": ckpt.crop_pct}
    config = SwiftFormerConfig.from_model(model)
    info.update(variant=config.variant or "CUSTOM", token_weighting=config.token_weighting,
                input_shape=list(config.input_shape))
    return model, info


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
        """(name, model, float_ops of `tflite.FLOAT_OPS_FORMATS`) to convert `fmt` from."""
        if self.graph == "keras" or fmt in KERAS_GRAPH_FORMATS:
            return "keras", self.model, tflite.KERAS_FLOAT_OPS
        from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference

        if self._folded is None:
            self._folded = for_inference(self.model)
        return "folded", self._folded, FOLDED_FLOAT_OPS

    def export(self, fmt, path, calibration):
        """Writes `fmt`, converted from its graph, to `path`; returns the graph's name. The
        int8 formats of a graph share one weight rounding and calibration (`tflite.convert`'s
        `shared`), so `uint8` and `int8_mixed` (`int8`'s earlier name) only quantise."""
        graph, model, float_ops = self.for_format(fmt)
        tflite.export_tflite(model, path, fmt, calibration=calibration, float_ops=float_ops,
                             shared=self._calibrated[graph])
        return graph


def _tflite_row(graphs, path, fmt, calibration, evaluation, reference, labeller):
    from converters.runtime import TFLiteRunner
    from keras_swiftformer.files import atomic_output

    with atomic_output(path) as tmp:  # the file appears with its metadata, or not at all
        graph = graphs.export(fmt, tmp, calibration)
        labeller(tmp, fmt, os.path.basename(path))
    actual = TFLiteRunner(path).predict(evaluation)
    return {"graph": graph, "size_bytes": os.path.getsize(path),
            "evaluation_images": len(evaluation), **fidelity(reference, actual)}


class _Labeller:
    """Adds classifier metadata (`converters.metadata`) to `.tflite` files in place: ImageNet
    labels when the model has 1000 outputs, and the run's facts. ``verdicts``: file name ->
    why MediaPipe cannot open it (None: it can)."""

    def __init__(self, model, info, softmax, license):
        from keras_swiftformer.imagenet import class_names

        self.info, self.softmax, self.license = info, softmax, license
        self.labels = class_names() if model.output.shape[-1] == 1000 else None
        self.verdicts = {}

    def __call__(self, path, fmt, name=None):
        """Rewrites `path` (the file `name`, default its base name) with metadata."""
        from keras_swiftformer.files import atomic_output
        from converters.metadata import add_classifier_metadata, mediapipe_ready

        with open(path, "rb") as f:
            content = f.read()
        content = add_classifier_metadata(
            content, self.info["variant"], fmt, self.labels, self.softmax,
            str(self.info.get("checkpoint")), self.license, self.info.get("crop_pct", 0.875),
            extra={"token_weighting": self.info.get("token_weighting")})
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            f.write(content)
        self.verdicts[name or os.path.basename(path)] = mediapipe_ready(content)


def _coreml_row(model, path, fmt, evaluation, info, calibration=None):
    """Exports one Core ML format and verifies it on Linux (spec, every weight, and the
    program run by the numpy evaluator) against the Keras model. ``w8a8`` calibrates on
    `calibration`, default the evaluation images after the ones the evaluator runs."""
    from converters.coreml import export_coreml, verify_coreml

    images = evaluation[:COREML_EVALUATION_IMAGES]
    options = dict(COREML_FORMATS[fmt])
    if options["compression"] == "w8a8":
        if calibration is None:
            calibration = evaluation[COREML_EVALUATION_IMAGES:][:COREML_EVALUATION_IMAGES]
        if len(calibration) == 0:
            raise ValueError(f"w8a8 needs calibration images beyond the "
                             f"{COREML_EVALUATION_IMAGES} it is evaluated on")
        options["calibration"] = calibration[:COREML_EVALUATION_IMAGES]
    export_coreml(model, path, classifier=model.output.shape[-1] == 1000,
                  metadata={"source_checkpoint": str(info.get("checkpoint"))}, **options)
    report = verify_coreml(path, model, images)
    return {"graph": "folded", "size_bytes": report["size_bytes"],
            "evaluation_images": len(images), **report["logits"], "coreml_ops": report["ops"]}


def _prepare(checkpoint, variant, size, token_weighting, softmax, image_dir, paths,
             num_calibration, num_evaluation, graph, step):
    """Model, images and reference outputs: everything before the first file is written."""
    step(1, "building the Keras model" + (f" from {checkpoint}" if checkpoint else
                                          " with RANDOM weights (no checkpoint given)"))
    model, info = build_model(checkpoint, variant, size + (3,), token_weighting, softmax)
    step(2, "preparing calibration and evaluation images")
    try:
        calibration, evaluation, source, synthetic = split_images(
            image_dir, size, num_calibration, num_evaluation, info["crop_pct"], paths)
    except OSError as err:  # checked before, but a file can change under us
        raise PipelineError(f"Cannot read an image of {image_dir}: {err}") from None
    reference = model.predict(evaluation, verbose=0, batch_size=16)
    info.update(calibration_images=len(calibration), evaluation_images=len(evaluation),
                image_source=source, synthetic_images=synthetic, versions=_versions(),
                tflite_graph=graph)
    return model, info, calibration, evaluation, reference


def run_pipeline(checkpoint=None, variant="XS", formats="all", input_size=224, image_dir=None,
                 num_calibration=100, num_evaluation=64, output_dir="converted",
                 token_weighting=None, softmax=False, graph="folded", qat=False, prune=(),
                 cluster=(), compress_steps=100, on_bad_image="error", latency_runs=30,
                 license=None, progress=print):
    """Converts a checkpoint to every requested format and writes the fidelity report.

    Args:
        checkpoint: any checkpoint `keras_swiftformer.checkpoints` reads; None: random weights.
        variant: "XS", "S", "L1", "L3"; None: read from the checkpoint.
        formats: "all", "float32,int8", or a list: `converters.tflite.TFLITE_FORMATS` and
            ``coreml_`` + a `converters.coreml.COREML_FORMATS` name (`COREML_PIPELINE_FORMATS`).
        input_size: 224, "256x320"...: the exported models' fixed input.
        image_dir: a folder of photos; even-indexed files calibrate, odd-indexed ones
            evaluate. None: synthetic images (offline default).
        num_calibration, num_evaluation: how many images of each.
        output_dir: where the models and report go; created only once the model and images
            are ready, so a run that fails before its first format leaves nothing behind.
        token_weighting: override the checkpoint format's default ("l2" or "ones").
        softmax: export probabilities instead of logits (then a MediaPipe score threshold is
            a probability).
        qat: add quantisation-aware-trained int8 (and, with `prune` / `cluster`, their
            pruning- / cluster-preserving QAT) rows.
        prune: pruning specs, e.g. ``["2:4", "50%"]`` (`converters.compress.parse_prune`).
        cluster: values per kernel, e.g. ``[16]``.
        compress_steps: fine-tuning steps of each compression method, on the calibration
            images.
        graph: what LiteRT formats are converted from (`GRAPHS`): "folded", the faster
            inference graph (`KERAS_GRAPH_FORMATS` excepted), or "keras", the model as built.
        on_bad_image: a corrupt or non-image file in `image_dir`: "error" stops before any
            work, naming the files; "skip" warns and leaves them out.
        latency_runs: interleaved timed runs of each LiteRT file for the report's latency
            (0: not timed).
        license: the licence text written into each LiteRT file's metadata.
        progress: callable taking one line of text.

    Returns:
        dict: ``models`` (format -> path), ``rows`` (the report rows), ``report`` (paths),
        ``keras`` (path of the .keras reference model), ``info``.
    """
    from converters.litert_inspect import inspect_rows
    from keras_swiftformer.files import atomic_output

    formats = parse_formats(formats)
    size = parse_input_size(input_size)
    prune, cluster = list(prune or ()), list(cluster or ())
    compress = bool(qat or prune or cluster)
    check_compression(qat, prune, cluster, compress_steps, softmax)
    if graph not in GRAPHS:
        raise PipelineError(f"graph must be one of {GRAPHS}, got {graph!r}")
    if int(latency_runs) < 0:
        raise PipelineError(f"latency_runs must be 0 (off) or more, got {latency_runs}")
    if checkpoint is not None and not os.path.exists(checkpoint):
        raise PipelineError(f"No such checkpoint: {checkpoint}")
    paths, skipped = (image_paths(image_dir, num_calibration, num_evaluation, on_bad_image)
                      if image_dir is not None else (None, []))
    for message in skipped:
        progress(f"WARNING: {message}")
    steps = len(formats) + 2 + compress
    start = time.time()

    def step(i, text):
        progress(f"[{i}/{steps}] {text} ({time.time() - start:.0f} s)")

    model, info, calibration, evaluation, reference = _prepare(
        checkpoint, variant, size, token_weighting, softmax, image_dir, paths, num_calibration,
        num_evaluation, graph, step)
    if skipped:
        info["skipped_images"] = " ".join(skipped)
    keras_path = os.path.join(output_dir, f"swiftformer_{info['variant'].lower()}.keras")
    created = not os.path.exists(output_dir)
    try:
        with atomic_output(keras_path) as tmp:  # the first file: the output folder appears here
            model.save(tmp)
    except BaseException:
        if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)
        raise
    graphs, labeller = _Graphs(model, graph), _Labeller(model, info, softmax, license)

    rows, models = [], {}
    stem = os.path.join(output_dir, f"swiftformer_{info['variant'].lower()}")
    for i, fmt in enumerate(formats, start=3):
        coreml = fmt.startswith(COREML_PREFIX)
        path = f"{stem}_{fmt}.mlpackage" if coreml else f"{stem}_{fmt}.tflite"
        step(i, f"{fmt}: converting" + (f" (calibrating on {len(calibration)} images)"
                                        if fmt in tflite.CALIBRATED_FORMATS else ""))
        row = {"format": fmt, "file": os.path.basename(path)}
        try:
            if coreml:
                row.update(_coreml_row(model, path, fmt[len(COREML_PREFIX):], evaluation, info,
                                       calibration))
            else:
                row.update(_tflite_row(graphs, path, fmt, calibration, evaluation, reference,
                                       labeller))
            models[fmt] = path
        except Exception as err:  # one format's failure must not lose the others
            row["error"] = f"{type(err).__name__}: {err}"
            progress(f"    {fmt} FAILED: {row['error'][:300]}")
        rows.append(row)
    if compress:
        rows += _compressed_rows(model, calibration, evaluation, reference, output_dir,
                                 compress_steps, qat, prune, cluster, labeller, models,
                                 lambda text: step(steps, text), progress)
    for row in rows:
        if not row.get("error") and row["file"].endswith(".tflite"):
            verdict = labeller.verdicts.get(row["file"], "no metadata written")
            row["mediapipe"] = verdict is None
            if verdict:
                row["mediapipe_reason"] = verdict
    inspect_rows(rows, output_dir, latency_runs, progress)
    info["latency"] = (f"LiteRT + XNNPACK, 1 thread, {latency_runs} runs per file interleaved "
                       "with the other files, median, on the converting machine"
                       if latency_runs else "not measured (latency_runs=0)")
    paths = write_report(output_dir, info, rows)
    progress(f"done in {time.time() - start:.0f} s: report in {paths['markdown']}")
    return {"models": models, "rows": rows, "report": paths, "keras": keras_path, "info": info}


def _compressed_rows(model, calibration, evaluation, reference, output_dir, compress_steps,
                     qat, prune, cluster, labeller, models, step, progress):
    """The rows of `converters.compress` (their LiteRT files given metadata too)."""
    from converters.compress import compress_formats

    step(f"compression (QAT, pruning, clustering): fine-tuning on {len(calibration)} images, "
         f"{compress_steps} steps per method")
    rows = compress_formats(model, calibration, evaluation, reference, output_dir,
                            compress_steps, qat=qat, prune=prune, cluster=cluster,
                            progress=progress)
    for row in rows:
        if row.get("error"):
            continue
        path = os.path.join(output_dir, row["file"])
        models[row["format"]] = path
        if path.endswith(".tflite"):
            labeller(path, row["format"])
            row["size_bytes"] = os.path.getsize(path)
    return rows
