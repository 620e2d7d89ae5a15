"""Benchmarking on an Android phone through ``adb`` and TFLite's official ``benchmark_model``.

The user brings the native binary for the phone's ABI (see the README: Google's nightly
``android_aarch64_benchmark_model`` for ``arm64-v8a`` phones, ``android_arm_benchmark_model``
for ``armeabi-v7a``). It and the models are pushed to a folder under ``/data/local/tmp``, then
run once per model x backend x thread count, the cases interleaved across backends (round robin)
so that a phone warming up slows every backend alike; each run's stdout, stderr (kept apart
since Android 7's adb) and exit status are read by `android_bench.parse`.

Backends map onto ``benchmark_model`` flags (`BACKEND_FLAGS`, checked against
``tensorflow/lite/tools/delegates/*_delegate_provider.cc``): ``cpu`` (built-in kernels,
``--use_xnnpack=false``), ``xnnpack``, ``gpu`` (``--use_gpu=true``), ``nnapi``
(``--use_nnapi=true``, with ``--nnapi_allow_fp16=true`` and ``--nnapi_accelerator_name=NAME``
on request). Warm-up and timed runs are exact counts (``--warmup_min_secs=0 --min_secs=0``).
"""

import collections
import dataclasses
import itertools
import os
import posixpath
import shlex
import shutil
import subprocess
import time

from android_bench.parse import (
    BenchmarkOutputError,
    delegate_coverage,
    error_lines,
    parse_benchmark_output,
    stderr_messages,
    unconsumed_flags,
)
from android_bench.report import write_text
from android_bench.schema import new_report
from android_bench.timing import Timing

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
_STATUS_SUFFIX = f"; __sfb_status=$?; echo; echo {_EXIT_MARK}$__sfb_status"
#: Backends that run through a delegate (the others run LiteRT's built-in kernels).
DELEGATE_BACKENDS = ("xnnpack", "gpu", "nnapi")

ShellResult = collections.namedtuple("ShellResult", "stdout stderr status")
ShellResult.__doc__ = ("What one ``adb shell`` command printed on stdout and stderr, and its "
                       "exit status.")


class AdbError(RuntimeError):
    """adb is missing, no usable device is attached, or an adb command failed."""


class NoDeviceError(AdbError):
    """``adb devices`` lists no device in the ``device`` state."""


class BenchmarkRunError(RuntimeError):
    """``benchmark_model`` failed on the device; the message holds its error lines. `run_case`
    sets ``fields`` (what was read: exit status, messages, coverage) and ``shell`` (the run's
    `ShellResult`)."""

    fields = {}
    shell = None


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
        return proc.stdout, proc.stderr

    def _select(self, serial):
        devices = parse_devices(self._run(["devices", "-l"], device=False)[0])
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
        """Runs `command` on the device -> `ShellResult` (stdout, stderr, exit status).

        The status is read from an echoed marker, so it is right on old adb versions that do
        not forward it; those also merge the phone's stderr into stdout (empty `stderr`)."""
        # The bare `echo` ends a last line without a newline, so the marker is a line of its
        # own; exactly that one newline is taken off again.
        out, err = self._run(["shell", command + _STATUS_SUFFIX], timeout)
        out = out.replace("\r\n", "\n")
        start = out.rstrip("\n").rfind("\n" + _EXIT_MARK)
        status = out[start + 1 + len(_EXIT_MARK):].strip() if start >= 0 else ""
        if not status.lstrip("-").isdigit():
            raise AdbError(f"No exit status from `adb shell {command}`; output: {out[-500:]}"
                           + (f"; stderr: {err[-500:]}" if err.strip() else ""))
        return ShellResult(out[:start], err.replace("\r\n", "\n"), int(status))

    def push(self, local, remote):
        self._run(["push", os.fspath(local), remote])

    def pull(self, remote, local):
        self._run(["pull", remote, os.fspath(local)])

    def properties(self):
        """The device's ``getprop`` values as a dict."""
        props = {}
        for line in self.shell("getprop").stdout.splitlines():
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


def check_models(entries):
    """Raises ValueError for models that cannot be pushed into one folder."""
    if not entries:
        raise ValueError("No models to benchmark: give at least one .tflite file")
    names = [os.path.basename(e["path"]) for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"Models are pushed into one folder; these names repeat: {twice}: "
                         "rename or copy one of each")


def benchmark_command(binary, model, backend, threads, timing, peak_memory=False):
    """The ``benchmark_model`` command line (a shell string) for one case: `backend` at
    `threads` threads, with `timing`'s warm-up and timed counts (and its NNAPI options for
    ``nnapi``)."""
    args = [binary, f"--graph={model}", f"--num_threads={threads}",
            f"--warmup_runs={timing.warmup}", "--warmup_min_secs=0",
            f"--num_runs={timing.runs}", "--min_secs=0", *BACKEND_FLAGS[backend],
            *(timing.nnapi_flags() if backend == "nnapi" else ())]
    if peak_memory:
        args.append("--report_peak_memory_footprint=true")
    return shlex.join(args)


