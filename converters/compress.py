"""Compressed formats for the conversion pipeline: QAT int8, pruned, clustered (TFMOT).

`compress_formats` is the pipeline's hook for ``--qat`` / ``--prune`` / ``--cluster``
(`CompressionOptions`): it fine-tunes compressed versions of the Keras 3 float model on the
calibration images (distillation from the float model's logits, so no labels), exports each to
`.tflite`, runs it through the LiteRT runtime helper and returns rows shaped like
`converters.pipeline`'s, so they sit beside the post-training formats in the fidelity report.
Every format starts from the model's folded inference graph, the graph the post-training
formats come from; the optimisation itself happens on that graph's tf_keras twin
(`converters.tfmot`), and the tuned weights come back into a Keras 3 copy of it that exports
through `converters.litert.tflite`. The Keras 3 model stays the product and the teacher.

========================  ==================================================================
format                    what
========================  ==================================================================
``qat_int8``              the post-training ``int8`` (GPTQ weights, error-minimising ranges,
                          int8 convolutions and projections, float elsewhere, float32 input
                          and output) fine-tuned under its own quantisation and exported by
                          the same path (`converters.tfmot.int8_qat`)
``pruned{P}_float32``     magnitude pruning, ``P`` = ``50`` (per cent, unstructured) or
                          ``2of4`` (2:4), float32 export
``pruned{P}_pqat_int8``   then pruning-preserving QAT (TFMOT), integer but for the attention's
                          RMS statistics (`converters.tfmot.export.FLOAT_OPS`), ranges from
                          training, float32 input and output
``clustered{K}_float32``  weight clustering to ``K`` values per kernel, float32 export
``clustered{K}_cqat_int8``  then cluster-preserving QAT, integer as ``pruned{P}_pqat_int8``
========================  ==================================================================

Rows add to the pipeline's keys ``zip_bytes`` (the file deflated, as a zip archive stores it:
what pruning and clustering save in download size), ``steps`` (fine-tuning steps) and what the
file's kernels hold (`converters.tfmot.tflite_stats.kernel_stats`: ``kernel_sparsity``,
``depthwise_sparsity``, ``kernels``, ``m_by_n_kernels``, ``max_unique_per_channel``). The
``qat_int8`` row also has ``start_sqnr_db`` and ``start_top1_agreement`` (its post-training
int8 start on the same evaluation images) and a ``note`` saying which of the two files to
prefer (`QAT_MARGIN_DB`).
"""

import dataclasses
import os
import time
import zlib

DEFAULT_STEPS = 100
#: What a QAT row must gain over its post-training int8 start (SQNR on the evaluation images)
#: to be the file to prefer; below it the row's ``note`` names the post-training `int8`.
QAT_MARGIN_DB = 1.5


def zip_size(content):
    """Bytes of `content` deflated at level 9 (a zip archive's compression)."""
    return len(zlib.compress(content, 9))


def parse_prune(spec):
    """"2:4" -> ("2:4", 0.5, "2of4"); "0.5" / "50%" / 0.5 -> ("unstructured", 0.5, "50")."""
    text = str(spec).strip()
    if text == "2:4":
        return "2:4", 0.5, "2of4"
    try:
        target = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"Pruning spec {spec!r}: give '2:4' or a sparsity such as 0.5 or "
                         "50%") from None
    if not 0 < target < 1:
        raise ValueError(f"Pruning sparsity must be in (0, 1), got {spec!r}")
    return "unstructured", target, f"{round(target * 100):d}"


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """How each distillation step runs (`converters.tfmot.finetune.distill`); the number of
    steps is each method's own (`CompressionOptions`).

    Attributes:
        batch_size: images per step.
        learning_rate: peak learning rate (relative to each tensor's RMS with "relative");
            None: each method's default.
        loss: "mse", "kl" or "mse+kl" (`converters.tfmot.finetune.LOSSES`).
        tau: temperature of "kl".
        seed: of the shuffling and the augmentation.
        optimizer: "relative" or "adam" (`converters.tfmot.finetune.OPTIMIZERS`).
    """

    batch_size: int = 16
    learning_rate: float = None
    loss: str = "mse"
    tau: float = 1.0
    seed: int = 0
    optimizer: str = "relative"


