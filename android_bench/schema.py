"""The one JSON format of every benchmark source: this host, ``adb`` + ``benchmark_model``, the
Android app and the iOS app. The report tool reads any mix of them.

A report is one run on one device::

    {
      "schema": "swiftformer-bench/1",
      "source": "host" | "adb" | "android-app" | "ios-app",
      "created": "2025-01-31T12:00:00Z",
      "device": {"name": "Pixel 7", "os": "Android 14", "cpu": "...", "abi": "arm64-v8a",
                 "cores": 8, "soc": "Tensor G2", "memory_gb": 8},
      "runtime": {"name": "LiteRT", "version": "1.4.0"},
      "settings": {"warmup_runs": 10, "runs": 50, ...},
      "results": [ {one model x backend x threads}, ... ]
    }

Each result holds the fields of `RESULT_FIELDS`; times in milliseconds, memory in MB
(2**20 bytes). ``backend`` is one of `BACKENDS`: LiteRT's ``cpu`` (built-in kernels, XNNPACK
off), ``xnnpack``, ``gpu``, ``nnapi``; Core ML's compute units by their Swift names
``cpuOnly``, ``cpuAndGPU``, ``cpuAndNeuralEngine``, ``all``. A result whose ``status`` is
``"failed"`` carries ``error`` instead of timings.

Where the work ran: a LiteRT result may carry ``delegate_coverage`` (`COVERAGE_FIELDS`: how
many nodes and partitions the backend's delegate took, from the runtime's log), a Core ML result
``compute_plan`` (`COMPUTE_PLAN_FIELDS`: operations per compute device from ``MLComputePlan``,
iOS 17.4+). The apps run exact counts: in their reports (`EXACT_COUNT_SOURCES`) every ok
result's ``warmup_runs`` and ``runs`` equal the settings' ``warmup_runs`` and ``runs``.

The report tool writes several reports as one merged file, ``{"schema": "swiftformer-bench/1",
"reports": [...]}``, and reads it back like single reports.

`json_schema()` is the same description as a JSON Schema (``swiftformer-bench schema``
prints it); `validate` is what the tools apply.
"""

import datetime
import json
import math
import os

SCHEMA = "swiftformer-bench/1"
SOURCES = ("host", "adb", "android-app", "ios-app")
LITERT_BACKENDS = ("cpu", "xnnpack", "gpu", "nnapi")
COREML_BACKENDS = ("cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all")
BACKENDS = LITERT_BACKENDS + COREML_BACKENDS
STATUSES = ("ok", "failed")
#: Problems a validation error lists (the rest are counted).
MAX_PROBLEMS = 10
#: Sources whose warm-up and timed counts are exact (checked by `validate`).
EXACT_COUNT_SOURCES = ("android-app", "ios-app")

#: ``delegate_coverage``: what the backend's delegate took (`android_bench.parse`).
COVERAGE_FIELDS = {
    "delegate": ("string", False, "the delegate kernel's name (TfLiteGpuDelegateV2, ...)"),
    "nodes": ("integer", True, "graph nodes the delegate took"),
    "total_nodes": ("integer", False, "graph nodes in all; null when the runtime does not say"),
    "partitions": ("integer", False, "pieces the graph is cut into, the CPU's included "
                                     "(1: the delegate runs it all)"),
    "delegate_kernels": ("integer", False, "partitions the delegate runs"),
    "full": ("boolean", True, "the delegate runs the whole graph"),
}
#: ``compute_plan``: Core ML's MLComputePlan of the loaded model (iOS 17.4+).
COMPUTE_PLAN_FIELDS = {
    "operations": ("integer", True, "operations of the main function, constants left out"),
    "neural_engine": ("integer", True, "operations whose preferred device is the Neural Engine"),
    "gpu": ("integer", True, "operations preferring the GPU"),
    "cpu": ("integer", True, "operations preferring the CPU"),
    "neural_engine_cost": ("number", False, "estimated share of the work (0 to 1) of the "
                                            "operations on the Neural Engine"),
    "gpu_cost": ("number", False, "estimated share of the work on the GPU"),
    "cpu_cost": ("number", False, "estimated share of the work on the CPU"),
}
#: Object fields -> their fields; array fields -> their items' type.
NESTED = {"delegate_coverage": COVERAGE_FIELDS, "compute_plan": COMPUTE_PLAN_FIELDS}
ARRAY_ITEMS = {"samples_ms": "number", "messages": "string"}

