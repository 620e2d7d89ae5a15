"""Post-training int8 of the folded SwiftFormer: fidelity, size and latency of each int8 variant.

For each variant, one set of weights (the fixture checkpoints for XS and L1, realistic random
weights drawn like them for S and L3, as `benchmarks.litert_vs_torch`) goes through
`converters.inference_graph.for_inference` and is exported as:

- ``float32``: our float file, the latency reference;
- ``int8 (converter)``: what the TFLite converter gives on its own (min/max calibration,
  `converter_int8`), full integer inside, float32 I/O;
- ``int8 (previous)``: the default before issue 16's second step: GPTQ rounding of the
  pointwise kernels (`converters.weight_rounding`), error-minimising ranges
  (`converters.calibration`), the classifier head and only the ops XNNPACK has no int8 kernel
  for (`PREVIOUS_FLOAT_OPS`) in float;
- ``int8``: the pipeline's default (float32 I/O): as the previous, with every op but the
  convolutions and projections in float (`FOLDED_FLOAT_OPS`) and GELU inputs' ranges chosen
  for the error after the GELU;
- ``uint8``: the same file with uint8 input and output;
- ablations of the default: ``int8 (plain MSE ranges)`` (no GELU-aware ranges),
  ``int8 (nearest weights)`` (no GPTQ), ``int8 (32 photos)`` (the former calibration size);
- ``dynamic_int8``: int8 weights, float activations;
- competitor rows, where ``litert-torch`` and ``ai-edge-quantizer`` are installed (a separate
  venv: ``python -m venv --system-site-packages V && V/bin/pip install ai-edge-quantizer
  litert-torch==0.10.0``, then run this script with ``V/bin/python``): the PyTorch reference
  network converted by litert-torch (float32, NCHW normalised input) and that file quantised by
  ai-edge-quantizer's ``static_wi8_ai8`` recipe (calibrated on the same photos) and
  ``dynamic_wi8_afp32``.

Photos: /work/shared/images/imagenet_samples split as the pipeline does (even-indexed calibrate,
odd-indexed evaluate). Fidelity is SQNR and top-1 agreement against the Keras float model,
and for each photo whose top-1 changed, the float model's margin between its first and second
class in units of that photo's logit std (random-weight fixtures have near ties: a margin of
0.01 sigma flips at any int8 noise level); latency is LiteRT with XNNPACK, batch 1, 224x224, all files of a variant interleaved
(`benchmarks.litert_vs_torch.time_models`). With ``--plot``, the accumulated error of
every tensor of XS (SQNR of the tensor against the float model's, graph order) in the
converter's full-integer file, the previous default and the current one, on one axis.

    python -m benchmarks.int8_report --variants XS S L1 L3 --section \\
        --json benchmarks/int8_results.json --plot benchmarks/int8_layers.png
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from benchmarks.litert_vs_torch import (SAMPLES, SIZE, keras_model, litert_torch_model,
                                        normalise_nchw, time_models, write_outputs)
from converters.litert.inspection import delegation
from converters import calibration
from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
from converters.metrics import fidelity
from converters.report import markdown_table
from converters.litert.tflite import configure, convert, saved_model

#: The ops the previous default kept in float: those XNNPACK has no int8 kernel for.
PREVIOUS_FLOAT_OPS = ("GELU", "RSQRT", "MAXIMUM")
#: Row keys in table order; "float32" is the latency reference.
ROWS = ("float32", "int8 (converter)", "int8 (previous)", "int8", "uint8",
        "int8 (plain MSE ranges)", "int8 (nearest weights)", "int8 (32 photos)", "dynamic_int8")
#: Rows of the PyTorch model through litert-torch (NCHW normalised input), when installed.
COMPETITORS = ("litert-torch float32", "litert-torch + AEQ static_wi8_ai8",
               "litert-torch + AEQ dynamic_wi8_afp32")
#: `converters.report.markdown_table` columns: (title, row key, format).
COLUMNS = (("variant", "variant", "{}"), ("model", "model", "{}"),
           ("SQNR (dB)", "sqnr_db", "{:.2f}"), ("top-1 agreement", "top1_agreement", "{:.3f}"),
           ("flipped photos' float margin (σ)", "flip_margins", "{}"),
           ("size (MB)", "size_mb", "{:.2f}"), ("XNNPACK partitions", "partitions", "{}"),
           ("median ms", "median_ms", "{:.2f}"), ("/ float32", "ratio", "{:.2f}"),
           ("/ float32 (CPU time)", "cpu_ratio", "{:.2f}"))


def converter_int8(model, images):
    """The TFLite converter's own full-integer file (its min/max calibration, nearest
    rounding), float32 I/O: the baseline our calibration is measured against."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory)
        return configure(tf.lite.TFLiteConverter.from_saved_model(directory), "int8_float_io",
                         images).convert()