@dataclasses.dataclass(frozen=True)
class CompressionOptions:
    """What `compress_formats` makes, and how long each method fine-tunes.

    Attributes:
        qat: ``qat_int8`` and, with `prune` / `cluster`, their preserving QATs.
        prune: pruning specs, e.g. ``("2:4", "50%")`` (`parse_prune`).
        cluster: values per kernel, integers of at least 2, e.g. ``(16,)``.
        qat_steps, prune_steps, cluster_steps: fine-tuning steps of each method (a preserving
            QAT runs `qat_steps` after the pruning's or clustering's own).
        tuning: how every method's steps run (`FineTuning`: batch size, learning rate, loss).
    """

    qat: bool = False
    prune: tuple = ()
    cluster: tuple = ()
    qat_steps: int = DEFAULT_STEPS
    prune_steps: int = DEFAULT_STEPS
    cluster_steps: int = DEFAULT_STEPS
    tuning: FineTuning = FineTuning()

    def __post_init__(self):
        for name in ("prune", "cluster"):  # lists from argparse; a frozen dataclass: as tuples
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))

    def enabled(self) -> bool:
        """Whether any compressed format is asked for."""
        return bool(self.qat or self.prune or self.cluster)

    def check(self):
        """Validates the options before any work; returns them.

        Raises:
            ValueError: a bad pruning spec, a cluster count below 2 or not an integer, or
                fewer than 1 step; the message names it.
            ImportError: compression is enabled and tf_keras or TFMOT is missing (the message
                names the extra to install).
        """
        for spec in self.prune:
            parse_prune(spec)
        for k in self.cluster:
            if isinstance(k, bool) or not str(k).strip().isdigit() or int(k) < 2:
                raise ValueError(f"Cluster count {k!r}: give an integer of at least 2 "
                                 "(values per kernel)")
        for name in ("qat_steps", "prune_steps", "cluster_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be at least 1 (fine-tuning steps), got "
                                 f"{value!r}")
        if self.enabled():
            import converters.tfmot  # noqa: F401 -- ImportError naming the extra if missing
        return self


def _check_logits(model):
    last = model.layers[-1]
    if getattr(last, "activation", None) is not None and \
            getattr(last.activation, "__name__", "linear") not in ("linear", None):
        raise ValueError(f"{model.name} ends in {last.activation.__name__}: compression distils "
                         "logits; build it with classifier_activation=None")


def compress_formats(model, images, evaluation, reference, output_dir, options,
                     progress=print, baseline=None):
    """Fine-tunes, exports and measures the compressed formats of `model`.

    Args:
        model: the Keras 3 float model (fixed input size, logits out), as the pipeline builds it.
        images: (N, H, W, 3) float32 fine-tuning images (the pipeline's calibration split).
        evaluation: (M, H, W, 3) float32 images never used for fine-tuning.
        reference: (M, K) the float model's logits on `evaluation`.
        output_dir: where the `.tflite` files go (``{model.name}_{format}.tflite``).
        options: a `CompressionOptions` (checked here too; its `FineTuning` says how the
            fine-tuning runs).
        progress: callable taking one line of text.
        baseline: the post-training ``int8`` row on the same `evaluation` (``sqnr_db``,
            ``top1_agreement``), which the ``qat_int8`` row's ``note`` compares with; None:
            its start as the QAT student computes it (``start_sqnr_db``).

    Returns:
        list of row dicts (`converters.pipeline` rows plus the keys above); a format that
        fails gives ``{"format", "error"}`` and the others go on.

    Raises:
        ValueError: bad `options` (`CompressionOptions.check`).
        ImportError: tf_keras or TFMOT is missing; the message names the extra to install.
    """
    options.check()
    tune = (options.tuning, progress)
    jobs = []
    if options.qat:
        jobs.append(("qat_int8", options.qat_steps,
                     lambda: _qat(model, images, evaluation, reference, tune,
                                  options.qat_steps)))
    for pattern, target, label in (parse_prune(p) for p in options.prune):
        jobs.append((f"pruned{label}", options.prune_steps,
                     lambda p=pattern, t=target, label=label: _prune(
                         model, images, tune, options, p, t, label)))
    for k in (int(k) for k in options.cluster):
        jobs.append((f"clustered{k}", options.cluster_steps,
                     lambda k=k: _cluster(model, images, tune, options, k)))

    rows = []
    for name, steps, job in jobs:
        start = time.time()
        progress(f"{name}: fine-tuning {steps} steps on {len(images)} images")
        try:
            _check_logits(model)
            results = job()
        except Exception as err:  # one method's failure must not lose the others
            rows.append({"format": name, "error": f"{type(err).__name__}: {err}"})
            progress(f"    {name} FAILED: {rows[-1]['error'][:300]}")
            continue
        for fmt, content, extra in results:
            rows.append(measure_format(fmt, content, extra, model.name, evaluation, reference,
                                       output_dir))
        if name == "qat_int8" and "error" not in rows[-1]:
            _note_qat(rows[-1], baseline)
        elif name != "qat_int8":
            for row in rows[-len(results):]:
                _note_fine_tuned(row, len(images), baseline)
        progress(f"    {name} done in {time.time() - start:.0f} s")
    return rows


