"""android_bench.adb: the adb/benchmark_model flow against a stand-in ``adb`` executable.

No phone is attached to these machines, so a small script plays adb: it answers ``devices -l``,
``getprop``, ``push`` and the ``benchmark_model`` command with what a configured phone would, and
logs every call. What is not exercised for real: a phone, the USB link, a real benchmark_model.
"""

import json
import os
import stat
import sys
import textwrap

import pytest

from android_bench import adb as adb_module
from android_bench.adb import (
    Adb,
    AdbError,
    NoDeviceError,
    benchmark_android,
    elf_abi,
    find_adb,
    parse_devices,
)
from android_bench.cli import main
from android_bench.schema import validate
from tests.test_bench_parse import CURRENT_XNNPACK, FAILED_GPU

PIXEL_PROPS = {
    "ro.product.manufacturer": "Google", "ro.product.model": "Pixel 7",
    "ro.build.version.release": "14", "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a", "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a",
    "ro.soc.manufacturer": "Google", "ro.soc.model": "GS201",
}

FAKE_ADB = '''\
#!{python}
"""Stand-in adb: behaves as the phone described in config.json beside it."""
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
config = json.load(open(os.path.join(here, "config.json")))
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
if args[:1] == ["devices"]:
    print("List of devices attached")
    for serial, state in config["devices"]:
        print(f"{{serial}}\\t{{state}} usb:1-1 product:panther model:Pixel_7 transport_id:1")
    print()
elif args[:1] == ["push"]:
    if not os.path.exists(args[1]):
        sys.exit(f"adb: error: cannot stat '{{args[1]}}': No such file or directory")
    print(f"{{args[1]}}: 1 file pushed, 0 skipped. 120.5 MB/s (1234 bytes in 0.001s)")
elif args[:1] == ["shell"]:
    command, mark = args[1].rsplit("; echo ", 1)
    mark = mark.replace("$?", "")
    if command == "getprop":
        for key, value in config["props"].items():
            print(f"[{{key}}]: [{{value}}]")
        print(mark + "0")
    elif "benchmark_model --graph" in command:
        failing = any(f in command for f in config.get("fail_when", []))
        sys.stdout.write(config["failed_output" if failing else "output"])
        print(mark + ("1" if failing else "0"))
    else:
        print(mark + "0")
else:
    sys.exit("fake adb: unexpected " + " ".join(args))
'''