def nearest_int8(model, images):
    """The default int8 without GPTQ: nearest-rounded weights, the same ranges and float ops."""
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        saved_model(model, directory)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory), "int8",
                              images)
        ranged = calibration.ranged(converter, images)
    return calibration.quantize(ranged, "float32", FOLDED_FLOAT_OPS,
                                calibration.head_nodes(ranged))


def calibrated_rows(folded, images):
    """The default int8, uint8 and two ablations from one weight rounding and one calibration
    (what `convert` does for each): {row key: bytes}."""
    import tempfile

    import tensorflow as tf

    from converters.litert.tflite import FLOAT_HEAD_LAYERS, ROUNDING_IMAGES
    from converters.weight_rounding import round_weights

    folded = round_weights(folded, images[:ROUNDING_IMAGES], FLOAT_HEAD_LAYERS)
    with tempfile.TemporaryDirectory() as directory:
        saved_model(folded, directory)
        converter = configure(tf.lite.TFLiteConverter.from_saved_model(directory), "int8",
                              images)
        calibrated = calibration.calibrate(converter)
    stats = calibration.activation_statistics(calibrated, images)
    ranged = calibration.with_ranges(calibrated, calibration.choose_ranges(stats, "mse"))
    plain = calibration.with_ranges(calibrated, calibration.choose_ranges(
        {i: {**entry, "consumers": []} for i, entry in stats.items()}, "mse"))
    nodes = calibration.head_nodes(ranged)
    return {"int8": calibration.quantize(ranged, "float32", FOLDED_FLOAT_OPS, nodes),
            "uint8": calibration.quantize(ranged, "uint8", FOLDED_FLOAT_OPS, nodes),
            "int8 (plain MSE ranges)": calibration.quantize(plain, "float32", FOLDED_FLOAT_OPS,
                                                            nodes),
            "int8 (previous)": calibration.quantize(plain, "float32", PREVIOUS_FLOAT_OPS,
                                                    nodes)}


def export_rows(model, calibration_images, log=print):
    """{row key: .tflite bytes} for `ROWS`."""
    folded = for_inference(model)
    steps = {
        "float32": lambda: {"float32": convert(folded, "float32")},
        "int8 (converter)": lambda: {"int8 (converter)": converter_int8(
            folded, calibration_images)},
        "defaults": lambda: calibrated_rows(folded, calibration_images),
        "int8 (nearest weights)": lambda: {"int8 (nearest weights)": nearest_int8(
            folded, calibration_images)},
        "int8 (32 photos)": lambda: {"int8 (32 photos)": convert(
            folded, "int8", calibration_images[:32], float_ops=FOLDED_FLOAT_OPS)},
        "dynamic_int8": lambda: {"dynamic_int8": convert(folded, "dynamic_int8")},
    }
    contents = {}
    for key, step in steps.items():
        start = time.perf_counter()
        contents.update(step())
        log(f"  {key}: {time.perf_counter() - start:.0f} s")
    return {key: contents[key] for key in ROWS}


def competitor_rows(model, variant, calibration_images, log=print):
    """{row key: bytes} of `COMPETITORS`, and a note; ({}, why) without the packages."""
    start = time.perf_counter()
    content, note = litert_torch_model(model, variant)
    if content is None:
        return {}, note
    log(f"  litert-torch: {time.perf_counter() - start:.0f} s")
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as err:
        return {COMPETITORS[0]: content}, f"ai-edge-quantizer not installed ({err.name})"
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=content).get_signature_list()
    key = next(iter(signatures))
    name = signatures[key]["inputs"][0]
    data = {key: [{name: x[None]} for x in normalise_nchw(calibration_images)]}
    rows = {COMPETITORS[0]: content}
    for row, make in ((COMPETITORS[1], recipe.static_wi8_ai8),
                      (COMPETITORS[2], recipe.dynamic_wi8_afp32)):
        start = time.perf_counter()
        quant = quantizer.Quantizer(content, make())
        result = quant.quantize(quant.calibrate(data) if quant.need_calibration else None)
        rows[row] = bytes(result.quantized_model)
        log(f"  {row}: {time.perf_counter() - start:.0f} s")
    return rows, None


