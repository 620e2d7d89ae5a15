"""From a checkpoint to the latency table in one call: the named variants and formats are
converted (`converters.pipeline.run_pipeline`), benchmarked on this host, and the table is
completed with the JSON files that phones produced (adb, the Android app, the iOS app).

Ready ``.tflite`` files can be given instead of, or besides, a conversion.
"""

import os

from android_bench.models import parse_model_spec
from android_bench.report import write_outputs
from android_bench.schema import load_reports


class FlowError(ValueError):
    """Bad flow input, found before any conversion or benchmark ran."""


def _pipeline():
    """`run_pipeline` and a maker of its options (an image folder given as a path)."""
    try:
        from converters.pipeline import ImageOptions, PipelineOptions, run_pipeline
    except ImportError as err:
        raise FlowError("The conversion pipeline (converters.pipeline.run_pipeline) is not "
                        "available; convert first and pass the .tflite files with --models"
                        ) from err

    def options(images=None, **fields):
        return PipelineOptions(images=ImageOptions(folder=images), **fields)

    return run_pipeline, options


def convert_variants(variants, formats, checkpoint=None, input_size=224, images=None,
                     output_dir="converted", progress=print):
    """Converts each variant to each LiteRT format -> model entries for `benchmark_host`.

    With no checkpoint the weights are random, which leaves latency unchanged. A checkpoint
    holds one variant, so it goes with a single variant only.
    """
    from converters.formats import LITERT_FORMATS
    from keras_swiftformer.config import variant_config

    unknown = [f for f in formats if f not in LITERT_FORMATS]
    if unknown:
        raise FlowError(f"Unknown LiteRT formats {unknown}; known: {', '.join(LITERT_FORMATS)}")
    if checkpoint is not None and len(variants) > 1:
        raise FlowError("A checkpoint holds one variant: give one variant with --checkpoint, "
                        f"got {list(variants)}")
    if checkpoint is not None and not os.path.exists(checkpoint):
        raise FlowError(f"No such checkpoint: {checkpoint}")
    for variant in variants:
        variant_config(variant)  # ValueError naming the known variants
    run_pipeline, options = _pipeline()
    entries = []
    for variant in variants:
        result = run_pipeline(options(
            checkpoint=checkpoint, variant=variant.upper(), formats=list(formats),
            input_size=input_size, output_dir=os.path.join(output_dir, variant.lower()),
            images=images), progress=progress)
        for fmt in formats:
            path = result["models"].get(fmt)
            if path is None:
                progress(f"{variant} {fmt}: conversion failed, not benchmarked")
                continue
            entries.append({"path": path, "variant": variant.upper(), "format": fmt})
    return entries


def run_flow(variants=(), formats=("float32",), checkpoint=None, models=(), device_json=(),
             output="out/bench/swiftformer", input_size=224, images=None,
             output_dir="converted", backends=("xnnpack",), threads=(1,), warmup=10, runs=50,
             plot_x="gmacs", progress=print):
    """Converts, benchmarks on this host, merges device JSON, writes the table and plot.

    Args:
        variants, formats, checkpoint, input_size, images, output_dir: what to convert
            (see `convert_variants`); no variants: nothing is converted.
        models: ready ``.tflite`` files (``PATH`` or ``VARIANT/FORMAT=PATH``) benchmarked too.
        device_json: benchmark JSON files from phones (adb, Android app, iOS app).
        output: prefix of the written ``.json``, ``.md`` and ``.png``; the host report alone
            goes to ``{output}_host.json``.
        backends, threads, warmup, runs: of the host benchmark (`benchmark_host`).
        plot_x: "gmacs" or "top1".

    Returns:
        `android_bench.report.write_outputs`' paths, plus "host" (the host report's path).
    """
    from android_bench.host import benchmark_host, check_options

    # Everything the user gave is checked before the first conversion.
    check_options(backends, threads, warmup, runs)
    device_docs = load_reports(device_json)
    entries = [parse_model_spec(m) for m in models]
    if not variants and not entries:
        raise FlowError("Nothing to benchmark: name --variants to convert, or give --models")
    entries += convert_variants(variants, formats, checkpoint, input_size, images,
                                output_dir, progress) if variants else []
    if not entries:
        raise FlowError("Every conversion failed; nothing to benchmark")
    host = benchmark_host(entries, backends, threads, warmup, runs, progress=progress)
    host_path = write_outputs([host], f"{output}_host", plot_x)["json"]
    paths = write_outputs([host] + device_docs, output, plot_x)
    paths["host"] = host_path
    return paths