def measure_format(fmt, content, extra, name, evaluation, reference, output_dir):
    """Writes `content` (`.tflite` bytes of format `fmt`, a LiteRT format's name or a
    `converters.formats.fine_tuned_format`'s) as `converters.formats.file_name` names it in
    `output_dir`, runs it on `evaluation` and returns its row: the pipeline's keys,
    ``zip_bytes``, the kernel statistics and `extra`."""
    from keras_swiftformer.files import atomic_output
    from converters.metrics import fidelity
    from converters.litert.runtime import TFLiteRunner
    from converters.tfmot.tflite_stats import kernel_stats

    from converters.formats import compressed_format, file_name

    path = os.path.join(output_dir, file_name(name, compressed_format(fmt) or fmt))
    row = {"format": fmt, "graph": "folded", "file": os.path.basename(path)}
    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            f.write(content)
        actual = TFLiteRunner(path).predict(evaluation)
        row.update(size_bytes=os.path.getsize(path), zip_bytes=zip_size(content),
                   evaluation_images=len(evaluation), **fidelity(reference, actual), **extra,
                   **kernel_stats(content))
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"
    return row


def qat_model(model, images, steps=DEFAULT_STEPS, tuning=FineTuning(), progress=None,
              twin=None, scheme="default"):
    """The TFMOT quantisation-aware-trained tf_keras twin (full integer but for the attention's
    RMS statistics, ranges from training) of Keras 3 `model`: quantised, ranges calibrated on
    `images`, fine-tuned `steps` steps by distillation from `model`, ranges calibrated again.
    What the pruning- and cluster-preserving QATs run (``qat_int8`` starts from the
    post-training int8 instead, `converters.tfmot.int8_qat`).

    Args:
        twin: the tf_keras twin to quantise (a pruned or clustered one, stripped); default the
            twin of `model`'s folded inference graph
            (`converters.inference_graph.for_inference` with 1x1-convolution projections, so
            that every kernel is quantised per output channel): the graph the post-training
            formats come from, with no BatchNorm to keep frozen.
        scheme: see `converters.tfmot.quantize.SCHEMES`.
        tuning: a `FineTuning`; progress: as `compress_formats`.
    """
    from converters.tfmot import finetune, quantize
    from converters.tfmot.twin import build_twin

    if twin is None:
        twin = build_twin(folded_graph(model))
    student = quantize.quantize_twin(twin, scheme)
    quantize.calibrate_ranges(student, images, tuning.batch_size)
    if steps:
        finetune.distill(student, model, images, steps, tuning, progress=progress)
        # Training moves the ranges by an EMA of augmented batches, which narrows them towards
        # a typical batch's; set them again from the images for the trained weights.
        quantize.calibrate_ranges(student, images, tuning.batch_size)
    return student


def _qat(model, images, evaluation, reference, tune, steps):
    from converters.formats import fine_tuned_format
    from converters.tfmot.int8_qat import qat_int8

    tuning, progress = tune
    content, start = qat_int8(model, images, steps, tuning, progress=progress,
                              evaluation=evaluation, reference=reference)
    return [(fine_tuned_format(qat=True).name, content, {"steps": steps, "start_sqnr_db": start["sqnr_db"],
                                   "start_top1_agreement": start["top1_agreement"]})]


def _note_qat(row, baseline=None):
    """Adds ``note`` to a ``qat_int8`` row: whether it earns its place over the post-training
    int8 (`QAT_MARGIN_DB` more SQNR, top-1 agreement no lower) and so which file to prefer.
    `baseline`: that file's row, else the row's own start (``start_*`` keys)."""
    if baseline is None or baseline.get("error"):
        sqnr, top1, what = row["start_sqnr_db"], row["start_top1_agreement"], "its start"
    else:
        sqnr, top1, what = baseline["sqnr_db"], baseline["top1_agreement"], "the int8 file"
    gain = row["sqnr_db"] - sqnr
    lower = row["top1_agreement"] < top1
    if gain >= QAT_MARGIN_DB and not lower:
        row["note"] = (f"{gain:+.1f} dB SQNR over the post-training int8 ({what}), top-1 "
                       "agreement no lower: prefer this file")
    else:
        row["note"] = (f"{gain:+.1f} dB SQNR over the post-training int8 ({what})"
                       f"{', top-1 agreement lower' if lower else ''}: less than the "
                       f"{QAT_MARGIN_DB} dB that pays for the fine-tuning, prefer the "
                       "post-training int8 file")