#: name -> (JSON type, required, description). Optional fields may be absent or null.
RESULT_FIELDS = {
    "model": ("string", True, "model file name"),
    "backend": ("string", True, f"one of {', '.join(BACKENDS)}"),
    "status": ("string", True, "'ok', or 'failed' with `error`"),
    "variant": ("string", False, "SwiftFormer variant: XS, S, L1, L3"),
    "format": ("string", False, "export format: float32, int8, palettize4..."),
    "threads": ("integer", False, "CPU threads (LiteRT); null: the runtime's default"),
    "init_ms": ("number", False, "model load + delegate/compute-unit setup + allocation"),
    "first_ms": ("number", False, "the first inference"),
    "warmup_mean_ms": ("number", False, "mean of the warm-up inferences (first included)"),
    "warmup_runs": ("integer", False, "number of warm-up inferences (first included)"),
    "mean_ms": ("number", False, "mean of the timed inferences; required when status is ok"),
    "median_ms": ("number", False, "median of the timed inferences"),
    "p90_ms": ("number", False, "90th percentile of the timed inferences"),
    "min_ms": ("number", False, "fastest timed inference"),
    "max_ms": ("number", False, "slowest timed inference"),
    "std_ms": ("number", False, "population standard deviation of the timed inferences"),
    "runs": ("integer", False, "number of timed inferences"),
    "init_memory_mb": ("number", False, "resident memory added by loading the model"),
    "peak_memory_mb": ("number", False, "peak resident memory added, load to last run"),
    "memory_method": ("string", False, "how memory was measured"),
    "model_size_mb": ("number", False, "model file size"),
    "delegation": ("string", False, "how much of the graph the delegate took, in words"),
    "delegate_coverage": ("object", False, "nodes and partitions the delegate took "
                                           "(COVERAGE_FIELDS)"),
    "compute_plan": ("object", False, "Core ML operations per compute device "
                                      "(COMPUTE_PLAN_FIELDS)"),
    "outputs": ("string", False, "what the model returns: 'logits', or 'classifier' (Core ML's "
                                 "label and probability dictionary, built on every call)"),
    "exit_status": ("integer", False, "exit status of the benchmark process (adb)"),
    "messages": ("array", False, "what the run printed on stderr besides INFO lines (adb)"),
    "samples_ms": ("array", False, "every timed inference, in order"),
    "error": ("string", False, "why a failed result failed"),
}
DEVICE_FIELDS = {
    "name": ("string", True, "phone model or host CPU"),
    "os": ("string", False, "operating system and version"),
    "cpu": ("string", False, "CPU description"),
    "abi": ("string", False, "Android ABI or machine architecture"),
    "soc": ("string", False, "system on chip"),
    "cores": ("integer", False, "CPU cores"),
    "memory_gb": ("number", False, "RAM"),
}
RUNTIME_FIELDS = {
    "name": ("string", True, "ai_edge_litert, LiteRT (Android), benchmark_model, Core ML"),
    "version": ("string", False, "its version"),
}


class ReportError(ValueError):
    """A benchmark JSON does not follow the schema; the message names the file and field."""


_PY_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "array": (list,),
             "object": (dict,), "boolean": (bool,)}


def _check_fields(obj, fields, where, problems):
    if not isinstance(obj, dict):
        problems.append(f"{where} must be an object, got {type(obj).__name__}")
        return
    for name, (kind, required, _) in fields.items():
        value = obj.get(name)
        if value is None:
            if required:
                problems.append(f"{where}.{name} is missing")
            continue
        if (isinstance(value, bool) != (kind == "boolean")
                or not isinstance(value, _PY_TYPES[kind])):
            article = "an" if kind[0] in "aeiou" else "a"
            problems.append(f"{where}.{name} must be {article} {kind}, got {value!r}")
        elif kind == "number" and not math.isfinite(value):
            problems.append(f"{where}.{name} must be finite, got {value!r}")
        elif name in NESTED:
            _check_fields(value, NESTED[name], f"{where}.{name}", problems)
        elif name in ARRAY_ITEMS:
            _check_items(value, ARRAY_ITEMS[name], f"{where}.{name}", problems)


def _check_items(values, kind, where, problems):
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, _PY_TYPES[kind]):
            problems.append(f"{where}[{i}] must be a {kind}, got {value!r}")
            return


def _check_counts(doc, problems):
    """The apps' results ran exactly the settings' warm-up and timed counts."""
    settings = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
    for i, result in enumerate(doc.get("results") or []):
        if not isinstance(result, dict) or result.get("status") != "ok":
            continue
        for key in ("warmup_runs", "runs"):
            wanted, ran = settings.get(key), result.get(key)
            if isinstance(wanted, int) and isinstance(ran, int) and wanted != ran:
                problems.append(f"results[{i}].{key} is {ran} but settings.{key} is {wanted}: "
                                f"{doc['source']} runs exact counts")


