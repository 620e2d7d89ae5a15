"""Shared test data of the benchmark tests: benchmark_model logs, a stand-in adb, tiny models,
the apps' sample JSON. Not a test module: the tests import it (`from tests.support.bench import`).

The logs follow ``tensorflow/lite/tools/benchmark/benchmark_tflite_model.cc``,
``benchmark_model.cc``, ``tensorflow/lite/tools/logging.h`` and the runtime's
``minimal_logging_android.cc`` line for line (the numbers are made up; no phone was attached when
they were written).
"""

import json
import pathlib
import shutil
import stat
import sys

from tests.support import TINY as SUPPORT_TINY

ROOT = pathlib.Path(__file__).resolve().parents[2]
ANDROID_SAMPLE = ROOT / "android_bench" / "android" / "sample-output.json"
IOS_SAMPLE = ROOT / "android_bench" / "ios" / "sample-output.json"

# Current builds: "INFO: " prefix, exact counts, delta and periodic peak memory.
CURRENT_XNNPACK_STDOUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Min runs duration (seconds): [0]
INFO: Num threads: [4]
INFO: Min warmup runs: [10]
INFO: Min warmup runs duration (seconds): [0]
INFO: Graph: [/data/local/tmp/swiftformer_bench/swiftformer_xs_float32.tflite]
INFO: Report the peak memory footprint: [1]
INFO: Use xnnpack: [1]
INFO: Loaded model /data/local/tmp/swiftformer_bench/swiftformer_xs_float32.tflite
INFO: XNNPACK delegate created.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed \
by the delegate.
INFO: The input model file size (MB): 13.8674
INFO: Initialized session in 61.532ms.
INFO: Running benchmark for at least 10 iterations and at least 0 seconds but terminate if \
exceeding 150 seconds.
INFO: count=10 first=14210 curr=9876 min=9712 max=14210 avg=10248.3 std=1301

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if \
exceeding 150 seconds.
INFO: count=50 first=9803 curr=9911 min=9640 max=10542 avg=9874.52 std=171

INFO: Inference timings in us: Init: 61532, First inference: 14210, Warmup (avg): 10248.3, \
Inference (avg): 9874.52
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only \
APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at \
your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=32.1836 overall=41.7617
INFO: Overall peak memory footprint (MB) via periodic monitoring: 49.6172
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 47 MB
INFO: + RssAnnon           : 30 MB
INFO: + RssFile + RssShmem : 17 MB
"""
# What the runtime logs (tensorflow/lite/minimal_logging_android.cc) goes to stderr, as do the
# tool's ERROR lines (tensorflow/lite/tools/logging.h); its INFO lines go to stdout.
CURRENT_XNNPACK_STDERR = """\
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 298 out of 298 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding \
1 partitions for subgraph 0.
"""
CURRENT_XNNPACK = CURRENT_XNNPACK_STDOUT + CURRENT_XNNPACK_STDERR

# A current build whose GPU delegate takes part of the graph: the run succeeds, partly on the CPU.
GPU_PARTIAL_STDOUT = """\
INFO: STARTING!
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/swiftformer_bench/swiftformer_xs_float32.tflite]
INFO: Use gpu: [1]
INFO: Loaded model /data/local/tmp/swiftformer_bench/swiftformer_xs_float32.tflite
INFO: GPU delegate created.
INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the \
delegate w/ 1 delegate kernels.
INFO: The input model file size (MB): 13.8674
INFO: Initialized session in 1210.4ms.
INFO: Running benchmark for at least 10 iterations and at least 0 seconds but terminate if \
exceeding 150 seconds.
INFO: count=10 first=30210 curr=7012 min=6950 max=30210 avg=9420.1 std=6900

INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if \
exceeding 150 seconds.
INFO: count=50 first=7001 curr=7032 min=6890 max=7400 avg=7050.2 std=90