def _note_fine_tuned(row, images, baseline=None):
    """Adds ``note`` to a pruned or clustered row: what it gave at this budget (`images`
    fine-tuning photos, its ``steps``) against the post-training int8 `baseline` row, and what
    it needs to be useful."""
    if row.get("error"):
        return
    given = f"{row['sqnr_db']:.1f} dB SQNR after {row.get('steps', 0)} distillation steps on " \
            f"{images} photos"
    if baseline is not None and not baseline.get("error"):
        given += f" ({row['sqnr_db'] - baseline['sqnr_db']:+.1f} dB against the post-training int8)"
    row["note"] = (given + ": pruning and clustering change the weights, so the file is only "
                   "as good as a real fine-tuning run on your labelled data (thousands of steps, "
                   "accuracy checked on a held-out set); until then prefer the post-training "
                   "int8 or float16 file")


def folded_graph(model):
    """The graph pruning and clustering (and their preserving QATs) start from: `model`'s
    folded inference graph (`converters.inference_graph.for_inference`, as the pipeline's
    post-training formats), with 1x1 convolutions for the projections and the classifier, so
    that TFMOT quantises every kernel per output channel and prunes and clusters the kernels
    the file will hold."""
    from converters.inference_graph import for_inference

    return for_inference(model, projections="conv")


def _back_to_keras(model, twin):
    """A copy of Keras 3 `model` carrying the weights of (stripped) tf_keras `twin`."""
    import keras

    from keras_swiftformer.mapping import copy_weights

    copy = keras.models.clone_model(model)
    copy_weights(twin, copy)
    return copy


def _fine_tune(model, student, images, tune, steps, callbacks=()):
    """`tune`: (`FineTuning`, progress)."""
    from converters.tfmot.finetune import distill

    tuning, progress = tune
    distill(student, model, images, steps, tuning, callbacks=callbacks, progress=progress)


def _preserving_qat(model, images, tune, options, stripped, scheme):
    """Pruning- or cluster-preserving QAT of `stripped`, exported with float32 input and
    output (as ``int8``: MediaPipe refuses int8 input)."""
    from converters.tfmot.export import convert_qat

    tuning, progress = tune
    student = qat_model(model, images, options.qat_steps, tuning, progress, twin=stripped,
                        scheme=scheme)
    return convert_qat(student, io="float")


def _prune(model, images, tune, options, pattern, target, label):
    from converters.formats import fine_tuned_format
    from converters.litert import tflite
    from converters.tfmot import sparsity
    from converters.tfmot.twin import build_twin

    steps, folded = options.prune_steps, folded_graph(model)
    pruned = sparsity.prune_twin(build_twin(folded), target, pattern, steps)
    _fine_tune(model, pruned, images, tune, steps, callbacks=sparsity.callbacks())
    stripped = sparsity.strip(pruned)
    extra = {"steps": steps,
             "overall_sparsity": sparsity.sparsity_summary(stripped)["overall_sparsity"]}
    results = [(fine_tuned_format(prune=label).name, tflite.convert(_back_to_keras(folded, stripped)),
                extra)]
    if options.qat:
        results.append((fine_tuned_format(prune=label, qat=True).name,
                        _preserving_qat(model, images, tune, options, stripped,
                                        "prune_preserve"),
                        {"steps": steps + options.qat_steps}))
    return results


def _cluster(model, images, tune, options, clusters):
    from converters.formats import fine_tuned_format
    from converters.litert import tflite
    from converters.tfmot import clustering
    from converters.tfmot.twin import build_twin

    steps, folded = options.cluster_steps, folded_graph(model)
    clustered = clustering.cluster_twin(build_twin(folded), clusters)
    _fine_tune(model, clustered, images, tune, steps)
    stripped = clustering.strip(clustered)
    results = [(fine_tuned_format(cluster=clusters).name,
                tflite.convert(_back_to_keras(folded, stripped)), {"steps": steps})]
    if options.qat:
        results.append((fine_tuned_format(cluster=clusters, qat=True).name,
                        _preserving_qat(model, images, tune, options, stripped,
                                        "cluster_preserve"),
                        {"steps": steps + options.qat_steps}))
    return results
