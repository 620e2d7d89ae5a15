"""`.tflite` files on LiteRT's GPU engine, for real, with or without a GPU.

``ai-edge-litert`` ships ML Drift over WebGPU (Dawn on Vulkan), reached through
``ai_edge_litert.compiled_model.CompiledModel`` with the GPU accelerator. Where no GPU exists,
SwiftShader (a Vulkan implementation on the CPU; Debian's ``chromium-common`` package installs
it) stands in: the same shaders run, slowly, so accelerated-or-not and the GPU's numbers are
checked without a phone.

- `vulkan_icd`: the Vulkan driver (ICD manifest) to use: ``VK_ICD_FILENAMES`` /
  ``VK_DRIVER_FILES`` when set, else a real GPU's, else SwiftShader's, else None.
- `run_gpu`: one file on the GPU engine, in a child process (``python -m
  converters.litert.gpu``): the Vulkan variables must be set before the engine loads, and a crash
  of the native engine becomes the result's ``error`` instead of ending the caller.
- `gpu_rows`: GPU columns for the LiteRT rows of the pipeline's report, against the CPU float32
  file's logits on the same images.

Which ops stayed on the CPU comes from the engine's log ("Following operations are not
supported by GPU delegate: OP: reason"); when a partly accelerated file's log names none, the
GPU-delegate analyser's incompatible ops (`converters.litert.inspection.gpu_compatibility`) that the
file contains stand in, and ``cpu_ops_method`` says so.
"""

import dataclasses
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from converters.formats import REFERENCE_FORMAT

#: The environment variables naming Vulkan ICD manifests (the loader's current and older name).
ICD_VARIABLES = ("VK_DRIVER_FILES", "VK_ICD_FILENAMES")
#: Folders holding Vulkan ICD manifests of installed drivers (the loader's search path, and the
#: NVIDIA container toolkit's).
ICD_DIRS = ("/etc/vulkan/icd.d", "/usr/local/etc/vulkan/icd.d", "/usr/share/vulkan/icd.d",
            "/usr/local/share/vulkan/icd.d", "/usr/local/nvidia/share/vulkan/icd.d")
#: SwiftShader's manifest where browsers install it (Debian/Ubuntu/Fedora Chromium, Google
#: Chrome, the Chromium snap, Playwright's download); globs.
SWIFTSHADER_ICDS = (
    "/usr/lib/chromium/vk_swiftshader_icd.json",
    "/usr/lib/chromium-browser/vk_swiftshader_icd.json",
    "/usr/lib64/chromium-browser/vk_swiftshader_icd.json",
    "/opt/google/chrome/vk_swiftshader_icd.json",
    "/opt/google/chrome-*/vk_swiftshader_icd.json",
    "/snap/chromium/current/usr/lib/chromium-browser/vk_swiftshader_icd.json",
    "~/.cache/ms-playwright/chromium*/chrome-linux*/vk_swiftshader_icd.json",
)
#: Manifest names of CPU Vulkan drivers: never taken for a GPU (Mesa's lavapipe is also refused
#: by Dawn: it lacks shaderUniform*ArrayDynamicIndexing).
SOFTWARE_ICD_NAMES = ("lvp_", "swiftshader", "mock_icd")
#: Accelerated values of a result: all ops on the GPU, some, none (the engine failed), or the
#: engine was not started.
STATES = ("full", "partial", "failed", "not run")
NO_DEVICE = "not run: no Vulkan device"
#: Seconds a child may take per file: SwiftShader compiles every kernel on the CPU first.
DEFAULT_TIMEOUT = 900