INFO: Inference timings in us: Init: 1210400, First inference: 30210, Warmup (avg): 9420.1, \
Inference (avg): 7050.2
"""
GPU_PARTIAL_STDERR = """\
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Following operations are not supported by GPU delegate:
GELU: Operation is not supported.
250 operations will run on the GPU, and the remaining 48 operations will run on the CPU.
INFO: Initialized OpenCL-based API.
INFO: Replacing 250 out of 298 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding \
3 partitions for subgraph 0.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 48 out of 49 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding \
2 partitions for subgraph 0.
"""
GPU_PARTIAL = GPU_PARTIAL_STDOUT + GPU_PARTIAL_STDERR

# Builds of 2020-2022: no prefix, "Peak memory footprint" (max RSS), GPU taking part.
OLDER_GPU_PARTIAL = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/swiftformer_bench/swiftformer_l1_int8.tflite]
Use gpu: [1]
Loaded model /data/local/tmp/swiftformer_bench/swiftformer_l1_int8.tflite
INFO: Created TensorFlow Lite delegate for GPU.
GPU delegate created.
Explicitly applied GPU delegate, and the model graph will be partially executed by the \
delegate w/ 12 delegate kernels.
INFO: Replacing 180 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 24 partitions.
The input model file size (MB): 12.8341
Initialized session in 1451.507ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if \
exceeding 150 seconds.
count=56 first=41147 curr=28146 min=27055 max=41147 avg=28779.68 std=1815

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if \
exceeding 150 seconds.
count=110 first=28325 curr=30016 min=27863 max=30688 avg=28680.33 std=591

Inference timings in us: Init: 1451507, First inference: 41147, Warmup (avg): 28779.7, \
Inference (avg): 28680.3
Note: as the benchmark tool itself affects memory footprint, the following is only \
APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at \
your discretion.
Peak memory footprint (MB): init=63.4883 overall=71.2461
"""

# One warm-up run (``count=1 curr=``), a float printed in scientific notation, NNAPI.
NNAPI_SINGLE_WARMUP = """\
STARTING!
Graph: [/data/local/tmp/swiftformer_bench/swiftformer_xs_int8.tflite]
Use NNAPI: [1]
NNAPI accelerators available: [qti-dsp,qti-gpu,nnapi-reference]
Loaded model /data/local/tmp/swiftformer_bench/swiftformer_xs_int8.tflite
INFO: Created TensorFlow Lite delegate for NNAPI.
Though NNAPI delegate is explicitly applied, the model graph will not be executed by the \
delegate.
The input model file size (MB): 3.87347
Initialized session in 13.386ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if \
exceeding 150 seconds.
count=1 curr=11403859

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if \
exceeding 150 seconds.
count=260 first=3918 curr=3711 min=3700 max=4026 avg=3756.87 std=35

Inference timings in us: Init: 13386, First inference: 11403859, Warmup (avg): 1.14039e+07, \
Inference (avg): 3756.87
Peak memory footprint (MB): init=0 overall=15.3438
"""

# Builds with percentile statistics, and identical runs ("(all same)").
PERCENTILES = """\
INFO: Running benchmark for at least 5 iterations and at least 0 seconds but terminate if \
exceeding 150 seconds.
INFO: count=5 curr=2000(all same)
INFO: Running benchmark for at least 20 iterations and at least 0 seconds but terminate if \
exceeding 150 seconds.
INFO: count=20 first=2050 curr=1990 min=1950 max=2300 avg=2010.5 std=80 p5=1955 median=1998 \
p95=2210
INFO: Inference timings in us: Init: 900, First inference: 2000, Warmup (avg): 2000, \
Inference (avg): 2010.5
"""

# 2018 builds with op profiling: the summary line came last, without "First inference".
OLD_WITH_PROFILING = """\
Running benchmark for at least 1 iterations and at least 0.5 seconds
count=5 first=83235 curr=80010 min=79888 max=83235 avg=80812 std=1203

Running benchmark for at least 50 iterations and at least 1 seconds
count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929

============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]
\t                 CONV_2D\t       15\t     1.406\t    89.270%\t    89.270%

Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed


Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""

# LiteRT's CompiledModel tool (litert/tools/benchmark_litert_model.h): its own summary block.
LITERT_COMPILED_MODEL = """\
INFO: [benchmark_litert_model.cc:123] Running benchmark for at least 50 iterations
INFO: [benchmark_litert_model.h:66]
========== BENCHMARK RESULTS ==========
INFO: [benchmark_litert_model.h:67] Model initialization: 48.21 ms
INFO: [benchmark_litert_model.h:68] Warmup (first):       15.02 ms
INFO: [benchmark_litert_model.h:70] Warmup (avg):         10.87 ms (10 runs)
INFO: [benchmark_litert_model.h:72] Inference (avg):      9.61 ms (50 runs)
INFO: [benchmark_litert_model.h:76] Inference (min):      9.30 ms
INFO: [benchmark_litert_model.h:78] Inference (max):      10.40 ms
INFO: [benchmark_litert_model.h:80] Inference (std):      0.21
INFO: [benchmark_litert_model.h:88] Throughput:           1412.22 MB/s
INFO: [benchmark_litert_model.h:97]
Memory Usage:
INFO: [benchmark_litert_model.h:98] Init footprint:       30.55 MB
INFO: [benchmark_litert_model.h:100] Overall footprint:    39.80 MB
INFO: [benchmark_litert_model.h:105] Peak memory usage not available. (peak_mem_mb <= 0)
INFO: [benchmark_litert_model.h:109] ======================================
"""

FAILED_GPU_STDOUT = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/swiftformer_bench/swiftformer_xs_int8.tflite]
INFO: Use gpu: [1]
INFO: Loaded model /data/local/tmp/swiftformer_bench/swiftformer_xs_int8.tflite
"""
FAILED_GPU_STDERR = """\
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Following operations are not supported by GPU delegate:
L2_NORMALIZATION: Operation is not supported.
ERROR: TfLiteGpuDelegate Init: No EGL error, but eglChooseConfig failed.
ERROR: Failed to apply GPU delegate.
ERROR: Benchmarking failed.
"""
FAILED_GPU = FAILED_GPU_STDOUT + FAILED_GPU_STDERR