def interleaved_cases(entries, backends, threads):
    """The cases (backend, thread count, entry) in round-robin order across backends: one case
    of each backend in turn, so that a phone that heats up (or cools down) over the run shifts
    every backend alike instead of the last ones. ``cpu`` and ``xnnpack`` run at every thread
    count, ``gpu`` and ``nnapi`` at the first."""
    per_backend = [[(b, t, e) for t in (threads if b in ("cpu", "xnnpack") else threads[:1])
                    for e in entries] for b in backends]
    return [case for turn in itertools.zip_longest(*per_backend) for case in turn if case]


def _failure(label, result, reason):
    out = (result.stdout + "\n" + result.stderr).strip()
    errors = error_lines(result.stderr) or error_lines(result.stdout) or out.splitlines()[-1:]
    return BenchmarkRunError(f"benchmark_model failed on {label} (exit {result.status}): "
                             f"{reason}" + "".join(f"\n  {line}" for line in errors))


def run_case(adb, command, label, backend=None, require_full=False):
    """Runs one ``benchmark_model`` command -> (fields, `ShellResult`). The fields are the
    parsed timings and memory, ``exit_status``, ``messages`` (stderr beyond INFO lines) and,
    for a delegate backend, ``delegate_coverage``.

    Raises:
        BenchmarkRunError: non-zero exit, no timings, ignored flags or, with `require_full`, a
            delegate that took only part of the graph; its ``fields`` holds what was read.
    """
    result = adb.shell(command)
    log = result.stdout + "\n" + result.stderr
    fields = {"exit_status": result.status, "messages": stderr_messages(result.stderr)}
    coverage = delegate_coverage(log, backend) if backend in DELEGATE_BACKENDS else None
    if coverage:
        fields["delegate_coverage"] = coverage
    try:
        if result.status != 0:
            raise _failure(label, result, "non-zero exit status")
        try:
            timings = parse_benchmark_output(log)
        except BenchmarkOutputError:
            raise _failure(label, result, "no timings in its output") from None
        ignored = unconsumed_flags(log)
        if ignored:  # e.g. --use_nnapi=true given to a build without NNAPI: it ran on the CPU
            raise BenchmarkRunError(
                f"benchmark_model ignored {' '.join(ignored)} on {label}, so the numbers are "
                "not of that backend; use TFLite's benchmark_model build (see the README)")
        if require_full and backend in DELEGATE_BACKENDS and not (coverage or {}).get("full"):
            raise BenchmarkRunError(f"{label}: {_coverage_words(coverage)}; "
                                    "--require-full-delegation")
    except BenchmarkRunError as err:
        err.fields, err.shell = fields, result
        raise
    return {**fields, **timings}, result


def _coverage_words(coverage):
    if not coverage:
        return "the log does not say what the delegate took"
    total = coverage["total_nodes"]
    parts = [f"the {coverage['delegate'] or 'delegate'} took {coverage['nodes']}"
             + (f" of {total} nodes" if total is not None else " nodes")]
    if coverage["partitions"] is not None:
        parts.append(f"the graph runs in {coverage['partitions']} partitions")
    return ", ".join(parts) + " (the rest on the CPU)"


def _push_all(adb, benchmark_binary, entries, remote_dir, progress):
    """Checks the binary against the phone's ABIs and pushes it and the models ->
    (remote binary, binary ABI, getprop values)."""
    binary_abi = elf_abi(benchmark_binary)
    props = adb.properties()
    abis = [a for a in (props.get("ro.product.cpu.abilist") or
                        props.get("ro.product.cpu.abi", "")).split(",") if a]
    if abis and binary_abi not in abis:
        raise ValueError(f"{benchmark_binary} is built for {binary_abi}, the device runs "
                         f"{', '.join(abis)}: use the benchmark_model for {abis[0]}")
    progress(f"device {adb.serial}: {device_info(props)['name']}; pushing to {remote_dir}")
    if adb.shell(f"mkdir -p {shlex.quote(remote_dir)}").status != 0:
        raise AdbError(f"Could not create {remote_dir} on the device")
    remote_binary = posixpath.join(remote_dir, "benchmark_model")
    adb.push(benchmark_binary, remote_binary)
    adb.shell(f"chmod 755 {shlex.quote(remote_binary)}")
    for entry in entries:
        adb.push(entry["path"], posixpath.join(remote_dir, os.path.basename(entry["path"])))
    return remote_binary, binary_abi, props