@dataclasses.dataclass
class GpuResult:
    """One file on the GPU engine (`run_gpu`).

    Attributes:
        accelerated: one of `STATES`.
        cpu_ops: {op type: the engine's reason} of the ops left to the CPU.
        cpu_ops_method: where `cpu_ops` comes from: "engine log" or "analyser".
        gpu_op_count, cpu_op_count: nodes on the GPU and the CPU, as the engine logs them (None
            when fully accelerated: it logs nothing then).
        logits: (N, K) float32, dequantised for an integer output; None without a run.
        adapter: the device the engine picked, e.g. "SwiftShader Device (Subzero)".
        adapter_type: its type as Dawn names it ("CPU / Software", "Discrete GPU", ...).
        software: the adapter runs on the CPU (timings are not a GPU's).
        ms_per_image: median of the timed inferences (`samples_ms`).
        samples_ms: each timed inference (one batch of the model), per image.
        first_ms: the first inference (a warm-up, untimed in `samples_ms`).
        compile_ms: `CompiledModel.from_file` (graph partition, shader compilation).
        icd: the Vulkan ICD manifest the child process was given.
        error: why it failed or did not run; None when it ran.
        log: the engine's log lines worth keeping (adapter, op placement, errors).
    """

    accelerated: str
    cpu_ops: dict = dataclasses.field(default_factory=dict)
    cpu_ops_method: str = "engine log"
    gpu_op_count: int = None
    cpu_op_count: int = None
    logits: np.ndarray = None
    adapter: str = None
    adapter_type: str = None
    software: bool = None
    ms_per_image: float = None
    samples_ms: list = None
    first_ms: float = None
    compile_ms: float = None
    icd: str = None
    error: str = None
    log: list = dataclasses.field(default_factory=list)

    def summary(self):
        """The result without logits, JSON-ready."""
        fields = dataclasses.asdict(self)
        fields.pop("logits")
        return fields


def _icd_library_exists(manifest):
    """Whether the driver library a manifest names is there (relative paths are relative to
    the manifest; a bare name is left to the loader's library search)."""
    try:
        with open(manifest) as f:
            library = json.load(f)["ICD"]["library_path"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if os.sep not in library:
        return True
    return os.path.exists(os.path.join(os.path.dirname(manifest), library))


def is_software(icd):
    """Whether the Vulkan ICD manifest(s) `icd` (`vulkan_icd`) are all CPU implementations
    (SwiftShader, lavapipe): runs there take seconds per 224² image, so callers pass fewer,
    smaller images."""
    return all(any(name in os.path.basename(manifest).lower() for name in SOFTWARE_ICD_NAMES)
               for manifest in icd.split(os.pathsep) if manifest)


def _has_gpu_device(manifest):
    """Whether the kernel device a hardware ICD drives exists: NVIDIA's driver nodes for
    NVIDIA manifests, a DRM render node for the others (Mesa installs manifests for GPUs a
    machine may not have)."""
    if "nvidia" in os.path.basename(manifest).lower():
        return os.path.exists("/dev/nvidiactl") or bool(glob.glob("/dev/nvidia[0-9]*"))
    return bool(glob.glob("/dev/dri/renderD*"))


def hardware_icds():
    """Manifests of installed GPU drivers whose device exists, NVIDIA's first."""
    dirs = list(ICD_DIRS)
    for variable, default in (("XDG_CONFIG_DIRS", "/etc/xdg"),
                              ("XDG_DATA_DIRS", "/usr/local/share:/usr/share")):
        dirs += [os.path.join(d, "vulkan", "icd.d")
                 for d in os.environ.get(variable, default).split(os.pathsep) if d]
    found = []
    for folder in dict.fromkeys(dirs):
        for manifest in sorted(glob.glob(os.path.join(folder, "*.json"))):
            if (not is_software(manifest) and _icd_library_exists(manifest)
                    and _has_gpu_device(manifest) and manifest not in found):
                found.append(manifest)
    return sorted(found, key=lambda m: "nvidia" not in os.path.basename(m).lower())


def swiftshader_icd():
    """SwiftShader's manifest from `SWIFTSHADER_ICDS` whose library is there, else None."""
    for pattern in SWIFTSHADER_ICDS:
        for manifest in sorted(glob.glob(os.path.expanduser(pattern))):
            if _icd_library_exists(manifest):
                return manifest
    return None


def vulkan_icd(environ=None):
    """The Vulkan ICD manifest(s) for the GPU engine (the value of ``VK_ICD_FILENAMES``), or
    None when there is no Vulkan device.

    In order: ``VK_DRIVER_FILES`` / ``VK_ICD_FILENAMES`` when set (their existing files; set
    to an empty or missing path, they mean no device: a way to turn the GPU runs off); the
    real GPUs' drivers (`hardware_icds`, joined by ``os.pathsep``: the loader loads those
    whose device answers and Dawn picks the best adapter); SwiftShader (`swiftshader_icd`).
    """
    environ = os.environ if environ is None else environ
    for variable in ICD_VARIABLES:
        if variable in environ:
            files = [p for p in environ[variable].split(os.pathsep) if os.path.isfile(p)]
            return os.pathsep.join(files) or None
    return os.pathsep.join(hardware_icds()) or swiftshader_icd()


_ADAPTER = re.compile(r"Selected adapter: ([^,]+)(.*)")
_ADAPTER_TYPE = re.compile(r"adapterType=([^,]+)")
_UNSUPPORTED_HEAD = "Following operations are not supported by GPU delegate"
_UNSUPPORTED_OP = re.compile(r"^([A-Z][A-Z0-9_]*): (.+)$")
_PLACEMENT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) "
                        r"operations will run on the CPU")