PIXEL_PROPS = {
    "ro.product.manufacturer": "Google", "ro.product.model": "Pixel 7",
    "ro.build.version.release": "14", "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a", "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a",
    "ro.soc.manufacturer": "Google", "ro.soc.model": "GS201",
}

#: The stand-in adb. As the real one (shell protocol v2, Android 7+) it writes the phone's
#: stdout to stdout and its stderr to stderr. Remote paths live under ``device/`` beside it.
FAKE_ADB = '''\
#!{python}
"""Stand-in adb: behaves as the phone described in config.json beside it."""
import json, os, shlex, shutil, sys
here = os.path.dirname(os.path.abspath(__file__))
config = json.load(open(os.path.join(here, "config.json")))
root = os.path.join(here, "device")
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")


def local(path):
    return os.path.join(root, path.lstrip("/"))


def extras(words):
    found, i = {{}}, 0
    while i < len(words):
        if words[i] in ("--es", "--ei", "--ez") and i + 2 < len(words):
            found[words[i + 1]] = words[i + 2]
            i += 3
        else:
            i += 1
    return found


def start_app(words):
    app = config["app"]
    if app == "missing":
        print("Error: Activity class {{org.swiftformer.bench/org.swiftformer.bench.MainActivity}} "
              "does not exist.")
        return 1
    given = extras(words)
    folder = local("/sdcard/Android/data/org.swiftformer.bench/files")
    os.makedirs(folder, exist_ok=True)
    marker = {{"run_id": given.get("run_id"), "json": "swiftformer-bench-android.json"}}
    if app == "ok":
        doc = dict(config["app_json"])
        doc["settings"] = dict(doc["settings"], run_id=given.get("run_id"))
        with open(os.path.join(folder, "swiftformer-bench-android.json"), "w") as f:
            json.dump(doc, f)
        marker["status"] = "ok"
    elif app == "fails":
        marker.update(status="failed", error="IllegalArgumentException: No .tflite models found")
    if app in ("ok", "fails"):
        with open(os.path.join(folder, "swiftformer-bench-android.done"), "w") as f:
            json.dump(marker, f)
    print("Starting: Intent {{ cmp=org.swiftformer.bench/.MainActivity (has extras) }}")
    return 0


def shell(command):
    words = shlex.split(command)
    name = os.path.basename(words[0])
    if command == "getprop":
        for key, value in config["props"].items():
            print(f"[{{key}}]: [{{value}}]")
    elif name == "benchmark_model":
        case = next((c for c in config["benchmarks"] if all(w in command for w in c["when"])),
                    config["benchmarks"][-1])
        sys.stdout.write(case["stdout"])
        sys.stderr.write(case["stderr"])
        return case["status"]
    elif name == "mkdir":
        for path in words[1:]:
            if not path.startswith("-"):
                os.makedirs(local(path), exist_ok=True)
    elif name == "rm":
        for path in words[1:]:
            if not path.startswith("-") and os.path.exists(local(path)):
                os.remove(local(path))
    elif name == "cat":
        if not os.path.exists(local(words[1])):
            sys.stderr.write(f"cat: {{words[1]}}: No such file or directory\\n")
            return 1
        sys.stdout.write(open(local(words[1])).read())
    elif words[:2] == ["pm", "path"]:
        if config["app"] == "missing":
            return 1
        print("package:/data/app/~~x==/org.swiftformer.bench-y==/base.apk")
    elif words[:2] == ["am", "start"]:
        return start_app(words)
    elif name == "pidof":
        if config["app"] != "hangs":
            return 1
        print("12345")
    elif name == "logcat":
        sys.stdout.write(config.get("logcat", ""))
    return 0


args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
if args[:1] == ["devices"]:
    print("List of devices attached")
    for serial, state in config["devices"]:
        print(f"{{serial}}\\t{{state}} usb:1-1 product:panther model:Pixel_7 transport_id:1")
    print()
elif args[:1] == ["push"]:
    if not os.path.exists(args[1]):
        sys.exit(f"adb: error: cannot stat '{{args[1]}}': No such file or directory")
    os.makedirs(os.path.dirname(local(args[2])), exist_ok=True)
    shutil.copyfile(args[1], local(args[2]))
    print(f"{{args[1]}}: 1 file pushed, 0 skipped. 120.5 MB/s (1234 bytes in 0.001s)")
elif args[:1] == ["pull"]:
    if not os.path.exists(local(args[1])):
        sys.exit(f"adb: error: failed to stat remote object '{{args[1]}}': No such file or "
                 "directory")
    shutil.copyfile(local(args[1]), args[2])
    print(f"{{args[1]}}: 1 file pulled, 0 skipped.")
elif args[:1] == ["shell"]:
    command, mark = args[1].rsplit("; __sfb_status=$?; echo; echo ", 1)
    status = shell(command)
    sys.stdout.flush()
    print()
    print(mark.replace("$__sfb_status", "") + str(status))
else:
    sys.exit("fake adb: unexpected " + " ".join(args))
'''


