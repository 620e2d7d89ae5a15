"""Reading the log of TFLite's ``benchmark_model`` into the schema's result fields.

The lines read (``tensorflow/lite/tools/benchmark/benchmark_model.cc``, where an ``INFO: ``
prefix is printed by newer builds and not by older ones)::

    The input model file size (MB): 14.0541
    Explicitly applied GPU delegate, and the model graph will be completely executed by ...
    Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate ...
    count=9 first=81913 curr=55502 min=55502 max=81913 avg=58984.7 std=8115
    Running benchmark for at least 50 iterations and at least 1 seconds but terminate ...
    count=50 first=5036 curr=4999 min=4950 max=5217 avg=5012.3 std=48 [p5=.. median=.. p95=..]
    Inference timings in us: Init: 3337, First inference: 81913, Warmup (avg): 58984.7, ...
    Memory footprint delta from the start of the tool (MB): init=2.43 overall=8.67
    Overall peak memory footprint (MB) via periodic monitoring: 13.1797

Older builds print ``Peak memory footprint (MB): init=.. overall=..`` (the peak resident set,
not a delta) and, before 2020, ``Average inference timings in us: Warmup: .., Init: ..,
Inference: ..``. The statistics line of a single run reads ``count=1 curr=11403859``, and of
identical runs ``count=50 curr=1234(all same)``.

LiteRT's newer CompiledModel tool (``litert/tools/benchmark_litert_model.h``) prints its own
block instead, in milliseconds, which is read too::

    Model initialization: 12.34 ms
    Warmup (first):       5.67 ms
    Warmup (avg):         4.56 ms (10 runs)
    Inference (avg):      4.12 ms (50 runs)
    Inference (min):      3.90 ms
    Inference (max):      4.80 ms
    Inference (std):      0.12
    Init footprint:       1.23 MB
    Overall footprint:    4.56 MB
    Peak memory:          7.89 MB
"""

import re

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf"
_PREFIX = r"^(?:[A-Z]+: )?"
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
    rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})")
_OLD_TIMINGS = re.compile(
    rf"Average inference timings in us: Warmup: ({_NUM}), Init: ({_NUM}), "
    rf"Inference: ({_NUM})")
_RUNNING = re.compile(rf"{_PREFIX}Running benchmark for at least (\d+) iterations")
_STAT = re.compile(rf"{_PREFIX}count=(\d+)(.*)$")
_STAT_VALUE = re.compile(rf"(\w+)=({_NUM})")
_MEMORY_DELTA = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\): init=({_NUM}) "
    rf"overall=({_NUM})")
_MEMORY_PEAK_OLD = re.compile(
    rf"^(?:[A-Z]+: )?Peak memory footprint \(MB\): init=({_NUM}) overall=({_NUM})")
_MEMORY_MONITOR = re.compile(
    rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_MODEL_SIZE = re.compile(rf"The input model file size \(MB\): ({_NUM})")
_FULL = re.compile(r"Explicitly applied (.+?) delegate, and the model graph will be "
                   r"completely executed")
_PARTIAL = re.compile(r"Explicitly applied (.+?) delegate, and the model graph will be "
                      r"partially executed by the delegate w/ (\d+) delegate kernels")
_NONE = re.compile(r"Though (.+?) delegate is explicitly applied, the model graph will not be "
                   r"executed")
#: LiteRT CompiledModel tool: key -> pattern of its summary block (values in ms and MB).
_LITERT = {
    "init_ms": re.compile(rf"Model initialization:\s+({_NUM}) ms"),
    "first_ms": re.compile(rf"Warmup \(first\):\s+({_NUM}) ms"),
    "warmup": re.compile(rf"Warmup \(avg\):\s+({_NUM}) ms \((\d+) runs\)"),
    "inference": re.compile(rf"Inference \(avg\):\s+({_NUM}) ms \((\d+) runs\)"),
    "min_ms": re.compile(rf"Inference \(min\):\s+({_NUM}) ms"),
    "max_ms": re.compile(rf"Inference \(max\):\s+({_NUM}) ms"),
    "std_ms": re.compile(rf"Inference \(std\):\s+({_NUM})"),
    "init_memory_mb": re.compile(rf"Init footprint:\s+({_NUM}) MB"),
    "overall_memory_mb": re.compile(rf"Overall footprint:\s+({_NUM}) MB"),
    "peak_memory_mb": re.compile(rf"Peak memory:\s+({_NUM}) MB"),
}
#: The runtime's line for each delegate it applies (``tensorflow/lite/core/subgraph.cc``,
#: ``ReplaceNodeSubsetsWithDelegateKernels``), on stderr. Builds before 2023 print
#: "Replacing N node(s) with delegate (NAME) node, yielding K partitions."; later ones
#: "Replacing N out of M node(s) ... yielding K partitions for the whole graph." or
#: "... for subgraph S." (TF 2.21) or "... for subgraph S (NAME)." (LiteRT 2.x). K counts every
#: piece the graph is cut into, the delegate's and the CPU's: 1 means the delegate runs it all.
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) "
                        r"node, yielding (\d+) partitions(?: for subgraph (\d+))?")
