"""android_bench.parse: benchmark_model logs in the formats its versions print.

The logs below follow ``tensorflow/lite/tools/benchmark/benchmark_model.cc`` line for line
(the numbers are made up; no phone was attached when they were written).
"""

import pytest

from android_bench.parse import BenchmarkOutputError, parse_benchmark_output

# Current builds: "INFO: " prefix, exact counts, delta and periodic peak memory.
CURRENT_XNNPACK = """\
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
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
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

FAILED_GPU = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/swiftformer_bench/swiftformer_xs_int8.tflite]
INFO: Use gpu: [1]
INFO: Loaded model /data/local/tmp/swiftformer_bench/swiftformer_xs_int8.tflite
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Following operations are not supported by GPU delegate:
L2_NORMALIZATION: Operation is not supported.
ERROR: TfLiteGpuDelegate Init: No EGL error, but eglChooseConfig failed.
ERROR: Failed to apply GPU delegate.
ERROR: Benchmarking failed.
"""


def test_current_format_gives_every_field():
    r = parse_benchmark_output(CURRENT_XNNPACK)
    assert r["init_ms"] == pytest.approx(61.532)
    assert r["first_ms"] == pytest.approx(14.210)
    assert r["warmup_mean_ms"] == pytest.approx(10.2483)
    assert r["warmup_runs"] == 10
    assert r["mean_ms"] == pytest.approx(9.87452)
    assert (r["min_ms"], r["max_ms"], r["std_ms"]) == pytest.approx((9.640, 10.542, 0.171))
    assert r["runs"] == 50
    assert "median_ms" not in r  # this build prints no percentiles
    assert r["init_memory_mb"] == pytest.approx(32.1836)
    assert r["peak_memory_mb"] == pytest.approx(49.6172)  # the monitored peak wins
    assert "periodic monitoring" in r["memory_method"]
    assert r["model_size_mb"] == pytest.approx(13.8674e6 / 2**20)
    assert r["delegation"] == "XNNPACK: whole graph"


def test_older_format_with_partial_gpu_delegation():
    r = parse_benchmark_output(OLDER_GPU_PARTIAL)
    assert r["init_ms"] == pytest.approx(1451.507)
    assert r["mean_ms"] == pytest.approx(28.6803)
    assert r["runs"] == 110 and r["warmup_runs"] == 56  # min_secs made more runs than asked
    assert r["min_ms"] == pytest.approx(27.863)
    assert (r["init_memory_mb"], r["peak_memory_mb"]) == pytest.approx((63.4883, 71.2461))
    assert "max RSS" in r["memory_method"]
    assert r["delegation"] == "GPU: 12 delegate kernels"


def test_single_warmup_run_and_scientific_notation():
    r = parse_benchmark_output(NNAPI_SINGLE_WARMUP)
    assert r["first_ms"] == pytest.approx(11403.859)
    assert r["warmup_mean_ms"] == pytest.approx(11403.9)
    assert r["warmup_runs"] == 1
    assert r["runs"] == 260 and r["mean_ms"] == pytest.approx(3.75687)
    assert r["delegation"] == "NNAPI: no nodes"
    assert r["peak_memory_mb"] == pytest.approx(15.3438)


def test_percentiles_and_identical_runs():
    r = parse_benchmark_output(PERCENTILES)
    assert r["median_ms"] == pytest.approx(1.998)
    assert r["min_ms"] == pytest.approx(1.95) and r["runs"] == 20
    assert r["warmup_runs"] == 5
    assert "peak_memory_mb" not in r and "delegation" not in r


def test_oldest_summary_line_and_profiling_table_are_not_confused():
    r = parse_benchmark_output(OLD_WITH_PROFILING)
    assert r["init_ms"] == pytest.approx(38.467)
    assert r["warmup_mean_ms"] == pytest.approx(83.235)
    assert r["mean_ms"] == pytest.approx(79.7609)
    assert r["first_ms"] == pytest.approx(83.235)  # the first warm-up run
    assert r["runs"] == 50 and r["min_ms"] == pytest.approx(77.385)


def test_windows_line_endings_from_adb():
    r = parse_benchmark_output(CURRENT_XNNPACK.replace("\n", "\r\n"))
    assert r["mean_ms"] == pytest.approx(9.87452) and r["runs"] == 50


def test_failed_run_raises_with_its_error_lines():
    with pytest.raises(BenchmarkOutputError) as info:
        parse_benchmark_output(FAILED_GPU)
    message = str(info.value)
    assert "Failed to apply GPU delegate" in message
    assert "eglChooseConfig failed" in message
    assert "Created TensorFlow Lite delegate" not in message  # info lines are left out


def test_output_without_errors_quotes_its_last_lines():
    with pytest.raises(BenchmarkOutputError, match="Segmentation"):
        parse_benchmark_output("STARTING!\nLoaded model /x.tflite\nSegmentation fault\n")
    with pytest.raises(BenchmarkOutputError, match="Loaded model"):
        parse_benchmark_output("STARTING!\nLoaded model /x.tflite\n")


def test_litert_compiled_model_summary():
    r = parse_benchmark_output(LITERT_COMPILED_MODEL)
    assert (r["init_ms"], r["first_ms"], r["warmup_mean_ms"]) == (48.21, 15.02, 10.87)
    assert (r["mean_ms"], r["runs"], r["warmup_runs"]) == (9.61, 50, 10)
    assert (r["min_ms"], r["max_ms"], r["std_ms"]) == (9.30, 10.40, 0.21)
    assert (r["init_memory_mb"], r["peak_memory_mb"]) == (30.55, 39.80)
    assert "delta" in r["memory_method"]
