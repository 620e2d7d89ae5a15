"""Compressed formats for the conversion pipeline: QAT int8, pruned, clustered (TFMOT).

`compress_formats` is the pipeline's hook for ``--qat`` / ``--prune`` / ``--cluster``: it
fine-tunes compressed versions of the Keras 3 float model on the calibration images
(distillation from the float model's logits, so no labels), exports each to `.tflite`, runs it
through the LiteRT runtime helper and returns rows shaped like `converters.pipeline`'s, so they
sit beside the post-training formats in the fidelity report. Every format starts from the
model's folded inference graph (`folded_graph`), the graph the post-training formats come from;
the optimisation itself happens on that graph's tf_keras twin (`converters.tfmot`), and pruned
and clustered weights come back into a Keras 3 copy of it that exports through
`converters.tflite`. The Keras 3 model stays the product and the teacher.

========================  ==================================================================
format                    what
========================  ==================================================================
``qat_int8``              quantisation-aware training, integer with int8 input and output
                          (ranges from training: no representative dataset) except the
                          attention's RMS statistics (`converters.tfmot.export.FLOAT_OPS`)
``pruned{P}_float32``     magnitude pruning, ``P`` = ``50`` (per cent, unstructured) or
                          ``2of4`` (2:4), float32 export
``pruned{P}_pqat_int8``   then pruning-preserving QAT, integer as ``qat_int8``
``clustered{K}_float32``  weight clustering to ``K`` values per kernel, float32 export
``clustered{K}_cqat_int8``  then cluster-preserving QAT, integer as ``qat_int8``
========================  ==================================================================

Rows add to the pipeline's keys ``zip_bytes`` (the file deflated, as a zip archive stores it:
what pruning and clustering save in download size), ``steps`` (fine-tuning steps) and what the
file's kernels hold (`converters.tfmot.tflite_stats.kernel_stats`: ``kernel_sparsity``,
``depthwise_sparsity``, ``kernels``, ``m_by_n_kernels``, ``max_unique_per_channel``).
"""

import dataclasses
import os
import time
import zlib

DEFAULT_STEPS = 100


@dataclasses.dataclass(frozen=True)
class CompressionOptions:
    """Which compressed formats to make, and how long each fine-tunes.

    Attributes:
        qat: quantisation-aware-trained int8 (and, with `prune` / `cluster`, their pruning- /
            cluster-preserving QAT).
        prune: pruning specs, e.g. ``("2:4", "50%")`` (`parse_prune`).
        cluster: values per kernel, e.g. ``(16,)``.
        qat_steps, prune_steps, cluster_steps: fine-tuning steps of each method.
    """

    qat: bool = False
    prune: tuple = ()
    cluster: tuple = ()
    qat_steps: int = DEFAULT_STEPS
    prune_steps: int = DEFAULT_STEPS
    cluster_steps: int = DEFAULT_STEPS

    def enabled(self):
        return bool(self.qat or self.prune or self.cluster)

    def check(self):
        """ValueError naming a bad pruning spec, cluster count or step count."""
        for spec in self.prune:
            parse_prune(spec)
        for k in self.cluster:
            if isinstance(k, bool) or not str(k).isdigit() or int(k) < 2:
                raise ValueError(f"Cluster count {k!r}: give an integer of at least 2 "
                                 "(values per kernel)")
        for name in ("qat_steps", "prune_steps", "cluster_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


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


def _check_logits(model):
    last = model.layers[-1]
    if getattr(last, "activation", None) is not None and \
            getattr(last.activation, "__name__", "linear") not in ("linear", None):
        raise ValueError(f"{model.name} ends in {last.activation.__name__}: compression distils "
                         "logits; build it with classifier_activation=None")


def compress_formats(model, images, evaluation, reference, output_dir, options,
                     batch_size=16, learning_rate=None, loss="mse", progress=print):
    """Fine-tunes, exports and measures the compressed formats of `model`.

    Args:
        model: the Keras 3 float model (fixed input size, logits out), as the pipeline builds it.
        images: (N, H, W, 3) float32 fine-tuning images (the pipeline's calibration split).
        evaluation: (M, H, W, 3) float32 images never used for fine-tuning.
        reference: (M, K) the float model's logits on `evaluation`.
        output_dir: where the `.tflite` files go (``{model.name}_{format}.tflite``).
        options: `CompressionOptions` (a preserving QAT after pruning or clustering takes
            that method's steps once more).
        batch_size, learning_rate, loss: of the fine-tuning
            (`converters.tfmot.finetune.distill`; learning rate None: its default).
        progress: callable taking one line of text.

    Returns:
        list of row dicts (`converters.pipeline` rows plus the keys above); a format that
        fails gives ``{"format", "error"}`` and the others go on.

    Raises:
        ImportError: tf_keras or TFMOT is missing; the message names the extra to install.
    """
    import converters.tfmot  # noqa: F401 -- raises with the install hint if the extra is absent

    options.check()
    qat = options.qat

    def tune(steps):
        return dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate, loss=loss,
                    progress=progress)

    jobs = ([("qat_int8", options.qat_steps,
              lambda: _qat(model, images, tune(options.qat_steps)))] if qat else [])
    for pattern, target, label in (parse_prune(p) for p in options.prune):
        jobs.append((f"pruned{label}", options.prune_steps,
                     lambda p=pattern, t=target, label=label: _prune(
                         model, images, tune(options.prune_steps), qat, p, t, label)))
    for k in (int(k) for k in options.cluster):
        jobs.append((f"clustered{k}", options.cluster_steps,
                     lambda k=k: _cluster(model, images, tune(options.cluster_steps), qat, k)))

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
        progress(f"    {name} done in {time.time() - start:.0f} s")
    return rows