#: Backend -> what its delegate's kernel name holds (TfLiteXNNPackDelegate, TfLiteGpuDelegateV2,
#: TfLiteNnapiDelegate), lower case.
DELEGATE_NAMES = {"xnnpack": "xnnpack", "gpu": "gpu", "nnapi": "nnapi"}
_ERROR = re.compile(r"^(?:ERROR|FATAL|F\d*|E\d*)[: ]|Failed to |Benchmarking failed|"
                    r"Aborted|Segmentation fault|not found|Permission denied|CANNOT LINK")


class BenchmarkOutputError(ValueError):
    """``benchmark_model`` printed no timings; the message holds its error lines."""


def unconsumed_flags(text):
    """Flags ``benchmark_model`` did not know and ignored (its ``Unconsumed cmdline flags:``
    warning): a run asked for a backend this build lacks, and fell back to the CPU."""
    for line in text.splitlines():
        if "Unconsumed cmdline flags:" in line:
            return line.split("Unconsumed cmdline flags:", 1)[1].split()
    return []


def error_lines(text, limit=8):
    """The lines of `text` that look like errors (at most `limit`, last ones kept)."""
    lines = [line.strip() for line in text.splitlines() if _ERROR.search(line.strip())]
    return lines[-limit:]


def stderr_messages(stderr, limit=20):
    """What a run said on stderr besides its INFO lines: errors, warnings and the lines that
    continue them (the GPU delegate's list of unsupported operations). At most `limit` lines,
    the last ones kept."""
    lines = [line.strip() for line in stderr.replace("\r", "").splitlines()]
    return [line for line in lines if line and not line.startswith("INFO: ")][-limit:]


def delegate_coverage(text, backend):
    """How much of the graph `backend`'s delegate took, from a run's log (stdout and stderr).

    Reads the runtime's "Replacing N out of M node(s) with delegate (NAME) node, yielding K
    partitions" line (one per subgraph; summed) and benchmark_model's "Explicitly applied ...
    delegate" line (its delegate kernel count: the partitions the delegate runs).

    Returns:
        None for ``cpu`` or when the log says nothing about the delegate; else a dict:
        ``delegate`` (kernel name), ``nodes`` (taken), ``total_nodes`` (None when the build
        does not print it), ``partitions`` (pieces the graph is cut into, the CPU's included),
        ``delegate_kernels`` (None when not printed) and ``full`` (the delegate runs the whole
        graph).
    """
    wanted = DELEGATE_NAMES.get(backend)
    if wanted is None:
        return None
    per_subgraph = {}
    for match in _REPLACING.finditer(text.replace("\r", "")):
        nodes, total, name, partitions, subgraph = match.groups()
        if wanted in name.lower():
            per_subgraph.setdefault(subgraph, (name, int(nodes), total and int(total),
                                               int(partitions)))
    found = {}
    for line in text.splitlines():
        for key, pattern in (("full", _FULL), ("partial", _PARTIAL), ("none", _NONE)):
            match = pattern.search(line)
            if match and wanted in match.group(1).lower():
                found[key] = match.groups()
    if not per_subgraph and not found:
        return None
    kernels = (1 if "full" in found else int(found["partial"][1]) if "partial" in found
               else 0 if "none" in found else None)
    coverage = {"delegate": None, "nodes": 0, "total_nodes": None, "partitions": None,
                "delegate_kernels": kernels}
    if per_subgraph:
        entries = list(per_subgraph.values())
        totals = [e[2] for e in entries]
        coverage.update(delegate=entries[0][0], nodes=sum(e[1] for e in entries),
                        total_nodes=None if None in totals else sum(totals),
                        partitions=sum(e[3] for e in entries))
        full = all(e[3] == 1 for e in entries)
    else:
        full = "full" in found
    coverage["full"] = bool(full) and "partial" not in found and "none" not in found
    return coverage


def _stat(rest, count):
    values = {key: float(value) for key, value in _STAT_VALUE.findall(rest)}
    if "avg" not in values and "curr" in values:  # a single run, or all runs alike
        values.update(min=values["curr"], max=values["curr"], avg=values["curr"], std=0.0)
    values["count"] = count
    return values


def _ms(us):
    return None if us is None else us / 1000.0


