"""converters.litert.gpu: Vulkan device discovery, the engine's log, and real runs of the
exported formats on LiteRT's GPU engine (SwiftShader where there is no GPU); the int8 / uint8
files' signature (converters.calibration) that the GPU engine's `CompiledModel` reads."""

import json
import os

import numpy as np
import pytest

from converters.litert import gpu as litert_gpu
from converters.litert.gpu import GpuResult, gpu_rows, parse_engine_log, run_gpu, vulkan_icd
from converters.metrics import fidelity
from converters.litert.runtime import TFLiteRunner, make_interpreter
from tests.support import SAMPLES

#: SQNR floors of the GPU engine's logits against the CPU (XNNPACK) float32 file's on the same
#: images: XS at 64x64, realistic random weights, int8 calibrated on 8 photos (the integer
#: files lose most of their SQNR on the CPU already at that size).
FLOAT_FLOOR_DB = 50.0
INTEGER_FLOOR_DB = 10.0
#: The GPU engine against the CPU on the same integer file (it computes the integer ops its own
#: way, so not bit-exact), and how much more than the CPU run it may lose against float32.
SAME_FILE_FLOOR_DB = 20.0
EXTRA_LOSS_DB = 1.0
FORMATS = ("float32", "float16", "int8", "uint8")
SIZE = 64
needs_vulkan = pytest.mark.skipif(
    vulkan_icd() is None,
    reason="no Vulkan device: install SwiftShader (Debian: apt-get install chromium-common "
           "libvulkan1) or a GPU driver, or unset VK_ICD_FILENAMES")

# What ai-edge-litert 2.3's GPU engine logs, line for line (SwiftShader; a Keras-graph file
# with L2_NORMALIZATION, compiled for GPU with CPU fallback).
PARTIAL_LOG = """\
INFO: [delegate_webgpu.cc:342] Create WebGPU environment (use_low_power=0, enable_host_mapped_pointer=1)
I0000 00:00:1796399196.347258   20192 environment.cc:532] Selected adapter: SwiftShader Device \
(Subzero), arch=swiftshader, vendor=google, backend=Vulkan, adapterType=CPU / Software
INFO: [delegate_webgpu.cc:363] Created a WebGPU environment.
INFO: Failed to load OpenCL library with dlopen: libOpenCL.so: cannot open shared object file
ERROR: Following operations are not supported by GPU delegate:
L2_NORMALIZATION: Operation is not supported.
22 operations will run on the GPU, and the remaining 97 operations will run on the CPU.
I0000 00:00:1796399196.355326   20192 delegate_kernel.cc:984] Initializing WebGPU-based API.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
"""
NO_ADAPTER_LOG = """\
Warning: Vulkan shaderUniform*ArrayDynamicIndexing required.
ERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU environment: INTERNAL: No adapters found
"""


def test_parse_engine_log_reads_adapter_and_op_placement():
    found = parse_engine_log(PARTIAL_LOG)
    assert found["adapter"] == "SwiftShader Device (Subzero)"
    assert found["adapter_type"] == "CPU / Software" and found["software"] is True
    assert found["cpu_ops"] == {"L2_NORMALIZATION": "Operation is not supported."}
    assert (found["gpu_op_count"], found["cpu_op_count"]) == (22, 97)
    assert not any("OpenCL" in line for line in found["log"])
    failed = parse_engine_log(NO_ADAPTER_LOG)
    assert failed["adapter"] is None and failed["cpu_ops"] == {}
    assert any("No adapters found" in line for line in failed["log"])

# A file with 16-bit activations (the removed int16x8 format): the engine takes 3 ops, then
# aborts on an INT16 tensor (SIGABRT).
CRASH_LOG = """\
ERROR: Following operations are not supported by GPU delegate:
QUANTIZE: Tensor type(INT16) is not supported.
3 operations will run on the GPU, and the remaining 219 operations will run on the CPU.
F0000 00:00:1796400212.469716   27761 object_reader.cc:82] Check failed: tfl_tensor && \
(tfl_tensor->type == kTfLiteFloat32 || tfl_tensor->type == kTfLiteInt32)
"""


def test_a_crash_names_the_failed_check():
    found = parse_engine_log(CRASH_LOG)
    assert found["cpu_ops"] == {"QUANTIZE": "Tensor type(INT16) is not supported."}
    reason = litert_gpu._failure_reason(found["log"], CRASH_LOG)
    assert reason.startswith("object_reader.cc:82] Check failed: tfl_tensor"), reason
    assert "Following operations" not in reason


def _manifest(path, library):
    path.write_text(json.dumps({"file_format_version": "1.0.0",
                                "ICD": {"library_path": library, "api_version": "1.0.5"}}))
    return str(path)


