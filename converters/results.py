"""Typed results of a conversion: one `FormatResult` per converted format, one `RunInfo` per run,
both in a `Report` that is written as ``report.json`` with a schema and a version.

The report, its plot, the model card and ``swiftformer-convert report --accuracy`` all read the
same `Report`. ``report.json``::

    {"schema": "swiftformer-convert-report", "version": 1,
     "info": {RunInfo}, "labels": ["tench", ...], "formats": [{FormatResult}, ...]}

Numbers that may be infinite (an SQNR of identical outputs) are written as the strings
``"inf"`` / ``"-inf"`` / ``"nan"`` so that the file stays strict JSON. `json_schema` is the
same description as a JSON Schema; `validate` applies it with one-line errors. Pure Python: no
TensorFlow here.
"""

import dataclasses
import json
import math
import os

SCHEMA = "swiftformer-convert-report"
SCHEMA_VERSION = 1
REPORT_JSON = "report.json"
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class ReportError(ValueError):
    """A report.json that does not follow the schema; one line naming the field and the fix."""


def _f(doc, default=None, items=None):
    """A dataclass field with its description (and the JSON type of a list's items)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "items": items})


@dataclasses.dataclass
class Fidelity:
    """A file's outputs against the Keras float32 model's (`converters.metrics.fidelity`)."""

    sqnr_db: float = _f("signal-to-quantisation-noise ratio of the logits, dB (inf: equal)")
    max_abs_error: float = _f("largest absolute logit error")
    max_rel_error: float = _f("largest absolute error / largest |reference logit|")
    top1_agreement: float = _f("fraction of images with the reference's top-1 class")
    top5_agreement: float = _f("fraction of images whose top-1 is in the reference's top 5")
    images: int = _f("evaluation images compared (never used for calibration)")


@dataclasses.dataclass
class LiteRTInspection:
    """What the file's graph looks like to LiteRT's CPU delegate and GPU analyser
    (`converters.litert.inspection`)."""

    xnnpack_partitions: int = _f("pieces the XNNPACK delegate runs (1: the whole graph)")
    undelegated_ops: dict = _f("op type -> count of the ops XNNPACK leaves to LiteRT's kernels")
    gpu_compatible: bool = _f("the offline GPU analyser's verdict")
    gpu_verdict: str = _f("the analyser's words")
    gpu_incompatible_ops: dict = _f("op type -> the analyser's reason")
    error: str = _f("why the inspection failed")


@dataclasses.dataclass
class HostLatency:
    """LiteRT + XNNPACK on the converting machine (`RunInfo.latency` says how)."""

    median_ms: float = _f("median time of one inference, ms")
    ratio: float = _f("median_ms / the float32 file's")
    slow: bool = _f("ratio above the slow threshold: slow kernels run part of the graph")


GPU_STATES = ("full", "partial", "failed", "not run")


@dataclasses.dataclass
class GpuRun:
    """The file on LiteRT's GPU engine (`converters.litert.gpu`)."""

    status: str = _f(f"one of {', '.join(GPU_STATES)}")
    cpu_ops: list = _f("op types the engine left to the CPU", items="string")
    sqnr_db: float = _f("SQNR (dB) of its logits against the CPU run of the float32 file")
    top1_agreement: float = _f("top-1 agreement with that run")
    ms: float = _f("median ms per image on the adapter")
    adapter: str = _f("the device the engine picked")
    software: bool = _f("the adapter runs on the CPU (its times are not a GPU's)")
    error: str = _f("why it failed or did not run")


@dataclasses.dataclass
class MediaPipeCheck:
    """Whether MediaPipe Tasks' ImageClassifier opens the file (`converters.litert.metadata`)."""

    ok: bool = _f("it opens")
    reason: str = _f("why not")


@dataclasses.dataclass
class CoreMLOps:
    """The Core ML program's non-constant operations (`converters.coreml.op_summary`)."""

    count: int = _f("non-constant MIL operations")
    transposes: int = _f("transpose operations")
    histogram: dict = _f("op type -> count, most frequent first")