def _parse_litert_block(text):
    """The CompiledModel tool's summary -> result fields, or None if `text` has none."""
    found = {}
    for line in text.splitlines():
        for key, pattern in _LITERT.items():
            match = pattern.search(line)
            if match:
                found[key] = match.groups()
    if "inference" not in found:
        return None
    result = {key: float(found[key][0]) for key in
              ("init_ms", "first_ms", "min_ms", "max_ms", "std_ms", "init_memory_mb")
              if key in found}
    result.update(mean_ms=float(found["inference"][0]), runs=int(found["inference"][1]))
    if "warmup" in found:
        result.update(warmup_mean_ms=float(found["warmup"][0]),
                      warmup_runs=int(found["warmup"][1]))
    if "peak_memory_mb" in found:
        result.update(peak_memory_mb=float(found["peak_memory_mb"][0]),
                      memory_method="benchmark_model (LiteRT): peak via periodic monitoring")
    elif "overall_memory_mb" in found:
        result.update(peak_memory_mb=float(found["overall_memory_mb"][0]),
                      memory_method="benchmark_model (LiteRT): footprint delta after the runs")
    return result


def parse_benchmark_output(text):
    """``benchmark_model``'s log -> result fields (`android_bench.schema.RESULT_FIELDS`).

    Returns:
        dict with ``init_ms``, ``first_ms``, ``warmup_mean_ms``, ``warmup_runs``,
        ``mean_ms``, ``min_ms``, ``max_ms``, ``std_ms``, ``runs`` and, when printed,
        ``median_ms``, ``init_memory_mb``, ``peak_memory_mb``, ``memory_method``,
        ``model_size_mb``, ``delegation``.

    Raises:
        BenchmarkOutputError: no timings line (the run failed); the message quotes the
            log's error lines, or its last lines.
    """
    lines = [line.rstrip("\r") for line in text.splitlines()]
    found = {}
    stats, expecting = [], 0
    for line in lines:
        line = line.strip()
        if _RUNNING.search(line):
            expecting += 1
            continue
        match = _STAT.search(line)
        if match and expecting > len(stats):
            stats.append(_stat(match.group(2), int(match.group(1))))
        for key, pattern in (("timings", _TIMINGS), ("old_timings", _OLD_TIMINGS),
                             ("delta", _MEMORY_DELTA), ("peak_old", _MEMORY_PEAK_OLD),
                             ("monitor", _MEMORY_MONITOR), ("size", _MODEL_SIZE),
                             ("full", _FULL), ("partial", _PARTIAL), ("none", _NONE)):
            match = pattern.search(line)
            if match:
                found[key] = match.groups()
    if "timings" in found:
        init, first, warmup, inference = (float(v) for v in found["timings"])
    elif "old_timings" in found:
        warmup, init, inference = (float(v) for v in found["old_timings"])
        first = stats[0].get("first", stats[0].get("curr")) if stats else None
    else:
        litert = _parse_litert_block(text)
        if litert is not None:
            return litert
        errors = error_lines(text) or [line for line in lines if line.strip()][-8:]
        raise BenchmarkOutputError(
            "benchmark_model printed no 'Inference timings' line:\n  " + "\n  ".join(errors))
    result = {"init_ms": _ms(init), "first_ms": _ms(first), "warmup_mean_ms": _ms(warmup),
              "mean_ms": _ms(inference)}
    if stats:
        result["warmup_runs"] = int(stats[0]["count"])
    if len(stats) >= 2:
        timed = stats[1]
        result.update(runs=int(timed["count"]), min_ms=_ms(timed.get("min")),
                      max_ms=_ms(timed.get("max")), std_ms=_ms(timed.get("std")))
        if "median" in timed:
            result["median_ms"] = _ms(timed["median"])
    if "monitor" in found:
        result.update(peak_memory_mb=float(found["monitor"][0]),
                      memory_method="benchmark_model: peak via periodic monitoring")
        if "delta" in found:
            result["init_memory_mb"] = float(found["delta"][0])
    elif "delta" in found:
        result.update(init_memory_mb=float(found["delta"][0]),
                      peak_memory_mb=float(found["delta"][1]),
                      memory_method="benchmark_model: footprint delta from the tool's start, "
                                    "after the runs")
    elif "peak_old" in found:
        result.update(init_memory_mb=float(found["peak_old"][0]),
                      peak_memory_mb=float(found["peak_old"][1]),
                      memory_method="benchmark_model: peak memory footprint (max RSS)")
    if "size" in found:
        result["model_size_mb"] = float(found["size"][0]) * 1e6 / 2**20
    if "full" in found:
        result["delegation"] = f"{found['full'][0]}: whole graph"
    elif "partial" in found:
        result["delegation"] = f"{found['partial'][0]}: {found['partial'][1]} delegate kernels"
    elif "none" in found:
        result["delegation"] = f"{found['none'][0]}: no nodes"
    return result