def make_fake_adb(directory, devices=(("28161FDH2000B1", "device"),), props=None,
                  output=CURRENT_XNNPACK, failed_output=FAILED_GPU, fail_when=()):
    """Writes the stand-in adb and its phone into `directory`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {"devices": [list(d) for d in devices], "props": props or PIXEL_PROPS,
              "output": output, "failed_output": failed_output, "fail_when": list(fail_when)}
    (directory / "config.json").write_text(json.dumps(config))
    path = directory / "adb"
    path.write_text(FAKE_ADB.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def calls(fake):
    with open(os.path.join(os.path.dirname(fake), "calls.log")) as f:
        return [json.loads(line) for line in f]


def fake_elf(path, machine=0xB7):
    """A file with the ELF header of an executable for `machine` (0xB7: AArch64)."""
    header = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + (2).to_bytes(2, "little")
    path.write_bytes(header + machine.to_bytes(2, "little") + b"\x00" * 44)
    return str(path)


@pytest.fixture
def models(tmp_path):
    paths = []
    for name in ("swiftformer_xs_float32.tflite", "swiftformer_l1_int8.tflite"):
        (tmp_path / name).write_bytes(b"TFL3 stand-in; the fake phone never reads it")
        paths.append(str(tmp_path / name))
    return paths


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
        benchmark_android(models, x86, adb=fake, progress=lambda line: None)


def test_full_run_parses_every_case_and_records_failures(tmp_path, models):
    fake = make_fake_adb(tmp_path / "adb", fail_when=["--use_gpu=true"])
    binary = fake_elf(tmp_path / "android_aarch64_benchmark_model")
    doc = benchmark_android(models, binary, backends=("xnnpack", "gpu"), threads=(1, 4),
                            warmup=10, runs=50, adb=fake, log_dir=str(tmp_path / "logs"),
                            progress=lambda line: None)
    validate(doc)
    assert doc["source"] == "adb"
    assert doc["device"] == {"name": "Google Pixel 7", "os": "Android 14 (API 34)",
                             "abi": "arm64-v8a", "soc": "Google GS201"}
    # xnnpack at 1 and 4 threads, gpu once (first thread count), each for both models.
    cases = [(r["backend"], r["threads"], r["variant"], r["format"]) for r in doc["results"]]
    assert cases == [("xnnpack", 1, "XS", "float32"), ("xnnpack", 1, "L1", "int8"),
                     ("xnnpack", 4, "XS", "float32"), ("xnnpack", 4, "L1", "int8"),
                     ("gpu", 1, "XS", "float32"), ("gpu", 1, "L1", "int8")]
    ok = doc["results"][0]
    assert ok["status"] == "ok" and ok["mean_ms"] == pytest.approx(9.87452)
    assert ok["peak_memory_mb"] == pytest.approx(49.6172)
    failed = doc["results"][-1]
    assert failed["status"] == "failed" and "mean_ms" not in failed
    assert "exit 1" in failed["error"] and "Failed to apply GPU delegate" in failed["error"]
    assert len(os.listdir(tmp_path / "logs")) == 6

    commands = [c[3] for c in calls(fake) if c[2:3] == ["shell"] and "--graph" in c[3]]
    assert len(commands) == 6
    assert ("/data/local/tmp/swiftformer_bench/benchmark_model "
            "--graph=/data/local/tmp/swiftformer_bench/swiftformer_l1_int8.tflite "
            "--num_threads=4 --warmup_runs=10 --warmup_min_secs=0 --num_runs=50 --min_secs=0 "
            "--use_xnnpack=true") in commands[3]
    assert "--use_gpu=true" in commands[4]
    pushed = [c[4] for c in calls(fake) if c[2:3] == ["push"]]
    assert pushed == ["/data/local/tmp/swiftformer_bench/benchmark_model",
                      "/data/local/tmp/swiftformer_bench/swiftformer_xs_float32.tflite",
                      "/data/local/tmp/swiftformer_bench/swiftformer_l1_int8.tflite"]


def test_options_are_checked_before_adb_is_called(tmp_path, models):
    binary = fake_elf(tmp_path / "bm")
    missing_adb = str(tmp_path / "no-adb")
    with pytest.raises(ValueError, match="among .*'cpu', 'xnnpack', 'gpu', 'nnapi'"):
        benchmark_android(models, binary, backends=("dsp",), adb=missing_adb)
    twin = tmp_path / "other"
    twin.mkdir()
    (twin / "swiftformer_xs_float32.tflite").write_bytes(b"x")
    with pytest.raises(ValueError, match="names repeat"):
        benchmark_android(models + [str(twin / "swiftformer_xs_float32.tflite")], binary,
                          adb=missing_adb)
    with pytest.raises(ValueError, match="No such benchmark_model binary"):
        benchmark_android(models, str(tmp_path / "missing"), adb=missing_adb)


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
    output = "WARN: Unconsumed cmdline flags: --use_nnapi=true\n" + CURRENT_XNNPACK
    fake = make_fake_adb(tmp_path / "adb", output=output)
    doc = benchmark_android(models[:1], fake_elf(tmp_path / "bm"), backends=("nnapi",),
                            adb=fake, progress=lambda line: None)
    [result] = doc["results"]
    assert result["status"] == "failed" and "mean_ms" not in result
    assert "ignored --use_nnapi=true" in result["error"]
