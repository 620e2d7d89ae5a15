"""Latency of `.tflite` models on this machine, through the LiteRT interpreter
(`converters.litert.runtime.TFLiteRunner`), several models compared in one interleaved run; or, with
``accelerator="gpu"``, on LiteRT's GPU engine (`converters.litert.gpu`: a GPU's Vulkan driver, or
SwiftShader on the CPU).

How one run goes:

1. Cold start, each case (model x backend x threads) in a fresh Python process, as
   ``benchmark_model`` runs one model per process: the interpreter is built and its tensors
   allocated (``init_ms``: the file read, the XNNPACK delegate's graph rewrite, the
   allocation), the input is set once (integer models get integer data, so no quantisation is
   timed), then the first inference (``first_ms``) and the warm-up inferences run. Memory is read
   from ``/proc/self/status``: the peak resident set (``VmHWM``, reset through
   ``/proc/self/clear_refs``) above the resident set before the model was loaded. A fresh
   process matters: in a process that has loaded and freed models before, the allocator reuses
   that memory and a new model seems to take almost none.
2. Every case is then loaded and warmed up again in this process, and the timed inferences are
   interleaved: ``runs`` rounds, each invoking every case once, in a fresh random order (fixed
   seed). A slow spell of a shared machine then hits every case alike instead of whichever model
   happened to run then. Only ``interpreter.invoke()`` is timed (``time.perf_counter_ns``), with
   Python's garbage collector paused.
"""

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from android_bench.schema import new_report
from android_bench.timing import RUNNERS, Timing
from converters.litert.inspection import (
    invoke_ms,
    latency_summary,
    random_input,
    time_interleaved,
)

HOST_BACKENDS = RUNNERS["host"]["backends"]
#: Where the host runs models: LiteRT's interpreter on the CPU (`HOST_BACKENDS`), or its GPU
#: engine through ``CompiledModel`` (one model per child process, not interleaved).
ACCELERATORS = ("cpu", "gpu")


