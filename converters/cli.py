"""``swiftformer-convert``: the conversion pipeline and checkpoint import on the command line.

    swiftformer-convert [run] [--checkpoint PATH|model.keras|imagenet|hf://ORG/REPO]
        [--variant XS] [--formats road|all|A,B] [--images DIR [--on-bad-image skip]]
        [--synthetic-calibration] [--labels FILE] [--input-size N|HxW]
        [--latency-runs 30] [--license TEXT]
        [--qat [--qat-steps N]] [--prune 2:4 50% [--prune-steps N]] [--cluster 16 ...]
    swiftformer-convert import CHECKPOINT OUTPUT.keras [--variant L1] [--token-weighting ones]
    swiftformer-convert report OUTPUT_DIR --accuracy ACCURACY.json

``run`` is the default subcommand: with no checkpoint it converts random XS weights (offline)
and says so in its output and report. By default it converts the road's formats (what to ship
for MediaPipe, LiteRT's GPU engine and an iPhone); ``--formats all`` converts every one.
``report`` adds labelled top-1/top-5 accuracy, measured
by ``swiftformer-eval --json`` on the converted files, to the report in OUTPUT_DIR.
"""

import argparse
import sys

from converters import arguments
from keras_swiftformer.commands import add_verbose, run_command

SUBCOMMANDS = ("run", "import", "report")


def _formats_help():
    from converters.formats import FORMATS, ROAD_FORMATS

    return (f"formats (comma-separated; 'road': {', '.join(ROAD_FORMATS)}; 'all'):\n"
            + "\n".join(f"  {name:<18} {fmt.description}" for name, fmt in FORMATS.items()))


def _run_parser(sub):
    from converters.formats import GRAPHS
    from converters.pipeline import BAD_IMAGE_POLICIES, ImageOptions  # imports no TensorFlow

    p = sub.add_parser("run", help="checkpoint -> every format + fidelity report (default)",
                       epilog=_formats_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="official .pth, timm or Hugging Face folder/file, a "
                   "SwiftFormer .keras model, a weight tag (imagenet, imagenet-hf) or "
                   "hf://ORG/REPO[@REV]; default: random weights")
    p.add_argument("--variant", default=None, help="XS, S, L1, L3 (default: from the "
                   "checkpoint; XS without one)")
    p.add_argument("--formats", default="road", metavar="A,B",
                   help="export formats, listed below: 'road' (the default: what to ship for "
                   "MediaPipe, the GPU and an iPhone), 'all', or names")
    arguments.add_input_size(p, default=None, help="N or HxW (default: the size a .keras "
                             "model was trained at, else 224)")
    arguments.add_images(p, "folder of photos: even-indexed ones calibrate, odd-indexed ones "
                         "evaluate (needed with a checkpoint and integer formats; random "
                         "weights: synthetic images)")
    p.add_argument("--synthetic-calibration", action="store_true",
                   help="calibrate a real checkpoint on synthetic images instead of --images "
                   "(its integer files' fidelity on photos is then unknown)")
    defaults = ImageOptions()
    p.add_argument("--num-calibration", type=int, default=defaults.num_calibration,
                   help="calibration photos (default: %(default)s)")
    p.add_argument("--num-evaluation", type=int, default=defaults.num_evaluation,
                   help="evaluation photos (default: %(default)s)")
    p.add_argument("--on-bad-image", choices=BAD_IMAGE_POLICIES, default="error",
                   help="a corrupt or non-image file in --images: 'error' stops before any "
                   "work, 'skip' warns and leaves it out (default: error)")
    arguments.add_output_dir(p, "converted")
    p.add_argument("--labels", metavar="FILE", help="class names, one a line, in output order "
                   "(default: the .keras model's model.json, else ImageNet's for 1000 classes)")
    p.add_argument("--token-weighting", choices=("l2", "ones"), default=None,
                   help="override the checkpoint format's default")
    p.add_argument("--softmax", action="store_true", help="export probabilities, not logits")
    p.add_argument("--graph", choices=GRAPHS, default="folded",
                   help="convert LiteRT formats from the folded inference graph (default, "
                   "faster) or from the Keras model as built")
    p.add_argument("--latency-runs", type=int, default=30,
                   help="interleaved timed runs of each LiteRT file for the report's host "
                   "latency (XNNPACK, 1 thread); 0: off (default: %(default)s)")
    p.add_argument("--gpu-images", type=int, default=4,
                   help="evaluation images each LiteRT file runs on LiteRT's GPU engine (a "
                   "software Vulkan device where there is no GPU: seconds each); 0: off "
                   "(default: %(default)s)")
    p.add_argument("--license", default=None,
                   help="licence text written into each file's metadata (default: code "
                   "Apache-2.0, weights under the source checkpoint's licence)")
    g = p.add_argument_group("compression (tensorflow-model-optimization, the [tfmot] extra); "
                             "fine-tunes on the calibration images by distillation")
    g.add_argument("--qat", action="store_true",
                   help="quantisation-aware-trained int8 (and pruning- / cluster-preserving "
                   "QAT of --prune / --cluster)")
    g.add_argument("--qat-steps", type=int, default=100, help="QAT steps (default: %(default)s)")
    g.add_argument("--prune", nargs="+", default=[], metavar="SPEC",
                   help="magnitude pruning: '2:4' and/or a sparsity such as 50%%")
    g.add_argument("--prune-steps", type=int, default=100,
                   help="pruning steps (default: %(default)s)")
    g.add_argument("--cluster", nargs="+", default=[], metavar="K",
                   help="weight clustering to K values per kernel, e.g. 16")
    g.add_argument("--cluster-steps", type=int, default=100,
                   help="clustering steps (default: %(default)s)")


