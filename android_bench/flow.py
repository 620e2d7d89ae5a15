"""From a model source to the latency table in one call: the named variants and formats are
converted (`converters.pipeline.run_pipeline`), benchmarked on this host, and the table is
completed with the JSON files that phones produced (adb, the Android app, the iOS app).

Ready ``.tflite`` files can be given instead of, or besides, a conversion.
"""

import dataclasses
import os

from android_bench.models import parse_model_spec
from android_bench.report import check_folder, check_prefix, write_outputs
from android_bench.schema import load_reports
from android_bench.timing import Timing


class FlowError(ValueError):
    """Bad flow input, found before any conversion or benchmark ran."""


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What the flow converts before it benchmarks.

    Attributes:
        variants: SwiftFormer variants to convert ("XS", "S", "L1", "L3"); empty: the
            checkpoint's own variant when `checkpoint` is given, else nothing is converted.
        formats: LiteRT format names (`converters.formats.LITERT_FORMATS`).
        checkpoint: anything the converter takes as a model source: a checkpoint file or
            folder, a SwiftFormer ``.keras`` (+ ``model.json``), a weight tag (``imagenet``),
            ``hf://ORG/REPO[@REV]``; None: random weights, which leave latency unchanged. The
            converter resolves it; it holds one variant.
        input_size: the exported files' fixed input (N or "HxW").
        images: calibration photos for integer formats (None: synthetic).
        output_dir: where the converted files go, one folder per named variant (the
            checkpoint's own variant: this folder itself).
    """

    variants: tuple = ()
    formats: tuple = ("float32",)
    checkpoint: str = None
    input_size: object = 224
    images: str = None
    output_dir: str = "converted"

    def __post_init__(self):
        from converters.formats import LITERT_FORMATS
        from keras_swiftformer.config import variant_config

        object.__setattr__(self, "variants", tuple(v.upper() for v in self.variants))
        object.__setattr__(self, "formats", tuple(self.formats))
        unknown = [f for f in self.formats if f not in LITERT_FORMATS]
        if unknown or not self.formats:
            raise FlowError(f"Unknown LiteRT formats {unknown}: give --formats among "
                            f"{', '.join(LITERT_FORMATS)}")
        if self.checkpoint is not None and len(self.variants) > 1:
            raise FlowError("A checkpoint holds one variant: give one variant with "
                            f"--checkpoint, got {list(self.variants)}")
        for variant in self.variants:
            variant_config(variant)  # ValueError naming the known variants

    def jobs(self):
        """The variants to convert, one pipeline run each; None: the checkpoint's own."""
        if self.variants:
            return list(self.variants)
        return [None] if self.checkpoint is not None else []


def _pipeline():
    """`run_pipeline` and a maker of its options (an image folder given as a path)."""
    try:
        from converters.pipeline import ImageOptions, PipelineOptions, run_pipeline
    except ImportError as err:
        raise FlowError("The conversion pipeline (converters.pipeline.run_pipeline) is not "
                        "available: convert first and pass the .tflite files with --models"
                        ) from err

    def options(images=None, **fields):
        return PipelineOptions(images=ImageOptions(folder=images), **fields)

    return run_pipeline, options


def convert_variants(conversion, progress=print):
    """Converts each variant of `conversion` (a `Conversion`) to each of its LiteRT formats
    -> model entries for `benchmark_host`. The model source is resolved by the converter, so
    the flow takes what ``swiftformer-convert`` takes; what was converted is read back from
    the conversion's ``report.json`` (`converters.results`)."""
    from converters import results

    run_pipeline, options = _pipeline()
    entries = []
    for variant in conversion.jobs():
        # One folder per variant; the checkpoint's own variant is known only once resolved.
        folder = os.path.join(conversion.output_dir, variant.lower()) if variant \
            else conversion.output_dir
        run_pipeline(options(checkpoint=conversion.checkpoint, variant=variant,
                             formats=list(conversion.formats), input_size=conversion.input_size,
                             output_dir=folder, images=conversion.images), progress=progress)
        report = results.load(folder)
        converted = report.info.variant or variant
        for fmt in conversion.formats:
            row = report.row(fmt)
            if row is None or not row.ok:
                progress(f"{converted} {fmt}: conversion failed, not benchmarked")
                continue
            entries.append({"path": os.path.join(folder, row.file), "variant": converted,
                            "format": fmt})
    return entries


def run_flow(conversion=None, models=(), device_json=(), timing=None,
             output="out/bench/swiftformer", plot_x="gmacs", progress=print):
    """Converts, benchmarks on this host, merges device JSON, writes the table and plot.

    Args:
        conversion: what to convert (`Conversion`); nothing by default.
        models: ready ``.tflite`` files (``PATH`` or ``VARIANT/FORMAT=PATH``) benchmarked too.
        device_json: benchmark JSON files from phones (adb, Android app, iOS app).
        timing: `android_bench.timing.Timing` of the host benchmark (`benchmark_host`).
        output: prefix of the written ``.json``, ``.md`` and ``.png``; the host report alone
            goes to ``{output}_host.json``.
        plot_x: "gmacs" or "top1".

    Returns:
        `android_bench.report.write_outputs`' paths, plus "host" (the host report's path).
    """
    from android_bench.host import benchmark_host

    # Everything the user gave is checked before the first conversion.
    conversion = conversion or Conversion()
    timing = (timing or Timing()).require("host")
    check_prefix(output)
    check_prefix(f"{output}_host")
    if conversion.jobs():
        check_folder(conversion.output_dir, "--output-dir")
    device_docs = load_reports(device_json)
    entries = [parse_model_spec(m) for m in models]
    if not conversion.jobs() and not entries:
        raise FlowError("Nothing to benchmark: name --variants (or a --checkpoint) to convert, "
                        "or give --models")
    entries += convert_variants(conversion, progress)
    if not entries:
        raise FlowError("Every conversion failed; nothing to benchmark: see the lines above")
    host = benchmark_host(entries, timing, progress=progress)
    host_path = write_outputs([host], f"{output}_host", plot_x)["json"]
    paths = write_outputs([host] + device_docs, output, plot_x)
    paths["host"] = host_path
    return paths