class MemoryProbe:
    """Resident memory of this process, from ``/proc/self/status`` (Linux).

    `start()` resets the kernel's peak counter when allowed, and `peak_mb()` is then the
    true peak since `start()`; elsewhere it is the largest of the values `sample()` saw.
    """

    def __init__(self):
        self.available = os.path.exists("/proc/self/status")
        self.base_kb = self._sampled_kb = 0
        self.resettable = False

    @staticmethod
    def _status_kb(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise KeyError(key)

    def start(self):
        if not self.available:
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current VmRSS (Linux >= 4.0)
            self.resettable = True
        except OSError:
            self.resettable = False
        self.base_kb = self._sampled_kb = self._status_kb("VmRSS")

    def sample(self):
        """Current resident memory above the start, MB."""
        if not self.available:
            return None
        rss = self._status_kb("VmRSS")
        self._sampled_kb = max(self._sampled_kb, rss)
        return (rss - self.base_kb) / 1024.0

    def peak_mb(self):
        if not self.available:
            return None
        self.sample()
        peak = self._status_kb("VmHWM") if self.resettable else self._sampled_kb
        return (peak - self.base_kb) / 1024.0

    @property
    def method(self):
        if not self.available:
            return None
        return ("VmHWM above VmRSS before loading (peak counter reset per model)"
                if self.resettable else "largest sampled VmRSS above VmRSS before loading")


class HostCase:
    """One model under one backend and thread count, loaded and ready to invoke."""

    def __init__(self, entry, backend, threads):
        if backend not in HOST_BACKENDS:
            raise ValueError(f"Unknown host backend {backend!r}; known: {HOST_BACKENDS}")
        self.entry, self.backend, self.threads = entry, backend, threads
        self.runner = None
        self.result = {}
        self.samples = []

    @property
    def label(self):
        name = os.path.basename(self.entry["path"])
        return f"{name} [{self.backend}, {self.threads or 'default'} thread(s)]"

    def load(self, warmup, probe, seed=0):
        """Builds the interpreter, sets the input once, runs the first and warm-up inferences.

        Returns:
            The init, first, warm-up and memory fields of the schema, measured here.
        """
        from converters.litert.runtime import TFLiteRunner

        probe.start()
        start = time.perf_counter_ns()
        self.runner = TFLiteRunner(self.entry["path"], num_threads=self.threads,
                                   use_xnnpack=self.backend == "xnnpack")
        init_ms = (time.perf_counter_ns() - start) / 1e6
        init_memory = probe.sample()
        interpreter = self.runner.interpreter
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"],
                               random_input(detail["shape"], detail["dtype"], seed))
        warm = [self.invoke_ms() for _ in range(1 + warmup)]
        return {
            "init_ms": init_ms, "first_ms": warm[0],
            "warmup_mean_ms": float(np.mean(warm)), "warmup_runs": len(warm),
            "init_memory_mb": init_memory, "peak_memory_mb": probe.peak_mb(),
            "memory_method": probe.method,
            "model_size_mb": os.path.getsize(self.entry["path"]) / 2**20,
        }

    def cold_start(self, warmup, seed=0, timeout=600):
        """`load` in a fresh Python process (``python -m android_bench.host SPEC``); stores
        and returns its fields.

        Raises:
            ValueError: the model could not be loaded or run; the child's error.
        """
        spec = json.dumps({"path": os.path.abspath(self.entry["path"]), "backend": self.backend,
                           "threads": self.threads, "warmup": warmup, "seed": seed})
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        try:
            proc = subprocess.run([sys.executable, "-m", "android_bench.host", spec],
                                  capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": path})
        except subprocess.TimeoutExpired:
            raise ValueError(f"{self.label}: loading took over {timeout} s; fewer --warmup "
                             "inferences, or a smaller model") from None
        lines = proc.stdout.strip().splitlines()
        try:
            reply = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            reply = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
        if proc.returncode != 0 or "error" in reply:
            raise ValueError(f"{self.label}: {reply.get('error', proc.returncode)}")
        if reply.get("memory_method"):
            reply["memory_method"] += ", in a fresh process"
        self.result = reply
        return self.result

    def invoke_ms(self):
        return invoke_ms(self.runner.interpreter)

    def record(self):
        """The schema's result for this case."""
        return {
            "model": os.path.basename(self.entry["path"]),
            "variant": self.entry.get("variant"), "format": self.entry.get("format"),
            "backend": self.backend, "threads": self.threads, "status": "ok",
            **self.result, **latency_summary(self.samples),
            "samples_ms": [round(s, 4) for s in self.samples],
        }


def host_device():
    """This machine, for the report's ``device``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = {"name": f"{cpu}, {cores} cores", "os": platform.platform(terse=True), "cpu": cpu,
              "abi": platform.machine(), "cores": cores}
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        device["memory_gb"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return device


def host_runtime():
    from importlib import metadata

    from converters.litert.runtime import interpreter_class

    _, name, _ = interpreter_class()
    package = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(
        name, "tensorflow")
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = None
    return {"name": name, "version": version}


def benchmark_host(models, timing=None, progress=print, accelerator="cpu"):
    """Benchmarks every model x backend x thread count in one interleaved run.

    Args:
        models: model entries ``{"path", "variant", "format"}`` (`android_bench.models.
            parse_model_spec`) or plain paths.
        timing: `android_bench.timing.Timing` (default: XNNPACK, 1 thread, 10 warm-up
            inferences after the first, 50 timed); backends "xnnpack" (LiteRT's default CPU
            delegate) and/or "cpu" (built-in kernels); a thread count None: the runtime's
            default; ``seed``: of the input data and of the per-round order.
        progress: callable taking one line of text.
        accelerator: "cpu" (the interpreter, backends x threads) or "gpu" (LiteRT's GPU
            engine, `gpu_results`; backends and threads do not apply).

    Returns:
        The report (`android_bench.schema`), source "host".
    """
    from android_bench.models import parse_model_spec

    if accelerator not in ACCELERATORS:
        raise ValueError(f"--accelerator {accelerator!r} is unknown: give one of "
                         f"{', '.join(ACCELERATORS)}")
    timing = (timing or Timing()).require("host")
    warmup, runs, seed = timing.warmup, timing.runs, timing.seed
    entries = [m if isinstance(m, dict) else parse_model_spec(m) for m in models]
    if not entries:
        raise ValueError("No models to benchmark: give at least one .tflite file")
    if accelerator == "gpu":
        results, device = gpu_results(entries, warmup, runs, seed, progress)
        settings = {"warmup_runs": warmup, "runs": runs, "interleaved": False, "seed": seed,
                    "backends": ["gpu"], "accelerator": "gpu", "vulkan": device,
                    "timed": "CompiledModel.run_by_index and the output read (the input is "
                             "written before each run, untimed), one model per process"}
        return new_report("host", host_device(), host_runtime(), results, settings)
    cases = [HostCase(e, b, t) for b in timing.backends for t in timing.threads
             for e in entries]
    for i, case in enumerate(cases, 1):
        progress(f"[{i}/{len(cases)}] cold start of {case.label} in a fresh process")
        case.cold_start(warmup, seed)
    progress(f"loading and warming up {len(cases)} cases")
    for case in cases:
        case.load(warmup, MemoryProbe(), seed)  # its numbers are the warm process's: unused
    progress(f"timing {len(cases)} cases x {runs} runs, interleaved")
    samples = time_interleaved([case.runner.interpreter for case in cases], runs, seed=seed)
    for case, times in zip(cases, samples):
        case.samples = times
    settings = {**timing.settings(), "interleaved": True, "seed": seed,
                "timed": "interpreter.invoke() only, input set once before timing"}
    return new_report("host", host_device(), host_runtime(), [c.record() for c in cases],
                      settings)


def gpu_results(entries, warmup, runs, seed=0, progress=print):
    """Each model entry on LiteRT's GPU engine (`converters.litert.gpu.run_gpu`, a child process
    per model): one random input, the first and `warmup` more untimed runs, `runs` timed ones.

    Returns:
        (schema results, the Vulkan ICD manifest used).

    Raises:
        ValueError: there is no Vulkan device.
    """
    from converters.litert.gpu import NO_DEVICE, run_gpu, vulkan_icd
    from converters.litert.runtime import TFLiteRunner

    icd = vulkan_icd()
    if icd is None:
        raise ValueError(f"--accelerator gpu: {NO_DEVICE} (install a GPU's Vulkan driver or "
                         "SwiftShader: apt-get install chromium-common libvulkan1)")
    results = []
    for i, entry in enumerate(entries, 1):
        progress(f"[{i}/{len(entries)}] {os.path.basename(entry['path'])} on the GPU engine")
        shape = TFLiteRunner(entry["path"]).input_shape
        # Pixels 0-255, which run_gpu quantises for an integer input.
        image = random_input((1, *shape[1:]), np.float32, seed)
        result = run_gpu(entry["path"], np.repeat(image, runs, axis=0), icd=icd,
                         warmup=1 + warmup)
        record = {"model": os.path.basename(entry["path"]), "variant": entry.get("variant"),
                  "format": entry.get("format"), "backend": "gpu", "threads": None,
                  "model_size_mb": os.path.getsize(entry["path"]) / 2**20}
        if result.error or not result.samples_ms:
            results.append({**record, "status": "failed",
                            "error": result.error or "no timed inference"})
            continue
        delegation = f"{result.accelerated}, on {result.adapter}"
        if result.cpu_ops:
            delegation += f"; CPU: {', '.join(sorted(result.cpu_ops))}"
        if result.gpu_op_count is not None:  # the engine counts nodes when it splits the graph
            record["delegate_coverage"] = {
                "delegate": "LiteRT GPU (ML Drift, WebGPU)", "nodes": result.gpu_op_count,
                "total_nodes": result.gpu_op_count + result.cpu_op_count, "full": False}
        results.append({**record, "status": "ok", "init_ms": result.compile_ms,
                        "first_ms": result.first_ms, "warmup_runs": 1 + warmup,
                        "delegation": delegation, **latency_summary(result.samples_ms),
                        "samples_ms": [round(s, 4) for s in result.samples_ms]})
    return results, icd


def _cold_start_main(spec):
    """Child of `HostCase.cold_start`: loads one case, prints its fields (or the error) as JSON."""
    spec = json.loads(spec)
    case = HostCase({"path": spec["path"]}, spec["backend"], spec["threads"])
    try:
        fields = case.load(spec["warmup"], MemoryProbe(), spec["seed"])
    except Exception as err:  # reported to the parent, which raises it with the case's name
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        return 1
    print(json.dumps(fields))
    return 0


if __name__ == "__main__":
    sys.exit(_cold_start_main(sys.argv[1]))