def test_vulkan_icd_honours_the_environment(tmp_path):
    library = tmp_path / "libvk_swiftshader.so"
    library.write_bytes(b"")
    manifest = _manifest(tmp_path / "vk_swiftshader_icd.json", "./libvk_swiftshader.so")
    assert vulkan_icd({"VK_ICD_FILENAMES": manifest}) == manifest
    missing = str(tmp_path / "none.json")
    assert vulkan_icd({"VK_DRIVER_FILES": f"{missing}{os.pathsep}{manifest}"}) == manifest
    assert litert_gpu.is_software(manifest)
    # Set but naming nothing that exists: no device (the way to turn GPU runs off).
    assert vulkan_icd({"VK_ICD_FILENAMES": ""}) is None
    assert vulkan_icd({"VK_ICD_FILENAMES": missing}) is None


def test_swiftshader_manifest_needs_its_library(tmp_path, monkeypatch):
    manifest = _manifest(tmp_path / "vk_swiftshader_icd.json", "./libvk_swiftshader.so")
    monkeypatch.setattr(litert_gpu, "SWIFTSHADER_ICDS", (str(tmp_path / "*.json"),))
    assert litert_gpu.swiftshader_icd() is None
    (tmp_path / "libvk_swiftshader.so").write_bytes(b"")
    assert litert_gpu.swiftshader_icd() == manifest


def test_a_real_gpu_driver_comes_before_swiftshader(tmp_path, monkeypatch):
    icd_dir = tmp_path / "icd.d"
    icd_dir.mkdir()
    _manifest(icd_dir / "lvp_icd.x86_64.json", "libvulkan_lvp.so")
    intel = _manifest(icd_dir / "intel_icd.x86_64.json", "libvulkan_intel.so")
    nvidia = _manifest(icd_dir / "nvidia_icd.json", "libGLX_nvidia.so.0")
    _manifest(icd_dir / "gone_icd.json", "/nonexistent/libvulkan_gone.so")
    monkeypatch.setattr(litert_gpu, "ICD_DIRS", (str(icd_dir),))
    for variable in ("XDG_CONFIG_DIRS", "XDG_DATA_DIRS"):
        monkeypatch.setenv(variable, str(tmp_path / "none"))
    monkeypatch.setattr(litert_gpu, "_has_gpu_device", lambda manifest: True)
    assert litert_gpu.hardware_icds() == [nvidia, intel]  # lavapipe is not a GPU
    assert vulkan_icd({}) == f"{nvidia}{os.pathsep}{intel}"
    assert not litert_gpu.is_software(vulkan_icd({}))
    monkeypatch.setattr(litert_gpu, "_has_gpu_device", lambda manifest: False)
    assert litert_gpu.hardware_icds() == []  # manifests without their device
    assert litert_gpu.is_software("/usr/lib/chromium/vk_swiftshader_icd.json")


def test_no_vulkan_device_is_a_clear_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("VK_ICD_FILENAMES", "")
    monkeypatch.delenv("VK_DRIVER_FILES", raising=False)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not read: there is no device")
    result = run_gpu(model, np.zeros((1, 8, 8, 3), np.float32))
    assert result.accelerated == "not run" and result.error == litert_gpu.NO_DEVICE
    assert result.logits is None
    rows = [{"format": "float32", "file": "m.tflite"}, {"format": "int8", "file": "x.tflite",
                                                        "error": "conversion failed"}]
    gpu_rows(rows, tmp_path, np.zeros((1, 8, 8, 3), np.float32), progress=lambda line: None)
    assert rows[0]["gpu"] == "not run" and rows[0]["gpu_error"] == litert_gpu.NO_DEVICE
    assert "gpu" not in rows[1]


