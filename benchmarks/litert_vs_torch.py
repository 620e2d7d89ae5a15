"""LiteRT latency: our folded SwiftFormer exports against the PyTorch model through litert-torch.

For each variant, one set of weights (the fixture checkpoints for XS and L1, realistic random
weights drawn like them otherwise) goes into:

- ``litert-torch``: `benchmarks.reference_torch.SwiftFormer` (the official/timm network)
  converted with ``litert_torch.convert`` -- "the PyTorch model converted directly"
  (NCHW, normalised input);
- ``keras naive``: the unfolded Keras model exported by `converters.litert.tflite` (float32);
- ``ours float32`` / ``ours int8`` / ``ours int8 mixed``: `converters.inference_graph.for_inference`
  exported as float32, full-integer int8 (int8 input and output), and int8 with
  `converters.inference_graph.FOLDED_FLOAT_OPS` kept in float (float input and output).

All models of a variant are timed in one process, interleaved as `android_bench.host` does (each
round invokes every model once, in a fresh random order), through the LiteRT interpreter with
XNNPACK, batch 1, 224x224, after a warm-up; the table gives medians and ratios, and the ratio
of median CPU times, which a busy machine does not skew. Fidelity (SQNR, top-1 agreement) is
measured against the Keras float model on sample photos. Our models take raw RGB and normalise
inside (one mean-pixel subtraction); litert-torch's takes normalised input, so it does less work.

    python -m benchmarks.litert_vs_torch --variants XS S L1 L3 --threads 1 2 \\
        --runs 100 --section

litert-torch is optional (``pip install litert-torch==0.10.0``): without it the litert-torch
column is left out and the unfolded Keras export is the baseline.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
from converters.litert.inspection import delegation, set_random_input, time_interleaved
from converters.metrics import fidelity
from converters.report import markdown_table
from converters.litert.runtime import make_interpreter
from converters.litert.tflite import convert
from keras_swiftformer.config import SwiftFormerConfig
from keras_swiftformer.config import IMAGENET_MEAN, IMAGENET_STD, MODEL_CONFIGS
from keras_swiftformer.random_weights import realistic_weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SWIFTFORMER_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
CHECKPOINTS = {"XS": "fixtures/original/swiftformer_xs_random.pth",
               "L1": "fixtures/original/swiftformer_l1_random.pth"}
SAMPLES = os.path.join(SHARED, "images", "imagenet_samples")
SIZE = 224

#: Model keys in table order; the reference of the float ratio comes first.
MODELS = ("litert_torch", "keras_naive", "ours_float32", "ours_int8", "ours_int8_float_io")
MODEL_TITLES = {"litert_torch": "litert-torch f32", "keras_naive": "Keras naive f32",
                "ours_float32": "ours f32", "ours_int8": "ours int8",
                "ours_int8_float_io": "ours int8_float_io"}


def keras_model(variant):
    """(The Keras SwiftFormer of `variant` with logits out, where its weights came from)."""
    from keras_swiftformer import SwiftFormer

    checkpoint = os.path.join(SHARED, CHECKPOINTS[variant]) if variant in CHECKPOINTS else None
    if checkpoint and os.path.exists(checkpoint):
        model = SwiftFormer(variant, weights=checkpoint, classifier_activation=None,
                            input_shape=(SIZE, SIZE, 3))
        return model, os.path.relpath(checkpoint, SHARED)
    model = SwiftFormer(variant, classifier_activation=None, input_shape=(SIZE, SIZE, 3))
    return realistic_weights(model), "random (fixture distribution)"


def normalise_nchw(images):
    """Raw RGB (N, H, W, 3) -> ImageNet-normalised (N, 3, H, W), litert-torch's input."""
    x = (np.asarray(images, np.float32) / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / (
        np.array(IMAGENET_STD, np.float32))
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def litert_torch_model(model, variant):
    """The same weights through the PyTorch reference and litert-torch -> (bytes, None), or
    (None, why not)."""
    try:
        import litert_torch
        import torch

        from benchmarks.reference_torch import from_keras
    except ImportError as err:
        return None, f"litert-torch not installed ({err.name})"
    module = from_keras(model, variant, SwiftFormerConfig.from_model(model).token_weighting)
    edge = litert_torch.convert(module, (torch.zeros(1, 3, SIZE, SIZE),))
    return bytes(edge.model_content()), None


def export_models(model, variant, calibration, log=print):
    """{model key: .tflite bytes} for `MODELS` (litert-torch left out when unavailable), and a
    note on litert-torch."""
    folded = for_inference(model)
    steps = {
        "keras_naive": lambda: convert(model, "float32"),
        "ours_float32": lambda: convert(folded, "float32"),
        "ours_int8": lambda: convert(folded, "int8", calibration, float_ops=FOLDED_FLOAT_OPS),
        "ours_int8_float_io": lambda: convert(folded, "int8_float_io", calibration),
    }
    contents, note = {}, None
    start = time.perf_counter()
    contents["litert_torch"], note = litert_torch_model(model, variant)
    log(f"  litert_torch: {note or f'{time.perf_counter() - start:.0f} s'}")
    for key, step in steps.items():
        start = time.perf_counter()
        contents[key] = step()
        log(f"  {key}: {time.perf_counter() - start:.0f} s")
    return {k: v for k, v in contents.items() if v is not None}, note


def time_models(contents, threads, runs, warmup=10, seed=0):
    """Times every model of `contents` through LiteRT (XNNPACK, `threads` threads), interleaved
    (`converters.litert.inspection.time_interleaved`).

    Returns:
        {key: {"median_ms", "p10_ms", "cpu_median_ms"}}: wall-clock median and 10th percentile,
        and the median process CPU time of an invocation.
    """
    interpreters = []
    for index, content in enumerate(contents.values()):
        interpreter = make_interpreter(content, threads)
        set_random_input(interpreter, seed + index)
        interpreters.append(interpreter)
    wall, cpu = time_interleaved(interpreters, runs, warmup, seed, cpu_times=True)
    return {key: {"median_ms": float(np.median(wall[i])),
                  "p10_ms": float(np.percentile(wall[i], 10)),
                  "cpu_median_ms": float(np.median(cpu[i]))} for i, key in enumerate(contents)}


def measure_fidelity(contents, model, images):
    """{key: `converters.metrics.fidelity` of the model against Keras float logits on `images`}."""
    from converters.litert.runtime import TFLiteRunner

    reference = model.predict(images, verbose=0)
    result = {}
    for key, content in contents.items():
        runner = TFLiteRunner(content=content, num_threads=2)
        x = normalise_nchw(images) if key == "litert_torch" else images
        result[key] = fidelity(reference, runner.predict(x))
    return result


def _ratio(row, key, base, stat="median_ms"):
    times = row["times"]
    if key not in times or base not in times:
        return "–"
    return f"{times[key][stat] / times[base][stat]:.2f}"


def _ms(row, key):
    value = row["times"].get(key)
    return f"{value['median_ms']:.2f}" if value else "–"


def markdown(results, info):
    """The results as Markdown: latency table, fidelity and graph tables, how it was measured."""
    ratios = (("ours f32 / litert-torch", "ours_float32", "litert_torch", "median_ms"),
              ("(CPU time)", "ours_float32", "litert_torch", "cpu_median_ms"),
              ("ours f32 / naive", "ours_float32", "keras_naive", "median_ms"),
              ("int8 / ours f32", "ours_int8", "ours_float32", "median_ms"),
              ("int8_float_io / ours f32", "ours_int8_float_io", "ours_float32", "median_ms"))
    latency = [{"variant": row["variant"], "threads": row["threads"],
                **{key: _ms(row, key) for key in MODELS},
                **{title: _ratio(row, a, b, stat) for title, a, b, stat in ratios}}
               for row in results]
    lines = [markdown_table(latency, (("variant", "variant", "{}"), ("threads", "threads", "{}"))
                            + tuple((MODEL_TITLES[key], key, "{}") for key in MODELS)
                            + tuple((title, title, "{}") for title, *_ in ratios))]
    lines += ["", "Times: median wall-clock ms per inference. (CPU time): the same ratio of the "
              "median process CPU time per inference, which other processes on the machine do "
              "not inflate (with 2 threads it counts the threads' spinning too).", "",
              "Fidelity against the Keras float model (sample photos) and the graphs as LiteRT "
              "runs them:", ""]
    seen, graphs = set(), []
    for row in results:
        if row["variant"] in seen:
            continue
        seen.add(row["variant"])
        for key in MODELS:
            if key not in row["fidelity"]:
                continue
            fid, graph = row["fidelity"][key], row["graphs"][key]
            left = ", ".join(f"{op} x{n}" for op, n in sorted(graph["undelegated"].items()))
            graphs.append({"variant": row["variant"], "model": key, **fid, **graph,
                           "left": left or "none"})
    lines += [markdown_table(graphs, (
        ("variant", "variant", "{}"), ("model", "model", "{}"), ("SQNR (dB)", "sqnr_db", "{:.1f}"),
        ("top-1 agreement", "top1_agreement", "{:.3f}"), ("ops", "ops", "{}"),
        ("XNNPACK partitions", "partitions", "{}"),
        ("ops left to LiteRT's own kernels", "left", "{}"), ("size (MB)", "size_mb", "{:.1f}"))),
        "", info]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=sorted(MODEL_CONFIGS),
                        choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=100, help="timed invocations per model")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calibration", type=int, default=32, help="calibration photos")
    parser.add_argument("--evaluation", type=int, default=32, help="photos for the SQNR")
    parser.add_argument("--section", action="store_true",
                        help="write the tables into benchmarks/results.md (section latency)")
    parser.add_argument("--json", help="write all numbers here")
    parser.add_argument("--save-models", help="folder to keep the .tflite files in")
    args = parser.parse_args(argv)

    from keras_swiftformer.images import list_images, load_images

    paths = list_images(SAMPLES)
    if len(paths) < args.calibration + args.evaluation:
        raise SystemExit(f"{SAMPLES} has {len(paths)} photos; fewer needed")
    # Calibration and evaluation photos are disjoint: every other photo.
    images = load_images(paths[: 2 * max(args.calibration, args.evaluation)], size=SIZE)
    calibration, evaluation = images[0::2][: args.calibration], images[1::2][: args.evaluation]
    results, notes = [], set()
    for variant in args.variants:
        print(f"{variant}: converting", flush=True)
        model, source = keras_model(variant)
        contents, note = export_models(model, variant, calibration)
        if note:
            notes.add(note)
        if args.save_models:
            os.makedirs(args.save_models, exist_ok=True)
            for key, content in contents.items():
                with open(os.path.join(args.save_models, f"{variant}_{key}.tflite"), "wb") as f:
                    f.write(content)
        fid = measure_fidelity(contents, model, evaluation)
        graphs = {key: {**delegation(content), "size_mb": len(content) / 2**20}
                  for key, content in contents.items()}
        for threads in args.threads:
            print(f"{variant}: timing, {threads} thread(s)", flush=True)
            times = time_models(contents, threads, args.runs, args.warmup)
            results.append({"variant": variant, "threads": threads, "weights": source,
                            "times": times, "fidelity": fid, "graphs": graphs})
            print(markdown(results[-1:], ""), flush=True)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    info = (f"Measured with `python -m benchmarks.litert_vs_torch {command}` "
            f"on {platform.machine()} ({os.cpu_count()} CPUs visible), LiteRT interpreter with "
            f"XNNPACK, batch 1, {SIZE}x{SIZE}, {args.warmup} warm-up and {args.runs} timed "
            "invocations per model, interleaved; medians. Weights: "
            + "; ".join(sorted({f"{r['variant']}: {r['weights']}" for r in results}))
            + (". " + "; ".join(sorted(notes)) if notes else "."))
    write_outputs(markdown(results, info), results,
                  ("latency", "LiteRT latency: the folded Keras graph against litert-torch")
                  if args.section else None, args.json)


def write_outputs(text, rows, section=None, json_path=None):
    """Prints the Markdown `text`; writes it as a `benchmarks.results` section where asked
    (``(name, title)``, with the command line that ran) and the `rows` as JSON."""
    print(text, flush=True)
    if section:
        from benchmarks.results import invocation, write_section

        write_section(*section, invocation(), text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
