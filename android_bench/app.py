"""Driving the Android benchmark app (``android/``) over adb: ``swiftformer-bench app``.

The app must be installed (``android/README.md``). `run_app` pushes the models into the app's
files folder, starts its activity with the models and settings as intent extras (``adb shell
am start -n org.swiftformer.bench/.MainActivity --es models ... --ei runs ...``), polls for the
completion marker the app writes when it is done (``swiftformer-bench-android.done``, a small
JSON: ``{"run_id", "status": "ok" | "failed", "json", "error"}``), pulls the report it names and
validates it into the schema of `android_bench.schema`.

A run that cannot finish says why: the app is not installed, ``am start`` refused, the app's
process died without a marker (a crash: the last lines of its log are quoted), the app reported
a failure, or no marker came within the timeout.
"""

import json
import os
import posixpath
import shlex
import tempfile
import time
import uuid

from android_bench.adb import Adb, AdbError, check_nnapi, check_options
from android_bench.schema import ReportError, load_reports

PACKAGE = "org.swiftformer.bench"
ACTIVITY = ".MainActivity"
JSON_NAME = "swiftformer-bench-android.json"
MARKER_NAME = "swiftformer-bench-android.done"
#: The folder the app reads models from and writes to (`Context.getExternalFilesDir(null)`).
APP_DIR = f"/sdcard/Android/data/{PACKAGE}/files"
LOG_TAG = "SwiftFormerBench"


class AppError(AdbError):
    """The app is missing, refused to start, crashed, failed, or did not finish in time."""


def app_command(models, backends, threads, warmup, runs, run_id, nnapi_allow_fp16=False,
                nnapi_accelerator=None, package=PACKAGE):
    """The ``am start`` command (a shell string) that starts one benchmark in the app.

    ``-S`` stops a running instance first; ``-W`` waits until the activity is up. Extras:
    ``models`` (file names in the app's folder), ``backends``, ``threads``, ``warmup`` (the
    first inference included), ``runs``, ``nnapi_allow_fp16``, ``nnapi_accelerator``,
    ``run_id`` (echoed in the marker and the report's settings) and ``autorun``.
    """
    args = ["am", "start", "-S", "-W", "-n", f"{package}/{ACTIVITY}",
            "--ez", "autorun", "true", "--es", "run_id", run_id,
            "--es", "models", ",".join(models), "--es", "backends", ",".join(backends),
            "--ei", "threads", str(threads), "--ei", "warmup", str(warmup),
            "--ei", "runs", str(runs),
            "--ez", "nnapi_allow_fp16", "true" if nnapi_allow_fp16 else "false"]
    if nnapi_accelerator:
        args += ["--es", "nnapi_accelerator", nnapi_accelerator]
    return shlex.join(args)


def _check_installed(adb, package):
    if adb.shell(f"pm path {shlex.quote(package)}").status != 0:
        raise AppError(f"The benchmark app ({package}) is not installed on {adb.serial}: build "
                       "and install it first (android_bench/android/README.md), e.g. `adb "
                       "install -r app-release.apk`")


def _start(adb, command):
    result = adb.shell(command)
    said = (result.stdout + "\n" + result.stderr).strip()
    if result.status != 0 or "Error" in said:
        raise AppError(f"`am start` could not start the app (exit {result.status}): {said}")


def _crash_log(adb):
    """The app's last log lines (its own tag and the runtime's crash reports)."""
    result = adb.shell(f"logcat -d -t 200 -s {LOG_TAG}:I AndroidRuntime:E tflite:W")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return "\n  ".join(lines[-15:]) or "(no log lines)"


def wait_for_marker(adb, folder, run_id, timeout, poll=2.0, package=PACKAGE):
    """Polls `folder` for the app's completion marker until `timeout` seconds pass -> the
    marker (a dict).

    Raises:
        AppError: the app's process is gone twice in a row without a marker (a crash), the
            marker says the run failed or belongs to another run, or `timeout` passed.
    """
    marker_path = posixpath.join(folder, MARKER_NAME)
    deadline = time.monotonic() + timeout
    gone = 0
    while True:
        result = adb.shell(f"cat {shlex.quote(marker_path)}")
        if result.status == 0 and result.stdout.strip():
            try:
                marker = json.loads(result.stdout)
            except json.JSONDecodeError as err:
                raise AppError(f"The app's marker {marker_path} is not JSON ({err}): "
                               f"{result.stdout[:200]!r}") from err
            if marker.get("run_id") != run_id:
                raise AppError(f"The marker {marker_path} belongs to run "
                               f"{marker.get('run_id')!r}, not {run_id!r}: was the app started "
                               "twice?")
            if marker.get("status") != "ok":
                raise AppError(f"The app reported a failure: {marker.get('error') or marker}")
            return marker
        alive = adb.shell(f"pidof {shlex.quote(package)}").status == 0
        gone = 0 if alive else gone + 1
        if gone >= 2:
            raise AppError(f"The app's process ended without writing {MARKER_NAME} (a crash, "
                           f"or it was stopped); its last log lines:\n  "
                           f"{_crash_log(adb)}")
        if time.monotonic() >= deadline:
            raise AppError(f"No completion marker ({marker_path}) after {timeout:g} s; the app "
                           f"is still running: raise --timeout, or see `adb logcat -s "
                           f"{LOG_TAG}`")
        time.sleep(poll)


