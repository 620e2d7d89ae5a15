"""Every post-training compressed file of a variant beside what a user would pick instead.

Per variant, on weights drawn with a seed the code was not tuned on
(`keras_swiftformer.random_weights.realistic_weights`) and the sample photos split as the
pipeline splits them (even-indexed files calibrate, odd-indexed ones evaluate):

- LiteRT ``float32`` (the size reference), ``int8``, ``dynamic_int8``, made as
  the pipeline makes them, run by the LiteRT interpreter;
- the Core ML files (`converters.coreml.export_coreml`): ``int8``, ``palettize6``,
  ``palettize4`` and ``w8a8`` calibrated on the same photos as LiteRT's int8
  (`converters.coreml.calibrated`), the palettes also without calibration (nearest rounding),
  each passed through `converters.coreml.verify_coreml` (spec, every weight, the numpy
  evaluator) and counted in non-constant ops;
- coremltools 9's own post-training settings of the same bit widths
  (`coremltools.optimize.coreml`: per-tensor and per-grouped-channel k-means palettes, with
  per-channel scales, and int4 per-block linear weights; the grouped ones need iOS 18,
  `coremltools_settings`), run by the numpy evaluator on their compressed weights.

Columns: size, SQNR and top-1 agreement of the logits against Keras's on the evaluation
photos, top-1 agreement on the *decided* photos (Keras's top-2 softmax gap at least
`DECIDED_GAP`), and XNNPACK's latency relative to float32 (interleaved, one thread).

    nice -n 10 python -m benchmarks.compression_report --variant xs --json xs.json
    nice -n 10 python -m benchmarks.compression_report --variant s --json s.json
    python -m benchmarks.compression_report --merge xs.json s.json --section
"""

import argparse
import json
import os
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SWIFTFORMER_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
IMAGES = os.path.join(SHARED, "images", "imagenet_samples")
#: Photos whose Keras top-1 softmax probability exceeds the second's by this are "decided".
DECIDED_GAP = 0.05
#: Photos `converters.coreml.verify_coreml` checks each Core ML file on (all are scored).
VERIFIED_IMAGES = 2
LITERT = ("float32", "int8", "dynamic_int8")
#: (compression, calibrated) of the project's Core ML files.
COREML = (("int8", False), ("palettize6", False), ("palettize6", True), ("palettize4", False),
          ("palettize4", True), ("w8a8", True))


def coremltools_settings(base):
    """{row name: (bits, coremltools function, its OptimizationConfig)}: its post-training weight
    compressions of the float16 program `base` at 6 and 4 bits: k-means palettes per tensor
    and per 16 output channels, and int4 per blocks of 32 input channels, as coremltools
    applies them (a tensor whose channels the group or block does not divide stays float16);
    and ``_all`` the same with each tensor's group or block the divisor of its channels
    nearest 16 or 32 (`converters.coreml.compression.channel_group`, as the project's iOS 18
    palettes), so that every tensor is compressed, with and without per-channel scales (which
    coremltools 9 leaves applied to a tensor it then skips: the ``scaled`` setting without
    ``_all`` is broken)."""
    import coremltools.optimize.coreml as cto

    from converters.coreml.compression import grouped_configs

    def palettes(bits, **options):
        return lambda group: cto.OpPalettizerConfig(
            mode="kmeans", nbits=bits, granularity="per_grouped_channel", group_size=group,
            **options)

    def int4(block):
        return cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4",
                                           granularity="per_block", block_size=block)

    palettize, linear = cto.palettize_weights, cto.linear_quantize_weights
    settings = {}
    for bits in (6, 4):
        name = f"ct_palettize{bits}"
        settings[f"{name}_tensor"] = (bits, palettize, cto.OptimizationConfig(
            cto.OpPalettizerConfig(mode="kmeans", nbits=bits, granularity="per_tensor")))
        settings[f"{name}_group16_ios18"] = (bits, palettize,
                                             cto.OptimizationConfig(palettes(bits)(16)))
        settings[f"{name}_group16_all_ios18"] = (bits, palettize, cto.OptimizationConfig(
            op_name_configs=grouped_configs(base, 16, palettes(bits))))
        scaled = palettes(bits, enable_per_channel_scale=True)
        settings[f"{name}_group16_scaled_all_ios18"] = (bits, palettize, cto.OptimizationConfig(
            op_name_configs=grouped_configs(base, 16, scaled)))
    settings["ct_int4_block32_ios18"] = (4, linear, cto.OptimizationConfig(int4(32)))
    settings["ct_int4_block32_all_ios18"] = (4, linear, cto.OptimizationConfig(
        op_name_configs=grouped_configs(base, 32, int4, axis=1)))
    return settings