@dataclasses.dataclass
class Accuracy:
    """Labelled accuracy from ``swiftformer-eval --json`` (fractions, not percent)."""

    top1: float = _f("top-1 accuracy")
    top5: float = _f("top-5 accuracy")
    images: int = _f("labelled images")
    dataset: str = _f("what was evaluated")


@dataclasses.dataclass
class Compression:
    """What QAT, pruning and clustering add (`converters.compress`)."""

    steps: int = _f("fine-tuning steps")
    baseline: str = _f("the post-training format a QAT row started from and may replace")
    start_sqnr_db: float = _f("SQNR of the QAT's post-training int8 start")
    start_top1_agreement: float = _f("top-1 agreement of that start")
    overall_sparsity: float = _f("fraction of zero weights after pruning")
    kernel_sparsity: float = _f("fraction of zeros in the file's kernels")
    depthwise_sparsity: float = _f("fraction of zeros in its depthwise kernels")
    kernels: int = _f("kernels counted")
    m_by_n_kernels: int = _f("kernels with an m:n sparsity pattern")
    max_unique_per_channel: int = _f("most distinct values in one output channel")


@dataclasses.dataclass
class FormatResult:
    """One converted format: its file, how close and how fast it is, where it runs.

    A failed format has ``error`` and no file; the other parts are None when not measured.
    """

    format: str = _f("format name (`converters.formats`), e.g. int8, coreml_float16")
    file: str = _f("file name in the output folder")
    runtime: str = _f("the target runtime that runs the file: litert or coreml")
    graph: str = _f("the graph it was converted from: folded or keras")
    size_bytes: int = _f("file (or .mlpackage folder) size")
    zip_bytes: int = _f("size deflated as in a zip archive (compressed formats)")
    fidelity: Fidelity = _f("outputs against the Keras float32 model")
    litert: LiteRTInspection = _f("LiteRT delegation and GPU analyser")
    latency: HostLatency = _f("host latency (LiteRT + XNNPACK)")
    gpu: GpuRun = _f("the run on LiteRT's GPU engine")
    mediapipe: MediaPipeCheck = _f("MediaPipe Tasks' ImageClassifier check")
    coreml_ops: CoreMLOps = _f("the Core ML program's operations")
    accuracy: Accuracy = _f("labelled accuracy (swiftformer-convert report --accuracy)")
    compression: Compression = _f("QAT / pruning / clustering details")
    note: str = _f("one line for the reader (e.g. whether QAT pays off)")
    error: str = _f("why the format failed (then there is no file)")

    @property
    def ok(self):
        """Converted and measured without error."""
        return not self.error


@dataclasses.dataclass
class RunInfo:
    """What one conversion run converted, with what, and how it measured."""

    checkpoint: str = _f("what the user gave (a path, tag, hf:// address) or 'none (random weights)'")
    source: str = _f("where the weights came from (an hf:// address pinned to its commit...)")
    format_in: str = _f("the checkpoint's format (official, timm, hf, keras...)")
    trained_from: str = _f("for a .keras model, the source its model.json names")
    hub_repo: str = _f("the Hugging Face Hub repository the weights came from (ORG/REPO)")
    hub_revision: str = _f("its commit")
    random_weights: bool = _f("no checkpoint: the weights are random")
    license: str = _f("the licence given to the conversion")
    variant: str = _f("XS, S, L1, L3 or CUSTOM")
    token_weighting: str = _f("the attention's token weighting: l2 or ones")
    input_shape: list = _f("the files' input (H, W, C)", items="integer")
    num_classes: int = _f("outputs of the classifier")
    labels_source: str = _f("where the class names came from (a file, model.json, ImageNet, generated)")
    crop_pct: float = _f("evaluation transform: the centre crop's fraction")
    crop_mode: str = _f("evaluation transform: center or squash")
    interpolation: str = _f("evaluation transform: the resize filter")
    tflite_graph: str = _f("the graph LiteRT formats came from: folded or keras")
    calibration_images: int = _f("images the integer formats calibrated on")
    evaluation_images: int = _f("images every format was compared on")
    image_source: str = _f("where those images came from")
    synthetic_images: bool = _f("generated images, not photos")
    skipped_images: str = _f("image files left out, and why")
    latency: str = _f("how host latency was measured")
    gpu_engine: str = _f("what ran the GPU engine column")
    accuracy: Accuracy = _f("the Keras float model's labelled accuracy")
    versions: str = _f("Keras, TensorFlow and runtime versions")
    created: str = _f("ISO 8601 UTC time of the run")
    run_id: str = _f("the output folder's run id (`converters.output`)")


