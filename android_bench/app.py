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

import dataclasses
import json
import os
import posixpath
import shlex
import tempfile
import time
import uuid

from android_bench.adb import Adb, AdbError, check_models
from android_bench.report import write_text
from android_bench.schema import ReportError, load_reports
from android_bench.timing import Timing, check_seconds

PACKAGE = "org.swiftformer.bench"
ACTIVITY = ".MainActivity"
JSON_NAME = "swiftformer-bench-android.json"
MARKER_NAME = "swiftformer-bench-android.done"
#: The folder the app reads models from and writes to (`Context.getExternalFilesDir(null)`).
APP_DIR = f"/sdcard/Android/data/{PACKAGE}/files"
LOG_TAG = "SwiftFormerBench"
#: The longest wait for the app that `AppOptions` takes (a day).
MAX_WAIT_S = 86400.0


class AppError(AdbError):
    """The app is missing, refused to start, crashed, failed, or did not finish in time."""


def app_command(models, timing, run_id, package=PACKAGE):
    """The ``am start`` command (a shell string) that starts one benchmark in the app.

    ``-S`` stops a running instance first; ``-W`` waits until the activity is up. Extras:
    ``models`` (file names in the app's folder), `timing`'s ``backends``, ``threads`` (its one
    thread count), ``warmup`` (the first inference included), ``runs``, ``nnapi_allow_fp16``
    and ``nnapi_accelerator``; ``run_id`` (echoed in the marker and the report's settings) and
    ``autorun``.
    """
    [threads] = timing.threads
    args = ["am", "start", "-S", "-W", "-n", f"{package}/{ACTIVITY}",
            "--ez", "autorun", "true", "--es", "run_id", run_id,
            "--es", "models", ",".join(models), "--es", "backends", ",".join(timing.backends),
            "--ei", "threads", str(threads), "--ei", "warmup", str(timing.warmup),
            "--ei", "runs", str(timing.runs),
            "--ez", "nnapi_allow_fp16", "true" if timing.nnapi_allow_fp16 else "false"]
    if timing.nnapi_accelerator:
        args += ["--es", "nnapi_accelerator", timing.nnapi_accelerator]
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
        if keep_json:  # copied whole (a rename fails across file systems)
            with open(local, encoding="utf-8") as f:
                write_text(keep_json, f.read())
    if doc["source"] != "android-app":
        raise ReportError(f"{name} from the app has source {doc['source']!r}, not 'android-app'")
    if doc.get("settings", {}).get("run_id") != run_id:
        raise ReportError(f"{name} is not this run's report (run_id "
                          f"{doc.get('settings', {}).get('run_id')!r}, expected {run_id!r})")
    return doc


@dataclasses.dataclass(frozen=True)
class AppOptions:
    """How `run_app` reaches the installed app and waits for it.

    Attributes:
        timeout: seconds to wait for the app's completion marker (> 0).
        poll: seconds between two looks for the marker.
        package, folder: the app's package and the folder it reads and writes.
        keep_json: also keep the app's JSON, as pulled, at this path.
    """

    timeout: float = 1800.0
    poll: float = 2.0
    package: str = PACKAGE
    folder: str = APP_DIR
    keep_json: str = None

    def __post_init__(self):
        check_seconds(self.timeout, "--timeout", MAX_WAIT_S, positive=True)
        check_seconds(self.poll, "poll", MAX_WAIT_S)


def run_app(models, timing=None, adb=None, serial=None, options=AppOptions(), progress=print):
    """Benchmarks `models` in the installed Android app and returns its report.

    Args:
        models: entries ``{"path", "variant", "format"}`` or paths (``.tflite``).
        timing: `android_bench.timing.Timing` with one thread count (default: XNNPACK, GPU
            and NNAPI at 4 threads); its warm-up counts the first inference.
        adb, serial: the adb binary (or an `Adb`) and the device (see `android_bench.adb.Adb`).
        options: `AppOptions` (timeout, polling, package and folder, a copy of the JSON).
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
    from android_bench.report import check_file

    timing = (timing or Timing(backends=("xnnpack", "gpu", "nnapi"), threads=(4,))
              ).require("app")
    entries = [m if isinstance(m, dict) else parse_model_spec(m) for m in models]
    check_models(entries)
    if options.keep_json:
        check_file(options.keep_json, "--keep-json")
    package, folder = options.package, options.folder
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
    _start(adb, app_command(names, timing, run_id, package))
    progress(f"app started (run {run_id}); waiting for {MARKER_NAME} (up to "
             f"{options.timeout:g} s)")
    marker = wait_for_marker(adb, folder, run_id, options.timeout, options.poll, package)
    doc = _pull_report(adb, folder, marker, run_id, options.keep_json)
    for key, wanted in (("warmup_runs", timing.warmup), ("runs", timing.runs),
                        ("threads", timing.threads[0])):
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