def folder_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def scores(reference, logits):
    """SQNR, top-1 agreement on all photos and on the decided ones."""
    from converters.metrics import fidelity

    result = fidelity(reference, logits)
    z = np.exp(reference - reference.max(-1, keepdims=True))
    p = np.sort(z / z.sum(-1, keepdims=True), axis=-1)
    decided = p[:, -1] - p[:, -2] >= DECIDED_GAP
    agree = reference.argmax(-1) == np.asarray(logits).argmax(-1)
    return {"sqnr_db": result["sqnr_db"], "top1_agreement": result["top1_agreement"],
            "decided": int(decided.sum()),
            "top1_decided": float(agree[decided].mean()) if decided.any() else None}


def litert_rows(model, calibration, evaluation, reference, folder, wanted):
    from converters.formats import get_format
    from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
    from converters.litert import tflite
    from converters.litert.runtime import make_interpreter

    folded = for_inference(model)
    rows = []
    for fmt in filter(wanted, LITERT):
        graph = model if get_format(fmt).litert.graph == "keras" else folded  # as the pipeline
        content = tflite.convert(graph, fmt, calibration=calibration,
                                 float_ops=FOLDED_FLOAT_OPS)
        path = os.path.join(folder, f"{fmt}.tflite")
        with open(path, "wb") as f:
            f.write(content)
        interpreter = make_interpreter(content)
        source = interpreter.get_input_details()[0]["index"]
        target = interpreter.get_output_details()[0]["index"]
        logits = []
        for image in evaluation:
            interpreter.set_tensor(source, image[None])
            interpreter.invoke()
            logits.append(interpreter.get_tensor(target)[0].copy())
        rows.append({"format": fmt, "runtime": "LiteRT", "file": path,
                     "size_mb": len(content) / 1e6, **scores(reference, np.array(logits))})
    return rows


def add_latency(rows, runs):
    from android_bench.host import benchmark_host
    from android_bench.timing import Timing

    report = benchmark_host([r["file"] for r in rows], Timing(threads=(1,), warmup=3, runs=runs),
                            progress=lambda line: None)
    times = {os.path.basename(r["model"]): r["median_ms"] for r in report["results"]}
    base = times["float32.tflite"]
    for row in rows:
        row["latency_vs_float32"] = times[os.path.basename(row["file"])] / base


def coreml_rows(model, calibration, evaluation, reference, folder, progress, wanted):
    """The project's Core ML files (`COREML`), verified on `VERIFIED_IMAGES` photos and run
    by the numpy evaluator on all of `evaluation`."""
    from converters.coreml import export_coreml, run_coreml, verify_coreml
    from converters.coreml.mil_eval import MLProgram
    from converters.formats import COMPRESSIONS

    rows = []
    for compression, calibrated in COREML:
        rounded = COMPRESSIONS[compression].rounding == "gptq"
        name = f"coreml_{compression}" + ("_nearest" if rounded and not calibrated else "")
        if not wanted(name):
            continue
        start = time.time()
        path = os.path.join(folder, f"{name}.mlpackage")
        try:
            export_coreml(model, path, f"coreml_{compression}",
                          calibration=calibration if calibrated else None)
            report = verify_coreml(path, model, evaluation[:VERIFIED_IMAGES])
            logits = run_coreml(MLProgram(path), evaluation)[0]
        except Exception as err:  # one file's failure must not lose the others
            rows.append({"format": name, "file": path, "error": f"{type(err).__name__}: {err}"})
            progress(f"{name} FAILED: {rows[-1]['error'][:300]}")
            continue
        rows.append({"format": name, "runtime": "Core ML", "file": path,
                     "size_mb": report["size_bytes"] / 1e6, "verified": True,
                     "ops": report["ops"]["count"],
                     "min_weight_sqnr_db": report["weights"]["min_palette_sqnr_db"],
                     **scores(reference, logits)})
        progress(f"{name}: {rows[-1]['sqnr_db']:.1f} dB ({time.time() - start:.0f} s)")
    return rows


def coremltools_rows(model, evaluation, reference, folder, progress, wanted):
    """coremltools' own settings (`coremltools_settings`) on the uncompressed float16
    program, evaluated by the numpy evaluator on their compressed weights."""
    from converters.coreml import convert_to_coreml, run_coreml
    from converters.coreml.mil_eval import MLProgram

    base = convert_to_coreml(model, target="iOS18")
    rows = []
    for name, (bits, compress, optimization) in coremltools_settings(base).items():
        if not wanted(name):
            continue
        start = time.time()
        path = os.path.join(folder, f"{name}.mlpackage")
        try:
            compressed = compress(base, optimization)
            compressed.save(path)
            logits = run_coreml(MLProgram(path), evaluation)[0]  # the compressed ops read
        except Exception as err:  # one setting's failure must not lose the others
            rows.append({"format": name, "file": path, "error": f"{type(err).__name__}: {err}"})
            progress(f"{name} FAILED: {rows[-1]['error'][:300]}")
            continue
        rows.append({"format": name, "runtime": "Core ML (coremltools)", "bits": bits,
                     "file": path, "size_mb": folder_size(path) / 1e6,
                     **scores(reference, logits)})
        progress(f"{name}: {rows[-1]['sqnr_db']:.1f} dB ({time.time() - start:.0f} s)")
    return rows


