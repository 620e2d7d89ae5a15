"""Benchmarking on an Android phone through ``adb`` and TFLite's official ``benchmark_model``.

The user brings the native binary for the phone's ABI (see the README: Google's nightly
``android_aarch64_benchmark_model`` for ``arm64-v8a`` phones, ``android_arm_benchmark_model``
for ``armeabi-v7a``). It and the models are pushed to a folder under ``/data/local/tmp``, then
run once per model x backend x thread count; each log is read by `android_bench.parse`.

Backends map onto ``benchmark_model`` flags (`BACKEND_FLAGS`): ``cpu`` (built-in kernels,
``--use_xnnpack=false``), ``xnnpack``, ``gpu`` (``--use_gpu=true``), ``nnapi``
(``--use_nnapi=true``). Warm-up and timed runs are exact counts (``--warmup_min_secs=0
--min_secs=0``).
"""

import os
import posixpath
import shlex
import shutil
import subprocess
import time

from android_bench.parse import (
    BenchmarkOutputError,
    error_lines,
    parse_benchmark_output,
    unconsumed_flags,
)
from android_bench.report import write_text
from android_bench.schema import LITERT_BACKENDS, new_report

BACKEND_FLAGS = {
    "cpu": ["--use_xnnpack=false"],
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}
#: ELF ``e_machine`` -> Android ABI.
ELF_MACHINES = {0xB7: "arm64-v8a", 0x28: "armeabi-v7a", 0x3E: "x86_64", 0x03: "x86"}
REMOTE_DIR = "/data/local/tmp/swiftformer_bench"
_EXIT_MARK = "__swiftformer_bench_exit="


class AdbError(RuntimeError):
    """adb is missing, no usable device is attached, or an adb command failed."""


class NoDeviceError(AdbError):
    """``adb devices`` lists no device in the ``device`` state."""


class BenchmarkRunError(RuntimeError):
    """``benchmark_model`` failed on the device; the message holds its error lines."""


def find_adb(adb=None):
    """Path of the adb binary: `adb` if given, else ``$ADB``, ``PATH``, then
    ``$ANDROID_HOME/platform-tools``.

    Raises:
        AdbError: none found, naming where it looked and how to install it.
    """
    if adb:
        if os.path.isfile(adb) and os.access(adb, os.X_OK):
            return os.path.abspath(adb)
        found = shutil.which(adb)
        if found:
            return found
        raise AdbError(f"adb not found at {adb} (not an executable file)")
    if os.environ.get("ADB"):
        return find_adb(os.environ["ADB"])
    found = shutil.which("adb")
    if found:
        return found
    for home in (os.environ.get("ANDROID_HOME"), os.environ.get("ANDROID_SDK_ROOT")):
        candidate = os.path.join(home, "platform-tools", "adb") if home else None
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise AdbError(
        "adb not found: install Android SDK Platform-Tools "
        "(https://developer.android.com/tools/releases/platform-tools) and put adb on PATH, "
        "or pass --adb /path/to/adb (or set $ADB)")


def parse_devices(text):
    """``adb devices -l`` output -> [(serial, state, {"model": ..., ...})]."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        info = dict(f.split(":", 1) for f in fields[2:] if ":" in f)
        devices.append((fields[0], fields[1], info))
    return devices


class Adb:
    """One attached device, through the adb binary.

    Args:
        adb: path of adb (default: `find_adb`).
        serial: the device to use when several are attached.
        timeout: seconds any one adb command may take.
    """

    def __init__(self, adb=None, serial=None, timeout=900):
        self.path = find_adb(adb)
        self.timeout = timeout
        self.serial = self._select(serial)

    def _run(self, args, timeout=None, device=True):
        command = [self.path] + (["-s", self.serial] if device else []) + list(args)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                  timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as err:
            raise AdbError(f"`{shlex.join(command)}` timed out after {err.timeout} s") from err
        except OSError as err:
            raise AdbError(f"Could not run {self.path}: {err}") from err
        if proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip()
            raise AdbError(f"`{shlex.join(command)}` failed (exit {proc.returncode}): {message}")
        return proc.stdout

    def _select(self, serial):
        devices = parse_devices(self._run(["devices", "-l"], device=False))
        ready = [d for d in devices if d[1] == "device"]
        if serial is not None:
            states = {s: state for s, state, _ in devices}
            if serial not in states:
                raise NoDeviceError(f"Device {serial} is not attached; `adb devices` lists: "
                                    f"{', '.join(states) or 'none'}")
            if states[serial] != "device":
                raise AdbError(_state_help(serial, states[serial]))
            return serial
        if not ready:
            if devices:
                raise AdbError(" ".join(_state_help(s, state) for s, state, _ in devices))
            raise NoDeviceError(
                "No Android device: `adb devices` lists none. Connect the phone by USB, turn on "
                "USB debugging (Settings > Developer options), accept this computer's key on "
                "the phone, then check that `adb devices` shows it as 'device'.")
        if len(ready) > 1:
            raise AdbError("Several devices are attached (" + ", ".join(s for s, _, _ in ready)
                           + "): choose one with --serial")
        return ready[0][0]

    def shell(self, command, timeout=None):
        """Runs `command` on the device -> (output, exit status). The status is read from an
        echoed marker, so it is right on old adb versions that do not forward it."""
        out = self._run(["shell", f"{command}; echo {_EXIT_MARK}$?"], timeout)
        lines = out.replace("\r\n", "\n").rstrip("\n").split("\n")
        if not lines or not lines[-1].startswith(_EXIT_MARK):
            raise AdbError(f"No exit status from `adb shell {command}`; output: {out[-500:]}")
        return "\n".join(lines[:-1]), int(lines[-1][len(_EXIT_MARK):])

    def push(self, local, remote):
        self._run(["push", os.fspath(local), remote])

    def properties(self):
        """The device's ``getprop`` values as a dict."""
        out, _ = self.shell("getprop")
        props = {}
        for line in out.splitlines():
            if line.startswith("[") and "]: [" in line:
                key, value = line[1:].split("]: [", 1)
                props[key] = value.rstrip("]")
        return props