def _save_log(log_dir, stem, result):
    """Keeps a run's stdout, stderr and exit status apart, as the phone printed them."""
    write_text(os.path.join(log_dir, f"{stem}.stdout.log"), result.stdout)
    write_text(os.path.join(log_dir, f"{stem}.stderr.log"), result.stderr)
    write_text(os.path.join(log_dir, f"{stem}.status"), f"{result.status}\n")


@dataclasses.dataclass(frozen=True)
class AdbOptions:
    """What an adb run keeps and insists on, beyond its `Timing`.

    Attributes:
        remote_dir: folder on the phone for the binary and models.
        peak_memory: pass ``--report_peak_memory_footprint=true`` (a monitoring thread).
        log_dir: if given, every run's stdout, stderr and exit status are saved there.
        require_full_delegation: record a case as failed when its delegate (XNNPACK, GPU,
            NNAPI) took only part of the graph, so that no partly-CPU number passes as the
            delegate's.
    """

    remote_dir: str = REMOTE_DIR
    peak_memory: bool = False
    log_dir: str = None
    require_full_delegation: bool = False


def benchmark_android(models, benchmark_binary, timing=None, adb=None, serial=None,
                      options=AdbOptions(), progress=print):
    """Pushes `benchmark_binary` and `models` to the phone and benchmarks each model x backend
    (x thread count for ``cpu``/``xnnpack``; GPU and NNAPI run with the first thread count),
    the cases interleaved across backends (`interleaved_cases`).

    Args:
        models: entries ``{"path", "variant", "format"}`` or paths.
        benchmark_binary: the native ``benchmark_model`` for the phone's ABI.
        timing: `android_bench.timing.Timing` (default: XNNPACK, 4 threads); its warm-up
            counts the first inference (``--warmup_runs``); ``cooldown`` rests between cases.
        adb, serial: the adb binary (or an `Adb`) and the device (see `Adb`).
        options: `AdbOptions` (remote folder, peak memory, logs, full delegation).
        progress: callable taking one line of text.

    Returns:
        The report (source "adb"); a case whose run failed is recorded with status "failed",
        its error lines (from stderr), exit status and delegate coverage.

    Raises:
        AdbError: adb missing, no device, or a push failing.
        ValueError: bad options, or a binary that is not for this phone's ABI.
    """
    from android_bench.models import parse_model_spec
    from android_bench.report import check_folder

    timing = (timing or Timing(threads=(4,))).require("adb")
    entries = [m if isinstance(m, dict) else parse_model_spec(m) for m in models]
    check_models(entries)
    if not os.path.isfile(benchmark_binary):
        what = "is a folder, not" if os.path.isdir(benchmark_binary) else "does not exist:"
        raise ValueError(f"--benchmark-binary {benchmark_binary} {what} a benchmark_model "
                         "binary: give the native benchmark_model for the phone (see the "
                         "README)")
    elf_abi(benchmark_binary)  # a wrong file fails before adb is asked anything
    if options.log_dir:
        check_folder(options.log_dir, "--log-dir")
    adb = adb if isinstance(adb, Adb) else Adb(adb, serial)
    remote_dir = options.remote_dir
    remote_binary, binary_abi, props = _push_all(adb, benchmark_binary, entries, remote_dir,
                                                 progress)
    cases = interleaved_cases(entries, timing.backends, timing.threads)
    results = []
    for i, (backend, count, entry) in enumerate(cases, 1):
        name = os.path.basename(entry["path"])
        label = f"{name} [{backend}, {count} thread(s)]"
        if timing.cooldown and i > 1:
            time.sleep(timing.cooldown)
        progress(f"[{i}/{len(cases)}] {label}")
        command = benchmark_command(remote_binary, posixpath.join(remote_dir, name), backend,
                                    count, timing, options.peak_memory)
        record = {"model": name, "variant": entry.get("variant"), "format": entry.get("format"),
                  "backend": backend, "threads": count}
        try:
            fields, shell = run_case(adb, command, label, backend,
                                     options.require_full_delegation)
            record.update(status="ok", **fields)
        except BenchmarkRunError as err:
            record.update(status="failed", error=str(err), **err.fields)
            shell = err.shell
            progress(f"    FAILED: {err}")
        if options.log_dir:
            _save_log(options.log_dir, f"{i:03d}_{name}_{backend}_{count}", shell)
        results.append(record)
    settings = {**timing.settings(), "interleaved": True,
                "order": "round robin across backends", "cooldown_s": timing.cooldown,
                "serial": adb.serial, "binary_abi": binary_abi,
                "require_full_delegation": options.require_full_delegation,
                "nnapi_allow_fp16": timing.nnapi_allow_fp16,
                "nnapi_accelerator": timing.nnapi_accelerator,
                "timed": "benchmark_model: Interpreter::Invoke() per run, random input"}
    runtime = {"name": "benchmark_model", "version": None}
    return new_report("adb", device_info(props), runtime, results, settings)
