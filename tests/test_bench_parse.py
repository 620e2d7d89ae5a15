"""android_bench.parse: benchmark_model logs in the formats its versions print.

The logs (``tests/support/bench.py``) follow ``tensorflow/lite/tools/benchmark`` line for line
(the numbers are made up; no phone was attached when they were written).
"""

import pytest

from android_bench.parse import (
    BenchmarkOutputError,
    delegate_coverage,
    parse_benchmark_output,
    stderr_messages,
)
from tests.support.bench import (
    CURRENT_XNNPACK,
    FAILED_GPU,
    FAILED_GPU_STDERR,
    GPU_PARTIAL,
    GPU_PARTIAL_STDERR,
    LITERT_COMPILED_MODEL,
    NNAPI_SINGLE_WARMUP,
    OLD_WITH_PROFILING,
    OLDER_GPU_PARTIAL,
    PERCENTILES,
)


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


def test_delegate_coverage_of_the_current_line_format():
    full = delegate_coverage(CURRENT_XNNPACK, "xnnpack")
    assert full == {"delegate": "TfLiteXNNPackDelegate", "nodes": 298, "total_nodes": 298,
                    "partitions": 1, "delegate_kernels": 1, "full": True}
    partial = delegate_coverage(GPU_PARTIAL, "gpu")
    assert partial == {"delegate": "TfLiteGpuDelegateV2", "nodes": 250, "total_nodes": 298,
                       "partitions": 3, "delegate_kernels": 1, "full": False}
    # XNNPACK took the GPU's leftovers in the same run: its line is not the GPU's coverage.
    assert delegate_coverage(GPU_PARTIAL, "xnnpack")["nodes"] == 48
    assert delegate_coverage(CURRENT_XNNPACK, "cpu") is None
    assert delegate_coverage(CURRENT_XNNPACK, "gpu") is None


def test_delegate_coverage_of_older_and_newer_builds():
    old = delegate_coverage(OLDER_GPU_PARTIAL, "gpu")  # no "out of M" before 2023
    assert old == {"delegate": "TfLiteGpuDelegateV2", "nodes": 180, "total_nodes": None,
                   "partitions": 24, "delegate_kernels": 12, "full": False}
    litert = ("INFO: Replacing 40 out of 40 node(s) with delegate (TfLiteNnapiDelegate) node, "
              "yielding 1 partitions for subgraph 0 (main).\n"
              "INFO: Replacing 5 out of 6 node(s) with delegate (TfLiteNnapiDelegate) node, "
              "yielding 2 partitions for subgraph 1 (head).\n")
    summed = delegate_coverage(litert, "nnapi")
    assert (summed["nodes"], summed["total_nodes"], summed["partitions"]) == (45, 46, 3)
    assert summed["full"] is False and summed["delegate_kernels"] is None
    whole = "Replacing 7 out of 7 node(s) with delegate (TfLiteGpuDelegateV2) node, " \
            "yielding 1 partitions for the whole graph."
    assert delegate_coverage(whole, "gpu")["full"] is True
    none = delegate_coverage(NNAPI_SINGLE_WARMUP, "nnapi")  # "Though NNAPI delegate is ..."
    assert none["nodes"] == 0 and none["delegate_kernels"] == 0 and none["full"] is False


def test_stderr_messages_keep_errors_and_their_continuation_lines():
    messages = stderr_messages(GPU_PARTIAL_STDERR)
    assert messages == ["ERROR: Following operations are not supported by GPU delegate:",
                        "GELU: Operation is not supported.",
                        "250 operations will run on the GPU, and the remaining 48 operations "
                        "will run on the CPU."]
    assert stderr_messages(FAILED_GPU_STDERR, limit=2) == ["ERROR: Failed to apply GPU delegate.",
                                                           "ERROR: Benchmarking failed."]