def _state_help(serial, state):
    hints = {
        "unauthorized": "accept the USB debugging prompt on the phone (revoke and re-plug if "
                        "it does not show)",
        "offline": "re-plug the cable or run `adb kill-server`",
        "no": "check the udev rules / USB permissions of this computer",
    }
    return f"Device {serial} is {state}: {hints.get(state, 'it is not ready')}."


def elf_abi(path):
    """The Android ABI a native executable is built for.

    Raises:
        ValueError: `path` is not an ELF executable (an .apk, a script, a download error page).
    """
    with open(path, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or len(header) < 20:
        raise ValueError(
            f"{path} is not a native executable (ELF): pass the benchmark_model binary, not the "
            "benchmark .apk (see the README)")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"unknown machine 0x{machine:x}")


def device_info(props):
    """``getprop`` values -> the report's ``device``."""
    name = " ".join(p for p in (props.get("ro.product.manufacturer"),
                                props.get("ro.product.model")) if p) or "Android device"
    device = {"name": name, "os": f"Android {props.get('ro.build.version.release', '?')} "
                                  f"(API {props.get('ro.build.version.sdk', '?')})",
              "abi": props.get("ro.product.cpu.abi")}
    soc = " ".join(p for p in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if p)
    soc = soc or props.get("ro.board.platform") or props.get("ro.hardware")
    if soc:
        device["soc"] = soc
    return device


def check_options(models, backends, threads, warmup, runs):
    unknown = [b for b in backends if b not in LITERT_BACKENDS]
    if unknown or not backends:
        raise ValueError(f"Android backends must be among {LITERT_BACKENDS}, got "
                         f"{list(backends)}")
    if not threads or any(not isinstance(t, int) or t < 1 for t in threads):
        raise ValueError(f"Thread counts must be positive integers, got {list(threads)}")
    if warmup < 0 or runs < 1:
        raise ValueError(f"Need warmup >= 0 and runs >= 1, got warmup={warmup}, runs={runs}")
    names = [os.path.basename(m["path"]) for m in models]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"Models are pushed into one folder; these names repeat: {twice}")
    if not models:
        raise ValueError("No models to benchmark")


def benchmark_command(binary, model, backend, threads, warmup, runs, peak_memory=False):
    """The ``benchmark_model`` command line (a shell string) for one case."""
    args = [binary, f"--graph={model}", f"--num_threads={threads}",
            f"--warmup_runs={warmup}", "--warmup_min_secs=0", f"--num_runs={runs}",
            "--min_secs=0", *BACKEND_FLAGS[backend]]
    if peak_memory:
        args.append("--report_peak_memory_footprint=true")
    return shlex.join(args)


def run_case(adb, command, label):
    """Runs one ``benchmark_model`` command -> (parsed fields, log).

    Raises:
        BenchmarkRunError: non-zero exit, or no timings in the log.
    """
    out, status = adb.shell(command)
    try:
        fields = parse_benchmark_output(out)
    except BenchmarkOutputError as err:
        raise BenchmarkRunError(f"benchmark_model failed on {label} (exit {status}): "
                                f"{err}") from err
    if status != 0:
        errors = "\n  ".join(error_lines(out)) or out.strip().splitlines()[-1]
        raise BenchmarkRunError(f"benchmark_model failed on {label} (exit {status}):\n  "
                                f"{errors}")
    ignored = unconsumed_flags(out)
    if ignored:  # e.g. --use_nnapi=true given to a build without NNAPI: it ran on the CPU
        raise BenchmarkRunError(
            f"benchmark_model ignored {' '.join(ignored)} on {label}, so the numbers are not "
            "of that backend; use TFLite's benchmark_model build (see the README)")
    return fields, out


