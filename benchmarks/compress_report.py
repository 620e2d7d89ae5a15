"""The README's compression numbers: post-training int8 against QAT, pruning and clustering.

For each checkpoint: the sample photos are split (even-indexed files fine-tune and calibrate,
odd-indexed ones evaluate, as the conversion pipeline splits them); the float32 and the
post-training int8 file (`converters.litert.tflite`, from the folded graph as the
pipeline makes them, calibrated on the fine-tuning photos) are the baselines;
`converters.compress.compress_formats` makes the compressed ones from the same photos.
Every file is run through the LiteRT helper against the Keras float model's logits on the
evaluation photos, deflated for its download size, read back for its kernels' sparsity and
distinct values, and timed with `android_bench.host.benchmark_host` (interleaved runs, XNNPACK).

    python -m benchmarks.compress_report --variants xs l1 --size 224 --steps 100 \\
        --prune 2:4 50% --cluster 16 --output compress_report
    python -m benchmarks.compress_report --variants s xs --weights random \\
        --evaluation-images 64 --latency-runs 0 --output compress_report  # QAT vs int8 only
    python -m benchmarks.compress_report --variants xs --weights random --seeds 1 2 3 \\
        --evaluation-images 64 --latency-runs 0 --section  # QAT on unseen weight draws

writes ``compress_report/compress_report.json`` and ``.md`` (the table the README shows).
"""

import argparse
import json
import os
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SWIFTFORMER_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
CHECKPOINTS = {
    "xs": os.path.join(SHARED, "fixtures", "original", "swiftformer_xs_random.pth"),
    "l1": os.path.join(SHARED, "fixtures", "original", "swiftformer_l1_random.pth"),
}
IMAGES = os.path.join(SHARED, "images", "imagenet_samples")

COLUMNS = (
    ("format", "format", "{}"),
    ("graph", "graph", "{}"),
    ("size (MB)", "size_bytes", "{:.2f}"),
    ("zipped (MB)", "zip_bytes", "{:.2f}"),
    ("SQNR (dB)", "sqnr_db", "{:.1f}"),
    ("top-1 agree", "top1_agreement", "{:.3f}"),
    ("kernel sparsity", "kernel_sparsity", "{:.1%}"),
    ("model sparsity", "overall_sparsity", "{:.1%}"),
    ("values/channel", "max_unique_per_channel", "{:d}"),
    ("latency (ms)", "latency_ms", "{:.1f}"),
    ("steps", "steps", "{:d}"),
    ("note", "note", "{}"),
)


#: The post-training formats every compressed one is compared with.
BASELINES = ("float32", "int8")


def baseline_rows(model, images, evaluation, reference, output_dir):
    """The post-training formats (`BASELINES`) as the conversion pipeline makes them by default
    (from the folded inference graph, calibrated on `images`), measured as the compressed ones
    are."""
    from converters.litert import tflite
    from converters.compress import measure_format
    from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference

    folded = for_inference(model)
    return [measure_format(fmt, tflite.convert(folded, fmt, calibration=images,
                                               float_ops=FOLDED_FLOAT_OPS),
                           {"steps": 0, "graph": "folded"}, model.name, evaluation, reference,
                           output_dir)
            for fmt in BASELINES]


def add_latency(rows, output_dir, runs, threads, progress):
    """Adds ``latency_ms`` (median of `runs` interleaved XNNPACK inferences) to each row."""
    from android_bench.host import benchmark_host
    from android_bench.timing import Timing

    ok = [r for r in rows if not r.get("error")]
    report = benchmark_host([os.path.join(output_dir, r["file"]) for r in ok],
                            Timing(threads=(threads,), warmup=5, runs=runs), progress=progress)
    by_file = {result["model"]: result for result in report["results"]}
    for row in ok:
        row["latency_ms"] = by_file[row["file"]]["median_ms"]


def markdown(results, settings):
    from converters.report import markdown_table

    lines = [f"Settings: {json.dumps(settings)}", ""]
    for variant, rows in results.items():
        lines += [f"### SwiftFormer-{variant}", "", markdown_table(rows, COLUMNS), ""]
    return "\n".join(lines)


def build(variant, size, weights, seed=0):
    """SwiftFormer `variant` (logits out) at `size` px: the fixture checkpoint where there is
    one and `weights` is "fixture", else `realistic_weights` drawn with `seed`."""
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.random_weights import realistic_weights

    shape = (size, size, 3)
    if weights == "fixture" and os.path.exists(CHECKPOINTS.get(variant, "")):
        return SwiftFormer(variant.upper(), weights=CHECKPOINTS[variant], input_shape=shape,
                           classifier_activation=None)
    return realistic_weights(SwiftFormer(variant.upper(), input_shape=shape,
                                         classifier_activation=None), seed=seed)