def tensor_sqnr(reference, quantized, images):
    """[(tensor name, SQNR dB)] in `quantized`'s graph order: each of its tensors that
    `reference` (a float `.tflite`) has under the same name and shape, integer ones
    dequantised, against the float one, over `images`: where a quantised model's error builds
    up (float tensors of a partly quantised model carry the error of the int8 ops before
    them)."""
    from converters.litert.runtime import dequantize, make_interpreter, quantize

    floats, ints = (make_interpreter(content, use_xnnpack=False, preserve_all_tensors=True)
                    for content in (reference, quantized))
    by_name = {d["name"]: d for d in floats.get_tensor_details()}
    order = [out for op in ints._get_ops_details() for out in op["outputs"]]
    details = {d["index"]: d for d in ints.get_tensor_details()}
    pairs = [(details[i], by_name[details[i]["name"]]) for i in order
             if details[i]["name"] in by_name
             and tuple(details[i]["shape"]) == tuple(by_name[details[i]["name"]]["shape"])]
    signal, noise = np.zeros(len(pairs)), np.zeros(len(pairs))
    for image in np.asarray(images, np.float32):
        for it in (floats, ints):
            source = it.get_input_details()[0]
            x = image[None]
            if np.dtype(source["dtype"]).kind in "iu":
                x = quantize(x, source["dtype"], *source["quantization"])
            it.set_tensor(source["index"], x)
            it.invoke()
        for k, (q, f) in enumerate(pairs):
            want = floats.get_tensor(f["index"]).astype(np.float64)
            got = ints.get_tensor(q["index"])
            if np.dtype(q["dtype"]).kind in "iu":
                got = dequantize(got, *q["quantization"])
            signal[k] += np.sum(want**2)
            noise[k] += np.sum((np.asarray(got, np.float64) - want) ** 2)
    return [(q["name"], float(10 * np.log10(s / max(n, 1e-30))))
            for (q, _), s, n in zip(pairs, signal, noise)]


