"""android_bench.adb: the adb/benchmark_model flow against a stand-in ``adb`` executable.

No phone is attached to these machines, so a small script (`tests.support.bench.FAKE_ADB`)
plays adb: it answers ``devices -l``, ``getprop``, ``push`` and the ``benchmark_model`` command
with what a configured phone would, writing the phone's stderr to its stderr as the real adb
does (shell protocol v2, Android 7+), and logs every call. What is not exercised for real: a
phone, the USB link, a real benchmark_model.
"""

import json
import os
import sys
import textwrap

import pytest

from android_bench import adb as adb_module
from android_bench.adb import (
    Adb,
    AdbError,
    AdbOptions,
    NoDeviceError,
    benchmark_android,
    elf_abi,
    find_adb,
    interleaved_cases,
    parse_devices,
)
from android_bench.cli import main
from android_bench.schema import validate
from android_bench.timing import Timing
from tests.support.bench import (
    CURRENT_XNNPACK_STDERR,
    CURRENT_XNNPACK_STDOUT,
    FAILED_GPU_STDERR,
    FAILED_GPU_STDOUT,
    GPU_PARTIAL_STDERR,
    GPU_PARTIAL_STDOUT,
    benchmark_output,
    calls,
    fake_elf,
    make_fake_adb,
    quiet,
    stand_in_models,
)

XNNPACK_OK = benchmark_output(CURRENT_XNNPACK_STDOUT, CURRENT_XNNPACK_STDERR)
GPU_FAILS = benchmark_output(FAILED_GPU_STDOUT, FAILED_GPU_STDERR, status=1,
                             when=["--use_gpu=true"])
GPU_PARTLY = benchmark_output(GPU_PARTIAL_STDOUT, GPU_PARTIAL_STDERR, when=["--use_gpu=true"])


@pytest.fixture
def models(tmp_path):
    return stand_in_models(tmp_path)


def test_parse_devices_output():
    text = ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
            "List of devices attached\n"
            "28161FDH2000B1         device usb:1-1 product:panther model:Pixel_7 device:panther "
            "transport_id:1\nemulator-5554\toffline\n\n")
    devices = parse_devices(text)
    assert [(s, st) for s, st, _ in devices] == [("28161FDH2000B1", "device"),
                                                 ("emulator-5554", "offline")]
    assert devices[0][2]["model"] == "Pixel_7"