_KEEP = re.compile(r"Selected adapter|not supported|operations will run|ERROR|Failed|"
                   r"failed|Warning: Vulkan|No adapters|Check failed|Some ops")
#: The absl / glog prefix of a line (severity, date, time, thread id).
_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ")
#: Lines of the engine's start-up that do not concern the GPU run (other accelerators' plugins).
_NOISE = re.compile(r"openvino|OpenCL|npu_registry|NPU accelerator", re.IGNORECASE)


def parse_engine_log(text):
    """The GPU engine's log -> {"adapter", "adapter_type", "software", "cpu_ops", "gpu_op_count",
    "cpu_op_count", "log"} (None / empty where the log does not say)."""
    found = {"adapter": None, "adapter_type": None, "software": None, "cpu_ops": {},
             "gpu_op_count": None, "cpu_op_count": None, "log": []}
    listing = False
    for line in text.splitlines():
        stripped = line.strip()
        adapter = _ADAPTER.search(stripped)
        if adapter:
            found["adapter"] = adapter[1].strip()
            kind = _ADAPTER_TYPE.search(adapter[2])
            found["adapter_type"] = kind[1].strip() if kind else None
            found["software"] = ("CPU" in (found["adapter_type"] or "")
                                 or "swiftshader" in stripped.lower())
        placement = _PLACEMENT.search(stripped)
        if placement:
            found["gpu_op_count"] = (found["gpu_op_count"] or 0) + int(placement[1])
            found["cpu_op_count"] = (found["cpu_op_count"] or 0) + int(placement[2])
        if _UNSUPPORTED_HEAD in stripped:
            listing = True
        elif listing:
            op = _UNSUPPORTED_OP.match(stripped)
            if op:
                found["cpu_ops"].setdefault(op[1], op[2])
            else:
                listing = False
        if (_KEEP.search(stripped) and not _NOISE.search(stripped)
                and stripped not in found["log"]):
            found["log"].append(stripped[:400])
    return found


def _output_quantization(path):
    """((input dtype, scale, zero point), (output dtype, scale, zero point)) read by a plain
    interpreter (`CompiledModel` does not report quantisation)."""
    from converters.litert.runtime import make_interpreter

    with open(path, "rb") as f:
        interpreter = make_interpreter(f.read(), use_xnnpack=False, allocate=False)
    (inp,), out = interpreter.get_input_details(), interpreter.get_output_details()
    return ((np.dtype(inp["dtype"]), *inp["quantization"]),
            (np.dtype(out[0]["dtype"]), *out[0]["quantization"]))


def _child(spec):
    """In the child process: compiles `spec["path"]` for GPU (CPU for what the GPU cannot run),
    runs every image, writes the logits (.npy) and fields (.json) where `spec` says."""
    from ai_edge_litert.compiled_model import (
        CompiledModel,
        GpuOptions,
        HardwareAccelerator,
        Options,
    )

    from converters.litert.runtime import dequantize, quantize

    images = np.load(spec["images"])
    (in_type, in_scale, in_zero), (out_type, out_scale, out_zero) = _output_quantization(
        spec["path"])
    options = Options(hardware_accelerators=HardwareAccelerator.GPU | HardwareAccelerator.CPU,
                      gpu_options=GpuOptions(enforce_f32=spec["enforce_f32"]))
    start = time.perf_counter_ns()
    model = CompiledModel.from_file(spec["path"], options=options)
    compile_ms = (time.perf_counter_ns() - start) / 1e6
    fields = {"compile_ms": compile_ms, "fully_accelerated": model.is_fully_accelerated()}
    _write_json(spec["fields"], fields)  # kept if a run crashes
    inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    if len(inputs) != 1 or not outputs:
        raise ValueError(f"Expected one input and an output, the model has {len(inputs)} and "
                         f"{len(outputs)}")
    shape = inputs[0].get_tensor_details()["shape"]
    out_shape = outputs[0].get_tensor_details()["shape"]
    if tuple(shape[1:]) != images.shape[1:]:
        raise ValueError(f"Images of shape {images.shape[1:]} given to a model taking "
                         f"{tuple(shape[1:])}")
    batch, count = int(shape[0]), int(np.prod(out_shape))
    logits, times = [], []
    chunks = [images[i:i + batch] for i in range(0, len(images), batch)]
    warmup = spec.get("warmup", 1)
    for index, chunk in enumerate([chunks[0]] * warmup + chunks):  # warm-up runs first
        real = len(chunk)
        if real < batch:  # pad the last chunk of a fixed-batch model
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        x = (quantize(chunk, in_type, in_scale, in_zero) if in_type.kind in "iu"
             else chunk.astype(in_type))
        inputs[0].write(np.ascontiguousarray(x))
        start = time.perf_counter_ns()  # the run and the read: the engine may run async
        model.run_by_index(0, inputs, outputs)
        y = outputs[0].read(count, out_type).reshape(out_shape)
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if out_type.kind in "iu":
            y = dequantize(y, out_scale, out_zero)
        if index == 0:
            fields["first_ms"] = elapsed
        if index >= warmup:
            times.append(elapsed / batch)
            logits.append(np.asarray(y, np.float32).reshape(batch, -1)[:real])
    np.save(spec["logits"], np.concatenate(logits))
    fields.update(ms_per_image=float(np.median(times)), samples_ms=times)
    _write_json(spec["fields"], fields)