def benchmark_output(stdout, stderr="", status=0, when=()):
    """One benchmark_model answer of the stand-in phone: used for commands holding every
    string of `when` (the last answer is the default)."""
    return {"when": list(when), "stdout": stdout, "stderr": stderr, "status": status}


def make_fake_adb(directory, devices=(("28161FDH2000B1", "device"),), props=None,
                  benchmarks=None, app="ok", app_json=None, logcat=""):
    """Writes the stand-in adb and its phone into `directory`; returns its path.

    Args:
        benchmarks: `benchmark_output` answers, first match wins (default: XNNPACK's log).
        app: the Android app's behaviour: "ok" (writes its JSON and completion marker),
            "fails" (a marker saying it failed), "crashes" (no marker, process gone), "hangs"
            (no marker, process alive) or "missing" (not installed).
        app_json: the JSON the app writes (default: ``android/sample-output.json``).
        logcat: what ``adb shell logcat`` prints.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if app_json is None:
        app_json = json.loads(ANDROID_SAMPLE.read_text())
    config = {"devices": [list(d) for d in devices], "props": props or PIXEL_PROPS,
              "benchmarks": benchmarks or [benchmark_output(CURRENT_XNNPACK_STDOUT,
                                                            CURRENT_XNNPACK_STDERR)],
              "app": app, "app_json": app_json, "logcat": logcat}
    (directory / "config.json").write_text(json.dumps(config))
    path = directory / "adb"
    path.write_text(FAKE_ADB.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def calls(fake):
    """Every command line the stand-in adb was given, in order (lists of arguments)."""
    with open(pathlib.Path(fake).parent / "calls.log") as f:
        return [json.loads(line) for line in f]


def device_path(fake, remote):
    """Where the stand-in phone keeps `remote`, on this machine."""
    return pathlib.Path(fake).parent / "device" / remote.lstrip("/")


def quiet(line):
    """A progress callable that prints nothing."""


def stand_in_models(directory):
    """Two files named as the pipeline names its models (XS float32, L1 int8); the stand-in
    phone never reads them. Returns their paths."""
    paths = []
    for name in ("swiftformer_xs_float32.tflite", "swiftformer_l1_int8.tflite"):
        # A flatbuffer's root offset, then the LiteRT identifier: what the tools check.
        (directory / name).write_bytes(b"\x1c\x00\x00\x00TFL3 stand-in; the fake phone "
                                       b"never reads it")
        paths.append(str(directory / name))
    return paths


def fake_elf(path, machine=0xB7):
    """A file with the ELF header of an executable for `machine` (0xB7: AArch64)."""
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + (2).to_bytes(2, "little")
    path.write_bytes(header + machine.to_bytes(2, "little") + b"\x00" * 44)
    return str(path)


TINY = dict(SUPPORT_TINY, input_shape=(64, 64, 3))


def tiny_models(tmp_path_factory):
    """A tiny SwiftFormer (64x64) exported once per session to float32 .tflite, and a copy
    under a second name (the harness, not the format, is under test; an export costs ~20 s):
    {"float32": path, "float16": path}. Shared by the host and flow tests."""
    folder = tmp_path_factory.getbasetemp() / "bench_tiny_models"
    paths = {fmt: folder / f"tiny_{fmt}.tflite" for fmt in ("float32", "float16")}
    if not all(p.exists() for p in paths.values()):
        from converters.litert.tflite import export_tflite
        from keras_swiftformer import SwiftFormer

        model = SwiftFormer(classifier_activation=None, **TINY)
        export_tflite(model, paths["float32"], "float32")
        shutil.copyfile(paths["float32"], paths["float16"])
    return {fmt: str(path) for fmt, path in paths.items()}