def benchmark_android(models, benchmark_binary, backends=("xnnpack",), threads=(4,), warmup=10,
                      runs=50, adb=None, serial=None, remote_dir=REMOTE_DIR, peak_memory=False,
                      cooldown=0.0, log_dir=None, progress=print):
    """Pushes `benchmark_binary` and `models` to the phone and benchmarks each model x backend
    (x thread count for ``cpu``/``xnnpack``; GPU and NNAPI run with the first thread count).

    Args:
        models: entries ``{"path", "variant", "format"}`` or paths.
        benchmark_binary: the native ``benchmark_model`` for the phone's ABI.
        backends: among `BACKEND_FLAGS`.
        threads: CPU thread counts.
        warmup, runs: warm-up and timed inferences per case.
        adb, serial: the adb binary and the device (see `Adb`).
        remote_dir: folder on the phone for the binary and models.
        peak_memory: pass ``--report_peak_memory_footprint=true`` (a monitoring thread).
        cooldown: seconds of rest before each case (thermal throttling).
        log_dir: if given, every raw log is saved there.
        progress: callable taking one line of text.

    Returns:
        The report (source "adb"); a case whose run failed is recorded with status "failed".

    Raises:
        AdbError: adb missing, no device, or a push failing.
        ValueError: bad options, or a binary that is not for this phone's ABI.
    """
    from android_bench.models import parse_model_spec

    entries = [m if isinstance(m, dict) else parse_model_spec(m) for m in models]
    check_options(entries, backends, threads, warmup, runs)
    if not os.path.isfile(benchmark_binary):
        raise ValueError(f"No such benchmark_model binary: {benchmark_binary}")
    binary_abi = elf_abi(benchmark_binary)
    adb = adb if isinstance(adb, Adb) else Adb(adb, serial)
    props = adb.properties()
    abis = [a for a in (props.get("ro.product.cpu.abilist") or
                        props.get("ro.product.cpu.abi", "")).split(",") if a]
    if abis and binary_abi not in abis:
        raise ValueError(f"{benchmark_binary} is built for {binary_abi}, the device runs "
                         f"{', '.join(abis)}: use the benchmark_model for {abis[0]}")
    progress(f"device {adb.serial}: {device_info(props)['name']}; pushing to {remote_dir}")
    _, status = adb.shell(f"mkdir -p {shlex.quote(remote_dir)}")
    if status != 0:
        raise AdbError(f"Could not create {remote_dir} on the device")
    remote_binary = posixpath.join(remote_dir, "benchmark_model")
    adb.push(benchmark_binary, remote_binary)
    adb.shell(f"chmod 755 {shlex.quote(remote_binary)}")
    for entry in entries:
        adb.push(entry["path"], posixpath.join(remote_dir, os.path.basename(entry["path"])))

    cases = [(b, t, e) for b in backends for t in (threads if b in ("cpu", "xnnpack")
                                                   else threads[:1]) for e in entries]
    results = []
    for i, (backend, count, entry) in enumerate(cases, 1):
        name = os.path.basename(entry["path"])
        label = f"{name} [{backend}, {count} thread(s)]"
        progress(f"[{i}/{len(cases)}] {label}")
        if cooldown:
            time.sleep(cooldown)
        command = benchmark_command(remote_binary, posixpath.join(remote_dir, name), backend,
                                    count, warmup, runs, peak_memory)
        record = {"model": name, "variant": entry.get("variant"), "format": entry.get("format"),
                  "backend": backend, "threads": count}
        try:
            fields, log = run_case(adb, command, label)
            record.update(status="ok", **fields)
        except BenchmarkRunError as err:
            log = str(err)
            record.update(status="failed", error=str(err))
            progress(f"    FAILED: {err}")
        if log_dir:
            write_text(os.path.join(log_dir, f"{i:03d}_{name}_{backend}_{count}.log"), log)
        results.append(record)
    settings = {"warmup_runs": warmup, "runs": runs, "backends": list(backends),
                "threads": list(threads), "interleaved": False, "cooldown_s": cooldown,
                "serial": adb.serial, "binary_abi": binary_abi,
                "timed": "benchmark_model: Interpreter::Invoke() per run, random input"}
    runtime = {"name": "benchmark_model", "version": None}
    return new_report("adb", device_info(props), runtime, results, settings)