def _write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f)


def _describe_exit(code):
    if code < 0:
        try:
            return f"the GPU engine crashed ({signal.Signals(-code).name})"
        except ValueError:
            return f"the GPU engine crashed (signal {-code})"
    return f"the GPU run exited with status {code}"


def run_gpu(path, images, enforce_f32=False, timeout=DEFAULT_TIMEOUT, icd=None, warmup=1):
    """Runs the `.tflite` file `path` on LiteRT's GPU engine, in a child process.

    The file is compiled for GPU with the CPU taking what the GPU cannot run, so a partly
    accelerated file still gives logits.

    Args:
        path: the `.tflite` file.
        images: (N, H, W, C) float images in the model's input domain (integer inputs are
            quantised with the file's own scale); SwiftShader takes seconds per 224² image, so a
            few small ones.
        enforce_f32: compute in float32 on the GPU (``GpuOptions.enforce_f32``); by default the
            engine may use float16.
        timeout: seconds before the child is stopped (its result then says so).
        icd: the Vulkan ICD manifest; None: `vulkan_icd`.
        warmup: untimed runs (on the first image) before the timed ones.

    Returns:
        A `GpuResult`; ``accelerated`` is "not run" with `NO_DEVICE` as error when there is no
        Vulkan device, "failed" when the engine raised, crashed or timed out.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or not len(images):
        raise ValueError(f"images must be a non-empty (N, H, W, C) array, got shape "
                         f"{images.shape}")
    if warmup < 1:
        raise ValueError(f"warmup must be at least 1 (the first run compiles), got {warmup}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such model: {path}")
    icd = icd or vulkan_icd()
    if icd is None:
        return GpuResult("not run", error=NO_DEVICE)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="litert_gpu_") as folder:
        spec = {"path": os.path.abspath(path), "enforce_f32": bool(enforce_f32),
                "warmup": int(warmup),
                "images": os.path.join(folder, "images.npy"),
                "logits": os.path.join(folder, "logits.npy"),
                "fields": os.path.join(folder, "fields.json")}
        np.save(spec["images"], images)
        env = {**os.environ, **{v: icd for v in ICD_VARIABLES},
               "PYTHONPATH": os.pathsep.join(p for p in (package_root,
                                                         os.environ.get("PYTHONPATH")) if p)}
        env.setdefault("XDG_RUNTIME_DIR", folder)  # Dawn's window-system probe wants one
        try:
            proc = subprocess.run([sys.executable, "-m", "converters.litert.gpu",
                                   json.dumps(spec)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout, env=env, cwd=folder)
            text, code = proc.stdout.decode("utf-8", "replace"), proc.returncode
        except subprocess.TimeoutExpired as err:
            text = (err.stdout or b"").decode("utf-8", "replace")
            code = None
        parsed = parse_engine_log(text)
        fields = {}
        if os.path.exists(spec["fields"]):
            with open(spec["fields"]) as f:
                fields = json.load(f)
        logits = np.load(spec["logits"]) if os.path.exists(spec["logits"]) else None
    result = GpuResult("failed", cpu_ops=parsed["cpu_ops"], gpu_op_count=parsed["gpu_op_count"],
                       cpu_op_count=parsed["cpu_op_count"], adapter=parsed["adapter"],
                       adapter_type=parsed["adapter_type"], software=parsed["software"],
                       compile_ms=fields.get("compile_ms"), icd=icd, log=parsed["log"],
                       ms_per_image=fields.get("ms_per_image"), logits=logits,
                       samples_ms=fields.get("samples_ms"), first_ms=fields.get("first_ms"))
    if "fully_accelerated" in fields:  # compiled: partial or full even if a run then failed
        result.accelerated = "full" if fields["fully_accelerated"] else "partial"
    if code is None:
        result.error = f"the GPU run timed out after {timeout} s"
    elif code != 0 or logits is None:
        result.error = f"{_describe_exit(code)}: {_failure_reason(parsed['log'], text)}"
    if result.accelerated == "partial" and not result.cpu_ops:
        result.cpu_ops, result.cpu_ops_method = _analyser_ops(path), "analyser"
    return result


def _failure_reason(kept, text):
    """The lines saying why the engine failed: its failed checks and errors (the unsupported-op
    listing left out: `cpu_ops` has it), else the last lines it kept or printed."""
    causes = [line for line in kept if "Check failed" in line or (
        line.startswith(("ERROR", "E0000")) and _UNSUPPORTED_HEAD not in line)]
    lines = causes[-2:] or kept[-3:] or [
        line for line in text.strip().splitlines() if line.strip()][-3:]
    return "; ".join(_GLOG_PREFIX.sub("", line)[:300] for line in lines)


def _analyser_ops(path):
    """{op type: "GPU analyser"} of the analyser's incompatible ops (the fallback when the
    engine's log names none)."""
    from converters.litert.inspection import gpu_compatibility

    return {op: "GPU analyser" for op in gpu_compatibility(path)["incompatible_ops"]}