def test_missing_adb_binary_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(AdbError, match="adb not found at .*nope"):
        find_adb(str(tmp_path / "nope"))
    for name in ("ADB", "ANDROID_HOME", "ANDROID_SDK_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AdbError, match="install Android SDK Platform-Tools.*--adb"):
        find_adb()


def test_no_device_listed(tmp_path):
    fake = make_fake_adb(tmp_path / "adb", devices=())
    with pytest.raises(NoDeviceError, match="No Android device: `adb devices` lists none"):
        Adb(fake)


def test_unauthorized_and_several_devices(tmp_path):
    fake = make_fake_adb(tmp_path / "a", devices=[("R58M", "unauthorized")])
    with pytest.raises(AdbError, match="R58M is unauthorized: accept the USB debugging prompt"):
        Adb(fake)
    fake = make_fake_adb(tmp_path / "b", devices=[("A1", "device"), ("B2", "device")])
    with pytest.raises(AdbError, match=r"Several devices .*A1, B2.*--serial"):
        Adb(fake)
    assert Adb(fake, serial="B2").serial == "B2"
    with pytest.raises(NoDeviceError, match="C3 is not attached"):
        Adb(fake, serial="C3")


def test_binary_must_be_elf_for_the_phones_abi(tmp_path, models):
    apk = tmp_path / "android_aarch64_benchmark_model.apk"
    apk.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(ValueError, match="not a native executable.*not the benchmark .apk"):
        elf_abi(str(apk))
    assert elf_abi(fake_elf(tmp_path / "arm64")) == "arm64-v8a"
    fake = make_fake_adb(tmp_path / "adb")
    x86 = fake_elf(tmp_path / "benchmark_model_x86_64", machine=0x3E)
    with pytest.raises(ValueError, match="built for x86_64, the device runs arm64-v8a"):
        benchmark_android(models, x86, adb=fake, progress=quiet)


def test_full_run_interleaves_backends_and_keeps_stderr_of_failures(tmp_path, models):
    fake = make_fake_adb(tmp_path / "adb", benchmarks=[GPU_FAILS, XNNPACK_OK])
    binary = fake_elf(tmp_path / "android_aarch64_benchmark_model")
    timing = Timing(backends=("xnnpack", "gpu"), threads=(1, 4), warmup=10, runs=50)
    doc = benchmark_android(models, binary, timing, adb=fake,
                            options=AdbOptions(log_dir=str(tmp_path / "logs")), progress=quiet)
    validate(doc)
    assert doc["source"] == "adb" and doc["settings"]["interleaved"] is True
    assert doc["device"] == {"name": "Google Pixel 7", "os": "Android 14 (API 34)",
                             "abi": "arm64-v8a", "soc": "Google GS201"}
    # Round robin: one case of each backend in turn; gpu runs at the first thread count only.
    cases = [(r["backend"], r["threads"], r["variant"], r["format"]) for r in doc["results"]]
    assert cases == [("xnnpack", 1, "XS", "float32"), ("gpu", 1, "XS", "float32"),
                     ("xnnpack", 1, "L1", "int8"), ("gpu", 1, "L1", "int8"),
                     ("xnnpack", 4, "XS", "float32"), ("xnnpack", 4, "L1", "int8")]
    ok = doc["results"][0]
    assert ok["status"] == "ok" and ok["mean_ms"] == pytest.approx(9.87452)
    assert ok["peak_memory_mb"] == pytest.approx(49.6172)
    assert ok["exit_status"] == 0 and ok["messages"] == []
    assert ok["delegate_coverage"]["full"] is True  # read from stderr
    failed = doc["results"][1]
    assert failed["status"] == "failed" and "mean_ms" not in failed
    assert failed["exit_status"] == 1
    # The cause is on the phone's stderr: it reaches the report.
    assert "exit 1" in failed["error"] and "eglChooseConfig failed" in failed["error"]
    assert "ERROR: Failed to apply GPU delegate." in failed["messages"]
    logs = sorted(os.listdir(tmp_path / "logs"))
    assert len(logs) == 18  # stdout, stderr and status of 6 runs
    stem = os.path.join(tmp_path / "logs", "002_swiftformer_xs_float32.tflite_gpu_1")
    assert open(stem + ".stderr.log").read() == FAILED_GPU_STDERR
    assert open(stem + ".stdout.log").read() == FAILED_GPU_STDOUT
    assert open(stem + ".status").read() == "1\n"

    commands = [c[3] for c in calls(fake) if c[2:3] == ["shell"] and "--graph" in c[3]]
    assert len(commands) == 6
    assert ("/data/local/tmp/swiftformer_bench/benchmark_model "
            "--graph=/data/local/tmp/swiftformer_bench/swiftformer_l1_int8.tflite "
            "--num_threads=4 --warmup_runs=10 --warmup_min_secs=0 --num_runs=50 --min_secs=0 "
            "--use_xnnpack=true") in commands[5]
    assert "--use_gpu=true" in commands[1]
    pushed = [c[4] for c in calls(fake) if c[2:3] == ["push"]]
    assert pushed == ["/data/local/tmp/swiftformer_bench/benchmark_model",
                      "/data/local/tmp/swiftformer_bench/swiftformer_xs_float32.tflite",
                      "/data/local/tmp/swiftformer_bench/swiftformer_l1_int8.tflite"]


def test_round_robin_order_with_uneven_backends():
    entries = [{"path": "a.tflite"}, {"path": "b.tflite"}]
    order = [(b, t, e["path"]) for b, t, e in
             interleaved_cases(entries, ("xnnpack", "gpu", "nnapi"), (1, 2))]
    assert order == [("xnnpack", 1, "a.tflite"), ("gpu", 1, "a.tflite"),
                     ("nnapi", 1, "a.tflite"), ("xnnpack", 1, "b.tflite"),
                     ("gpu", 1, "b.tflite"), ("nnapi", 1, "b.tflite"),
                     ("xnnpack", 2, "a.tflite"), ("xnnpack", 2, "b.tflite")]


def test_partial_delegation_is_recorded_and_can_fail_the_case(tmp_path, models):
    fake = make_fake_adb(tmp_path / "adb", benchmarks=[GPU_PARTLY, XNNPACK_OK])
    binary = fake_elf(tmp_path / "bm")
    timing = Timing(backends=("gpu", "xnnpack"), threads=(4,))
    doc = benchmark_android(models[:1], binary, timing, adb=fake, progress=quiet)
    gpu, xnnpack = doc["results"]
    assert gpu["status"] == "ok" and gpu["mean_ms"] == pytest.approx(7.0502)
    assert gpu["delegate_coverage"] == {"delegate": "TfLiteGpuDelegateV2", "nodes": 250,
                                        "total_nodes": 298, "partitions": 3,
                                        "delegate_kernels": 1, "full": False}
    assert "GELU: Operation is not supported." in gpu["messages"]
    assert xnnpack["delegate_coverage"]["full"] is True

    strict = benchmark_android(models[:1], binary, timing, adb=fake, progress=quiet,
                               options=AdbOptions(require_full_delegation=True))
    gpu, xnnpack = strict["results"]
    assert gpu["status"] == "failed" and "mean_ms" not in gpu
    assert ("the TfLiteGpuDelegateV2 took 250 of 298 nodes, the graph runs in 3 partitions"
            in gpu["error"]) and "--require-full-delegation" in gpu["error"]
    assert gpu["delegate_coverage"]["nodes"] == 250  # kept for the report
    assert xnnpack["status"] == "ok"
    assert strict["settings"]["require_full_delegation"] is True
    validate(strict)


def test_nnapi_options_and_cooldown_reach_the_command(tmp_path, models, monkeypatch):
    slept, sleep = [], adb_module.time.sleep

    def cool_down(seconds):  # subprocess sleeps too, for milliseconds
        if seconds >= 1:
            slept.append(seconds)
        else:
            sleep(seconds)

    monkeypatch.setattr(adb_module.time, "sleep", cool_down)
    fake = make_fake_adb(tmp_path / "adb")
    timing = Timing(backends=("nnapi", "xnnpack"), threads=(4,), nnapi_allow_fp16=True,
                    nnapi_accelerator="qti-dsp", cooldown=2.5)
    doc = benchmark_android(models[:1], fake_elf(tmp_path / "bm"), timing, adb=fake,
                            progress=quiet)
    commands = [c[3] for c in calls(fake) if c[2:3] == ["shell"] and "--graph" in c[3]]
    assert ("--use_nnapi=true --nnapi_allow_fp16=true --nnapi_accelerator_name=qti-dsp;"
            in commands[0])
    assert "nnapi" not in commands[1]  # the options are NNAPI's only
    assert slept == [2.5]  # between the two cases, not before the first
    assert doc["settings"]["nnapi_accelerator"] == "qti-dsp"
    assert doc["settings"]["nnapi_allow_fp16"] is True


def test_options_are_checked_before_adb_is_called(tmp_path, models):
    binary = fake_elf(tmp_path / "bm")
    missing_adb = str(tmp_path / "no-adb")
    twin = tmp_path / "other"
    twin.mkdir()
    (twin / "swiftformer_xs_float32.tflite").write_bytes(open(models[0], "rb").read())
    with pytest.raises(ValueError, match="names repeat"):
        benchmark_android(models + [str(twin / "swiftformer_xs_float32.tflite")], binary,
                          adb=missing_adb)
    with pytest.raises(ValueError, match="does not exist: a benchmark_model binary"):
        benchmark_android(models, str(tmp_path / "missing"), adb=missing_adb)
    with pytest.raises(ValueError, match="--log-dir .* is a file"):
        benchmark_android(models, binary, adb=missing_adb,
                          options=AdbOptions(log_dir=models[0]))
    with pytest.raises(ValueError, match="needs explicit thread counts"):
        benchmark_android(models, binary, Timing(threads=(None,)), adb=missing_adb)


def test_cli_reports_no_device_and_writes_nothing(tmp_path, models, capsys):
    fake = make_fake_adb(tmp_path / "adb", devices=())
    binary = fake_elf(tmp_path / "bm")
    status = main(["adb", *models, "--benchmark-binary", binary, "--adb", fake,
                   "--output", str(tmp_path / "out" / "phone")])
    assert status == 2
    assert "No Android device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_writes_table_json_and_plot(tmp_path, models, capsys):
    fake = make_fake_adb(tmp_path / "adb")
    binary = fake_elf(tmp_path / "bm")
    prefix = tmp_path / "out" / "phone"
    status = main(["adb", *models, "--benchmark-binary", binary, "--adb", fake,
                   "--backends", "xnnpack", "--threads", "4", "--output", str(prefix)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| adb | Google Pixel 7 | xnnpack | 4 | XS float32 | 61.5 | 14.21 | 9.87 |" in printed
    with open(f"{prefix}.json") as f:
        merged = json.load(f)
    assert [r["mean_ms"] for r in merged["reports"][0]["results"]] == [9.87452, 9.87452]
    assert os.path.getsize(f"{prefix}.png") > 10_000


def test_shell_exit_status_comes_from_the_marker(tmp_path):
    script = tmp_path / "adb"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        if sys.argv[1] == "devices":
            print("List of devices attached\\nX1\\tdevice")
        else:
            print("no marker here")
        """))
    script.chmod(0o755)
    device = Adb(str(script))
    with pytest.raises(AdbError, match="No exit status"):
        device.shell("true")
    assert adb_module.REMOTE_DIR.startswith("/data/local/tmp/")


def test_a_backend_the_binary_ignores_is_a_failure_not_a_cpu_number(tmp_path, models):
    """A benchmark_model build without NNAPI warns and runs on the CPU: not an NNAPI result."""
    output = "WARN: Unconsumed cmdline flags: --use_nnapi=true\n" + CURRENT_XNNPACK_STDOUT
    fake = make_fake_adb(tmp_path / "adb",
                         benchmarks=[benchmark_output(output, CURRENT_XNNPACK_STDERR)])
    doc = benchmark_android(models[:1], fake_elf(tmp_path / "bm"), Timing(backends="nnapi"),
                            adb=fake, progress=quiet)
    [result] = doc["results"]
    assert result["status"] == "failed" and "mean_ms" not in result
    assert "ignored --use_nnapi=true" in result["error"]


def test_shell_keeps_stdout_stderr_and_status_apart(tmp_path):
    device = Adb(make_fake_adb(tmp_path / "adb"))
    result = device.shell("cat /sdcard/missing.json")
    assert result.stdout == "" and result.status == 1
    assert result.stderr == "cat: /sdcard/missing.json: No such file or directory\n"