def validate(doc, where="report"):
    """Checks `doc` against the schema; returns it.

    Raises:
        ReportError: listing every problem, each with its JSON path.
    """
    problems = []
    if not isinstance(doc, dict):
        raise ReportError(f"{where}: a report must be a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema must be {SCHEMA!r}, got {doc.get('schema')!r}")
    if doc.get("source") not in SOURCES:
        problems.append(f"source must be one of {SOURCES}, got {doc.get('source')!r}")
    if not isinstance(doc.get("created"), str):
        problems.append("created must be an ISO 8601 date string")
    _check_fields(doc.get("device"), DEVICE_FIELDS, "device", problems)
    _check_fields(doc.get("runtime"), RUNTIME_FIELDS, "runtime", problems)
    if not isinstance(doc.get("settings", {}), dict):
        problems.append("settings must be an object")
    results = doc.get("results")
    if not isinstance(results, list):
        problems.append("results must be a list")
        results = []
    for i, result in enumerate(results):
        where_i = f"results[{i}]"
        _check_fields(result, RESULT_FIELDS, where_i, problems)
        if not isinstance(result, dict):
            continue
        if result.get("backend") not in BACKENDS:
            problems.append(f"{where_i}.backend must be one of {BACKENDS}, "
                            f"got {result.get('backend')!r}")
        status = result.get("status")
        if status not in STATUSES:
            problems.append(f"{where_i}.status must be 'ok' or 'failed', got {status!r}")
        elif status == "ok" and result.get("mean_ms") is None:
            problems.append(f"{where_i}.mean_ms is missing (required when status is 'ok')")
        elif status == "failed" and not result.get("error"):
            problems.append(f"{where_i}.error is missing (required when status is 'failed')")
    if doc.get("source") in EXACT_COUNT_SOURCES:
        _check_counts(doc, problems)
    if problems:
        more = len(problems) - MAX_PROBLEMS
        raise ReportError(f"{where} does not follow {SCHEMA}:\n  "
                          + "\n  ".join(problems[:MAX_PROBLEMS])
                          + (f"\n  ... and {more} more" if more > 0 else ""))
    return doc


def new_report(source, device, runtime, results, settings=None):
    """A report dict stamped with the schema and the current UTC time, validated."""
    doc = {
        "schema": SCHEMA,
        "source": source,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "runtime": runtime,
        "settings": settings or {},
        "results": list(results),
    }
    return validate(doc, f"{source} report")


def load_reports(paths):
    """Reads benchmark JSON files, each a single report or a merged file
    (``{"schema": ..., "reports": [...]}``, as the report tool writes). Every file is checked
    before any is used; errors name the file and the field."""
    docs = []
    for path in map(os.fspath, paths):
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except OSError as err:
            raise ReportError(f"Cannot read benchmark JSON {path}: {err.strerror or err}: "
                              "give a report file written by swiftformer-bench or an app"
                              ) from err
        except (ValueError, RecursionError) as err:  # bad JSON, not UTF-8, absurdly nested
            raise ReportError(f"{path} is not a benchmark JSON file ({type(err).__name__}: "
                              f"{err}): give a report written by swiftformer-bench or an app"
                              ) from err
        if isinstance(raw, dict) and "reports" in raw:
            if raw.get("schema") != SCHEMA or not isinstance(raw["reports"], list):
                raise ReportError(f"{path}: a merged file needs schema {SCHEMA!r} and a list "
                                  "of reports")
            docs.extend(validate(doc, f"{path}: reports[{i}]")
                        for i, doc in enumerate(raw["reports"]))
        else:
            docs.append(validate(raw, path))
    return docs


def _property(name, kind, required, description):
    if name in NESTED:
        prop = _object(NESTED[name])
        prop["type"] = "object" if required else ["object", "null"]
        prop["description"] = description
        return prop
    prop = {"type": kind if required else [kind, "null"], "description": description}
    if kind == "array":
        prop["items"] = {"type": ARRAY_ITEMS.get(name, "number")}
    return prop


def _object(fields, extra=None):
    schema = {
        "type": "object",
        "required": [name for name, (_, required, _) in fields.items() if required],
        "properties": {name: _property(name, *spec) for name, spec in fields.items()},
    }
    for name, values in (extra or {}).items():
        schema["properties"][name]["enum"] = list(values)
    return schema


def json_schema():
    """The format as a JSON Schema (draft 2020-12) document."""
    result = _object(RESULT_FIELDS, {"backend": BACKENDS, "status": STATUSES})
    result["allOf"] = [
        {"if": {"properties": {"status": {"const": "ok"}}},
         "then": {"required": ["mean_ms"], "properties": {"mean_ms": {"type": "number"}}}},
        {"if": {"properties": {"status": {"const": "failed"}}},
         "then": {"required": ["error"], "properties": {"error": {"type": "string"}}}},
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA,
        "title": "SwiftFormer benchmark report (host, adb, Android app, iOS app)",
        "type": "object",
        "required": ["schema", "source", "created", "device", "runtime", "results"],
        "properties": {
            "schema": {"const": SCHEMA},
            "source": {"enum": list(SOURCES)},
            "created": {"type": "string", "description": "ISO 8601 UTC time of the run"},
            "device": _object(DEVICE_FIELDS),
            "runtime": _object(RUNTIME_FIELDS),
            "settings": {"type": "object", "description": "the run's options, free form"},
            "results": {"type": "array", "items": result},
        },
    }