def _pull_report(adb, folder, marker, run_id, keep_json=None):
    name = posixpath.basename(marker.get("json") or JSON_NAME)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, name)
        adb.pull(posixpath.join(folder, name), local)
        [doc] = load_reports([local])
        if keep_json:
            os.makedirs(os.path.dirname(os.path.abspath(keep_json)), exist_ok=True)
            os.replace(local, keep_json)
    if doc["source"] != "android-app":
        raise ReportError(f"{name} from the app has source {doc['source']!r}, not 'android-app'")
    if doc.get("settings", {}).get("run_id") != run_id:
        raise ReportError(f"{name} is not this run's report (run_id "
                          f"{doc.get('settings', {}).get('run_id')!r}, expected {run_id!r})")
    return doc


def run_app(models, backends=("xnnpack", "gpu", "nnapi"), threads=4, warmup=10, runs=50,
            adb=None, serial=None, timeout=1800.0, poll=2.0, nnapi_allow_fp16=False,
            nnapi_accelerator=None, package=PACKAGE, folder=APP_DIR, keep_json=None,
            progress=print):
    """Benchmarks `models` in the installed Android app and returns its report.

    Args:
        models: entries ``{"path", "variant", "format"}`` or paths (``.tflite``).
        backends: among ``cpu``, ``xnnpack``, ``gpu``, ``nnapi``.
        threads: CPU threads of the interpreter.
        warmup: warm-up inferences per case, the first included.
        runs: timed inferences per case.
        adb, serial: the adb binary and the device (see `android_bench.adb.Adb`).
        timeout: seconds to wait for the app's completion marker.
        poll: seconds between two looks for the marker.
        nnapi_allow_fp16, nnapi_accelerator: the NNAPI delegate's fp16 relaxation and device.
        package, folder: the app's package and the folder it reads and writes.
        keep_json: also keep the app's JSON, as pulled, at this path.
        progress: callable taking one line of text.

    Returns:
        The app's report (source "android-app"), validated.

    Raises:
        AppError: see `wait_for_marker`, and a missing app or a refused start.
        AdbError: adb missing, no device, a push or pull failing.
        ReportError: the app's JSON does not follow the schema or is another run's.
        ValueError: bad options.
    """
    from android_bench.models import parse_model_spec

    entries = [m if isinstance(m, dict) else parse_model_spec(m) for m in models]
    check_options(entries, backends, [threads], warmup, runs)
    check_nnapi(backends, nnapi_allow_fp16, nnapi_accelerator)
    if timeout <= 0:
        raise ValueError(f"The timeout is a number of seconds > 0, got {timeout}")
    adb = adb if isinstance(adb, Adb) else Adb(adb, serial)
    _check_installed(adb, package)
    if adb.shell(f"mkdir -p {shlex.quote(folder)}").status != 0:
        raise AdbError(f"Could not create {folder} on the device")
    adb.shell("rm -f " + " ".join(shlex.quote(posixpath.join(folder, n))
                                  for n in (MARKER_NAME, JSON_NAME)))
    names = [os.path.basename(e["path"]) for e in entries]
    progress(f"device {adb.serial}: pushing {len(names)} model(s) to {folder}")
    for entry, name in zip(entries, names):
        adb.push(entry["path"], posixpath.join(folder, name))
    run_id = uuid.uuid4().hex[:12]
    _start(adb, app_command(names, backends, threads, warmup, runs, run_id, nnapi_allow_fp16,
                            nnapi_accelerator, package))
    progress(f"app started (run {run_id}); waiting for {MARKER_NAME} (up to {timeout:g} s)")
    marker = wait_for_marker(adb, folder, run_id, timeout, poll, package)
    doc = _pull_report(adb, folder, marker, run_id, keep_json)
    for key, wanted in (("warmup_runs", warmup), ("runs", runs), ("threads", threads)):
        if doc["settings"].get(key) != wanted:
            raise ReportError(f"The app ran with {key}={doc['settings'].get(key)!r}, not the "
                              f"{wanted} asked for: is the installed app older than this tool?")
    known = {os.path.basename(e["path"]): e for e in entries}
    for result in doc["results"]:  # the command line's VARIANT/FORMAT names win
        entry = known.get(result["model"], {})
        for key in ("variant", "format"):
            if entry.get(key) and not result.get(key):
                result[key] = entry[key]
    return doc