def _import_parser(sub):
    p = sub.add_parser("import", help="checkpoint -> .keras file")
    p.add_argument("checkpoint")
    p.add_argument("output", help="path ending in .keras")
    p.add_argument("--variant", default=None)
    p.add_argument("--token-weighting", choices=("l2", "ones"), default=None)
    arguments.add_new_head(p)
    arguments.add_normalised_input(p)


def _report_parser(sub):
    p = sub.add_parser("report", help="add swiftformer-eval accuracy to a pipeline report")
    p.add_argument("output_dir", help="the pipeline's output folder (with report.json)")
    p.add_argument("--accuracy", required=True,
                   help="swiftformer-eval --json output for models of that folder")


def _add_accuracy(args):
    """Adds the accuracy to the report and the card (`converters.model_card.update_accuracy`)."""
    from converters.model_card import update_accuracy

    paths = update_accuracy(args.output_dir, args.accuracy)
    with open(paths["markdown"], encoding="utf-8") as f:
        print(f.read())
    return 0


def pipeline_options(args):
    """The `converters.pipeline.PipelineOptions` of parsed ``run`` arguments."""
    from converters.compress import CompressionOptions
    from converters.pipeline import ImageOptions, PipelineOptions

    return PipelineOptions(
        checkpoint=args.checkpoint, variant=args.variant, formats=args.formats,
        input_size=args.input_size, output_dir=args.output_dir,
        token_weighting=args.token_weighting, softmax=args.softmax, graph=args.graph,
        labels=args.labels, license=args.license, latency_runs=args.latency_runs,
        gpu_images=args.gpu_images,
        images=ImageOptions(args.images, args.num_calibration, args.num_evaluation,
                            args.on_bad_image, args.synthetic_calibration),
        compression=CompressionOptions(args.qat, tuple(args.prune), tuple(args.cluster),
                                       args.qat_steps, args.prune_steps, args.cluster_steps))


def parser():
    p = argparse.ArgumentParser(prog="swiftformer-convert", description=__doc__,
                                epilog=_formats_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verbose(p)
    sub = p.add_subparsers(dest="command")
    _run_parser(sub)
    _import_parser(sub)
    _report_parser(sub)
    for command in sub.choices.values():
        add_verbose(command)
    return p


def _main(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if a != "--verbose"), None)
    if first is None or (first not in SUBCOMMANDS and first not in ("-h", "--help")):
        argv.insert(0, "run")
    args = parser().parse_args(argv)
    if args.command == "import":
        from converters.importer import import_checkpoint

        kwargs = {"include_preprocessing": not args.normalised_input}
        if args.token_weighting:
            kwargs["token_weighting"] = args.token_weighting
        if args.new_head:
            kwargs.update(new_head=True, classes=args.classes or 1000)
        model = import_checkpoint(args.checkpoint, args.output, args.variant, **kwargs)
        print(f"wrote {args.output} ({model.name}, {model.count_params():,} parameters)")
        return 0
    if args.command == "report":
        return _add_accuracy(args)
    from converters.pipeline import run_pipeline

    result = run_pipeline(pipeline_options(args))
    with open(result["report"]["markdown"], encoding="utf-8") as f:
        print(f.read())
    failed = [r["format"] for r in result["rows"] if r.get("error")]
    return 1 if failed else 0


def main(argv=None):
    """``swiftformer-convert``: one-line errors (`keras_swiftformer.commands.run_command`)."""
    return run_command("swiftformer-convert", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