def measure_format(fmt, content, extra, name, evaluation, reference, output_dir):
    """Writes `content` (`.tflite` bytes of format `fmt`) as ``{name}_{fmt}.tflite`` in
    `output_dir`, runs it on `evaluation` and returns its row: the pipeline's keys, ``zip_bytes``,
    the kernel statistics and `extra`."""
    from keras_swiftformer.files import atomic_output
    from converters.metrics import fidelity
    from converters.runtime import TFLiteRunner
    from converters.tfmot.tflite_stats import kernel_stats

    path = os.path.join(output_dir, f"{name}_{fmt}.tflite")
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


def qat_model(model, images, steps=DEFAULT_STEPS, batch_size=16, learning_rate=None,
              loss="mse", progress=None, twin=None, scheme="default"):
    """The quantisation-aware-trained tf_keras twin of Keras 3 `model`: quantised, ranges
    calibrated on `images`, fine-tuned `steps` steps by distillation from `model`, ranges
    calibrated again.

    Args:
        twin: the tf_keras twin to quantise (a pruned or clustered one, stripped); default the
            twin of `model`'s folded inference graph
            (`converters.inference_graph.for_inference` with 1x1-convolution projections, so
            that every kernel is quantised per output channel): the graph the post-training
            formats come from, with no BatchNorm to keep frozen.
        scheme: see `converters.tfmot.quantize.SCHEMES`.
        others: as `compress_formats`.
    """
    from converters.tfmot import finetune, quantize
    from converters.tfmot.twin import build_twin

    if twin is None:
        twin = build_twin(folded_graph(model))
    student = quantize.quantize_twin(twin, scheme)
    quantize.calibrate_ranges(student, images, batch_size)
    if steps:
        finetune.distill(student, model, images, steps, batch_size, learning_rate, loss,
                         progress=progress)
        # Training moves the ranges by an EMA of augmented batches, which narrows them towards
        # a typical batch's; set them again from the images for the trained weights (measured,
        # XS at 224 px: 28.5 -> 29.4 dB, top-1 agreement 0.94 -> 0.98).
        quantize.calibrate_ranges(student, images, batch_size)
    return student


def _qat(model, images, tune):
    from converters.tfmot.export import convert_qat

    student = qat_model(model, images, **tune)
    return [("qat_int8", convert_qat(student, io="int8"), {"steps": tune["steps"]})]


def folded_graph(model):
    """The graph every compressed format is made from: `model`'s folded inference graph
    (`converters.inference_graph.for_inference`, as the pipeline's post-training formats), with
    1x1 convolutions for the projections and the classifier, so that TFMOT quantises every
    kernel per output channel and prunes and clusters the kernels the file will hold."""
    from converters.inference_graph import for_inference

    return for_inference(model, projections="conv")


def _back_to_keras(model, twin):
    """A copy of Keras 3 `model` carrying the weights of (stripped) tf_keras `twin`."""
    import keras

    from keras_swiftformer.mapping import copy_weights

    copy = keras.models.clone_model(model)
    copy_weights(twin, copy)
    return copy


def _fine_tune(model, student, images, tune, callbacks=()):
    from converters.tfmot.finetune import distill

    distill(student, model, images, tune["steps"], tune["batch_size"], tune["learning_rate"],
            tune["loss"], callbacks=callbacks, progress=tune["progress"])


def _prune(model, images, tune, qat, pattern, target, label):
    from converters import tflite
    from converters.tfmot import sparsity
    from converters.tfmot.export import convert_qat
    from converters.tfmot.twin import build_twin

    steps, folded = tune["steps"], folded_graph(model)
    pruned = sparsity.prune_twin(build_twin(folded), target, pattern, steps)
    _fine_tune(model, pruned, images, tune, callbacks=sparsity.callbacks())
    stripped = sparsity.strip(pruned)
    extra = {"steps": steps,
             "overall_sparsity": sparsity.sparsity_summary(stripped)["overall_sparsity"]}
    results = [(f"pruned{label}_float32", tflite.convert(_back_to_keras(folded, stripped)),
                extra)]
    if qat:
        student = qat_model(model, images, **tune, twin=stripped, scheme="prune_preserve")
        results.append((f"pruned{label}_pqat_int8", convert_qat(student, io="int8"),
                        {"steps": 2 * steps}))
    return results


def _cluster(model, images, tune, qat, clusters):
    from converters import tflite
    from converters.tfmot import clustering
    from converters.tfmot.export import convert_qat
    from converters.tfmot.twin import build_twin

    steps, folded = tune["steps"], folded_graph(model)
    clustered = clustering.cluster_twin(build_twin(folded), clusters)
    _fine_tune(model, clustered, images, tune)
    stripped = clustering.strip(clustered)
    results = [(f"clustered{clusters}_float32",
                tflite.convert(_back_to_keras(folded, stripped)), {"steps": steps})]
    if qat:
        student = qat_model(model, images, **tune, twin=stripped, scheme="cluster_preserve")
        results.append((f"clustered{clusters}_cqat_int8", convert_qat(student, io="int8"),
                        {"steps": 2 * steps}))
    return results