def plot_layers(series, path, title):
    """Line plot of `tensor_sqnr` results ({label: result}) over the tensors all of them
    share, in the first one's graph order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lookups = [dict(result) for result in series.values()]
    first = next(iter(series.values()))
    shared = [name for name, _ in first if all(name in lookup for lookup in lookups)]
    labels = [name.split(";")[-1].split("/")[-2] if "/" in name else name for name in shared]
    figure, axis = plt.subplots(figsize=(16, 5))
    for label, lookup in zip(series, lookups):
        axis.plot([lookup[name] for name in shared], label=label, marker=".")
    axis.axhline(30, color="grey", linestyle=":", label="30 dB")
    finite = [v for lookup in lookups for v in (lookup[n] for n in shared) if np.isfinite(v)]
    axis.set_ylim(min(finite) - 2, min(60.0, max(finite)) + 2)  # exact tensors: off the top
    step = max(1, len(labels) // 60)
    axis.set_xticks(range(0, len(labels), step))
    axis.set_xticklabels(labels[::step], rotation=90, fontsize=6)
    axis.set_ylabel("accumulated SQNR of the tensor (dB)")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


#: `plot_layers` series: (label, row key).
PLOTTED = (("converter min/max, full integer", "int8 (converter)"),
           ("previous default", "int8 (previous)"), ("int8 now", "int8"))


def flip_margins(reference, got):
    """Top-1 margins (first minus second logit, in units of the photo's logit std) of the
    float model on the photos where `got`'s top-1 differs: how close to a tie they were."""
    order = np.sort(reference, axis=-1)
    margins = (order[:, -1] - order[:, -2]) / reference.std(axis=-1)
    flipped = np.argmax(got, axis=-1) != np.argmax(reference, axis=-1)
    return margin_text(sorted(margins[flipped]))


def margin_text(margins, shown=4):
    """'0.000, 0.011' for a few margins; the first `shown` and a count for more."""
    text = ", ".join(f"{m:.3f}" for m in margins[:shown]) or "-"
    return text + (f" and {len(margins) - shown} more" if len(margins) > shown else "")


def measure_variant(variant, calibration_images, evaluation, threads, runs, log=print):
    model, source = keras_model(variant)
    log(f"{variant}: converting ({source})")
    contents = export_rows(model, calibration_images, log)
    others, note = competitor_rows(model, variant, calibration_images, log)
    contents.update(others)
    reference = model.predict(evaluation, verbose=0, batch_size=16)
    from converters.litert.runtime import TFLiteRunner

    log(f"{variant}: timing")
    times = time_models(contents, threads, runs)
    rows = []
    for key, content in contents.items():
        images = normalise_nchw(evaluation) if key in COMPETITORS else evaluation
        got = TFLiteRunner(content=content).predict(images)
        result = fidelity(reference, got)
        rows.append({"variant": variant, "model": key, "weights": source,
                     "sqnr_db": round(result["sqnr_db"], 2),
                     "top1_agreement": round(result["top1_agreement"], 3),
                     "flip_margins": flip_margins(reference, got),
                     "size_mb": round(len(content) / 2**20, 2),
                     "partitions": delegation(content)["partitions"],
                     "median_ms": round(times[key]["median_ms"], 2),
                     "ratio": round(times[key]["median_ms"] / times["float32"]["median_ms"], 2),
                     "cpu_ratio": round(times[key]["cpu_median_ms"]
                                        / times["float32"]["cpu_median_ms"], 2)})
    if note:
        rows[0]["note"] = note
    return rows, contents


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["XS", "S", "L1", "L3"])
    parser.add_argument("--calibration", type=int, default=100, help="calibration photos")
    parser.add_argument("--evaluation", type=int, default=64, help="evaluation photos")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50, help="timed invocations per model")
    parser.add_argument("--section", action="store_true",
                        help="write the tables into benchmarks/results.md (section int8)")
    parser.add_argument("--json")
    parser.add_argument("--plot", help="PNG of XS's per-tensor error before and after")
    args = parser.parse_args(argv)

    from keras_swiftformer.images import list_images, load_images

    paths = list_images(SAMPLES)
    calibration_images = load_images(paths[0::2][: args.calibration], size=SIZE)
    evaluation = load_images(paths[1::2][: args.evaluation], size=SIZE)
    rows, notes = [], set()
    command = " ".join(argv if argv is not None else sys.argv[1:])
    for variant in args.variants:
        variant_rows, contents = measure_variant(variant, calibration_images, evaluation,
                                                 args.threads, args.runs)
        rows += variant_rows
        notes.update(row["note"] for row in variant_rows if row.get("note"))
        print(markdown_table(variant_rows, COLUMNS), flush=True)
        if args.plot and variant == args.variants[0]:
            images = evaluation[:8]
            series = {label: tensor_sqnr(contents["float32"], contents[key], images)
                      for label, key in PLOTTED}
            plot_layers(series, args.plot,
                        f"SwiftFormer-{variant}: accumulated int8 error per tensor, "
                        f"{len(images)} evaluation photos")
            with open(os.path.splitext(args.plot)[0] + ".json", "w") as f:
                json.dump(series, f)
        write(rows, notes, args, command, len(calibration_images), len(evaluation))


def write(rows, notes, args, command, calibrated, evaluated):
    """The table so far and how it was measured, to stdout and the requested files."""
    text = "\n".join([
        markdown_table(rows, COLUMNS), "",
        f"Measured with `python -m benchmarks.int8_report {command}` on {platform.machine()} "
        f"({os.cpu_count()} CPUs visible): {calibrated} even-indexed photos calibrate, "
        f"{evaluated} odd-indexed ones evaluate (SQNR and top-1 agreement against the Keras "
        f"float model); LiteRT with XNNPACK, {args.threads} thread(s), batch 1, {SIZE}x{SIZE}, "
        f"{args.runs} interleaved invocations per model, medians; '/ float32' is the ratio of "
        "median times (wall-clock, and process CPU time) to our float32 file's"
        + (f". {'; '.join(sorted(notes))}." if notes else ".")])
    write_outputs(text, rows, ("int8", "Post-training int8 of every variant (fidelity, size, "
                               "latency)") if args.section else None, args.json)


if __name__ == "__main__":
    main()