@dataclasses.dataclass
class Report:
    """A run's `RunInfo`, its class names and one `FormatResult` per format, in order."""

    info: RunInfo = dataclasses.field(default_factory=RunInfo)
    formats: list = dataclasses.field(default_factory=list)
    labels: list = None

    def to_json(self):
        """The ``report.json`` document (a dict of JSON types only)."""
        return {"schema": SCHEMA, "version": SCHEMA_VERSION, "info": _to_json(self.info),
                "labels": None if self.labels is None else list(self.labels),
                "formats": [_to_json(row) for row in self.formats]}

    @classmethod
    def from_json(cls, doc, where=REPORT_JSON):
        """A `Report` of a ``report.json`` document; `ReportError` unless it validates."""
        validate(doc, where)
        return cls(info=_from_json(RunInfo, doc["info"]), labels=doc.get("labels"),
                   formats=[_from_json(FormatResult, row) for row in doc["formats"]])

    def row(self, fmt):
        """The `FormatResult` of format `fmt`, or None."""
        return next((r for r in self.formats if r.format == fmt), None)

def _to_json(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if getattr(obj, f.name) is not None}
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    return obj


def _from_json(cls, doc):
    values = {}
    for f in dataclasses.fields(cls):
        value = doc.get(f.name)
        if value is not None and dataclasses.is_dataclass(f.type):
            value = _from_json(f.type, value)
        elif f.type is float and isinstance(value, str):
            value = _NON_FINITE[value]
        values[f.name] = value
    return cls(**values)


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object",
               list: "array"}
_PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
             "object": dict, "array": list}


def _check(value, kind, where, problems, items=None):
    if dataclasses.is_dataclass(kind):
        _check_object(value, kind, where, problems)
        return
    name = _JSON_TYPES[kind]
    if kind is float and isinstance(value, str) and value in _NON_FINITE:
        return
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, _PY_TYPES[name]):
        problems.append(f"{where} must be {'an' if name[0] in 'aeiou' else 'a'} {name}, got "
                        f"{value!r:.60}")
    elif items:
        bad = [i for i, v in enumerate(value)
               if isinstance(v, bool) or not isinstance(v, _PY_TYPES[items])]
        if bad:
            problems.append(f"{where}[{bad[0]}] must be a {items}, got {value[bad[0]]!r:.60}")


def _check_object(doc, cls, where, problems):
    if not isinstance(doc, dict):
        problems.append(f"{where} must be an object, got {type(doc).__name__}")
        return
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in doc:
        if key not in fields:
            problems.append(f"{where}.{key} is not a field of {cls.__name__}")
    for name, f in fields.items():
        if doc.get(name) is not None:
            _check(doc[name], f.type, f"{where}.{name}", problems, f.metadata.get("items"))


def validate(doc, where=REPORT_JSON):
    """Checks a ``report.json`` document against the schema; returns it.

    Raises:
        ReportError: one line naming the first problem (and how many more), and the fix.
    """
    if not isinstance(doc, dict):
        raise ReportError(f"{where} must hold a JSON object, got {type(doc).__name__}: give "
                          "the report.json a conversion wrote")
    if doc.get("schema") != SCHEMA:
        raise ReportError(f"{where} is not a swiftformer-convert report (schema "
                          f"{doc.get('schema')!r}, not {SCHEMA!r}): give the report.json a "
                          "conversion wrote")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ReportError(f"{where} has no valid version ({version!r}): convert again")
    if version > SCHEMA_VERSION:
        raise ReportError(f"{where} is report version {version}, newer than this keras-"
                          f"swiftformer reads ({SCHEMA_VERSION}): upgrade keras-swiftformer")
    problems = [f"{key} is not a report field" for key in doc
                if key not in ("schema", "version", "info", "labels", "formats")]
    _check_object(doc.get("info"), RunInfo, "info", problems)
    if doc.get("labels") is not None:
        _check(doc["labels"], list, "labels", problems, items="string")
    formats = doc.get("formats")
    if not isinstance(formats, list):
        problems.append("formats must be a list")
        formats = []
    for i, row in enumerate(formats):
        _check_object(row, FormatResult, f"formats[{i}]", problems)
        if isinstance(row, dict) and not isinstance(row.get("format"), str):
            problems.append(f"formats[{i}].format is missing")
        gpu = row.get("gpu") if isinstance(row, dict) else None
        if isinstance(gpu, dict) and gpu.get("status") not in GPU_STATES + (None,):
            problems.append(f"formats[{i}].gpu.status must be one of {GPU_STATES}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ReportError(f"{where} does not follow {SCHEMA} version {SCHEMA_VERSION}: "
                          f"{problems[0]}{more}: convert again or fix the file")
    return doc


