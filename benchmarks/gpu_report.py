"""Every LiteRT format of every variant on LiteRT's GPU engine (`converters.litert.gpu`).

For each variant, realistic random weights (`keras_swiftformer.random_weights`) are converted
as the pipeline converts them (the folded graph, `converters.inference_graph.for_inference`;
the Keras graph where `converters.formats` says so) to each format, and each file
runs once on the GPU engine. The table says whether the engine took the whole graph, which op
types it left to the CPU (from its log), the SQNR and top-1 agreement of its logits against the
CPU (XNNPACK) run of the float32 file on the same photos, the same SQNR of the file's own CPU
run (what the format loses anyway), the median ms per image and the adapter.

Size and photo count: on SwiftShader (Vulkan on the CPU, where there is no GPU) an S inference
at 224x224 takes seconds and L3's several times more, so the defaults there are 128x128 and 4
photos (every format of XS and S in minutes); on a real GPU they are 224x224 and 32 photos.

    python -m benchmarks.gpu_report --variants XS S --output out/gpu_report --section gpu
    python -m benchmarks.gpu_report --size 224 --num-evaluation 64    # on a machine with a GPU

Photos: /work/shared/images/imagenet_samples when present, else the committed
tests/data/photos; even-indexed ones calibrate the integer formats, odd-indexed ones evaluate.
Writes OUTPUT.md and OUTPUT.json.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

from converters.litert.gpu import gpu_columns, is_software, run_gpu, vulkan_icd
from converters.metrics import fidelity
from converters.report import markdown_table
from keras_swiftformer.files import atomic_output

VARIANTS = ("XS", "S", "L1", "L3")
FORMATS = ("float32", "float16", "dynamic_int8", "int8", "uint8", "int8_float_io")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTO_DIRS = (os.path.join(ROOT, "..", "shared", "images", "imagenet_samples"),
              os.path.join(ROOT, "tests", "data", "photos"))
COLUMNS = (
    ("variant", "variant", "{}"),
    ("format", "format", "{}"),
    ("graph", "graph", "{}"),
    ("GPU", "gpu", "{}"),
    ("ops left to the CPU", "gpu_cpu_ops", "{}"),
    ("GPU SQNR (dB)", "gpu_sqnr_db", "{:.1f}"),
    ("GPU top-1 agree", "gpu_top1_agreement", "{:.3f}"),
    ("CPU SQNR (dB)", "cpu_sqnr_db", "{:.1f}"),
    ("GPU ms", "gpu_ms", "{:.1f}"),
    ("adapter", "gpu_adapter", "{}"),
    ("error", "gpu_error", "{}"),
)


def photos(folder, count, size, offset):
    """`count` photos of `folder` (every second one from `offset`) at `size`, float32 RGB."""
    from keras_swiftformer.images import list_images, load_images

    paths = list_images(folder)[offset::2][:count]
    if not paths:
        raise ValueError(f"No photos in {folder}")
    return load_images(paths, size=size)


def convert(model, folded, fmt, path, calibration, shared):
    """Writes `fmt` of the model to `path` from the graph the pipeline uses; returns its name."""
    from converters.litert import tflite
    from converters.formats import FORMATS
    from converters.inference_graph import FOLDED_FLOAT_OPS

    if FORMATS[fmt].graph == "keras":
        tflite.export_tflite(model, path, fmt, calibration=calibration)
        return "keras"
    tflite.export_tflite(folded, path, fmt, calibration=calibration, float_ops=FOLDED_FLOAT_OPS,
                         shared=shared)
    return "folded"


def measure_variant(variant, formats, size, images, calibration, folder, enforce_f32=False,
                    progress=print):
    """Rows of one variant: each format converted into `folder` and run on the GPU engine."""
    from converters.inference_graph import for_inference
    from converters.litert.runtime import TFLiteRunner
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.random_weights import realistic_weights

    model = SwiftFormer(variant, input_shape=(size, size, 3), classifier_activation=None)
    realistic_weights(model)
    folded, shared, rows, reference = for_inference(model), {}, [], None
    for fmt in ("float32",) + tuple(f for f in formats if f != "float32"):
        row = {"variant": variant, "format": fmt}
        path = os.path.join(folder, f"swiftformer_{variant.lower()}_{fmt}.tflite")
        start = time.time()
        try:
            row["graph"] = convert(model, folded, fmt, path, calibration, shared)
            cpu = TFLiteRunner(path).predict(images)
        except Exception as err:  # one format's failure must not lose the others
            row.update(gpu="not converted", gpu_error=f"{type(err).__name__}: {err}"[:300])
            rows.append(row)
            continue
        reference = cpu if fmt == "float32" else reference
        result = run_gpu(path, images, enforce_f32)
        row.update(gpu_columns(result, reference), cpu_sqnr_db=fidelity(reference,
                                                                         cpu)["sqnr_db"],
                   gpu_ops=[result.gpu_op_count, result.cpu_op_count],
                   gpu_software=result.software, gpu_compile_ms=result.compile_ms,
                   gpu_cpu_ops_method=result.cpu_ops_method, gpu_log=result.log[-8:])
        if fmt in formats:
            rows.append(row)
        progress(f"  {variant} {fmt}: {row.get('gpu')} {row.get('gpu_cpu_ops') or ''} "
                 f"({time.time() - start:.0f} s)")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--size", type=int, help="input size (default: 224 on a GPU, 128 on "
                                                 "SwiftShader)")
    parser.add_argument("--num-evaluation", type=int, help="evaluation photos (default: 32 on "
                                                            "a GPU, 4 on SwiftShader)")
    parser.add_argument("--num-calibration", type=int, default=32,
                        help="calibration photos of the integer formats (default: %(default)s)")
    parser.add_argument("--images", help="photos (default: the shared ImageNet samples, "
                                         "else tests/data/photos)")
    parser.add_argument("--enforce-f32", action="store_true",
                        help="float32 arithmetic on the GPU (default: the engine's choice)")
    parser.add_argument("--keep", help="keep the .tflite files in this folder")
    parser.add_argument("--output", default="out/gpu_report",
                        help="prefix of the .md and .json written (default: %(default)s)")
    parser.add_argument("--section", help="also write the table into benchmarks/results.md as "
                                          "this section (gpu, gpu-h200...)")
    args = parser.parse_args(argv)
    icd = vulkan_icd()
    if icd is None:
        print("gpu_report: no Vulkan device (install SwiftShader: apt-get install "
              "chromium-common libvulkan1, or a GPU driver)", file=sys.stderr)
        return 2
    gpu = not is_software(icd)
    if not gpu and os.path.exists("/dev/nvidiactl"):
        print("gpu_report: an NVIDIA device is present but no NVIDIA Vulkan ICD manifest (a "
              "container needs NVIDIA_DRIVER_CAPABILITIES to include graphics); running on "
              f"{icd}", file=sys.stderr)
    size = args.size or (224 if gpu else 128)
    count = args.num_evaluation or (32 if gpu else 4)
    if size % 32 or size < 32 or count < 1:
        parser.error(f"--size must be a multiple of 32 and --images at least 1, got {size}, "
                     f"{count}")
    folder = args.images or next((d for d in PHOTO_DIRS if os.path.isdir(d)))
    images = photos(folder, count, size, 1)
    calibration = photos(folder, args.num_calibration, size, 0)
    print(f"{len(images)} photos at {size}x{size}, {len(calibration)} calibrating, "
          f"Vulkan ICD {icd}", file=sys.stderr, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = args.keep or scratch
        os.makedirs(out_dir, exist_ok=True)
        for variant in args.variants:
            rows += measure_variant(variant, args.formats, size, images, calibration, out_dir,
                                    args.enforce_f32,
                                    progress=lambda line: print(line, file=sys.stderr,
                                                                flush=True))
    adapters = sorted({r["gpu_adapter"] for r in rows if r.get("gpu_adapter")})
    info = {"size": size, "images": len(images), "calibration": len(calibration),
            "photos": os.path.abspath(folder), "icd": icd, "adapters": adapters,
            "enforce_f32": args.enforce_f32, "machine": platform.processor() or
            platform.machine(), "cores": os.cpu_count(),
            "reference": "CPU (XNNPACK) run of the float32 file on the same photos"}
    text = "\n".join([
        f"# LiteRT GPU engine: {', '.join(args.variants)} x {len(args.formats)} formats", "",
        f"{len(images)} photos at {size}x{size} ({len(calibration)} calibrating the integer "
        f"formats), realistic random weights; adapter: {', '.join(adapters) or 'none'}; "
        "SQNR and top-1 agreement against the CPU run of the float32 file.", "",
        markdown_table([{**r, "gpu_error": r.get("gpu_error") and r["gpu_error"][:120]}
                        for r in rows], COLUMNS)])
    print(text, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with atomic_output(args.output + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(text + "\n")
    with atomic_output(args.output + ".json") as tmp:
        with open(tmp, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1, default=float)
    if args.section:
        from benchmarks.results import invocation, machine, write_section

        write_section(args.section, f"LiteRT's GPU engine ({', '.join(adapters) or 'none'})",
                      invocation(), text.split("\n", 1)[1],
                      machine_line=f"{machine()}; Vulkan: {', '.join(adapters)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
