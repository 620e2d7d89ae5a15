"""``swiftformer-bench``: latency of SwiftFormer models on this host, on Android phones and in
one table with the phone apps' results.

    swiftformer-bench host MODEL.tflite... [--backends xnnpack cpu] [--threads 1 2]
    swiftformer-bench host MODEL.tflite... --accelerator gpu    (LiteRT's GPU engine, Vulkan)
    swiftformer-bench adb MODEL.tflite... --benchmark-binary android_aarch64_benchmark_model
    swiftformer-bench app MODEL.tflite... [--backends xnnpack gpu nnapi]   (the Android app)
    swiftformer-bench report A.json B.json... --output out/bench/all
    swiftformer-bench flow --variants XS L1 --formats float32 int8 [--device-json phone.json]
    swiftformer-bench schema

A model is ``PATH`` (variant and format read from the name, e.g. ``swiftformer_xs_int8.tflite``)
or ``VARIANT/FORMAT=PATH``. Every command writes ``OUTPUT.json``, ``OUTPUT.md`` and
``OUTPUT.png`` and prints the table.
"""

import argparse
import json
import sys

from converters import arguments
from converters.formats import LITERT_FORMATS
from keras_swiftformer.commands import UserError, add_verbose, run_command

PROG = "swiftformer-bench"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to read more, no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_timing(parser, threads_default, warmup_help="warm-up inferences after the first",
                several_threads=True, seed=False):
    """The `android_bench.timing.Timing` flags; `timing_from` checks them, once."""
    if several_threads:
        parser.add_argument("--threads", type=int, nargs="+", default=threads_default,
                            help="CPU thread counts (default: %(default)s)")
    else:
        parser.add_argument("--threads", type=int, default=threads_default,
                            help="CPU threads of the interpreter (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=10,
                        help=warmup_help + " (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=50,
                        help="timed inferences per case (default: %(default)s)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="input data and run order")


def _add_backends(parser, runner, default, help=""):
    from android_bench.timing import RUNNERS

    parser.add_argument("--backends", nargs="+", default=default, metavar="BACKEND",
                        help=(help + "; " if help else "") + "among "
                        f"{', '.join(RUNNERS[runner]['backends'])} (default: %(default)s)")


def timing_from(args):
    """The `android_bench.timing.Timing` of parsed arguments, checked for its command."""
    from android_bench.timing import Timing

    threads = args.threads if isinstance(args.threads, list) else [args.threads]
    timing = Timing(backends=tuple(args.backends), threads=tuple(threads), warmup=args.warmup,
                    runs=args.runs, cooldown=getattr(args, "cooldown", 0.0),
                    seed=getattr(args, "seed", 0),
                    nnapi_allow_fp16=getattr(args, "nnapi_allow_fp16", False),
                    nnapi_accelerator=getattr(args, "nnapi_accelerator", None))
    return timing.require({"flow": "host"}.get(args.command, args.command))


def _add_output(parser, default):
    parser.add_argument("--output", default=default,
                        help="prefix of the .json/.md/.png written (default: %(default)s)")
    parser.add_argument("--plot-x", choices=("gmacs", "top1"), default="gmacs",
                        help="x axis of the plot: the paper's GMACs or top-1 (default: gmacs)")


EXACT_WARMUP = "warm-up inferences per case, the first included (benchmark_model's --warmup_runs)"


def _add_nnapi(parser):
    parser.add_argument("--nnapi-allow-fp16", action="store_true",
                        help="let NNAPI run float32 models in float16 (fp16 relaxation)")
    parser.add_argument("--nnapi-accelerator",
                        help="the NNAPI device to use, e.g. qti-dsp or google-edgetpu "
                             "(benchmark_model --use_nnapi=true lists them)")


def build_parser():
    parser = _Parser(prog=PROG, description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_verbose(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    host = commands.add_parser("host", help="benchmark .tflite models on this machine")
    host.add_argument("models", nargs="+", help="PATH or VARIANT/FORMAT=PATH")
    _add_backends(host, "host", ["xnnpack"], "xnnpack (LiteRT's default CPU delegate) and/or "
                  "cpu (built-in kernels, XNNPACK off)")
    host.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu",
                      help="cpu: the interpreter (--backends, --threads); gpu: LiteRT's GPU "
                           "engine over Vulkan (a GPU's driver, else SwiftShader)")
    _add_timing(host, [1], seed=True)
    _add_output(host, "out/bench/host")
    add_verbose(host)

    adb = commands.add_parser("adb", help="benchmark on an Android phone with benchmark_model")
    adb.add_argument("models", nargs="+", help="PATH or VARIANT/FORMAT=PATH")
    adb.add_argument("--benchmark-binary", required=True,
                     help="TFLite's native benchmark_model for the phone's ABI (see README)")
    _add_backends(adb, "adb", ["xnnpack", "gpu", "nnapi"])
    adb.add_argument("--adb", help="path of adb (default: $ADB, PATH, $ANDROID_HOME)")
    adb.add_argument("--serial", help="device serial when several are attached")
    adb.add_argument("--peak-memory", action="store_true",
                     help="--report_peak_memory_footprint=true (a monitoring thread)")
    adb.add_argument("--cooldown", type=float, default=0.0,
                     help="seconds of rest between cases (thermal throttling); the cases run "
                          "round robin across backends")
    adb.add_argument("--log-dir", help="keep every run's stdout, stderr and exit status there")
    adb.add_argument("--require-full-delegation", action="store_true",
                     help="record a case as failed when its delegate (XNNPACK, GPU, NNAPI) "
                          "took only part of the graph")
    _add_nnapi(adb)
    _add_timing(adb, [4], EXACT_WARMUP)
    _add_output(adb, "out/bench/android")
    add_verbose(adb)

    app = commands.add_parser("app", help="benchmark in the Android app (android/), over adb")
    app.add_argument("models", nargs="+", help="PATH or VARIANT/FORMAT=PATH (.tflite)")
    _add_backends(app, "app", ["xnnpack", "gpu", "nnapi"])
    app.add_argument("--adb", help="path of adb (default: $ADB, PATH, $ANDROID_HOME)")
    app.add_argument("--serial", help="device serial when several are attached")
    app.add_argument("--timeout", type=float, default=1800.0,
                     help="seconds to wait for the app to finish (default: %(default)s)")
    app.add_argument("--keep-json", help="also keep the app's JSON, as pulled, at this path")
    _add_nnapi(app)
    _add_timing(app, 4, EXACT_WARMUP, several_threads=False)
    _add_output(app, "out/bench/android-app")
    add_verbose(app)

    report = commands.add_parser("report", help="merge benchmark JSON files into one table")
    report.add_argument("json", nargs="+", help="reports from host, adb, the Android or iOS app")
    report.add_argument("--title", help="plot title")
    _add_output(report, "out/bench/report")
    add_verbose(report)

    flow = commands.add_parser("flow", help="convert, benchmark on this host, merge phone JSON")
    flow.add_argument("--variants", nargs="*", default=[], help="XS S L1 L3 to convert")
    flow.add_argument("--formats", nargs="+", default=["float32"],
                      help=f"LiteRT formats: {', '.join(LITERT_FORMATS)}")
    flow.add_argument("--checkpoint", metavar="SOURCE",
                      help="the model to convert, as swiftformer-convert takes it: a checkpoint "
                           "file or folder, a .keras model, a weight tag (imagenet) or "
                           "hf://ORG/REPO; one variant (default: random weights)")
    flow.add_argument("--models", nargs="*", default=[], help="ready .tflite files as well")
    flow.add_argument("--device-json", nargs="*", default=[],
                      help="JSON from adb, the Android app or the iOS app")
    arguments.add_input_size(flow)
    arguments.add_images(flow, "calibration photos for integer formats (default: synthetic)")
    arguments.add_output_dir(flow, "converted", help="where the converted models are written, "
                             "one folder per variant (default: %(default)s)")
    _add_backends(flow, "host", ["xnnpack"])
    _add_timing(flow, [1], seed=True)
    _add_output(flow, "out/bench/swiftformer")
    add_verbose(flow)

    commands.add_parser("schema", help="print the JSON Schema of the benchmark files")
    return parser


def _finish(paths, out):
    print(paths["table"], file=out)
    written = [paths["json"], paths["markdown"]] + ([paths["plot"]] if paths["plot"] else [])
    print("wrote " + ", ".join(written), file=out)
    if not paths["plot"]:
        print("no plot: no result names a SwiftFormer variant (name models "
              "VARIANT/FORMAT=PATH)", file=out)


def _run(args, progress):
    """Runs the parsed command -> `write_outputs`' paths."""
    from android_bench.report import check_prefix, write_outputs
    from android_bench.schema import load_reports

    if args.command == "report":
        return write_outputs(load_reports(args.json), args.output, args.plot_x, args.title)
    timing = timing_from(args)  # every timing flag checked here, once, before any work
    if args.command == "flow":
        from android_bench.flow import Conversion, run_flow

        conversion = Conversion(args.variants, args.formats, args.checkpoint, args.input_size,
                                args.images, args.output_dir)
        return run_flow(conversion, args.models, args.device_json, timing, args.output,
                        args.plot_x, progress)
    check_prefix(args.output)
    if args.command == "host":
        from android_bench.host import benchmark_host

        doc = benchmark_host(args.models, timing, progress, args.accelerator)
    elif args.command == "adb":
        from android_bench.adb import AdbOptions, benchmark_android

        options = AdbOptions(peak_memory=args.peak_memory, log_dir=args.log_dir,
                             require_full_delegation=args.require_full_delegation)
        doc = benchmark_android(args.models, args.benchmark_binary, timing, args.adb,
                                args.serial, options, progress)
    else:
        from android_bench.app import AppOptions, run_app

        options = AppOptions(timeout=args.timeout, keep_json=args.keep_json)
        doc = run_app(args.models, timing, args.adb, args.serial, options, progress)
    return write_outputs([doc], args.output, args.plot_x)


def _main(argv=None, out=None):
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        from android_bench.schema import json_schema

        print(json.dumps(json_schema(), indent=2), file=out)
        return 0
    from android_bench.adb import AdbError
    from android_bench.app import AppError

    progress = (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        paths = _run(args, progress)
    except AppError as err:  # the app ran and failed: its own exit status
        print(f"{PROG} {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except AdbError as err:  # no adb, no device, a refused push: the user's to fix
        raise UserError(str(err)) from err
    _finish(paths, out)
    return 0


def main(argv=None, out=None):
    """Entry point; returns the exit status (0 ok, 2 bad input or no device, 1 the app failed,
    crashed or timed out, or an unexpected error)."""
    return run_command(PROG, lambda a: _main(a, out), argv)


if __name__ == "__main__":
    sys.exit(main())