def _schema_of(cls):
    properties = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            prop = _schema_of(f.type)
        elif f.type is float:
            prop = {"anyOf": [{"type": "number"}, {"enum": list(_NON_FINITE)}]}
        else:
            prop = {"type": _JSON_TYPES[f.type]}
            if f.metadata.get("items"):
                prop["items"] = {"type": f.metadata["items"]}
        doc = f.metadata.get("doc")
        properties[f.name] = {**prop, **({"description": doc} if doc else {})}
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "description": (cls.__doc__ or "").strip().split("\n")[0]}


def json_schema():
    """``report.json`` as a JSON Schema (draft 2020-12) document, generated from the
    dataclasses (`validate` applies the same rules)."""
    row = _schema_of(FormatResult)
    row["required"] = ["format"]
    row["properties"]["gpu"]["properties"]["status"]["enum"] = list(GPU_STATES)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA}/{SCHEMA_VERSION}",
        "title": "SwiftFormer conversion report (swiftformer-convert)",
        "type": "object", "additionalProperties": False,
        "required": ["schema", "version", "info", "formats"],
        "properties": {
            "schema": {"const": SCHEMA},
            "version": {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION},
            "info": _schema_of(RunInfo),
            "labels": {"type": ["array", "null"], "items": {"type": "string"},
                       "description": "class names in output order"},
            "formats": {"type": "array", "items": row},
        },
    }


def save(report, path):
    """Writes `report` (a `Report`) to `path` as strict JSON, atomically; returns `path`."""
    from keras_swiftformer.files import atomic_output

    doc = validate(report.to_json(), os.fspath(path))
    text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False)
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    return path