def test_run_gpu_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        run_gpu(tmp_path / "m.tflite", np.zeros((8, 8, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="No such model"):
        run_gpu(tmp_path / "m.tflite", np.zeros((1, 8, 8, 3), np.float32))


@pytest.fixture(scope="module")
def xs_files(tmp_path_factory):
    """XS at 64x64, realistic weights, folded as the pipeline converts it, in `FORMATS`;
    with 4 photos and the CPU float32 file's logits on them."""
    from converters.inference_graph import FOLDED_FLOAT_OPS, for_inference
    from converters.litert.tflite import export_tflite
    from keras_swiftformer import SwiftFormer
    from keras_swiftformer.images import list_images, load_images
    from keras_swiftformer.random_weights import realistic_weights

    folder = tmp_path_factory.mktemp("gpu_xs")
    model = SwiftFormer("XS", input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    realistic_weights(model)
    folded = for_inference(model)
    paths = list_images(SAMPLES)
    calibration = load_images(paths[0::2][:8], size=SIZE)
    images = load_images(paths[1::2][:4], size=SIZE)
    shared = {}
    files = {fmt: export_tflite(folded, folder / f"xs_{fmt}.tflite", fmt,
                                calibration=calibration, float_ops=FOLDED_FLOAT_OPS,
                                shared=shared)
             for fmt in FORMATS}
    return {"files": files, "images": images, "folder": folder,
            "reference": TFLiteRunner(files["float32"]).predict(images)}


@pytest.mark.parametrize("fmt", ["int8", "uint8"])
def test_integer_file_signature_names_the_graph_output(xs_files, fmt):
    with open(xs_files["files"][fmt], "rb") as f:
        interpreter = make_interpreter(f.read())
    output = interpreter.get_output_details()[0]
    runner = interpreter.get_signature_runner()
    image = xs_files["images"][:1]
    if fmt == "uint8":
        image = np.round(image).astype(np.uint8)
    result = runner(image=image)["output_0"]
    assert result.dtype == output["dtype"] and result.shape == tuple(output["shape"])
    plain = TFLiteRunner(xs_files["files"][fmt])
    q = plain.run(image)[0]  # the graph output, dequantised
    scale, zero = output["quantization"] if fmt == "uint8" else (1.0, 0)
    assert np.allclose((result.astype(np.float32) - zero) * scale, q, atol=1e-6)


@needs_vulkan
def test_every_format_runs_fully_accelerated_on_the_gpu(xs_files):
    reference, images = xs_files["reference"], xs_files["images"]
    for fmt, path in xs_files["files"].items():
        result = run_gpu(path, images, timeout=300)
        assert result.error is None, (fmt, result.error)
        assert result.accelerated == "full" and result.cpu_ops == {}, (fmt, result.log)
        assert result.adapter and result.ms_per_image > 0 and result.icd == vulkan_icd()
        assert result.logits.shape == reference.shape and result.logits.dtype == np.float32
        sqnr = fidelity(reference, result.logits)["sqnr_db"]
        floor = FLOAT_FLOOR_DB if fmt.startswith("float") else INTEGER_FLOOR_DB
        assert sqnr >= floor, (fmt, sqnr)
        if not fmt.startswith("float"):  # the GPU engine itself, against the CPU's run
            cpu = TFLiteRunner(path).predict(images)
            assert fidelity(cpu, result.logits)["sqnr_db"] >= SAME_FILE_FLOOR_DB, fmt
            assert sqnr >= fidelity(reference, cpu)["sqnr_db"] - EXTRA_LOSS_DB, fmt


@needs_vulkan
def test_gpu_rows_add_the_report_columns(xs_files):
    rows = [{"format": "uint8", "file": "xs_uint8.tflite"},
            {"format": "float32", "file": "xs_float32.tflite", "error": "left out"}]
    gpu_rows(rows, xs_files["folder"], xs_files["images"][:2],
             reference=xs_files["files"]["float32"], progress=lambda line: None)
    row = rows[0]
    assert row["gpu"] == "full" and row["gpu_cpu_ops"] == "" and "gpu_error" not in row
    assert row["gpu_ms"] > 0 and row["gpu_adapter"]
    assert row["gpu_sqnr_db"] >= INTEGER_FLOOR_DB and 0 <= row["gpu_top1_agreement"] <= 1
    assert "gpu" not in rows[1]


@needs_vulkan
def test_a_partly_accelerated_file_names_the_cpu_op(tmp_path):
    import tensorflow as tf

    # L2_NORMALIZATION (the Keras graph's attention has it) is not a GPU engine op.
    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)])
    def graph(x):
        return tf.math.l2_normalize(tf.nn.relu(x) + 1.0, axis=-1) * 3.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [graph.get_concrete_function()], graph)
    path = tmp_path / "l2.tflite"
    path.write_bytes(converter.convert())
    assert "L2_NORMALIZATION" in TFLiteRunner(path).op_types()
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
    result = run_gpu(path, images, timeout=300)
    assert result.error is None, result.error
    assert result.accelerated == "partial" and "L2_NORMALIZATION" in result.cpu_ops
    assert result.cpu_ops_method == "engine log" and result.cpu_op_count > 0
    cpu = TFLiteRunner(path).predict(images).reshape(len(images), -1)
    assert fidelity(cpu, result.logits)["sqnr_db"] >= FLOAT_FLOOR_DB


@needs_vulkan
def test_engine_failures_become_errors(tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\0" * 64)
    result = run_gpu(broken, np.zeros((1, 8, 8, 3), np.float32), timeout=120)
    assert result.accelerated == "failed" and result.logits is None
    assert result.error.startswith("the GPU run exited with status 1"), result.error
    slow = run_gpu(broken, np.zeros((1, 8, 8, 3), np.float32), timeout=0.01)
    assert slow.accelerated == "failed" and "timed out after 0.01 s" in slow.error


def test_describe_exit_names_the_signal():
    assert litert_gpu._describe_exit(-11) == "the GPU engine crashed (SIGSEGV)"
    assert GpuResult("not run").summary()["accelerated"] == "not run"
