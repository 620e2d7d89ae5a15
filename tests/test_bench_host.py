"""android_bench.host and the ``host`` command, on tiny SwiftFormers exported to .tflite."""

import os

import numpy as np
import pytest

from android_bench.cli import main
from android_bench.host import (
    MemoryProbe,
    benchmark_host,
)
from converters.litert.inspection import interleaved_order, latency_summary, random_input
from android_bench.schema import load_reports, validate
from android_bench.timing import Timing
from converters.litert.gpu import vulkan_icd
from tests.support.bench import tiny_models

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_models(tmp_path_factory)


def test_latency_summary():
    s = latency_summary([4.0, 1.0, 3.0, 2.0, 10.0])
    assert s == {"mean_ms": 4.0, "median_ms": 3.0, "p90_ms": pytest.approx(7.6), "min_ms": 1.0,
                 "max_ms": 10.0, "std_ms": pytest.approx(np.std([4, 1, 3, 2, 10])), "runs": 5}
    with pytest.raises(ValueError, match="No timed inferences"):
        latency_summary([])


def test_interleaved_order_runs_every_case_once_per_round():
    order = interleaved_order(4, 25, seed=3)
    rounds = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert len(rounds) == 25 and all(sorted(r) == [0, 1, 2, 3] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 5  # the order changes between rounds
    assert order == interleaved_order(4, 25, seed=3)


def test_random_input_types():
    pixels = random_input((1, 8, 8, 3), np.float32)
    assert pixels.dtype == np.float32 and 0 <= pixels.min() and pixels.max() <= 255
    codes = random_input((1, 64, 64, 3), np.int8)
    assert codes.dtype == np.int8 and codes.min() == -128 and codes.max() == 127


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_memory_probe_sees_an_allocation_after_it_is_freed():
    probe = MemoryProbe()
    probe.start()
    block = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    assert probe.sample() > 50
    del block
    assert probe.peak_mb() > 50  # the peak outlives the memory
    assert "VmHWM" in probe.method or "sampled" in probe.method


def test_benchmark_host_fills_every_field(tiny):
    models = [{"path": tiny["float32"], "variant": "XS", "format": "float32"}, tiny["float16"]]
    timing = Timing(backends=("xnnpack", "cpu"), threads=(1, 2), warmup=2, runs=6)
    doc = benchmark_host(models, timing, progress=lambda line: None)
    validate(doc)
    assert doc["source"] == "host" and doc["runtime"]["name"] == "ai_edge_litert"
    assert doc["device"]["cores"] >= 1 and doc["settings"]["interleaved"] is True
    cases = [(r["backend"], r["threads"], r["model"]) for r in doc["results"]]
    assert cases == [(b, t, os.path.basename(m)) for b in ("xnnpack", "cpu") for t in (1, 2)
                     for m in (tiny["float32"], tiny["float16"])]
    for r in doc["results"]:
        assert r["status"] == "ok" and r["runs"] == 6 and len(r["samples_ms"]) == 6
        assert r["warmup_runs"] == 3 and r["init_ms"] > 0 and r["first_ms"] > 0
        assert r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["max_ms"]
        assert r["min_ms"] <= r["mean_ms"] <= r["max_ms"]
        assert r["model_size_mb"] == pytest.approx(os.path.getsize(
            tiny[r["format"]]) / 2**20)
        assert r["peak_memory_mb"] is not None and r["peak_memory_mb"] >= 0
    # Memory comes from a fresh process per case: the same model under another thread count
    # costs the same, not the near-zero that a process reusing freed memory would show.
    peaks = [r["peak_memory_mb"] for r in doc["results"] if r["backend"] == "xnnpack"]
    assert min(peaks) > 1 and max(peaks) < 1.2 * min(peaks)
    assert "fresh process" in doc["results"][0]["memory_method"]
    assert doc["results"][0]["variant"] == "XS"  # as given
    assert doc["results"][1]["format"] == "float16"  # read from the file name


def test_bad_host_options_fail_before_loading(tiny, tmp_path):
    with pytest.raises(ValueError, match="--backends gpu: the host runner takes xnnpack, cpu"):
        benchmark_host([tiny["float32"]], Timing(backends=("gpu",)))
    with pytest.raises(ValueError, match="No such model file"):
        benchmark_host([str(tmp_path / "missing.tflite")])
    with pytest.raises(ValueError, match="Unknown SwiftFormer variant 'XXL'"):
        benchmark_host([f"XXL/float32={tiny['float32']}"])
    bad = tmp_path / "not_a_model.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ValueError, match="is not a LiteRT model"):
        benchmark_host([str(bad)], progress=lambda line: None)
    # A file that names itself LiteRT but does not load: the child process's error.
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3 but not a flatbuffer")
    with pytest.raises(ValueError, match="not a loadable .tflite model"):
        benchmark_host([str(bad)], Timing(runs=1, warmup=0), progress=lambda line: None)


def test_host_command_writes_json_table_and_plot(tiny, tmp_path, capsys):
    prefix = tmp_path / "bench" / "host"
    status = main(["host", f"XS/float32={tiny['float32']}", f"L1/int8={tiny['float16']}",
                   "--threads", "1", "--warmup", "1", "--runs", "5", "--output", str(prefix)])
    assert status == 0
    out = capsys.readouterr().out
    assert "| host |" in out and "| xnnpack | 1 | XS float32 |" in out
    assert "| xnnpack | 1 | L1 int8 |" in out
    [doc] = load_reports([f"{prefix}.json"])
    assert [r["runs"] for r in doc["results"]] == [5, 5]
    assert (tmp_path / "bench" / "host.md").read_text().startswith("Measured on:\n- host: ")
    with open(f"{prefix}.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert main(["host", tiny["float32"], "--runs", "0", "--output", str(tmp_path / "x")]) == 2
    assert "--runs 0 is out of range" in capsys.readouterr().err


def test_converters_time_files_interleaved_and_ask_the_gpu_analyser(tiny):
    """converters.litert.inspection: the pipeline report's latency and GPU columns."""
    from converters.litert.inspection import gpu_compatibility, host_latency, parse_gpu_analysis

    paths = [tiny["float32"], tiny["float16"]]
    latency = host_latency(paths, runs=7, warmup=1)
    assert sorted(latency) == sorted(paths)
    assert all(s["runs"] == 7 and 0 < s["min_ms"] <= s["median_ms"] for s in latency.values())
    verdict = gpu_compatibility(tiny["float32"])  # the analyser's printout, captured
    assert verdict["compatible"] and verdict["incompatible_ops"] == {}
    assert verdict["verdict"].startswith("Your model looks compatible with GPU delegate")
    # A report with warnings is not compatible, whatever its last line says.
    text = ("  Op#0 CONV_2D(T#0) -> [T#1]\n  Op#1 CUMSUM(T#1, T#2) -> [T#3]\n"
            "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at "
            "nodes 1 with TFLite runtime version 2.21.0\n")
    parsed = parse_gpu_analysis(text)
    assert not parsed["compatible"] and parsed["incompatible_ops"] == {"CUMSUM": 1}


def test_gpu_accelerator_needs_a_vulkan_device(tiny, monkeypatch, capsys):
    monkeypatch.setenv("VK_ICD_FILENAMES", "")
    with pytest.raises(ValueError, match="no Vulkan device"):
        benchmark_host([tiny["float32"]], accelerator="gpu", progress=lambda line: None)
    assert main(["host", tiny["float32"], "--accelerator", "gpu"]) == 2
    assert "no Vulkan device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--accelerator 'npu' is unknown"):
        benchmark_host([tiny["float32"]], accelerator="npu")


@pytest.mark.skipif(vulkan_icd() is None, reason="no Vulkan device: install SwiftShader "
                    "(Debian: apt-get install chromium-common libvulkan1) or a GPU driver")
def test_benchmark_host_on_the_gpu_engine(tiny, tmp_path):
    out = tmp_path / "gpu"
    assert main(["host", f"XS/float32={tiny['float32']}", "--accelerator", "gpu",
                 "--warmup", "1", "--runs", "3", "--output", str(out)]) == 0
    (doc,) = load_reports([f"{out}.json"])
    assert doc["settings"]["accelerator"] == "gpu" and doc["settings"]["vulkan"] == vulkan_icd()
    (r,) = doc["results"]
    assert r["backend"] == "gpu" and r["status"] == "ok", r.get("error")
    assert r["runs"] == 3 and len(r["samples_ms"]) == 3 and r["warmup_runs"] == 2
    assert r["init_ms"] > 0 and r["first_ms"] > 0 and r["min_ms"] <= r["median_ms"]
    # The Keras graph keeps L2_NORMALIZATION, which the GPU engine leaves to the CPU.
    assert r["delegation"].startswith("partial, on ") and "L2_NORMALIZATION" in r["delegation"]
    coverage = r["delegate_coverage"]
    assert coverage["full"] is False and 0 < coverage["nodes"] < coverage["total_nodes"]