def gpu_columns(result, reference=None):
    """A `GpuResult` -> the report columns: ``gpu`` (its `STATES` value), ``gpu_cpu_ops``
    (comma-separated op types), ``gpu_sqnr_db`` and ``gpu_top1_agreement`` against the
    `reference` logits (`converters.metrics.fidelity`), ``gpu_ms``, ``gpu_adapter`` and
    ``gpu_error`` when it failed."""
    from converters.metrics import fidelity

    columns = {"gpu": result.accelerated, "gpu_cpu_ops": ", ".join(sorted(result.cpu_ops)),
               "gpu_ms": result.ms_per_image, "gpu_adapter": result.adapter}
    if reference is not None and result.logits is not None:
        metrics = fidelity(reference, result.logits)
        columns.update(gpu_sqnr_db=metrics["sqnr_db"],
                       gpu_top1_agreement=metrics["top1_agreement"])
    if result.error:
        columns["gpu_error"] = result.error
    return columns


def gpu_rows(rows, output_dir, images, reference=None, enforce_f32=False,
             timeout=DEFAULT_TIMEOUT, progress=print):
    """Adds the GPU columns (`gpu_columns`) to each LiteRT row of a pipeline report (its
    ``file`` in `output_dir`); returns `rows`.

    Args:
        images: (N, H, W, C) float images every file runs on (a few: see `run_gpu`).
        reference: (N, K) logits to compare with, or a `.tflite` file whose CPU (XNNPACK)
            logits on `images` are; None: the float32 row's file (no float32 row: no SQNR
            columns).
        enforce_f32, timeout: as `run_gpu`.
        progress: callable taking one line of text.
    """
    files = [(row, os.path.join(output_dir, row["file"])) for row in rows
             if not row.get("error") and row["file"].endswith(".tflite")]
    icd = vulkan_icd()
    if icd is None:
        progress(f"    GPU engine {NO_DEVICE}")
        for row, _ in files:
            row.update(gpu_columns(GpuResult("not run", error=NO_DEVICE)))
        return rows
    if reference is None:
        reference = next((path for row, path in files if row["format"] == REFERENCE_FORMAT), None)
    if isinstance(reference, (str, os.PathLike)):
        from converters.litert.runtime import TFLiteRunner

        reference = TFLiteRunner(reference).predict(images)
    for row, path in files:
        progress(f"    GPU engine: {row['file']} on {len(images)} images")
        result = run_gpu(path, images, enforce_f32, timeout, icd)
        row.update(gpu_columns(result, reference))
    return rows


if __name__ == "__main__":
    _spec = json.loads(sys.argv[1])
    try:
        _child(_spec)
    except Exception as _err:  # the parent reads the message from the log
        print(f"ERROR: {type(_err).__name__}: {_err}", flush=True)
        sys.exit(1)