def load(path):
    """The `Report` of a ``report.json`` file (or of the folder holding one).

    Raises:
        ReportError: unreadable, not JSON, not this schema, or a newer version (one line).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, REPORT_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ReportError(f"{path} not found: give the output folder of a conversion") from None
    except OSError as err:
        raise ReportError(f"Cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise ReportError(f"{path} is not valid JSON ({err}): convert again") from None
    if isinstance(doc, dict) and "schema" not in doc and "formats" in doc and "info" in doc:
        return as_report(doc["info"], doc["formats"])  # an earlier, unversioned report
    return Report.from_json(doc, path)


#: Flat row key of earlier reports and of the pipeline's dict rows -> (part, field).
FLAT_KEYS = {
    "format": (None, "format"), "file": (None, "file"), "runtime": (None, "runtime"),
    "graph": (None, "graph"),
    "size_bytes": (None, "size_bytes"), "zip_bytes": (None, "zip_bytes"),
    "note": (None, "note"), "error": (None, "error"),
    "evaluation_images": ("fidelity", "images"), "max_abs_error": ("fidelity", "max_abs_error"),
    "max_rel_error": ("fidelity", "max_rel_error"), "sqnr_db": ("fidelity", "sqnr_db"),
    "top1_agreement": ("fidelity", "top1_agreement"),
    "top5_agreement": ("fidelity", "top5_agreement"),
    "xnnpack_partitions": ("litert", "xnnpack_partitions"),
    "undelegated_ops": ("litert", "undelegated_ops"),
    "gpu_compatible": ("litert", "gpu_compatible"), "gpu_verdict": ("litert", "gpu_verdict"),
    "gpu_incompatible_ops": ("litert", "gpu_incompatible_ops"),
    "inspect_error": ("litert", "error"),
    "latency_ms": ("latency", "median_ms"), "latency_ratio": ("latency", "ratio"),
    "slow": ("latency", "slow"),
    "gpu": ("gpu", "status"), "gpu_cpu_ops": ("gpu", "cpu_ops"), "gpu_ms": ("gpu", "ms"),
    "gpu_sqnr_db": ("gpu", "sqnr_db"), "gpu_top1_agreement": ("gpu", "top1_agreement"),
    "gpu_adapter": ("gpu", "adapter"), "gpu_software": ("gpu", "software"),
    "gpu_error": ("gpu", "error"),
    "mediapipe": ("mediapipe", "ok"), "mediapipe_reason": ("mediapipe", "reason"),
    "top1": ("accuracy", "top1"), "top5": ("accuracy", "top5"),
    **{name: ("compression", name) for name in (f.name for f in dataclasses.fields(Compression))},
}


def from_flat(row):
    """A `FormatResult` of a flat dict row (`FLAT_KEYS`; ``coreml_ops`` an `op_summary` dict).

    Raises:
        ReportError: a key that has no place in a `FormatResult` (so nothing is lost silently).
    """
    if isinstance(row, FormatResult):
        return row
    if not isinstance(row, dict):
        raise ReportError(f"a report row is a FormatResult or a dict, not {type(row).__name__}")
    parts, top = {}, {}
    for key, value in row.items():
        if key == "coreml_ops":
            top[key] = value if value is None or isinstance(value, CoreMLOps) \
                else CoreMLOps(**value)
            continue
        if key not in FLAT_KEYS:
            raise ReportError(f"report row key {key!r} has no field in FormatResult: add one "
                              "to converters/results.py")
        part, name = FLAT_KEYS[key]
        if key == "gpu_cpu_ops" and isinstance(value, str):
            value = [op for op in value.split(", ") if op]
        if part is None:
            top[name] = value
        else:
            parts.setdefault(part, {})[name] = value
    types = {f.name: f.type for f in dataclasses.fields(FormatResult)}
    return FormatResult(**top, **{part: types[part](**values) for part, values in parts.items()})


def to_flat(result):
    """The flat dict row (`FLAT_KEYS`) of a `FormatResult`; None values left out."""
    row = {}
    for key, (part, name) in FLAT_KEYS.items():
        holder = result if part is None else getattr(result, part)
        value = None if holder is None else getattr(holder, name)
        if value is not None:
            row[key] = ", ".join(value) if key == "gpu_cpu_ops" else value
    if result.coreml_ops is not None:
        row["coreml_ops"] = dataclasses.asdict(result.coreml_ops)
    return row


def info_from_flat(info):
    """A `RunInfo` of the pipeline's ``info`` dict (a `RunInfo` is returned as it is).

    Raises:
        ReportError: a key with no field in `RunInfo`.
    """
    if isinstance(info, RunInfo):
        return info
    if not isinstance(info, dict):
        raise ReportError(f"run info is a RunInfo or a dict, not {type(info).__name__}")
    names = {f.name for f in dataclasses.fields(RunInfo)}
    unknown = sorted(set(info) - names)
    if unknown:
        raise ReportError(f"run info keys {unknown} have no field in RunInfo: add them to "
                          "converters/results.py")
    values = dict(info)
    if isinstance(values.get("accuracy"), dict):
        values["accuracy"] = Accuracy(**values["accuracy"])
    elif isinstance(values.get("accuracy"), str):  # earlier reports: a sentence, dropped
        values["accuracy"] = None
    if values.get("input_shape") is not None:
        values["input_shape"] = list(values["input_shape"])
    return RunInfo(**values)


def as_report(info, rows, labels=None):
    """A `Report` of a `RunInfo` or info dict and `FormatResult` or flat dict rows.

    Raises:
        ReportError: a row or info that is not a dict, or a key with no field.
    """
    return Report(info=info_from_flat(info), formats=[from_flat(r) for r in rows],
                  labels=None if labels is None else [str(x) for x in labels])

