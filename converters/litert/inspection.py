"""What a `.tflite` file does on a CPU or GPU, found without a phone: how XNNPACK partitions it,
what TensorFlow's GPU-delegate analyser says of it, and how long it takes here.

- `delegation`: the ops LiteRT's default XNNPACK delegate takes, and in how many partitions
  (one partition in float; every extra one is a hand-over to LiteRT's slower builtin kernels).
- `gpu_compatibility`: the verdict of ``tf.lite.experimental.Analyzer.analyze(...,
  gpu_compatibility=True)`` (it prints; the text is captured) and the incompatible ops.
- `time_interleaved` / `host_latency`: latency of several models in one run, each round
  invoking every model once in a fresh random order, so that a slow spell of a shared machine
  hits them alike.
- `inspect_rows`: all of the above for the LiteRT rows of the pipeline's report.
"""

import collections
import contextlib
import gc
import io
import os
import re
import sys
import tempfile
import time

import numpy as np

from converters.formats import REFERENCE_FORMAT
from converters.litert.runtime import make_interpreter

#: Ratio to float32 above which the report flags a format as running on slow kernels.
SLOW_RATIO = 3.0


def flatbuffer_utils():
    """LiteRT's flatbuffer helpers (read / write a model as Python objects)."""
    try:
        from ai_edge_litert.tools import flatbuffer_utils as module
    except ImportError:  # the same module in TensorFlow's tree
        from tensorflow.lite.tools import flatbuffer_utils as module
    return module


def delegation(content, num_threads=1):
    """What XNNPACK takes of `content`: ``{"ops": count, "partitions": delegate partitions,
    "undelegated": {op type: count}}`` (ops run by LiteRT's own kernels)."""
    details = {}
    for fusion_off in (False, True):
        interpreter = make_interpreter(content, num_threads,
                                       experimental_disable_delegate_node_fusion=fusion_off)
        details[fusion_off] = interpreter._get_ops_details()  # noqa
    # With node fusion off every delegated op gets its own DELEGATE node, which takes over
    # the op's outputs; an op whose outputs no DELEGATE node produces was not delegated.
    delegated_outputs = {int(t) for op in details[True] if op["op_name"] == "DELEGATE"
                         for t in op["outputs"]}
    ops = [op for op in details[True] if op["op_name"] != "DELEGATE"]
    undelegated = collections.Counter(
        op["op_name"] for op in ops if not {int(t) for t in op["outputs"]} & delegated_outputs)
    partitions = sum(op["op_name"] == "DELEGATE" for op in details[False])
    return {"ops": len(ops), "partitions": partitions, "undelegated": dict(undelegated)}


@contextlib.contextmanager
def _captured_stdout():
    """Captures what Python prints (``sys.stdout``) and what C++ writes to file descriptor 1
    into the yielded list of lines."""
    sys.stdout.flush()
    saved = os.dup(1)
    lines, text = [], io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            with contextlib.redirect_stdout(text):
                yield lines
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())
            lines.extend(text.getvalue().splitlines())


_OP_LINE = re.compile(r"^\s*Op#(\d+) ([A-Z][A-Z0-9_]*)\(")
_NODES = re.compile(r"at nodes? ([\d, ]+)")
_NOT_SUPPORTED = re.compile(r"Not supported op ([A-Z][A-Z0-9_]*)")


def parse_gpu_analysis(text):
    """The analyser's printed report -> `gpu_compatibility`'s dict (see there)."""
    lines = text.splitlines()
    op_names = {int(m[1]): m[2] for m in map(_OP_LINE.match, lines) if m}
    warnings = [line.strip() for line in lines if "GPU COMPATIBILITY WARNING" in line]
    ops = collections.Counter()
    for line in warnings:
        nodes = _NODES.search(line)
        if nodes:
            ops.update(op_names.get(int(n), f"node {n}") for n in nodes[1].replace(" ", "")
                       .split(",") if n)
        elif _NOT_SUPPORTED.search(line):
            ops[_NOT_SUPPORTED.search(line)[1]] += 1
    compatible = any("looks compatible with GPU delegate" in line for line in lines)
    verdict = next((line.strip() for line in lines if "compatib" in line.lower()
                    and "GPU" in line and "guarantee" not in line),
                   "no GPU compatibility verdict printed")
    return {"compatible": compatible and not warnings, "verdict": verdict,
            "incompatible_ops": dict(ops), "warnings": warnings[:20]}


def gpu_compatibility(path):
    """TensorFlow's GPU-delegate check of a `.tflite` file
    (``tf.lite.experimental.Analyzer.analyze(model_path, gpu_compatibility=True)``, whose
    printed report is captured).

    Caveat (TF 2.21 and ai-edge-litert 2.3): the analyser in these wheels says "looks
    compatible" of models with TOPK_V2, CUMSUM or SEGMENT_SUM, which the GPU delegate does not
    run; its verdict is a necessary condition, not a sufficient one.

    Returns:
        ``{"compatible": bool, "verdict": its summary line, "incompatible_ops": {op type:
        count}, "warnings": its GPU warning lines}``.
    """
    import tensorflow as tf

    with _captured_stdout() as lines:
        tf.lite.experimental.Analyzer.analyze(model_path=os.fspath(path),
                                              gpu_compatibility=True)
    return parse_gpu_analysis("\n".join(lines))