def qat_summary(results):
    """Markdown: per checkpoint, the post-training int8 against qat_int8 on the held-out photos
    and whether the report recommends the QAT file (its ``note``)."""
    lines = ["| checkpoint | int8 SQNR (dB) | qat_int8 SQNR (dB) | gain (dB) | top-1 agree int8 / "
             "qat | recommended |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        by_format = {row["format"]: row for row in rows}
        int8, qat = by_format.get("int8"), by_format.get("qat_int8")
        if not int8 or not qat or int8.get("error") or qat.get("error"):
            continue
        lines.append(f"| {name} | {int8['sqnr_db']:.1f} | {qat['sqnr_db']:.1f} | "
                     f"{qat['sqnr_db'] - int8['sqnr_db']:+.1f} | {int8['top1_agreement']:.3f} / "
                     f"{qat['top1_agreement']:.3f} | "
                     f"{'yes' if 'prefer this file' in qat.get('note', '') else 'no'} |")
    return "\n".join(lines)


def run(variant, args, progress, seed=0):
    from converters.compress import CompressionOptions, FineTuning, compress_formats
    from keras_swiftformer.images import list_images, load_images

    output_dir = os.path.join(args.output, f"{variant}_seed{seed}")
    os.makedirs(output_dir, exist_ok=True)
    model = build(variant, args.size, args.weights, seed)
    paths = list_images(args.images)
    images = load_images(paths[0::2][:args.finetune_images], args.size)
    evaluation = load_images(paths[1::2][:args.evaluation_images], args.size)
    reference = model.predict(evaluation, verbose=0, batch_size=16)
    progress(f"{variant}: {len(images)} fine-tuning / {len(evaluation)} evaluation photos, "
             f"{args.size} px")
    rows = baseline_rows(model, images, evaluation, reference, output_dir)
    options = CompressionOptions(
        qat=True, prune=args.prune, cluster=args.cluster,
        qat_steps=args.qat_steps or args.steps, prune_steps=args.prune_steps or args.steps,
        cluster_steps=args.cluster_steps or args.steps,
        tuning=FineTuning(batch_size=args.batch_size, learning_rate=args.learning_rate))
    rows += compress_formats(model, images, evaluation, reference, output_dir, options,
                             progress, baseline=next(r for r in rows if r["format"] == "int8"))
    if args.latency_runs:
        add_latency(rows, output_dir, args.latency_runs, args.threads, progress)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["xs", "l1"],
                        choices=["xs", "s", "l1", "l3"])
    parser.add_argument("--weights", choices=["fixture", "random"], default="fixture",
                        help="fixture checkpoints where there are (XS, L1), else realistic "
                             "random weights (seed 0)")
    parser.add_argument("--images", default=IMAGES)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--finetune-images", type=int, default=100)
    parser.add_argument("--evaluation-images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100, help="of each method, unless:")
    parser.add_argument("--qat-steps", type=int)
    parser.add_argument("--prune-steps", type=int)
    parser.add_argument("--cluster-steps", type=int)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak, relative to each tensor's RMS (default: distill's)")
    parser.add_argument("--prune", nargs="*", default=[], help="e.g. 2:4 50%%")
    parser.add_argument("--cluster", nargs="*", type=int, default=[], help="e.g. 16")
    parser.add_argument("--latency-runs", type=int, default=30, help="0: no timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="weight draws of --weights random, one checkpoint each")
    parser.add_argument("--output", default="compress_report")
    parser.add_argument("--section", action="store_true",
                        help="write the QAT summary as benchmarks/results/qat.md")
    args = parser.parse_args(argv)

    def progress(line):
        print(line, flush=True)

    start = time.time()
    results = {}
    for variant in args.variants:
        for seed in args.seeds:
            name = variant.upper() + (f", weight seed {seed}" if len(args.seeds) > 1 else "")
            results[name] = run(variant, args, progress, seed)
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "images")}
    settings["seconds"] = round(time.time() - start)
    with open(os.path.join(args.output, "compress_report.json"), "w") as f:
        json.dump({"settings": settings, "results": results}, f, indent=2, default=float)
    text = markdown(results, settings)
    with open(os.path.join(args.output, "compress_report.md"), "w") as f:
        f.write(text)
    print(text)
    if args.section:
        from benchmarks.results import invocation, write_section

        body = (f"Realistic random weights, {args.size} px, imagenet_samples: the first "
                f"{args.finetune_images} even-indexed photos calibrate and fine-tune, the first "
                f"{args.evaluation_images} odd-indexed ones evaluate (held out). QAT is "
                "recommended only when it gains at least "
                "`converters.compress.QAT_MARGIN_DB` on those photos with top-1 agreement no "
                f"lower.\n\n{qat_summary(results)}\n\n{text}")
        write_section("qat", "Quantisation-aware training against the post-training int8",
                      invocation(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