COLUMNS = (
    ("format", "format", "{}"), ("runtime", "runtime", "{}"), ("size (MB)", "size_mb", "{:.2f}"),
    ("SQNR (dB)", "sqnr_db", "{:.1f}"), ("top-1 agree", "top1_agreement", "{:.3f}"),
    ("top-1 decided", "top1_decided", "{:.3f}"),
    ("XNNPACK time / float32", "latency_vs_float32", "{:.2f}"),
    ("Core ML ops", "ops", "{:d}"), ("verified", "verified", "{}"), ("error", "error", "{}"),
)


def table(rows):
    head = "| " + " | ".join(c[0] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = []
        for _, key, form in COLUMNS:
            value = row.get(key)
            cells.append("" if value is None else form.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args, progress):
    from converters.coreml import keras_logits
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.images import list_images, load_images
    from keras_swiftformer.random_weights import realistic_weights

    size = args.size
    model = realistic_weights(SwiftFormer(args.variant.upper(), input_shape=(size, size, 3),
                                          classifier_activation=None), seed=args.seed)
    paths = list_images(args.images)
    calibration = load_images(paths[0::2][:args.calibration_images], size)
    evaluation = load_images(paths[1::2][:args.evaluation_images], size)
    reference = keras_logits(model, evaluation)
    folder = os.path.join(args.output, args.variant)
    os.makedirs(folder, exist_ok=True)
    progress(f"{args.variant}: {len(calibration)} calibration / {len(evaluation)} evaluation "
             f"photos, {size} px, weights seed {args.seed}")
    wanted = re.compile(args.rows).search
    rows = litert_rows(model, calibration, evaluation, reference, folder, wanted)
    if args.latency_runs and any(row["format"] == "float32" for row in rows):
        add_latency(rows, args.latency_runs)
    progress("LiteRT: " + ", ".join(f"{r['format']} {r['sqnr_db']:.1f} dB" for r in rows))
    rows += coreml_rows(model, calibration, evaluation, reference, folder, progress, wanted)
    rows += coremltools_rows(model, evaluation, reference, folder, progress, wanted)
    for row in rows:
        row.pop("file", None)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="xs", choices=["xs", "s", "l1", "l3"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=7,
                        help="of the weight draw (the code was developed on seeds 0 and 1)")
    parser.add_argument("--images", default=IMAGES)
    parser.add_argument("--calibration-images", type=int, default=48)
    parser.add_argument("--evaluation-images", type=int, default=32)
    parser.add_argument("--latency-runs", type=int, default=20, help="0: no timing")
    parser.add_argument("--rows", default="",
                        help="a regular expression: only the rows whose name it matches run "
                        "(float32 is the latency reference), e.g. 'palettize|ct_'")
    parser.add_argument("--output", default="compression_report")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--merge", nargs="+", help="JSON files of earlier runs: no run, "
                        "their tables only")
    parser.add_argument("--section", action="store_true",
                        help="write benchmarks/results/compression-formats.md")
    args = parser.parse_args(argv)

    if args.merge:
        runs = []
        for path in args.merge:
            with open(path) as f:
                runs.append(json.load(f))
    else:
        start = time.time()
        settings = {k: v for k, v in vars(args).items()
                    if k not in ("output", "images", "json", "merge", "section")}
        rows = run(args, lambda line: print(line, flush=True))
        settings["seconds"] = round(time.time() - start)
        runs = [{"settings": settings, "rows": rows}]
        if args.json:
            with open(args.json, "w") as f:
                json.dump(runs[0], f, indent=2, default=float)
    body = "\n\n".join(f"### SwiftFormer-{r['settings']['variant'].upper()}, "
                        f"{r['settings']['size']} px, weight seed {r['settings']['seed']}"
                        f"\n\nSettings: {json.dumps(r['settings'])}"
                        f"\n\n{table(r['rows'])}" for r in runs)
    print(body)
    if args.section:
        from benchmarks.results import write_section

        command = ("nice -n 10 python -m benchmarks.compression_report --variant VARIANT "
                   "--json VARIANT.json; python -m benchmarks.compression_report --merge "
                   "xs.json s.json --section")
        write_section("compression-formats", "Every compressed file beside the baselines",
                      command, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