def latency_summary(samples_ms):
    """Timed inferences (ms) -> mean, median, p90, min, max, std (population), runs."""
    x = np.asarray(samples_ms, np.float64)
    if x.size == 0:
        raise ValueError("No timed inferences to summarise")
    return {
        "mean_ms": float(x.mean()), "median_ms": float(np.median(x)),
        "p90_ms": float(np.percentile(x, 90)), "min_ms": float(x.min()),
        "max_ms": float(x.max()), "std_ms": float(x.std()), "runs": int(x.size),
    }


def random_input(shape, dtype, seed=0):
    """Random data of the model's input type: pixels 0-255 for float inputs (SwiftFormer
    exports take RGB pixels), the full range for integer ones."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.uniform(0.0, 255.0, size=shape).astype(dtype)


def interleaved_order(count, runs, seed=0):
    """The case indices in timing order: `runs` rounds, each a fresh random permutation of
    ``range(count)`` (so every case runs once per round, at varying positions)."""
    rng = np.random.default_rng(seed)
    return [int(i) for _ in range(runs) for i in rng.permutation(count)]


def invoke_ms(interpreter):
    """Milliseconds of one ``interpreter.invoke()``."""
    start = time.perf_counter_ns()
    interpreter.invoke()
    return (time.perf_counter_ns() - start) / 1e6


def set_random_input(interpreter, seed=0):
    """Sets every input of a LiteRT interpreter once (`random_input`)."""
    for i, detail in enumerate(interpreter.get_input_details()):
        interpreter.set_tensor(detail["index"],
                               random_input(detail["shape"], detail["dtype"], seed + i))


def time_interleaved(interpreters, runs, warmup=0, seed=0, cpu_times=False):
    """Times ready interpreters (inputs set) in one interleaved loop.

    Args:
        interpreters: LiteRT interpreters, tensors allocated and inputs set.
        runs: rounds; each invokes every interpreter once, in a fresh random order.
        warmup: untimed invocations of each interpreter first.
        seed: of the per-round order.
        cpu_times: also return the process CPU time of each invocation (other processes on
            the machine do not inflate it; with several threads it counts their spinning too).

    Returns:
        One list of `runs` wall-clock times (ms) per interpreter; with `cpu_times`, a pair
        (wall, cpu) of such lists. Only ``invoke()`` is timed, with Python's garbage
        collector paused.
    """
    for interpreter in interpreters:
        for _ in range(warmup):
            interpreter.invoke()
    samples = [[] for _ in interpreters]
    cpu = [[] for _ in interpreters]
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in interleaved_order(len(interpreters), runs, seed):
            cpu_start = time.process_time()
            samples[index].append(invoke_ms(interpreters[index]))
            cpu[index].append(1e3 * (time.process_time() - cpu_start))
    finally:
        if gc_was_enabled:
            gc.enable()
    return (samples, cpu) if cpu_times else samples


def host_latency(paths, runs=30, warmup=3, num_threads=1, seed=0):
    """Median LiteRT + XNNPACK latency of each `.tflite` in `paths`, interleaved
    (`time_interleaved`), on this machine.

    Returns:
        {path: `latency_summary` dict}.
    """
    from converters.litert.runtime import TFLiteRunner

    interpreters = []
    for i, path in enumerate(paths):
        interpreter = TFLiteRunner(path, num_threads=num_threads).interpreter
        set_random_input(interpreter, seed + i)
        interpreters.append(interpreter)
    samples = time_interleaved(interpreters, runs, warmup, seed)
    return {path: latency_summary(s) for path, s in zip(paths, samples)}


def inspect_rows(rows, output_dir, latency_runs=30, progress=print):
    """Adds to each LiteRT row of a pipeline report (its ``file`` in `output_dir`): XNNPACK
    partitions and undelegated ops, the GPU analyser's verdict and, with `latency_runs`, host
    latency (`host_latency`: every file in one interleaved loop, median ms) and its ratio to
    the float32 row's; ``slow`` when that ratio exceeds `SLOW_RATIO`. Returns `rows`."""
    files = [(row, os.path.join(output_dir, row["file"])) for row in rows
             if not row.get("error") and row["file"].endswith(".tflite")]
    for row, path in files:
        try:
            with open(path, "rb") as f:
                partitions = delegation(f.read())
            gpu = gpu_compatibility(path)
        except Exception as err:  # an analysis failure must not lose the report
            row["inspect_error"] = f"{type(err).__name__}: {err}"
            continue
        row.update(xnnpack_partitions=partitions["partitions"],
                   undelegated_ops=partitions["undelegated"], gpu_compatible=gpu["compatible"],
                   gpu_verdict=gpu["verdict"], gpu_incompatible_ops=gpu["incompatible_ops"])
    if not latency_runs or not files:
        return rows
    progress(f"    timing {len(files)} LiteRT files x {latency_runs} interleaved runs "
             "(XNNPACK, 1 thread)")
    latency = host_latency([path for _, path in files], runs=latency_runs)
    base = next((latency[path]["median_ms"] for row, path in files
                 if row["format"] == REFERENCE_FORMAT), None)
    for row, path in files:
        row["latency_ms"] = latency[path]["median_ms"]
        if base:
            row["latency_ratio"] = row["latency_ms"] / base
            row["slow"] = row["latency_ratio"] > SLOW_RATIO
    return rows
